#include "mountd/store_cli.h"

#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/store/store.h"
#include "mountd/catalog.h"
#include "mountd/jobs.h"
#include "mountd/prune.h"

namespace ckptfs {
namespace {

int Fail(const Status& st) {
  std::cerr << "ckptfs: " << st.message() << "\n";
  return 1;
}

Result<std::unique_ptr<Store>> OpenExisting(const std::string& dir) {
  auto store = Store::OpenLocal(dir, /*create=*/false);
  if (!store.ok()) return store.status().Annotate("store " + dir);
  return store;
}

std::string Human(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  snprintf(buf, sizeof(buf), u ? "%.1f %s" : "%.0f %s", v, units[u]);
  return buf;
}

}  // namespace

int StoreList(const std::string& store_dir, const std::string& domain,
              bool json) {
  auto store = OpenExisting(store_dir);
  if (!store.ok()) return Fail(store.status());
  std::vector<std::string> problems;
  auto backups = (*store)->ListBackups(&problems);
  if (!backups.ok()) return Fail(backups.status());
  if (!json) {
    std::printf("%-20s %-24s %-12s %-24s %-20s %s\n", "DOMAIN", "CHECKPOINT",
                "MODE", "BASE", "CREATED", "DISKS");
  }
  for (const auto& b : *backups) {
    if (!domain.empty() && b.domain != domain && b.domain_uuid != domain) {
      continue;
    }
    std::string disks;
    for (const auto& d : b.disks) {
      disks += (disks.empty() ? "" : " ") + d.name + ":" + Human(d.allocated);
    }
    if (json) {
      std::cout << nlohmann::json{{"domain", b.domain},
                                  {"domain_uuid", b.domain_uuid},
                                  {"checkpoint", b.checkpoint},
                                  {"mode", b.mode},
                                  {"base", b.base},
                                  {"created", IsoTime(b.created * 1000)}}
                       .dump()
                << "\n";
    } else {
      std::printf("%-20s %-24s %-12s %-24s %-20s %s\n", b.domain.c_str(),
                  b.checkpoint.c_str(), b.mode.c_str(),
                  b.base.empty() ? "-" : b.base.c_str(),
                  IsoTime(b.created * 1000).c_str(), disks.c_str());
    }
  }
  for (const auto& p : problems) std::cerr << "ckptfs: " << p << "\n";
  return problems.empty() ? 0 : 1;
}

int StoreVerify(const std::string& store_dir) {
  auto store = OpenExisting(store_dir);
  if (!store.ok()) return Fail(store.status());
  std::vector<std::string> problems;
  auto backups = (*store)->ListBackups(&problems);
  if (!backups.ok()) return Fail(backups.status());
  size_t damaged = 0;
  for (const auto& p : problems) {
    std::cout << "DAMAGED unreadable backup record: " << p << "\n";
    ++damaged;
  }
  for (const auto& b : *backups) {
    auto found = (*store)->VerifyBackup(b);
    if (!found.ok()) {
      std::cout << "DAMAGED " << b.domain << "/" << b.checkpoint << ": "
                << found.status().message() << "\n";
      ++damaged;
      continue;
    }
    if (found->empty()) {
      std::cout << "ok      " << b.domain << "/" << b.checkpoint << "\n";
      continue;
    }
    ++damaged;
    std::cout << "DAMAGED " << b.domain << "/" << b.checkpoint << ":\n";
    for (const auto& line : *found) std::cout << "  " << line << "\n";
  }
  std::cout << backups->size() + problems.size() << " backups checked, "
            << damaged << " damaged\n";
  return damaged ? 1 : 0;
}

int StoreReindex(const std::string& store_dir) {
  auto store = OpenExisting(store_dir);
  if (!store.ok()) return Fail(store.status());
  std::vector<std::string> problems;
  auto backups = (*store)->ListBackups(&problems);
  if (!backups.ok()) return Fail(backups.status());
  const std::string path = store_dir + "/catalog.db";
  auto catalog = Catalog::Open(path);
  if (!catalog.ok()) {
    // A corrupt catalog is rebuilt from nothing: the store has it all.
    std::cerr << "ckptfs: " << catalog.status().message()
              << "; recreating it\n";
    for (const char* suffix : {"", "-wal", "-shm"}) {
      std::remove((path + suffix).c_str());
    }
    catalog = Catalog::Open(path);
    if (!catalog.ok()) return Fail(catalog.status());
  }
  Status st = (*catalog)->ReplaceBackups(*backups);
  if (!st.ok()) return Fail(st);
  for (const auto& p : problems) std::cerr << "ckptfs: skipped: " << p << "\n";
  std::cout << "catalog rebuilt: " << backups->size() << " backups\n";
  return 0;
}

int StoreGc(const std::string& store_dir, bool dry_run) {
  auto store = OpenExisting(store_dir);
  if (!store.ok()) return Fail(store.status());
  auto locks = (*store)->ListLocks();
  if (!locks.ok()) return Fail(locks.status());
  // Keep every chunk touched since the oldest running backup began (and a
  // minute of margin for clocks and in-flight writes).
  int64_t cutoff = NowMs() / 1000;
  for (const auto& [name, started] : *locks) {
    cutoff = std::min(cutoff, started);
    std::cout << "backup running: " << name << "\n";
  }
  cutoff -= 60;
  auto stats = (*store)->CollectGarbage(cutoff, dry_run);
  if (!stats.ok()) return Fail(stats.status());
  std::cout << (dry_run ? "would remove " : "removed ") << stats->deleted
            << " of " << stats->chunks << " chunks (" << stats->referenced
            << " referenced, " << stats->recent << " recent kept)\n";
  return 0;
}

int StorePrune(const std::string& store_dir, const std::string& domain,
               const std::vector<std::pair<std::string, std::string>>& keep,
               bool dry_run) {
  auto policy = ParseRetention(keep);
  if (!policy.ok()) return Fail(policy.status());
  if (policy->empty()) {
    return Fail(InvalidArgument(
        "no keep rule given: use --keep-last/--keep-hourly/--keep-daily/"
        "--keep-weekly/--keep-monthly/--keep-yearly"));
  }
  auto store = OpenExisting(store_dir);
  if (!store.ok()) return Fail(store.status());
  auto backups = (*store)->ListBackups();
  if (!backups.ok()) return Fail(backups.status());
  auto catalog = Catalog::Open(store_dir + "/catalog.db");
  if (!catalog.ok()) return Fail(catalog.status());
  // One group per domain (by uuid): rules apply to each domain's backups.
  std::map<std::string, std::vector<const BackupRecord*>> groups;
  for (const auto& b : *backups) {
    if (!domain.empty() && b.domain != domain && b.domain_uuid != domain) {
      continue;
    }
    groups[b.domain_uuid].push_back(&b);
  }
  int rc = 0;
  for (const auto& [uuid, list] : groups) {
    std::vector<PruneItem> items;
    std::map<std::string, const BackupRecord*> by_id;
    for (const BackupRecord* b : list) {
      items.push_back({b->id, b->created});
      by_id[b->id] = b;
    }
    for (const auto& d : DecidePrune(items, *policy)) {
      const BackupRecord& b = *by_id[d.id];
      std::string reasons;
      for (const auto& r : d.reasons)
        reasons += (reasons.empty() ? "" : ",") + r;
      std::printf("%-6s %-20s %-24s %s %s\n", d.keep ? "keep" : "remove",
                  b.domain.c_str(), b.checkpoint.c_str(),
                  IsoTime(b.created * 1000).c_str(), reasons.c_str());
      if (d.keep || dry_run) continue;
      // The catalog row goes first, so the daemon stops serving it before
      // its manifests disappear; a crash in between is repaired by the
      // daemon's reconcile (the backup reappears, whole).
      Status st = (*catalog)->RemoveBackup(b.id);
      if (!st.ok() && st.code() != Code::kNotFound) {
        std::cerr << "ckptfs: " << st.message() << "\n";
        rc = 1;
        continue;
      }
      st = (*store)->DeleteBackup(b);
      if (!st.ok()) {
        std::cerr << "ckptfs: " << st.message() << "\n";
        rc = 1;
      }
    }
  }
  if (!dry_run) std::cout << "run 'ckptfs gc' to free the chunks\n";
  return rc;
}

}  // namespace ckptfs
