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
// then, not when the tree is built), behind the shared block cache. Read it
// through HoldImage: its manifest stays in memory only while a hold lives.
std::shared_ptr<ImageSource> OpenStoredDisk(Store& store,
                                            const BackupRecord& record,
                                            const BackupDisk& disk,
                                            BlockCache& cache);

// What an open file of `image` reads through. For a stored disk it is a
// hold: the disk's manifest, loaded at the first read, stays until the last
// hold is destroyed, then it is freed (a closed image of any of the many
// stored backups costs no memory; reopening reads it again). Any other image
// is returned as it is.
std::shared_ptr<ImageSource> HoldImage(
    const std::shared_ptr<ImageSource>& image);

}  // namespace ckptfs
