// StoredCheckpoints: the checkpoints served from the store, one view per
// complete backup in the catalog. Views (and so their cached images) are
// kept across refreshes while their backup stays. A refresh re-reads the
// catalog's backups only when Catalog::BackupsVersion says they may have
// changed: the daemon polls every few seconds, and a full read costs one
// row per backup and disk.
//
// Thread safety: thread-safe. Refreshes run one at a time, so an older
// read never replaces a newer one.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backend/store/catalog.h"
#include "backend/store/store.h"
#include "cache/block_cache.h"
#include "fs/checkpoint_view.h"

namespace ckptfs {

class StoredCheckpoints {
 public:
  StoredCheckpoints(Store& store, Catalog& catalog, BlockCache& cache)
      : store_(store), catalog_(catalog), cache_(cache) {}

  // Reloads the list of backups from the catalog if it may have changed.
  Status Refresh();
  std::vector<std::shared_ptr<const CheckpointView>> List() const;
  // Full reads of the catalog's backups so far.
  uint64_t reloads() const;

 private:
  std::shared_ptr<const CheckpointView> MakeView(const BackupRecord& r);

  Store& store_;
  Catalog& catalog_;
  BlockCache& cache_;
  std::mutex refresh_mu_;  // held by Refresh throughout, before mu_
  std::optional<uint64_t> loaded_version_;  // guarded by refresh_mu_
  mutable std::mutex mu_;
  // Guarded by mu_.
  std::map<std::string, std::shared_ptr<const CheckpointView>> views_;
  std::set<std::string> skipped_;  // ids of records with unsafe names
  uint64_t reloads_ = 0;
};

}  // namespace ckptfs
