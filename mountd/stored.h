// StoredCheckpoints: the checkpoints served from the store, one view per
// complete backup in the catalog. Views (and so their cached images) are
// kept across refreshes while their backup stays.
//
// Thread safety: thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "backend/store/store.h"
#include "cache/block_cache.h"
#include "mountd/catalog.h"
#include "mountd/checkpoint.h"

namespace ckptfs {

class StoredCheckpoints {
 public:
  StoredCheckpoints(Store& store, Catalog& catalog, BlockCache& cache)
      : store_(store), catalog_(catalog), cache_(cache) {}

  // Reloads the list of backups from the catalog.
  Status Refresh();
  std::vector<std::shared_ptr<const CheckpointView>> List() const;

 private:
  std::shared_ptr<const CheckpointView> MakeView(const BackupRecord& r);

  Store& store_;
  Catalog& catalog_;
  BlockCache& cache_;
  mutable std::mutex mu_;
  std::map<std::string, std::shared_ptr<const CheckpointView>> views_;
  std::set<std::string> skipped_;  // ids of records with unsafe names
};

}  // namespace ckptfs
