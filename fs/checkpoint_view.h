// The data of a checkpoint as the tree serves it, and what the tree renders
// from it (info.json, <disk>.changes, SEEK_DATA/SEEK_HOLE). Immutable once
// published: the tree, open file handles and the export manager share it
// read-only.
//
// Thread safety: values shared read-only; the functions are pure (SeekImage
// as thread-safe as the image's extents()).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "backend/image_source.h"

namespace ckptfs {

struct CheckpointDisk {
  std::string target;  // "vda"
  std::string source;  // the disk's file on the host
  uint64_t size = 0;
  uint64_t allocated = 0;
  // Allocation map over [0, size): SEEK_DATA/SEEK_HOLE answer from it.
  // Empty for stored disks, whose image answers extents() itself.
  std::vector<Extent> extents;
  // Extents changed since the base, and their <disk>.changes text.
  std::vector<std::pair<uint64_t, uint64_t>> changed;
  // Live only: exported without a base, so `changed` is its allocation; also
  // set in a checkpoint that has a base when this disk's bitmap of it was
  // missing or inconsistent (a backup then copies the disk in full).
  bool full = false;
  std::string changes;
  std::shared_ptr<ImageSource> image;  // cached stack over the source
  // Live only: the export without the cache, for a backup's bulk copy (it
  // must not evict what readers use).
  std::shared_ptr<ImageSource> raw;
};

// "<offset> <length>\n" per range.
std::string FormatChanges(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges);

struct CheckpointView {
  std::string domain;
  std::string domain_uuid;
  std::string name;
  std::string state = "live";  // live | backing-up | stored
  std::string mode;            // full | incremental
  std::string base;            // "" when none
  // Identity of libvirt's checkpoint `base` (IsRecordedCheckpoint).
  int64_t base_created = 0;  // its creation time
  std::string base_nonce;    // its CheckpointInfo::nonce
  int64_t created = 0;       // seconds since the epoch
  std::string xml;           // checkpoint XML with the domain XML
  std::string info_json;
  std::vector<std::shared_ptr<const CheckpointDisk>> disks;
};

// The allocated (not hole) ranges of an allocation map, merged: the
// `changed` of a disk exported or backed up without a base.
std::vector<std::pair<uint64_t, uint64_t>> DataRanges(
    const std::vector<Extent>& extents);

// info.json of a checkpoint.
std::string CheckpointInfoJson(const CheckpointView& view);

// SEEK_DATA / SEEK_HOLE over an allocation map (zero extents count as holes:
// they read as zeros, so skipping them is exact). kOutOfRange (ENXIO) when
// no data follows `offset` (SEEK_DATA) or offset >= size.
Result<uint64_t> SeekExtents(const std::vector<Extent>& extents, uint64_t size,
                             uint64_t offset, bool data);

// SEEK_DATA / SEEK_HOLE (as SeekExtents) over an image that answers
// extents() itself (a stored disk: its manifest). Asks for the extents of
// a window from `offset` that doubles until the answer is in it, never for
// the whole image: the cost follows the distance to the answer (in extents),
// so `cp --sparse` stays linear on a large disk. A failed extents() is
// kIoError.
Result<uint64_t> SeekImage(ImageSource& image, uint64_t offset, bool data);

}  // namespace ckptfs
