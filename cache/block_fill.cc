// Fills of the block cache: the worker pool, running a fill's source read and
// publishing its outcome to the index (see block_cache.h for the contract).
#include "cache/block_cache_internal.h"

namespace ckptfs {

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

}  // namespace ckptfs
