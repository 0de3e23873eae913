// The one place image source stacks are assembled: a source (NBD export
// today, store manifests next) wrapped by the shared block cache. Tests build
// their own stacks from the same parts.
#pragma once

#include <memory>
#include <string>

#include "backend/nbd_source.h"
#include "cache/block_cache.h"

namespace ckptfs {

struct LiveDiskSource {
  std::shared_ptr<NbdSource> nbd;      // for extents and dirty bitmaps
  std::shared_ptr<ImageSource> image;  // what reads go through (cached)
};

Result<LiveDiskSource> OpenLiveDisk(const NbdOptions& options,
                                    BlockCache& cache);

}  // namespace ckptfs

namespace ckptfs {

class Store;
struct BackupRecord;
struct BackupDisk;

// A stored disk: opened from the store on first use (its manifest is read
// then, not when the tree is built), behind the shared block cache.
std::shared_ptr<ImageSource> OpenStoredDisk(Store& store,
                                            const BackupRecord& record,
                                            const BackupDisk& disk,
                                            BlockCache& cache);

}  // namespace ckptfs
