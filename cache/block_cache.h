// BlockCache: a byte-budgeted cache of fixed-size image blocks, shared by all
// images of a mount and exposed as an ImageSource decorator (Wrap).
//
// Contract:
//   - Blocks are keyed by (image id, block index); every Wrap() gives a fresh
//     image id. The last block of an image may be short; it is charged by its
//     real length. A wrapper's blocks are dropped when the wrapper dies.
//   - Resident bytes (filled blocks held by the cache) never exceed
//     capacity_bytes. Blocks are immutable and shared (shared_ptr), so a reader
//     that is copying out of an evicted block keeps it alive until it is done:
//     memory may exceed the budget transiently by blocks in flight or in use.
//   - Misses are single-flight: concurrent readers of a block that is being
//     filled wait for that one source read. A failed fill is not cached; its
//     waiters get the source's Status unchanged and the next read tries again.
//     A waiter that needed only part of a failed multi-block read (read-ahead,
//     another reader's run) retries its block alone, so a bad block fails
//     only the reads that touch it.
//   - Adjacent missing blocks are fetched with one source read (split at
//     max_request() and at a few MiB so that big misses run in parallel).
//   - Sequential reads of an image (up to 4 interleaved streams per image)
//     grow a read-ahead window (2 blocks, doubled on every trigger up to
//     readahead_blocks, never above capacity / 4) whose fills run on the
//     prefetch worker threads; a reader that needs a block being
//     prefetched waits for that fill, or runs it itself if no worker has
//     picked it up yet. Random reads never trigger read-ahead.
//   - No lock is held across source I/O.
//
// Thread safety: every method of BlockCache and of the wrappers it returns may
// be called concurrently from any thread. The wrappers keep the cache's
// internals alive, so a wrapper may outlive the BlockCache (it then works
// without read-ahead).
#pragma once

#include <cstdint>
#include <memory>

#include "backend/image_source.h"
#include "backend/status.h"

namespace ckptfs {

struct BlockCacheOptions {
  uint64_t capacity_bytes = 256ull << 20;  // budget for all images together
  uint32_t block_size = 1u << 20;          // multiple of 4096
  // Shards of the index, each with its own lock and LRU list and an equal part
  // of the budget. Reduced so that each shard holds at least 8 blocks, since a
  // smaller shard would evict hot blocks by hash collision.
  unsigned shards = 16;
  unsigned readahead_blocks = 16;  // max read-ahead window in blocks; 0: off
  unsigned prefetch_threads = 4;   // workers for read-ahead; 0: no read-ahead
};

struct BlockCacheStats {
  uint64_t hits = 0;    // block lookups served by a resident block
  uint64_t misses = 0;  // block lookups that started a fill
  uint64_t resident_bytes = 0;
  uint64_t inflight_bytes = 0;  // claimed by fills not yet finished
  uint64_t capacity_bytes = 0;
  uint64_t fills = 0;            // source reads issued (demand and read-ahead)
  uint64_t evictions = 0;        // blocks evicted to stay within the budget
  uint64_t readahead_fills = 0;  // of `fills`, those issued by read-ahead
  uint64_t fill_errors = 0;      // of `fills`, those that failed
  // Blocks read-ahead left out because half the budget was in flight.
  uint64_t readahead_skipped = 0;
  uint64_t waits = 0;  // block lookups that joined a fill already in flight
};

class BlockCache {
 public:
  // Checks options a user may have configured; the message says what to fix.
  static Status ValidateOptions(const BlockCacheOptions& options);

  // REQUIRES: ValidateOptions(options).ok(); invalid values are clamped
  // (block_size rounded up to 4 KiB, shards at least 1).
  explicit BlockCache(BlockCacheOptions options);
  // Stops and joins the prefetch workers; queued read-ahead is discarded.
  // REQUIRES: no wrapped source is being read any more.
  ~BlockCache();

  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // Returns an ImageSource that serves pread() through the cache. size(),
  // extents() and max_request() are forwarded to `source`;
  // preferred_block_size() is the cache's block size. REQUIRES: source is
  // non-null and its size() is constant.
  std::shared_ptr<ImageSource> Wrap(std::shared_ptr<ImageSource> source);

  BlockCacheStats stats() const;

  // The options in effect, after clamping.
  const BlockCacheOptions& options() const;

 private:
  class Impl;
  class CachedImage;

  std::shared_ptr<Impl> impl_;
};

}  // namespace ckptfs
