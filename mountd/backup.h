// BackupRunner: copies a live checkpoint into the store. A full backup reads
// every allocated chunk; an incremental one reads only the chunks that hold
// dirty extents and takes the base's manifest entries for the rest. Chunks
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
#include <optional>
#include <string>

#include "backend/store/store.h"
#include "backend/store/catalog.h"
#include "mountd/checkpoint.h"
#include "mountd/jobs.h"

namespace ckptfs {

struct BackupPlan {
  std::shared_ptr<const CheckpointView> view;  // live, with raw sources
  std::optional<BackupRecord> base;            // set: incremental from it
  std::string job_id;
};

class BackupRunner {
 public:
  BackupRunner(Store& store, Catalog& catalog, JobTable& jobs,
               unsigned threads = 4)
      : store_(store), catalog_(catalog), jobs_(jobs), threads_(threads) {}

  Result<BackupRecord> Run(const BackupPlan& plan,
                           const std::atomic<bool>& cancel);

 private:
  Store& store_;
  Catalog& catalog_;
  JobTable& jobs_;
  const unsigned threads_;
};

}  // namespace ckptfs
