// Read-ahead of the block cache: per-image stream tracking and the claim of
// blocks ahead of sequential readers (see block_cache.h for the contract).
#include "cache/block_cache_internal.h"

namespace ckptfs {

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

}  // namespace ckptfs
