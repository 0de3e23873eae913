#include "mountd/store_cli.h"

#include <algorithm>
#include <cstdio>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "backend/clock.h"
#include "backend/store/catalog.h"
#include "backend/store/store.h"
#include "backend/trusted_dir.h"
#include "mountd/jobs.h"
#include "mountd/prune.h"

namespace ckptfs {
namespace {

int Fail(const Status& st) {
  std::cerr << "ckptfs: " << st.message() << "\n";
  return 1;
}

Result<std::unique_ptr<Store>> OpenExisting(const StoreRef& ref) {
  const std::string& dir = ref.uri;
  // As the daemon does: a store another user could have planted or can
  // change is refused (backend/trusted_dir.h), before it is read. A rados:
  // store's access is the client key's caps.
  if (!IsRadosStore(dir)) {
    TrustOptions trust;
    trust.what = "store";
    RETURN_IF_ERROR(CheckTrustedPath(dir, trust));
  }
  auto store = Store::Open(dir, /*create=*/false, {}, ref.options);
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

int StoreList(const StoreRef& store_ref, const std::string& domain, bool json) {
  auto store = OpenExisting(store_ref);
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

int StoreVerify(const StoreRef& store_ref) {
  auto store = OpenExisting(store_ref);
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
  // Manifests without a record: a lost backup.json is damage, unless a
  // backup is running (it writes its record last) or a delete was cut
  // short (gc finishes it).
  auto incomplete = (*store)->ListIncomplete();
  if (!incomplete.ok()) return Fail(incomplete.status());
  auto locks = (*store)->ListLocks();
  size_t checked = backups->size() + problems.size();
  for (const Store::Incomplete& inc : *incomplete) {
    std::string domain = inc.domain_uuid;
    for (const auto& b : *backups) {
      if (b.domain_uuid == inc.domain_uuid) domain = b.domain;
    }
    const std::string what = domain + "/" + inc.checkpoint;
    if (inc.deleting) {
      std::cout << "note    " << what
                << ": its removal was interrupted; 'ckptfs gc' finishes it\n";
      continue;
    }
    // A lock that names this backup, or one that names none (unreadable).
    const bool running =
        !locks.ok() ||
        std::any_of(locks->begin(), locks->end(), [&](const auto& l) {
          return l.domain_uuid.empty() || (l.domain_uuid == inc.domain_uuid &&
                                           l.checkpoint == inc.checkpoint);
        });
    if (running) {
      std::cout << "note    " << what
                << ": incomplete (no backup.json); a backup is running, "
                   "this may be it\n";
      continue;
    }
    ++checked;
    ++damaged;
    std::cout << "DAMAGED " << what
              << ": incomplete: manifests without backup.json (the record "
                 "was lost, or the backup was interrupted)\n";
  }
  std::cout << checked << " backups checked, " << damaged << " damaged\n";
  return damaged ? 1 : 0;
}

int StoreReindex(const StoreRef& store_ref) {
  auto store = OpenExisting(store_ref);
  if (!store.ok()) return Fail(store.status());
  std::vector<std::string> problems;
  auto backups = (*store)->ListBackups(&problems);
  if (!backups.ok()) return Fail(backups.status());
  // A corrupt catalog is rebuilt from nothing (the store has it all); the
  // damaged file is kept aside. Any other failure (busy, permissions, no
  // space) leaves it alone.
  std::string moved_to;
  auto catalog = (*store)->OpenCatalog(/*replace_corrupt=*/true, &moved_to);
  if (!catalog.ok()) return Fail(catalog.status());
  if (!moved_to.empty()) {
    std::cerr << "ckptfs: catalog " << (*catalog)->path()
              << " was corrupt; moved it aside to " << moved_to << "\n";
  }
  Status st = (*catalog)->ReplaceBackups(*backups);
  if (!st.ok()) return Fail(st);
  for (const auto& p : problems) std::cerr << "ckptfs: skipped: " << p << "\n";
  std::cout << "catalog rebuilt: " << backups->size() << " backups\n";
  return 0;
}

int StoreGc(const StoreRef& store_ref, bool dry_run) {
  auto store = OpenExisting(store_ref);
  if (!store.ok()) return Fail(store.status());
  const int64_t now = NowMs() / 1000;
  // Locks whose lease ran out (a host that died mid-backup) first: they go,
  // with the incomplete backups they name, so they hold gc back no longer.
  if (!dry_run) {
    auto expired = (*store)->ExpireLocks(now);
    if (!expired.ok()) return Fail(expired.status());
    for (const auto& lock : *expired) {
      std::cout << "removed expired lock: " << lock.name << " (host "
                << lock.host << ", not renewed for " << now - lock.renewed
                << " s)\n";
    }
  }
  auto locks = (*store)->ListLocks();
  if (!locks.ok()) return Fail(locks.status());
  for (const auto& lock : *locks) {
    std::cout << "backup running: " << lock.name << "\n";
  }
  // Keep everything written or touched since the oldest running backup
  // began.
  auto cutoff = (*store)->GcCutoff(now);
  if (!cutoff.ok()) return Fail(cutoff.status());
  auto stats = (*store)->CollectGarbage(*cutoff, dry_run);
  if (!stats.ok()) return Fail(stats.status());
  const char* verb = dry_run ? "would remove " : "removed ";
  if (stats->leftovers > 0) {
    std::cout << verb << stats->leftovers << " objects of incomplete backups\n";
  }
  std::cout << verb << stats->deleted << " of " << stats->chunks << " chunks ("
            << stats->referenced << " referenced, " << stats->recent
            << " recent kept)\n";
  if (!dry_run) {
    std::cout << "removed " << stats->temporaries << " stale temporaries\n";
  }
  auto trimmed = (*store)->changes().Trim(now - ChangeLog::kRetention, dry_run);
  if (!trimmed.ok()) return Fail(trimmed.status().Annotate("change log"));
  if (*trimmed > 0) {
    std::cout << verb << *trimmed << " changes older than "
              << ChangeLog::kRetention / 86400 << " days from the change log\n";
  }
  return 0;
}

int StorePrune(const StoreRef& store_ref, const std::string& domain,
               const std::vector<std::pair<std::string, std::string>>& keep,
               bool dry_run) {
  auto policy = ParseRetention(keep);
  if (!policy.ok()) return Fail(policy.status());
  if (policy->empty()) {
    return Fail(InvalidArgument(
        "no keep rule given: use --keep-last/--keep-hourly/--keep-daily/"
        "--keep-weekly/--keep-monthly/--keep-yearly"));
  }
  auto store = OpenExisting(store_ref);
  if (!store.ok()) return Fail(store.status());
  auto backups = (*store)->ListBackups();
  if (!backups.ok()) return Fail(backups.status());
  // A local store's catalog lives in the store, shared by its daemons: it
  // must follow the prune. A rados: store's catalog is a daemon's, in its
  // run dir: this host's follows if there is one, and every daemon learns
  // of the prune from the store's change log anyway.
  std::unique_ptr<Catalog> catalog;
  if (auto opened = (*store)->OpenCatalog(); opened.ok()) {
    catalog = std::move(opened).value();
  } else if (!IsRadosStore(store_ref.uri)) {
    return Fail(opened.status());
  }
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
      Status st = catalog ? catalog->RemoveBackup(b.id) : Status::Ok();
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
