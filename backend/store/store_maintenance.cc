// Store maintenance: what gc, verify and a starting daemon do to a store
// (see store.h): referenced chunks, verification, garbage collection, and
// bringing the catalog in line with the store.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <ctime>
#include <set>
#include <utility>

#include "backend/store/catalog.h"
#include "backend/store/store.h"
#include "backend/store/store_internal.h"

namespace ckptfs {
namespace {

using namespace store_internal;  // NOLINT: the layout's names

}  // namespace

// ------------------------------------------------------------ verification

Result<std::vector<ChunkHash>> Store::ReferencedChunks() {
  std::vector<ChunkHash> hashes;
  std::set<ChunkHash> pages;
  RETURN_IF_ERROR(Mark(std::nullopt, &hashes, &pages));
  return hashes;
}

Result<std::vector<std::string>> Store::VerifyBackup(
    const BackupRecord& backup) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  std::vector<std::string> problems;
  if (backup.disks.empty()) problems.push_back(backup.id + ": lists no disks");
  std::set<ChunkHash> verified;
  std::vector<std::byte> buf(chunk_size());
  for (const BackupDisk& disk : backup.disks) {
    auto index = OpenIndex(backup, disk.name);
    if (!index.ok()) {
      problems.push_back(backup.id + " disk " + disk.name + ": " +
                         index.status().message());
      continue;
    }
    const ChunkIndex& idx = **index;
    const Status walked =
        idx.ForEachAllocated([&](uint64_t i, const ChunkRef& ref) {
          if (verified.contains(ref.hash)) return Status::Ok();
          const size_t length = static_cast<size_t>(idx.chunk_length(i));
          const Status status = CheckChunk(ref, std::span(buf).first(length));
          if (!status.ok()) {
            problems.push_back(backup.id + " disk " + disk.name + " offset " +
                               std::to_string(i * idx.chunk_size()) + ": " +
                               status.message());
          } else {
            verified.insert(ref.hash);
          }
          return Status::Ok();
        });
    if (!walked.ok()) {
      problems.push_back(backup.id + " disk " + disk.name + ": " +
                         walked.message());
    }
  }
  return problems;
}

Result<uint64_t> Store::RemoveLeftovers(bool dry_run) {
  ASSIGN_OR_RETURN(const std::vector<Incomplete> incomplete, ListIncomplete());
  uint64_t removed = 0;
  for (const Incomplete& inc : incomplete) {
    // Only a delete cut short (a killed prune, a failed job's undo) is
    // garbage for sure. Manifests without a record or a mark are a running
    // backup, one whose daemon died (its host's next daemon removes it with
    // its lock), or a lost record: verify reports them, gc keeps them.
    if (!inc.deleting) continue;
    if (!dry_run) {
      BackupRecord r;
      r.domain_uuid = inc.domain_uuid;
      r.checkpoint = inc.checkpoint;
      Status st = DeleteBackup(r);
      if (!st.ok() && st.code() != Code::kNotFound) return st;
    }
    removed += inc.keys.size();
    spdlog::info("store {}: {} the rest of the deleted backup {}/{}",
                 objects_->location(), dry_run ? "would remove" : "removed",
                 inc.domain_uuid, inc.checkpoint);
  }
  return removed;
}

Result<Store::GcStats> Store::CollectGarbage(int64_t cutoff, bool dry_run) {
  GcStats stats;
  // Leftovers first, so that they no longer pin their chunks.
  ASSIGN_OR_RETURN(stats.leftovers, RemoveLeftovers(dry_run));
  // Mark: chunks and pages the manifests reference, and the subtrees of
  // pages touched since the cutoff (what running backups reuse or wrote).
  std::vector<ChunkHash> referenced;
  std::set<ChunkHash> pages;
  RETURN_IF_ERROR(Mark(cutoff, &referenced, &pages));
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List("chunks/"));
  for (const std::string& key : keys) {
    ++stats.chunks;
    ChunkHash hash;
    const size_t slash = key.rfind('/');
    if (!HexToHash(key.substr(slash + 1), &hash)) continue;  // not a chunk
    if (std::binary_search(referenced.begin(), referenced.end(), hash)) {
      ++stats.referenced;
      continue;
    }
    if (dry_run) {
      auto mtime = objects_->ModifiedTime(key);
      if (!mtime.ok()) continue;  // gone meanwhile
      ++(*mtime >= cutoff ? stats.recent : stats.deleted);
      continue;
    }
    ASSIGN_OR_RETURN(const bool deleted,
                     objects_->DeleteIfUnusedSince(key, cutoff));
    ++(deleted ? stats.deleted : stats.recent);
  }
  RETURN_IF_ERROR(SweepPages(pages, cutoff, dry_run, &stats));
  if (!dry_run) {
    // Temporaries also wait an hour: a plain Put runs without a lock.
    const int64_t temp_cutoff =
        std::min(cutoff, static_cast<int64_t>(std::time(nullptr)) - 3600);
    ASSIGN_OR_RETURN(stats.temporaries,
                     objects_->RemoveStaleTemporaries(temp_cutoff));
  }
  return stats;
}

Status Store::ReconcileCatalog(Catalog& catalog) {
  // The store is the source of truth: the catalog must list exactly its
  // complete backups (a deleted or stale catalog is rebuilt here).
  ASSIGN_OR_RETURN(std::vector<BackupRecord> in_store, ListBackups());
  ASSIGN_OR_RETURN(std::vector<BackupRecord> in_catalog, catalog.ListBackups());
  std::set<std::string> a, b;
  for (const auto& r : in_store) a.insert(r.id);
  for (const auto& r : in_catalog) b.insert(r.id);
  if (a == b) return Status::Ok();
  spdlog::warn("catalog lists {} backups, the store holds {}: reindexing",
               b.size(), a.size());
  return catalog.ReplaceBackups(in_store);
}

}  // namespace ckptfs
