#include "cache/block_cache.h"

#include <sys/mman.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <list>
#include <mutex>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

// Clang thread-safety annotations; no-ops elsewhere. Checked with
// clang++ -Wthread-safety, which needs the annotated Mutex below because
// libstdc++'s std::mutex carries no annotations.
#if defined(__clang__)
#define CKPTFS_TSA(x) __attribute__((x))
#else
#define CKPTFS_TSA(x)
#endif
#define CAPABILITY(x) CKPTFS_TSA(capability(x))
#define SCOPED_CAPABILITY CKPTFS_TSA(scoped_lockable)
#define GUARDED_BY(x) CKPTFS_TSA(guarded_by(x))
#define ACQUIRE(...) CKPTFS_TSA(acquire_capability(__VA_ARGS__))
#define RELEASE(...) CKPTFS_TSA(release_capability(__VA_ARGS__))
#define REQUIRES(...) CKPTFS_TSA(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) CKPTFS_TSA(locks_excluded(__VA_ARGS__))

namespace ckptfs {
namespace {

constexpr uint32_t kPageSize = 4096;
// Upper bound of one fill. Larger misses are split so that their pieces run
// in parallel on the prefetch workers.
constexpr uint64_t kMaxFillBytes = 4u << 20;
// Free block buffers kept for reuse (beyond the budget's resident blocks), at
// least: a read-ahead batch evicts and refills up to readahead_blocks at once,
// and with fewer kept every block of a streaming read beyond them would be a
// fresh mapping that page-faults on first touch (7% of the daemon's CPU on a
// cold read of a stored image with 4).
constexpr size_t kMinPoolBlocks = 4;
constexpr uint64_t kMinBlocksPerShard = 8;
// Reads of a block by a reader whose waits keep failing on other readers' runs
// that include a failing block; bounds the retries, see Read.
constexpr int kMaxAttempts = 8;
// Sequential streams tracked per image, so that interleaved sequential
// readers (or a FUSE thread pool delivering reads out of order) each keep
// their own read-ahead.
constexpr size_t kMaxStreams = 4;

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mu_.lock(); }
  void Unlock() RELEASE() { mu_.unlock(); }
  // One wait on cv; the caller re-checks its condition in a loop (so the
  // analysis sees the condition read with the lock held).
  void Wait(std::condition_variable& cv) REQUIRES(this) {
    std::unique_lock<std::mutex> lock(mu_, std::adopt_lock);
    cv.wait(lock);
    lock.release();
  }

 private:
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.Lock(); }
  ~MutexLock() RELEASE() { mu_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// Immutable block contents; its length is implied by the block's position.
using BlockData = std::shared_ptr<const std::byte[]>;

// Recycles full-size block buffers. A cold sequential read evicts a block for
// every block it fills; reusing the evicted buffer saves an allocation whose
// first touch page-faults 256 times per MiB, and keeps the memory the cache
// holds at its budget instead of at whatever the allocator retains. Buffers
// are mmap'ed so those beyond the small free list go back to the system.
//
// Thread safety: thread-safe; buffers may be released on any thread, also
// after the cache is gone (deleters hold the pool).
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  BufferPool(size_t block_size, size_t max_free)
      : block_size_(block_size), max_free_(max_free) {}
  ~BufferPool() {
    for (void* p : free_) munmap(p, block_size_);
  }

  // A writable buffer of n bytes, freed (or recycled) with its last owner.
  std::shared_ptr<std::byte[]> Get(size_t n) {
    if (n != block_size_) {
      return std::make_shared_for_overwrite<std::byte[]>(n);
    }
    void* p = nullptr;
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        p = free_.back();
        free_.pop_back();
      }
    }
    if (p == nullptr) {
      p = mmap(nullptr, block_size_, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
    }
    auto self = shared_from_this();
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p),
                                        [self](std::byte* b) { self->Put(b); });
  }

 private:
  void Put(std::byte* b) {
    {
      std::lock_guard lock(mu_);
      if (free_.size() < max_free_) {
        free_.push_back(b);
        return;
      }
    }
    munmap(b, block_size_);
  }

  const size_t block_size_;
  const size_t max_free_;
  std::mutex mu_;
  std::vector<void*> free_;  // guarded by mu_
};

struct BlockKey {
  uint64_t image = 0;
  uint64_t block = 0;
  bool operator==(const BlockKey&) const = default;
};

uint64_t Mix64(uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdULL;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ULL;
  x ^= x >> 33;
  return x;
}

// Mixed, so that the consecutive blocks of one image spread over all shards.
uint64_t HashKey(const BlockKey& key) {
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
Status ReadSource(const Image& image, std::span<std::byte> buf,
                  uint64_t offset) {
  const size_t step = image.max_request == 0 ? buf.size() : image.max_request;
  for (size_t done = 0; done < buf.size();) {
    const size_t n = std::min(step, buf.size() - done);
    RETURN_IF_ERROR(image.source->pread(buf.subspan(done, n), offset + done));
    done += n;
  }
  return Status::Ok();
}

BlockCacheOptions Normalize(BlockCacheOptions options) {
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

}  // namespace

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

Status BlockCache::Impl::Read(const std::shared_ptr<Image>& image,
                              std::span<std::byte> buf, uint64_t offset) {
  if (buf.empty()) return Status::Ok();
  if (offset > image->size || buf.size() > image->size - offset) {
    return InvalidArgument("read of " + std::to_string(buf.size()) +
                           " bytes at " + std::to_string(offset) +
                           " is beyond the end of the image (" +
                           std::to_string(image->size) + " bytes)");
  }
  const uint64_t first = offset / block_size_;
  const uint64_t last = (offset + buf.size() - 1) / block_size_;

  // Look every block up; claim the missing ones as runs of adjacent blocks.
  std::vector<Slot> slots(last - first + 1);
  std::vector<std::shared_ptr<Fill>> owned;
  for (uint64_t b = first; b <= last; ++b) {
    slots[b - first] = Lookup(image, b, MaxFillBlocks(*image), owned);
  }

  // Schedule read-ahead before our own I/O so that both overlap.
  const auto [ra_begin, ra_end] = TrackAccess(*image, offset, buf.size());
  if (ra_begin < ra_end && !stopped_.load(std::memory_order_relaxed)) {
    ReadAhead(image, ra_begin, ra_end);
  }

  RunOwned(owned);

  for (uint64_t b = first; b <= last; ++b) {
    Slot& slot = slots[b - first];
    for (int attempt = 1; !slot.data; ++attempt) {
      Result<BlockData> data = Await(*slot.fill, slot.index);
      if (data.ok()) {
        slot.data = std::move(data).value();
        break;
      }
      // A failed read that only covered blocks we asked for is our error. One
      // that also covered others (read-ahead, another reader's run) may have
      // failed on a block we do not need: retry this block alone.
      const Fill& fill = *slot.fill;
      const bool ours = fill.first_block >= first &&
                        fill.first_block + fill.num_blocks - 1 <= last;
      if (ours || attempt == kMaxAttempts) return data.status();
      std::vector<std::shared_ptr<Fill>> retry;
      slot = Lookup(image, b, 1, retry);
      RunOwned(retry);
    }
  }

  size_t copied = 0;
  for (uint64_t b = first; b <= last; ++b) {
    const uint64_t in_block = offset + copied - b * block_size_;
    const size_t n = std::min<uint64_t>(buf.size() - copied,
                                        BlockLength(*image, b) - in_block);
    std::memcpy(buf.data() + copied, slots[b - first].data.get() + in_block, n);
    copied += n;
  }
  return Status::Ok();
}

// Charges a claimed block to its shard before it is read, so resident plus
// in-flight bytes stay within the budget (read-ahead would otherwise hold a
// window of blocks beyond it), evicting least recently used blocks.
void BlockCache::Impl::Reserve(Shard& shard, Entry& entry, uint64_t bytes,
                               std::vector<BlockData>& garbage) {
  entry.bytes = static_cast<uint32_t>(bytes);
  shard.usage += bytes;
  shard.inflight += bytes;
  EvictOverBudget(shard, garbage);
}

// Evicts least recently used resident blocks while the shard is over its
// budget (in-flight blocks are not in the LRU and stay).
void BlockCache::Impl::EvictOverBudget(Shard& shard,
                                       std::vector<BlockData>& garbage) {
  while (shard.usage > shard_capacity_ && !shard.lru.empty()) {
    auto victim = shard.map.find(shard.lru.back());
    shard.lru.pop_back();
    shard.usage -= victim->second.bytes;
    garbage.push_back(std::move(victim->second.data));
    shard.map.erase(victim);
    ++shard.evictions;
  }
}

// Finds block `block` of the image: resident (data), in flight (fill to
// await), or missing, in which case it is claimed into `owned`, extending the
// last run there when adjacent and shorter than max_fill_blocks.
BlockCache::Impl::Slot BlockCache::Impl::Lookup(
    const std::shared_ptr<Image>& image, uint64_t block,
    uint64_t max_fill_blocks, std::vector<std::shared_ptr<Fill>>& owned) {
  Slot slot;
  const BlockKey key{image->id, block};
  Shard& shard = ShardFor(key);
  std::vector<BlockData> garbage;  // evicted; freed after unlocking
  MutexLock lock(shard.mu);
  auto [it, inserted] = shard.map.try_emplace(key);
  Entry& entry = it->second;
  if (!inserted && entry.data) {
    ++shard.hits;
    shard.lru.splice(shard.lru.begin(), shard.lru, entry.lru);
    slot.data = entry.data;
    return slot;
  }
  if (inserted) {
    ++shard.misses;
    entry.index = AddToRun(owned, image, block, max_fill_blocks, false);
    entry.fill = owned.back();
    Reserve(shard, entry, BlockLength(*image, block), garbage);
  } else {
    ++shard.waits;
  }
  slot.fill = entry.fill;
  slot.index = entry.index;
  return slot;
}

// Runs the fills a reader claimed: all but the first go to the workers (so a
// large miss is read in parallel), the first runs here, and then so does
// every one no worker has picked up yet. Never waits, so a reader cannot
// block others while it owns unfinished fills.
void BlockCache::Impl::RunOwned(
    const std::vector<std::shared_ptr<Fill>>& owned) {
  std::vector<char> queued(owned.size(), false);
  for (size_t i = 1; i < owned.size(); ++i) {
    queued[i] = Submit(owned[i], /*front=*/true);
  }
  for (size_t i = 0; i < owned.size(); ++i) {
    if (!queued[i] || !owned[i]->started.exchange(true)) Run(*owned[i]);
  }
}

// Records a read in the image's streams and returns the blocks [begin, end)
// to read ahead (empty for random reads and while enough is in flight).
//
// A read continues a stream if it starts where the stream ended, at the next
// block, or elsewhere in the stream's last block; the last two tolerate reads
// that a FUSE thread pool delivers slightly out of order. A stream's window
// starts at 2 blocks and doubles on every trigger up to max_window_; a trigger
// happens once less than half a window is scheduled beyond the furthest block
// read, so read-ahead proceeds in batches of about half a window.
std::pair<uint64_t, uint64_t> BlockCache::Impl::TrackAccess(Image& image,
                                                            uint64_t offset,
                                                            uint64_t length) {
  const uint64_t end = offset + length;
  const uint64_t first = offset / block_size_;
  MutexLock lock(image.mu);
  const uint64_t tick = ++image.tick;
  Stream* stream = nullptr;
  for (Stream& s : image.streams) {
    if (s.last_used == 0) continue;
    const uint64_t stream_block = (s.end - 1) / block_size_;
    if (offset == s.end || first == stream_block + 1 ||
        (first == stream_block && offset != s.last_offset)) {
      stream = &s;
      break;
    }
  }
  if (stream == nullptr) {
    // Not sequential: start a stream in the least recently used slot.
    Stream& victim =
        *std::min_element(image.streams.begin(), image.streams.end(),
                          [](const Stream& a, const Stream& b) {
                            return a.last_used < b.last_used;
                          });
    victim = Stream{offset, end, 0, 0, tick};
    return {0, 0};
  }
  stream->last_offset = offset;
  stream->end = std::max(stream->end, end);
  stream->last_used = tick;
  if (max_window_ == 0) return {0, 0};

  const uint64_t furthest = (stream->end - 1) / block_size_;
  if (stream->window == 0) stream->window = std::min<uint64_t>(2, max_window_);
  stream->next_block = std::max(stream->next_block, furthest + 1);
  const uint64_t ahead = stream->next_block - furthest - 1;
  if (ahead * 2 >= stream->window) return {0, 0};
  const uint64_t begin = stream->next_block;
  const uint64_t ra_end =
      std::min(furthest + 1 + stream->window, image.num_blocks);
  stream->window = std::min(stream->window * 2, max_window_);
  if (begin >= ra_end) return {0, 0};
  stream->next_block = ra_end;
  return {begin, ra_end};
}

// Claims the missing blocks of [begin, end) and queues their fills, split so
// that every worker gets a share. A block whose shard already has half its
// budget in flight is skipped: in-flight blocks cannot be evicted, so with
// many streams read-ahead alone would otherwise push the shard past its
// budget (peak RSS 30 MiB over a 64 MiB cache in test_load). Skipping costs
// nothing but a demand miss later.
void BlockCache::Impl::ReadAhead(const std::shared_ptr<Image>& image,
                                 uint64_t begin, uint64_t end) {
  const uint64_t threads = std::max(1u, options_.prefetch_threads);
  const uint64_t per_fill = std::clamp<uint64_t>(
      (end - begin + threads - 1) / threads, 1, MaxFillBlocks(*image));
  std::vector<std::shared_ptr<Fill>> fills;
  for (uint64_t b = begin; b < end; ++b) {
    const BlockKey key{image->id, b};
    Shard& shard = ShardFor(key);
    std::vector<BlockData> garbage;  // evicted; freed after unlocking
    MutexLock lock(shard.mu);
    if (shard.map.contains(key)) continue;  // resident or in flight
    if (shard.inflight + BlockLength(*image, b) > shard_capacity_ / 2) {
      ++shard.readahead_skipped;
      continue;
    }
    auto it = shard.map.try_emplace(key).first;
    it->second.index = AddToRun(fills, image, b, per_fill, true);
    it->second.fill = fills.back();
    Reserve(shard, it->second, BlockLength(*image, b), garbage);
  }
  for (const std::shared_ptr<Fill>& fill : fills) {
    if (!Submit(fill, /*front=*/false)) {
      Finish(*fill, Status(Code::kCancelled, "block cache is shut down"), {});
    }
  }
}

// Waits until `fill` is done, running it here if it is still queued.
Result<BlockData> BlockCache::Impl::Await(Fill& fill, uint32_t index) {
  for (;;) {
    if (!fill.started.exchange(true)) Run(fill);
    MutexLock lock(fill.mu);
    while (!fill.done && fill.started.load()) fill.mu.Wait(fill.cv);
    if (fill.done) {
      if (!fill.status.ok()) return fill.status;
      return fill.blocks[index];
    }
    // Handed to the workers while we waited: try to run it ourselves.
  }
}

// Queues a fill its creator owns. Returns false (the creator still owns it)
// once the cache is shutting down or has no workers.
bool BlockCache::Impl::Submit(const std::shared_ptr<Fill>& fill, bool front) {
  {
    MutexLock lock(queue_mu_);
    if (stopping_ || workers_.empty()) return false;
    {
      // Under fill->mu so that a waiter cannot miss the wake-up below.
      MutexLock fill_lock(fill->mu);
      fill->started.store(false);
    }
    if (front) {
      queue_.push_front(fill);
    } else {
      queue_.push_back(fill);
    }
  }
  queue_cv_.notify_one();
  fill->cv.notify_all();
  return true;
}

void BlockCache::Impl::WorkerLoop() {
  for (;;) {
    std::shared_ptr<Fill> fill;
    {
      MutexLock lock(queue_mu_);
      while (!stopping_ && queue_.empty()) queue_mu_.Wait(queue_cv_);
      if (stopping_) return;
      fill = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!fill->started.exchange(true)) Run(*fill);
  }
}

// Performs the source read of a fill. REQUIRES: the caller flipped `started`
// (it alone runs the fill) and holds a reference to it.
void BlockCache::Impl::Run(Fill& fill) {
  const Image& image = *fill.image;
  if (fill.readahead && image.dropped.load()) {
    Finish(fill, Status(Code::kCancelled, "image closed before read-ahead"),
           {});
    return;
  }
  const uint64_t offset = fill.first_block * block_size_;
  const uint64_t length =
      std::min<uint64_t>(fill.num_blocks * block_size_, image.size - offset);
  fills_.fetch_add(1, std::memory_order_relaxed);
  if (fill.readahead) readahead_fills_.fetch_add(1, std::memory_order_relaxed);

  Status status;
  std::vector<BlockData> blocks;
  try {
    if (fill.num_blocks == 1) {
      auto data = pool_->Get(length);
      status = ReadSource(image, {data.get(), length}, offset);
      if (status.ok()) blocks.push_back(std::move(data));
    } else {
      // One scatter read straight into the blocks: they must be separate
      // allocations, or one resident block would pin its whole run in memory
      // outside the budget. The fill never exceeds max_request().
      blocks.reserve(fill.num_blocks);
      std::vector<std::span<std::byte>> spans;
      spans.reserve(fill.num_blocks);
      for (uint64_t pos = 0; pos < length; pos += block_size_) {
        const uint64_t n = std::min<uint64_t>(block_size_, length - pos);
        auto data = pool_->Get(n);
        spans.emplace_back(data.get(), n);
        blocks.push_back(std::move(data));
      }
      status = image.source->preadv(spans, offset);
      if (!status.ok()) blocks.clear();
    }
  } catch (const std::bad_alloc&) {
    // Fail this read instead of leaving waiters blocked forever.
    blocks.clear();
    status = Status(Code::kNoSpace,
                    "out of memory while filling the block cache; lower the "
                    "cache size or block size");
  }
  if (!status.ok()) fill_errors_.fetch_add(1, std::memory_order_relaxed);
  Finish(fill, std::move(status), std::move(blocks));
}

// Publishes a fill's outcome: resident blocks on success, no entries on
// failure (so the next read retries), then wakes the waiters.
void BlockCache::Impl::Finish(Fill& fill, Status status,
                              std::vector<BlockData> blocks) {
  const Image& image = *fill.image;
  std::vector<BlockData> garbage;  // evicted; freed after unlocking
  for (uint32_t i = 0; i < fill.num_blocks; ++i) {
    const BlockKey key{image.id, fill.first_block + i};
    Shard& shard = ShardFor(key);
    MutexLock lock(shard.mu);
    auto it = shard.map.find(key);
    // Gone or replaced: the image was dropped.
    if (it == shard.map.end() || it->second.fill.get() != &fill) continue;
    shard.inflight -= it->second.bytes;
    if (!status.ok()) {
      shard.usage -= it->second.bytes;
      shard.map.erase(it);
      continue;
    }
    // Its bytes were charged when the fill was claimed; a large read may
    // have claimed more than the budget while nothing was evictable.
    Entry& entry = it->second;
    entry.fill.reset();  // the caller still holds the fill
    entry.data = blocks[i];
    shard.lru.push_front(key);
    entry.lru = shard.lru.begin();
    EvictOverBudget(shard, garbage);
  }
  {
    MutexLock lock(fill.mu);
    fill.done = true;
    fill.status = std::move(status);
    fill.blocks = std::move(blocks);
  }
  fill.cv.notify_all();
}

class BlockCache::CachedImage final : public ImageSource {
 public:
  CachedImage(std::shared_ptr<Impl> impl, std::shared_ptr<Image> image)
      : impl_(std::move(impl)), image_(std::move(image)) {}

  ~CachedImage() override {
    image_->dropped.store(true);
    impl_->Drop(image_->id);
  }

  uint64_t size() const override { return image_->size; }

  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    return impl_->Read(image_, buf, offset);
  }

  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override {
    return image_->source->extents(offset, length);
  }

  // Whole blocks are what the cache serves without partial copies.
  uint32_t preferred_block_size() const override { return impl_->block_size(); }

  uint32_t max_request() const override {
    return image_->source->max_request();
  }

 private:
  const std::shared_ptr<Impl> impl_;
  const std::shared_ptr<Image> image_;
};

Status BlockCache::ValidateOptions(const BlockCacheOptions& options) {
  if (options.block_size == 0 || options.block_size % kPageSize != 0) {
    return InvalidArgument("cache block size " +
                           std::to_string(options.block_size) +
                           " is not a positive multiple of 4096; use e.g. "
                           "1048576");
  }
  if (options.shards == 0) {
    return InvalidArgument("cache shards must be at least 1");
  }
  if (options.capacity_bytes < options.block_size) {
    return InvalidArgument(
        "cache capacity " + std::to_string(options.capacity_bytes) +
        " bytes is less than one block (" + std::to_string(options.block_size) +
        " bytes); raise the capacity or lower the block size");
  }
  return Status::Ok();
}

BlockCache::BlockCache(BlockCacheOptions options)
    : impl_(std::make_shared<Impl>(options)) {}

BlockCache::~BlockCache() { impl_->Shutdown(); }

std::shared_ptr<ImageSource> BlockCache::Wrap(
    std::shared_ptr<ImageSource> source) {
  return std::make_shared<CachedImage>(impl_,
                                       impl_->NewImage(std::move(source)));
}

BlockCacheStats BlockCache::stats() const { return impl_->Stats(); }

const BlockCacheOptions& BlockCache::options() const {
  return impl_->options();
}

}  // namespace ckptfs
