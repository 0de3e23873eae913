// The block cache's internals, shared by its files (block_cache.cc: the read
// path and the index; block_fill.cc: fills and the worker pool;
// readahead.cc: stream tracking and read-ahead). Not for use outside cache/.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <memory>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "backend/image_source.h"
#include "backend/status.h"
#include "cache/block_cache.h"
#include "cache/buffer_pool.h"
#include "cache/thread_annotations.h"

namespace ckptfs {
namespace cache_internal {

inline constexpr uint32_t kPageSize = 4096;
// Upper bound of one fill. Larger misses are split so that their pieces run
// in parallel on the prefetch workers.
inline constexpr uint64_t kMaxFillBytes = 4u << 20;
// Free block buffers kept for reuse (beyond the budget's resident blocks), at
// least: a read-ahead batch evicts and refills up to readahead_blocks at once,
// and with fewer kept every block of a streaming read beyond them would be a
// fresh mapping that page-faults on first touch (7% of the daemon's CPU on a
// cold read of a stored image with 4).
inline constexpr size_t kMinPoolBlocks = 4;
inline constexpr uint64_t kMinBlocksPerShard = 8;
// Reads of a block by a reader whose waits keep failing on other readers' runs
// that include a failing block; bounds the retries, see Read.
inline constexpr int kMaxAttempts = 8;
// Sequential streams tracked per image, so that interleaved sequential
// readers (or a FUSE thread pool delivering reads out of order) each keep
// their own read-ahead.
inline constexpr size_t kMaxStreams = 4;

// Immutable block contents; its length is implied by the block's position.
using BlockData = std::shared_ptr<const std::byte[]>;

struct BlockKey {
  uint64_t image = 0;
  uint64_t block = 0;
  bool operator==(const BlockKey&) const = default;
};

inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Mixed, so that the consecutive blocks of one image spread over all shards.
inline uint64_t HashKey(const BlockKey& key) {
  return Mix64(key.image * 0x9e3779b97f4a7c15ULL + key.block);
}

struct BlockKeyHash {
  size_t operator()(const BlockKey& key) const { return HashKey(key); }
};

struct Stream {
  uint64_t last_offset = 0;  // start of the stream's latest read
  uint64_t end = 0;          // furthest byte read (exclusive)
  uint64_t window = 0;       // read-ahead window in blocks; 0 until sequential
  uint64_t next_block = 0;   // first block not yet scheduled for read-ahead
  uint64_t last_used = 0;    // for replacement; 0: slot unused
};

// One wrapped image: its source and its access pattern. Shared by the
// wrapper and by the fills of its blocks, which may outlive the wrapper.
struct Image {
  Image(uint64_t image_id, std::shared_ptr<ImageSource> src,
        uint32_t block_size)
      : id(image_id),
        source(std::move(src)),
        size(source->size()),
        num_blocks((size + block_size - 1) / block_size),
        max_request(source->max_request()) {}

  const uint64_t id;
  const std::shared_ptr<ImageSource> source;
  const uint64_t size;
  const uint64_t num_blocks;
  const uint32_t max_request;
  // Set when the wrapper dies: queued read-ahead for it is then skipped.
  std::atomic<bool> dropped{false};

  Mutex mu;
  std::array<Stream, kMaxStreams> streams GUARDED_BY(mu);
  uint64_t tick GUARDED_BY(mu) = 0;
};

// One source read that fills a run of adjacent blocks; the unit of
// single-flight. Index entries of the run's blocks point at it while it is in
// flight, and waiters block on `cv` until `done`.
//
// `started` says who runs it: a fill is created started (owned by the thread
// that claims its blocks) and becomes unstarted when handed to the workers;
// then whoever first flips it back (a worker, or a reader that needs one of
// its blocks) runs it, so a reader never waits behind a queue.
struct Fill {
  Fill(std::shared_ptr<Image> img, uint64_t first, bool is_readahead)
      : image(std::move(img)), first_block(first), readahead(is_readahead) {}

  const std::shared_ptr<Image> image;
  const uint64_t first_block;
  // Grown by the creator while it claims blocks; constant once the fill is
  // handed out (the hand-out through `started` or the queue orders it).
  uint32_t num_blocks = 0;
  const bool readahead;
  std::atomic<bool> started{true};

  Mutex mu;
  std::condition_variable cv;  // signalled on done and on hand-out
  bool done GUARDED_BY(mu) = false;
  Status status GUARDED_BY(mu);
  std::vector<BlockData> blocks GUARDED_BY(mu);  // one per block when ok
};

// An index entry: either filling (fill set) or resident (data set, in LRU).
struct Entry {
  BlockData data;
  std::shared_ptr<Fill> fill;
  uint32_t index = 0;  // position of the block in `fill`
  uint32_t bytes = 0;  // charged length, from claim until dropped
  std::list<BlockKey>::iterator lru;
};

struct alignas(64) Shard {
  Mutex mu;
  std::unordered_map<BlockKey, Entry, BlockKeyHash> map GUARDED_BY(mu);
  std::list<BlockKey> lru GUARDED_BY(mu);  // resident blocks, most recent first
  uint64_t usage GUARDED_BY(mu) = 0;
  uint64_t inflight GUARDED_BY(mu) = 0;  // of usage: claimed, being read
  uint64_t hits GUARDED_BY(mu) = 0;
  uint64_t misses GUARDED_BY(mu) = 0;
  uint64_t waits GUARDED_BY(mu) = 0;
  uint64_t evictions GUARDED_BY(mu) = 0;
  uint64_t readahead_skipped GUARDED_BY(mu) = 0;
};

// Reads buf at offset in pieces the source accepts.
inline Status ReadSource(const Image& image, std::span<std::byte> buf,
                         uint64_t offset) {
  const size_t step = image.max_request == 0 ? buf.size() : image.max_request;
  for (size_t done = 0; done < buf.size();) {
    const size_t n = std::min(step, buf.size() - done);
    RETURN_IF_ERROR(image.source->pread(buf.subspan(done, n), offset + done));
    done += n;
  }
  return Status::Ok();
}

inline BlockCacheOptions Normalize(BlockCacheOptions options) {
  if (options.block_size == 0) options.block_size = kPageSize;
  if (options.block_size % kPageSize != 0) {
    const uint32_t max_block = UINT32_MAX / kPageSize * kPageSize;
    options.block_size = options.block_size > max_block
                             ? max_block
                             : (options.block_size / kPageSize + 1) * kPageSize;
  }
  const uint64_t max_shards = std::max<uint64_t>(
      1, options.capacity_bytes / (options.block_size * kMinBlocksPerShard));
  options.shards = static_cast<unsigned>(
      std::clamp<uint64_t>(options.shards, 1, max_shards));
  return options;
}

}  // namespace cache_internal

using cache_internal::BlockData;
using cache_internal::BlockKey;
using cache_internal::BufferPool;
using cache_internal::Entry;
using cache_internal::Fill;
using cache_internal::HashKey;
using cache_internal::Image;
using cache_internal::kMaxAttempts;
using cache_internal::kMaxFillBytes;
using cache_internal::kMaxStreams;
using cache_internal::kMinPoolBlocks;
using cache_internal::kPageSize;
using cache_internal::Mutex;
using cache_internal::MutexLock;
using cache_internal::Normalize;
using cache_internal::ReadSource;
using cache_internal::Shard;
using cache_internal::Stream;

class BlockCache::Impl {
 public:
  explicit Impl(const BlockCacheOptions& options)
      : options_(Normalize(options)),
        block_size_(options_.block_size),
        num_shards_(options_.shards),
        shard_capacity_(options_.capacity_bytes / num_shards_),
        max_window_(options_.prefetch_threads == 0
                        ? 0
                        : std::min<uint64_t>(
                              options_.readahead_blocks,
                              options_.capacity_bytes / 4 / block_size_)),
        shards_(new Shard[num_shards_]),
        pool_(std::make_shared<BufferPool>(
            block_size_,
            std::max<size_t>(kMinPoolBlocks, options_.readahead_blocks / 2))) {
    workers_.reserve(options_.prefetch_threads);
    for (unsigned i = 0; i < options_.prefetch_threads; ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
  }

  ~Impl() { Shutdown(); }

  const BlockCacheOptions& options() const { return options_; }
  uint32_t block_size() const { return options_.block_size; }

  std::shared_ptr<Image> NewImage(std::shared_ptr<ImageSource> source) {
    return std::make_shared<Image>(next_image_id_.fetch_add(1),
                                   std::move(source), block_size_);
  }

  // Stops the workers and fails the fills they had not started. Idempotent.
  // REQUIRES: called from one thread at a time, never from a worker.
  void Shutdown() EXCLUDES(queue_mu_) {
    std::deque<std::shared_ptr<Fill>> orphans;
    {
      MutexLock lock(queue_mu_);
      stopping_ = true;
      stopped_.store(true, std::memory_order_relaxed);
      orphans.swap(queue_);
    }
    queue_cv_.notify_all();
    for (std::thread& worker : workers_) {
      if (worker.joinable()) worker.join();
    }
    for (const std::shared_ptr<Fill>& fill : orphans) {
      if (!fill->started.exchange(true)) {
        Finish(*fill,
               Status(Code::kCancelled, "block cache shut down before read"),
               {});
      }
    }
  }

  Status Read(const std::shared_ptr<Image>& image, std::span<std::byte> buf,
              uint64_t offset);

  // Forgets every block of the image, resident or in flight (a fill whose
  // entries are gone publishes nothing).
  void Drop(uint64_t image_id) {
    for (unsigned s = 0; s < num_shards_; ++s) {
      std::vector<BlockData> garbage;  // freed after unlocking
      Shard& shard = shards_[s];
      MutexLock lock(shard.mu);
      for (auto it = shard.map.begin(); it != shard.map.end();) {
        if (it->first.image != image_id) {
          ++it;
          continue;
        }
        // Resident or in flight, its bytes are charged.
        shard.usage -= it->second.bytes;
        if (!it->second.data) shard.inflight -= it->second.bytes;
        if (it->second.data) {
          shard.lru.erase(it->second.lru);
          garbage.push_back(std::move(it->second.data));
        }
        it = shard.map.erase(it);
      }
    }
  }

  BlockCacheStats Stats() const {
    BlockCacheStats stats;
    for (unsigned s = 0; s < num_shards_; ++s) {
      Shard& shard = shards_[s];
      MutexLock lock(shard.mu);
      stats.hits += shard.hits;
      stats.misses += shard.misses;
      stats.waits += shard.waits;
      stats.evictions += shard.evictions;
      stats.resident_bytes += shard.usage - shard.inflight;
      stats.inflight_bytes += shard.inflight;
      stats.readahead_skipped += shard.readahead_skipped;
    }
    stats.capacity_bytes = options_.capacity_bytes;
    stats.fills = fills_.load(std::memory_order_relaxed);
    stats.readahead_fills = readahead_fills_.load(std::memory_order_relaxed);
    stats.fill_errors = fill_errors_.load(std::memory_order_relaxed);
    return stats;
  }

 private:
  // A block the reader needs: in hand, or to be taken from a fill.
  struct Slot {
    BlockData data;
    std::shared_ptr<Fill> fill;
    uint32_t index = 0;
  };

  Shard& ShardFor(const BlockKey& key) const {
    // High bits: the map buckets use the whole hash modulo a prime.
    return shards_[(HashKey(key) >> 32) % num_shards_];
  }

  uint64_t BlockLength(const Image& image, uint64_t block) const {
    return std::min<uint64_t>(block_size_, image.size - block * block_size_);
  }

  uint64_t MaxFillBlocks(const Image& image) const {
    const uint64_t limit =
        image.max_request == 0
            ? kMaxFillBytes
            : std::min<uint64_t>(kMaxFillBytes, image.max_request);
    return std::max<uint64_t>(1, limit / block_size_);
  }

  // Adds `block` to the last fill of `fills` if it extends it, else to a new
  // fill. Returns the block's index in its fill.
  static uint32_t AddToRun(std::vector<std::shared_ptr<Fill>>& fills,
                           const std::shared_ptr<Image>& image, uint64_t block,
                           uint64_t max_blocks, bool readahead) {
    if (fills.empty() ||
        fills.back()->first_block + fills.back()->num_blocks != block ||
        fills.back()->num_blocks >= max_blocks) {
      fills.push_back(std::make_shared<Fill>(image, block, readahead));
    }
    return fills.back()->num_blocks++;
  }

  Slot Lookup(const std::shared_ptr<Image>& image, uint64_t block,
              uint64_t max_fill_blocks,
              std::vector<std::shared_ptr<Fill>>& owned);
  void RunOwned(const std::vector<std::shared_ptr<Fill>>& owned);
  std::pair<uint64_t, uint64_t> TrackAccess(Image& image, uint64_t offset,
                                            uint64_t length);
  void ReadAhead(const std::shared_ptr<Image>& image, uint64_t begin,
                 uint64_t end);
  Result<BlockData> Await(Fill& fill, uint32_t index);
  void Reserve(Shard& shard, Entry& entry, uint64_t bytes,
               std::vector<BlockData>& garbage) REQUIRES(shard.mu);
  void EvictOverBudget(Shard& shard, std::vector<BlockData>& garbage)
      REQUIRES(shard.mu);
  bool Submit(const std::shared_ptr<Fill>& fill, bool front)
      EXCLUDES(queue_mu_);
  void WorkerLoop() EXCLUDES(queue_mu_);
  void Run(Fill& fill);
  void Finish(Fill& fill, Status status, std::vector<BlockData> blocks);

  const BlockCacheOptions options_;
  const uint64_t block_size_;
  const unsigned num_shards_;
  const uint64_t shard_capacity_;
  const uint64_t max_window_;  // blocks; 0: read-ahead off
  const std::unique_ptr<Shard[]> shards_;
  const std::shared_ptr<BufferPool> pool_;

  std::atomic<uint64_t> next_image_id_{1};
  std::atomic<uint64_t> fills_{0};
  std::atomic<uint64_t> readahead_fills_{0};
  std::atomic<uint64_t> fill_errors_{0};

  Mutex queue_mu_;
  std::condition_variable queue_cv_;
  // Demand fills go to the front, read-ahead to the back.
  std::deque<std::shared_ptr<Fill>> queue_ GUARDED_BY(queue_mu_);
  bool stopping_ GUARDED_BY(queue_mu_) = false;
  // Mirrors stopping_ for Read, which skips read-ahead without taking the lock.
  std::atomic<bool> stopped_{false};
  std::vector<std::thread> workers_;  // set in the constructor
};

}  // namespace ckptfs
