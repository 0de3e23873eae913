// StoreSource extents and SEEK_DATA/SEEK_HOLE over stored images (issue 11
// item 11a): answered from the manifest's run index, never by walking every
// chunk. Costs are counted (StoreSource::index_steps), not timed.
#include "backend/store/store_source.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <optional>
#include <random>
#include <vector>

#include "fs/checkpoint_view.h"
#include "tests/fakes/memory_object_store.h"

namespace ckptfs {
namespace {

constexpr uint32_t kChunk = 4096;

// A manifest of `zero` flags; data chunks name a hash that is never read.
std::shared_ptr<StoreSource> Source(const std::vector<bool>& zero,
                                    uint64_t size) {
  Manifest m;
  m.backup_id = "uuid/b";
  m.disk = "vda";
  m.size = size;
  m.chunk_size = kChunk;
  m.chunks.resize(zero.size());
  for (size_t i = 0; i < zero.size(); ++i) {
    m.chunks[i].zero = zero[i];
    m.chunks[i].hash[0] = 1;
  }
  auto chunks = std::make_shared<ChunkStore>(
      std::make_shared<MemoryObjectStore>(), kChunk, 1, true);
  return std::make_shared<StoreSource>(chunks, std::move(m));
}

// Chunk by chunk, as the manifest says: the answer to compare with.
std::optional<uint64_t> NaiveSeek(const std::vector<bool>& zero, uint64_t size,
                                  uint64_t offset, bool data) {
  if (offset >= size) return std::nullopt;
  for (uint64_t i = offset / kChunk; i < zero.size(); ++i) {
    if (zero[i] != data) return std::max(offset, i * kChunk);
  }
  if (data) return std::nullopt;
  return size;
}

std::vector<Extent> NaiveExtents(const std::vector<bool>& zero, uint64_t offset,
                                 uint64_t length) {
  std::vector<Extent> out;
  for (uint64_t pos = offset; pos < offset + length;) {
    const uint64_t i = pos / kChunk;
    const uint64_t next = std::min((i + 1) * kChunk, offset + length);
    if (!out.empty() && out.back().hole == zero[i]) {
      out.back().length += next - pos;
    } else {
      out.push_back({pos, next - pos, zero[i], zero[i]});
    }
    pos = next;
  }
  return out;
}

std::optional<uint64_t> Value(const Result<uint64_t>& r) {
  if (!r.ok()) {
    EXPECT_EQ(r.status().code(), Code::kOutOfRange) << r.status().ToString();
    return std::nullopt;
  }
  return *r;
}

// 2^20 chunks: runs of random length (1 .. 3000 chunks), a 1/4 zero tail.
std::vector<bool> LargeSparse(std::mt19937_64& rng) {
  std::vector<bool> zero;
  const size_t n = size_t{1} << 20;
  bool z = false;
  while (zero.size() < n - n / 4) {
    const size_t len = 1 + rng() % 3000;
    zero.insert(zero.end(), std::min(len, n - n / 4 - zero.size()), z);
    z = !z;
  }
  zero.resize(n, true);
  return zero;
}

TEST(StoreSourceSeekTest, LargeSparseManifestIsNotWalkedPerSeek) {
  std::mt19937_64 rng(11);
  const std::vector<bool> zero = LargeSparse(rng);
  const uint64_t size = uint64_t{zero.size()} * kChunk;
  auto src = Source(zero, size);

  uint64_t most = 0;
  for (int i = 0; i < 4000; ++i) {
    const uint64_t offset = rng() % (size + kChunk);
    const bool data = i % 2 == 0;
    const uint64_t before = src->index_steps();
    auto got = Value(SeekImage(*src, offset, data));
    most = std::max(most, src->index_steps() - before);
    ASSERT_EQ(got, NaiveSeek(zero, size, offset, data))
        << "offset " << offset << (data ? " SEEK_DATA" : " SEEK_HOLE");
  }
  // From inside the zero tail, SEEK_DATA looks at the whole tail.
  const uint64_t before = src->index_steps();
  EXPECT_FALSE(Value(SeekImage(*src, size - size / 4 + 1, true)).has_value());
  most = std::max(most, src->index_steps() - before);
  // 43d0e95 built the whole list per seek, one step per chunk: 2^20 here.
  // Even from the run index the whole list would be ~500 steps (one per
  // run); the windowed seek looks at a few runs near the answer.
  RecordProperty("most_index_steps_per_seek", static_cast<int>(most));
  EXPECT_LT(most, 200u) << "steps per seek, of " << zero.size() << " chunks";

  // cp --sparse: SEEK_DATA, SEEK_HOLE, copy, repeat: a few dozen steps per
  // data run (43d0e95: 2^21 per data run).
  const uint64_t walk_before = src->index_steps();
  uint64_t pos = 0, runs = 0, data_bytes = 0;
  while (auto d = Value(SeekImage(*src, pos, true))) {
    auto h = Value(SeekImage(*src, *d, false));
    ASSERT_TRUE(h.has_value());
    data_bytes += *h - *d;
    pos = *h;
    ++runs;
  }
  const uint64_t walk = src->index_steps() - walk_before;
  RecordProperty("cp_sparse_index_steps", static_cast<int>(walk));
  EXPECT_EQ(data_bytes,
            static_cast<uint64_t>(std::count(zero.begin(), zero.end(), false)) *
                kChunk);
  EXPECT_LT(walk, 100 * runs) << runs << " data runs";
}

// The old answer: the whole list, then SeekExtents (what lseek did).
TEST(StoreSourceSeekTest, SameAnswerAsTheWholeExtentList) {
  std::mt19937_64 rng(12);
  const std::vector<bool> zero = LargeSparse(rng);
  const uint64_t size = uint64_t{zero.size()} * kChunk;
  auto src = Source(zero, size);
  auto all = src->extents(0, size);
  ASSERT_TRUE(all.ok());
  for (int i = 0; i < 2000; ++i) {
    const uint64_t offset = rng() % size;
    for (bool data : {true, false}) {
      ASSERT_EQ(Value(SeekImage(*src, offset, data)),
                Value(SeekExtents(*all, size, offset, data)))
          << "offset " << offset;
    }
  }
}

// Every offset of a small manifest with a partial last chunk, and random
// extents() ranges against the chunk-by-chunk merge.
TEST(StoreSourceSeekTest, SmallManifestsExhaustively) {
  std::mt19937_64 rng(13);
  for (int round = 0; round < 200; ++round) {
    std::vector<bool> zero(1 + rng() % 40);
    for (size_t i = 0; i < zero.size(); ++i) zero[i] = rng() % 3 == 0;
    const uint64_t size = (zero.size() - 1) * kChunk + 1 + rng() % kChunk;
    auto src = Source(zero, size);
    for (uint64_t off = 0; off <= size; off += 1 + rng() % 1500) {
      for (bool data : {true, false}) {
        ASSERT_EQ(Value(SeekImage(*src, off, data)),
                  NaiveSeek(zero, size, off, data))
            << "round " << round << " offset " << off;
      }
      const uint64_t len = rng() % (size - std::min(off, size) + 1);
      auto got = src->extents(std::min(off, size), len);
      ASSERT_TRUE(got.ok());
      EXPECT_EQ(*got, NaiveExtents(zero, std::min(off, size), len));
    }
  }
}

TEST(StoreSourceSeekTest, ExtentsBeyondTheEndAreRefused) {
  auto src = Source({false, true}, 2 * kChunk);
  EXPECT_EQ(src->extents(kChunk, kChunk + 1).status().code(),
            Code::kInvalidArgument);
  EXPECT_TRUE(src->extents(2 * kChunk, 0)->empty());
  auto empty = Source({}, 0);
  EXPECT_TRUE(empty->extents(0, 0)->empty());
  EXPECT_FALSE(Value(SeekImage(*empty, 0, true)).has_value());
}

}  // namespace
}  // namespace ckptfs
