#include "cache/block_cache.h"

#include <cstring>

#include "cache/block_cache_internal.h"

namespace ckptfs {

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
