// BackupRunner: copies a live checkpoint into the store. A full backup reads
// every allocated chunk; an incremental one reads only the chunks that hold
// dirty extents and takes the base's index entries for the rest. Chunks
// are read, hashed, compressed and written by a pool of threads pulling from
// one queue (NBD reads in parallel across the export's connections).
//
// The record is written only after every manifest is durable, and the catalog
// row only after the record: a backup that fails or is cancelled leaves no
// record, so it is never served and never a base.
//
// Thread safety: Run() may be called from several threads for different
// domains; `cancel` may be set from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/store/catalog.h"
#include "backend/store/store.h"
#include "fs/checkpoint_view.h"
#include "mountd/jobs.h"

namespace ckptfs {

struct BackupPlan {
  std::shared_ptr<const CheckpointView> view;  // live, with raw sources
  std::optional<BackupRecord> base;            // set: incremental from it
  std::string job_id;
  // Called right before the record is written (the backup completes only
  // if it returns ok): the store lock still holds (LockLease::Hold).
  std::function<Status()> before_record;
};

class BackupRunner {
 public:
  BackupRunner(Store& store, Catalog& catalog, JobTable& jobs,
               unsigned threads = 4)
      : store_(store), catalog_(catalog), jobs_(jobs), threads_(threads) {}

  // Plan -> copy -> commit: the record of the complete backup, or the
  // first error (nothing of this job left in the store).
  Result<BackupRecord> Run(const BackupPlan& plan,
                           const std::atomic<bool>& cancel);

 private:
  struct Work;  // one Run's plan and progress (backup.cc)

  // Plan: which chunks of disk `d` to read, which come from the base.
  Status PlanDisk(const BackupPlan& plan, size_t d, Work& w);
  std::shared_ptr<const ChunkIndex> BaseIndex(const BackupPlan& plan,
                                              const CheckpointDisk& disk);
  // The base's chunks with data, ascending (what PlanChunk looks up).
  struct BaseChunks {
    std::vector<std::pair<uint64_t, ChunkHash>> data;
    bool tree = false;  // format 2: kept whole by Store::KeepIndex
    ChunkRef At(uint64_t i) const;
  };
  Status PlanChunk(size_t d, uint64_t i, const BaseChunks* base, Work& w);
  // Copy: a pool of threads runs the tasks; the first error stops them.
  Status Copy(const BackupPlan& plan, Work& w, const std::atomic<bool>& cancel);
  void CopyTasks(const BackupPlan& plan, Work& w,
                 const std::atomic<bool>& cancel);
  // Commit: chunks, manifests, record, catalog row, in that order; a
  // failure takes back what this job wrote.
  Result<BackupRecord> Commit(const BackupPlan& plan, Work& w);

  Store& store_;
  Catalog& catalog_;
  JobTable& jobs_;
  const unsigned threads_;
};

}  // namespace ckptfs
