// Tests of BlockCache over in-memory fakes: PatternSource (deterministic
// pattern) and tests/fakes' InjectingImageSource (counts reads, can delay or
// hold them, fails chosen ranges or the first N reads). No timed
// assertions: concurrency tests synchronise on the cache's own counters.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <latch>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "cache/block_cache.h"
#include "tests/fakes/injecting_image_source.h"

namespace ckptfs {
namespace {

constexpr uint32_t kBlock = 4096;

uint64_t PatternWord(uint64_t seed, uint64_t word) {
  uint64_t x = word + seed * 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

void FillPattern(uint64_t seed, std::span<std::byte> buf, uint64_t offset) {
  // A word at a time: the checks below run over every byte read, also under
  // TSan in Debug builds.
  size_t i = 0;
  for (uint64_t word_index = offset / 8; i < buf.size(); ++word_index) {
    const uint64_t word = PatternWord(seed, word_index);
    for (uint64_t o = std::max(offset, word_index * 8);
         o < (word_index + 1) * 8 && i < buf.size(); ++o, ++i) {
      buf[i] = static_cast<std::byte>(word >> (o % 8 * 8));
    }
  }
}

// Offset of the first byte of buf that is not the pattern at `offset`, or -1.
int64_t FirstMismatch(uint64_t seed, std::span<const std::byte> buf,
                      uint64_t offset) {
  std::vector<std::byte> expected(buf.size());
  FillPattern(seed, expected, offset);
  if (std::memcmp(buf.data(), expected.data(), buf.size()) == 0) return -1;
  const auto [bad, unused] =
      std::mismatch(buf.begin(), buf.end(), expected.begin());
  return static_cast<int64_t>(offset + (bad - buf.begin()));
}

// An image whose byte at offset o is PatternByte(seed, o). Rejects (and
// counts) requests out of range or above max_request, which the cache must
// never send.
class PatternSource : public ImageSource {
 public:
  PatternSource(uint64_t size, uint64_t seed, uint32_t max_request = 32u << 20)
      : size_(size), seed_(seed), max_request_(max_request) {}

  uint64_t size() const override { return size_; }

  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    if (offset > size_ || buf.size() > size_ - offset) {
      ++bad_requests_;
      return InvalidArgument("read beyond the end of the memory image");
    }
    if (buf.size() > max_request_) {
      ++bad_requests_;
      return InvalidArgument("read larger than max_request");
    }
    FillPattern(seed_, buf, offset);
    return Status::Ok();
  }

  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override {
    return std::vector<Extent>{
        {offset, length / 2, false, false},
        {offset + length / 2, length - length / 2, true, true}};
  }

  uint32_t max_request() const override { return max_request_; }
  uint64_t bad_requests() const { return bad_requests_.load(); }

 private:
  const uint64_t size_;
  const uint64_t seed_;
  const uint32_t max_request_;
  std::atomic<uint64_t> bad_requests_{0};
};

BlockCacheOptions Options(uint64_t capacity_blocks, unsigned readahead,
                          unsigned threads = 2) {
  BlockCacheOptions options;
  options.capacity_bytes = capacity_blocks * kBlock;
  options.block_size = kBlock;
  options.shards = 4;
  options.readahead_blocks = readahead;
  options.prefetch_threads = threads;
  return options;
}

// Polls until done() holds. The deadline only keeps a broken build from
// hanging the test run; nothing asserts on timing.
bool WaitUntil(const std::function<bool()>& done) {
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  return true;
}

// Reads [offset, offset + length) and checks it against the pattern.
::testing::AssertionResult ReadsPattern(ImageSource& image, uint64_t seed,
                                        uint64_t offset, uint64_t length) {
  std::vector<std::byte> buf(length, std::byte{0xa5});
  Status status = image.pread(buf, offset);
  if (!status.ok()) {
    return ::testing::AssertionFailure() << "pread(" << offset << ", " << length
                                         << "): " << status.ToString();
  }
  const int64_t bad = FirstMismatch(seed, buf, offset);
  if (bad >= 0) {
    return ::testing::AssertionFailure()
           << "pread(" << offset << ", " << length << ") wrong byte at " << bad;
  }
  return ::testing::AssertionSuccess();
}

TEST(BlockCacheOptionsTest, ValidateExplainsWhatToFix) {
  EXPECT_TRUE(BlockCache::ValidateOptions(BlockCacheOptions()).ok());
  BlockCacheOptions options;
  options.block_size = 1000;
  EXPECT_EQ(BlockCache::ValidateOptions(options).code(),
            Code::kInvalidArgument);
  options = BlockCacheOptions();
  options.shards = 0;
  EXPECT_EQ(BlockCache::ValidateOptions(options).code(),
            Code::kInvalidArgument);
  options = BlockCacheOptions();
  options.capacity_bytes = options.block_size - 1;
  EXPECT_EQ(BlockCache::ValidateOptions(options).code(),
            Code::kInvalidArgument);
}

TEST(BlockCacheOptionsTest, ConstructorClampsInvalidValues) {
  BlockCacheOptions options = Options(64, 0);
  options.block_size = 5000;
  options.shards = 0;
  BlockCache cache(options);
  EXPECT_EQ(cache.options().block_size, 8192u);
  EXPECT_EQ(cache.options().shards, 1u);
  // 64 blocks of 4 KiB would be 32 blocks of 8 KiB: at most 4 shards of 8.
  options.block_size = 8192;
  options.shards = 100;
  EXPECT_EQ(BlockCache(options).options().shards, 4u);
}

TEST(BlockCacheTest, ForwardsSizeExtentsAndMaxRequest) {
  BlockCache cache(Options(16, 0));
  auto mem = std::make_shared<PatternSource>(10 * kBlock + 7, 1, 3 * kBlock);
  auto image = cache.Wrap(mem);
  EXPECT_EQ(image->size(), mem->size());
  EXPECT_EQ(image->max_request(), 3 * kBlock);
  EXPECT_EQ(image->preferred_block_size(), kBlock);
  auto extents = image->extents(100, 1000);
  ASSERT_TRUE(extents.ok());
  EXPECT_EQ(*extents, *mem->extents(100, 1000));
}

TEST(BlockCacheTest, RandomReadsMatchPattern) {
  for (unsigned readahead : {0u, 8u}) {
    SCOPED_TRACE(readahead);
    BlockCache cache(Options(16, readahead));
    const uint64_t size = 37 * kBlock + 1234;  // short last block
    auto mem = std::make_shared<PatternSource>(size, 7);
    auto image = cache.Wrap(mem);

    // Edges: the whole image, the short last block, block boundaries.
    ASSERT_TRUE(ReadsPattern(*image, 7, 0, size));
    ASSERT_TRUE(ReadsPattern(*image, 7, 37 * kBlock, 1234));
    ASSERT_TRUE(ReadsPattern(*image, 7, size - 1, 1));
    for (uint64_t b = 1; b < 38; b += 5) {
      ASSERT_TRUE(ReadsPattern(*image, 7, b * kBlock - 1, 2));
      ASSERT_TRUE(ReadsPattern(*image, 7, b * kBlock, kBlock));
      ASSERT_TRUE(ReadsPattern(*image, 7, (b - 1) * kBlock + 1, kBlock));
    }

    std::mt19937_64 rng(readahead + 1);
    for (int i = 0; i < 2000; ++i) {
      const uint64_t offset =
          i % 10 == 0 ? size - 1 - rng() % (2 * kBlock) : rng() % size;
      const uint64_t length =
          std::min<uint64_t>(rng() % (3 * kBlock) + 1, size - offset);
      ASSERT_TRUE(ReadsPattern(*image, 7, offset, length));
    }
    const BlockCacheStats stats = cache.stats();
    EXPECT_LE(stats.resident_bytes, stats.capacity_bytes);
    EXPECT_GT(stats.hits, 0u);
    EXPECT_GT(stats.evictions, 0u);
    EXPECT_EQ(mem->bad_requests(), 0u);
  }
}

TEST(BlockCacheTest, EmptyAndOutOfRangeReads) {
  BlockCache cache(Options(16, 0));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(3 * kBlock, 1));
  auto image = cache.Wrap(counting);
  std::vector<std::byte> buf(100);
  EXPECT_TRUE(image->pread(std::span<std::byte>(), 5).ok());
  EXPECT_TRUE(image->pread(std::span<std::byte>(), 3 * kBlock).ok());
  EXPECT_EQ(image->pread(buf, 3 * kBlock - 99).code(), Code::kInvalidArgument);
  EXPECT_EQ(image->pread(buf, 10 * kBlock).code(), Code::kInvalidArgument);
  EXPECT_EQ(image->pread(buf, UINT64_MAX - 10).code(), Code::kInvalidArgument);
  EXPECT_EQ(counting->reads(), 0u);
}

TEST(BlockCacheTest, CountsHitsAndMisses) {
  BlockCache cache(Options(64, 0));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(8 * kBlock, 3));
  auto image = cache.Wrap(counting);

  ASSERT_TRUE(ReadsPattern(*image, 3, 0, 100));
  BlockCacheStats stats = cache.stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 0u);
  EXPECT_EQ(stats.fills, 1u);
  EXPECT_EQ(stats.resident_bytes, kBlock);
  EXPECT_EQ(stats.capacity_bytes, 64u * kBlock);

  ASSERT_TRUE(ReadsPattern(*image, 3, 200, 100));
  stats = cache.stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.hits, 1u);

  // Spans block 0 (resident) and block 1 (missing).
  ASSERT_TRUE(ReadsPattern(*image, 3, kBlock - 10, 20));
  stats = cache.stats();
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.hits, 2u);
  EXPECT_EQ(stats.fills, 2u);
  EXPECT_EQ(stats.resident_bytes, 2u * kBlock);
  EXPECT_EQ(stats.evictions, 0u);
  EXPECT_EQ(stats.readahead_fills, 0u);
  EXPECT_EQ(counting->reads(), 2u);
  EXPECT_EQ(counting->bytes(), 2u * kBlock);
}

TEST(BlockCacheTest, ShortLastBlockIsChargedByItsLength) {
  BlockCache cache(Options(16, 0));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(2 * kBlock + 100, 4));
  auto image = cache.Wrap(counting);
  ASSERT_TRUE(ReadsPattern(*image, 4, 2 * kBlock + 50, 50));
  EXPECT_EQ(cache.stats().resident_bytes, 100u);
  EXPECT_EQ(counting->bytes(), 100u);
}

TEST(BlockCacheTest, AdjacentMissesShareOneSourceRead) {
  BlockCache cache(Options(64, 0));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(16 * kBlock, 5));
  auto image = cache.Wrap(counting);

  ASSERT_TRUE(ReadsPattern(*image, 5, 0, 8 * kBlock));
  EXPECT_EQ(counting->reads(), 1u);
  EXPECT_EQ(counting->bytes(), 8u * kBlock);
  EXPECT_EQ(cache.stats().misses, 8u);

  // Blocks 10 and 13 resident: the rest of [8, 16) comes in three runs.
  ASSERT_TRUE(ReadsPattern(*image, 5, 10 * kBlock, 10));
  ASSERT_TRUE(ReadsPattern(*image, 5, 13 * kBlock, 10));
  ASSERT_TRUE(ReadsPattern(*image, 5, 8 * kBlock + 1, 8 * kBlock - 1));
  using Lengths = std::vector<uint64_t>;
  const std::map<uint64_t, Lengths> expected = {
      {0, {8 * kBlock}},       {8 * kBlock, {2 * kBlock}},
      {10 * kBlock, {kBlock}}, {11 * kBlock, {2 * kBlock}},
      {13 * kBlock, {kBlock}}, {14 * kBlock, {2 * kBlock}},
  };
  EXPECT_EQ(counting->reads_by_offset(), expected);
}

TEST(BlockCacheTest, SourceReadsNeverExceedMaxRequest) {
  {
    BlockCache cache(Options(64, 0));
    auto mem = std::make_shared<PatternSource>(20 * kBlock, 6, 2 * kBlock);
    auto counting = std::make_shared<InjectingImageSource>(mem);
    auto image = cache.Wrap(counting);
    ASSERT_TRUE(ReadsPattern(*image, 6, 100, 10 * kBlock));
    EXPECT_EQ(counting->max_request_seen(), 2u * kBlock);
    EXPECT_EQ(counting->bytes(), 11u * kBlock);
    EXPECT_EQ(mem->bad_requests(), 0u);
  }
  {
    // Blocks larger than max_request are read in pieces.
    BlockCacheOptions options = Options(64, 0);
    options.block_size = 4 * kBlock;
    BlockCache cache(options);
    auto mem = std::make_shared<PatternSource>(10 * kBlock + 5, 6, kBlock);
    auto counting = std::make_shared<InjectingImageSource>(mem);
    auto image = cache.Wrap(counting);
    ASSERT_TRUE(ReadsPattern(*image, 6, 0, 10 * kBlock + 5));
    EXPECT_EQ(counting->max_request_seen(), kBlock);
    EXPECT_EQ(counting->bytes(), 10u * kBlock + 5);
    EXPECT_EQ(mem->bad_requests(), 0u);
  }
}

TEST(BlockCacheTest, BudgetHoldsUnderLoad) {
  BlockCache cache(Options(16, 8, 2));
  const uint64_t sizes[] = {100 * kBlock + 17, 60 * kBlock};
  std::vector<std::shared_ptr<ImageSource>> images;
  for (uint64_t i = 0; i < 2; ++i) {
    images.push_back(
        cache.Wrap(std::make_shared<PatternSource>(sizes[i], 10 + i)));
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> over_budget{0};
  std::thread monitor([&] {
    while (!stop.load()) {
      const BlockCacheStats stats = cache.stats();
      if (stats.resident_bytes > stats.capacity_bytes) ++over_budget;
      std::this_thread::yield();
    }
  });
  std::vector<std::thread> readers;
  std::atomic<uint64_t> bad_reads{0};
  for (int t = 0; t < 4; ++t) {
    readers.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 500; ++i) {
        const uint64_t which = rng() % 2;
        const uint64_t offset = rng() % sizes[which];
        const uint64_t length =
            std::min<uint64_t>(rng() % (2 * kBlock) + 1, sizes[which] - offset);
        // Runs of sequential reads, so read-ahead is part of the load.
        for (uint64_t pos = offset, n = rng() % 8;
             n-- > 0 && pos + length <= sizes[which]; pos += length) {
          if (!ReadsPattern(*images[which], 10 + which, pos, length)) {
            ++bad_reads;
          }
        }
      }
    });
  }
  for (std::thread& reader : readers) reader.join();
  stop = true;
  monitor.join();
  const BlockCacheStats stats = cache.stats();
  EXPECT_EQ(bad_reads.load(), 0u);
  EXPECT_EQ(over_budget.load(), 0u);
  EXPECT_LE(stats.resident_bytes, stats.capacity_bytes);
  EXPECT_GT(stats.evictions, 0u);
}

TEST(BlockCacheTest, ConcurrentMissesOfOneBlockReadTheSourceOnce) {
  constexpr int kThreads = 8;
  BlockCache cache(Options(16, 0));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(8 * kBlock, 8));
  auto image = cache.Wrap(counting);
  counting->HoldReads();
  std::vector<std::thread> threads;
  std::atomic<int> good{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      if (ReadsPattern(*image, 8, 3 * kBlock + 100 * t, 200)) ++good;
    });
  }
  // Hold the one source read until every other reader waits for it.
  EXPECT_TRUE(WaitUntil([&] {
    return cache.stats().waits == kThreads - 1 && counting->reads() == 1;
  }));
  counting->ReleaseReads();
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(good.load(), kThreads);
  EXPECT_EQ(counting->reads(), 1u);
  const BlockCacheStats stats = cache.stats();
  EXPECT_EQ(stats.misses, 1u);
  EXPECT_EQ(stats.waits, kThreads - 1u);
  EXPECT_EQ(stats.fills, 1u);
}

TEST(BlockCacheTest, FailedFillReachesAllWaitersAndIsNotCached) {
  constexpr int kThreads = 8;
  BlockCache cache(Options(16, 0));
  auto fault = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(8 * kBlock, 9));
  auto counting = std::make_shared<InjectingImageSource>(fault);
  auto image = cache.Wrap(counting);
  const Status injected(Code::kIoError, "nbd: connection reset; reconnect");
  fault->FailFirstReads(1, injected);
  counting->HoldReads();
  std::vector<Status> results(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> buf(100);
      results[t] = image->pread(buf, 2 * kBlock + 10 * t);
    });
  }
  EXPECT_TRUE(WaitUntil([&] {
    return cache.stats().waits == kThreads - 1 && counting->reads() == 1;
  }));
  counting->ReleaseReads();
  for (std::thread& t : threads) t.join();
  for (const Status& status : results) {
    EXPECT_EQ(status.code(), injected.code());
    EXPECT_EQ(status.message(), injected.message());
  }
  BlockCacheStats stats = cache.stats();
  EXPECT_EQ(stats.fill_errors, 1u);
  EXPECT_EQ(stats.resident_bytes, 0u);

  // Not cached: the next read goes to the source again and succeeds.
  ASSERT_TRUE(ReadsPattern(*image, 9, 2 * kBlock, kBlock));
  EXPECT_EQ(counting->reads(), 2u);
  stats = cache.stats();
  EXPECT_EQ(stats.misses, 2u);
  EXPECT_EQ(stats.resident_bytes, kBlock);
}

TEST(BlockCacheTest, ErrorsPropagateUnchangedAndAreRetried) {
  BlockCache cache(Options(32, 0));
  auto fault = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(8 * kBlock, 11));
  auto counting = std::make_shared<InjectingImageSource>(fault);
  auto image = cache.Wrap(counting);
  const Status injected(Code::kTimedOut, "nbd read timed out");
  fault->FailRange(3 * kBlock + 5, 1, injected);

  std::vector<std::byte> buf(3 * kBlock);
  Status status = image->pread(buf, 2 * kBlock);
  EXPECT_EQ(status.code(), Code::kTimedOut);
  EXPECT_EQ(status.message(), injected.message());
  status = image->pread(std::span(buf).first(10), 3 * kBlock);
  EXPECT_EQ(status.code(), Code::kTimedOut);
  EXPECT_EQ(cache.stats().fill_errors, 2u);
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
  // The neighbours were not poisoned by the failed run.
  ASSERT_TRUE(ReadsPattern(*image, 11, 2 * kBlock, kBlock));
  ASSERT_TRUE(ReadsPattern(*image, 11, 4 * kBlock, kBlock));

  fault->Clear();
  const uint64_t reads_before = counting->reads();
  ASSERT_TRUE(ReadsPattern(*image, 11, 2 * kBlock, 3 * kBlock));
  EXPECT_EQ(counting->reads(), reads_before + 1);  // block 3 only
}

// Sequential scan of `blocks` blocks in `step`-byte reads; returns stats.
BlockCacheStats Scan(unsigned readahead, uint64_t blocks, uint64_t step) {
  BlockCache cache(Options(256, readahead, 4));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(blocks * kBlock, 12));
  counting->set_delay(std::chrono::microseconds(200));
  auto image = cache.Wrap(counting);
  for (uint64_t pos = 0; pos < blocks * kBlock; pos += step) {
    EXPECT_TRUE(
        ReadsPattern(*image, 12, pos, std::min(step, blocks * kBlock - pos)));
  }
  // Every block was read exactly once: prefetched blocks were waited for,
  // never read again.
  EXPECT_EQ(counting->bytes(), blocks * kBlock);
  EXPECT_EQ(counting->BytesReadIn(0, blocks * kBlock), blocks * kBlock);
  return cache.stats();
}

TEST(BlockCacheTest, SequentialReadAheadReducesMisses) {
  constexpr uint64_t kBlocks = 64;
  for (uint64_t step : {uint64_t{kBlock}, uint64_t{1024}, uint64_t{3000}}) {
    SCOPED_TRACE(step);
    const BlockCacheStats without = Scan(0, kBlocks, step);
    EXPECT_EQ(without.misses, kBlocks);
    EXPECT_EQ(without.readahead_fills, 0u);
    EXPECT_EQ(without.fills, kBlocks);

    const BlockCacheStats with = Scan(16, kBlocks, step);
    EXPECT_LE(with.misses, 2u);
    EXPECT_GT(with.readahead_fills, 0u);
    // Read-ahead batches adjacent blocks into fewer, larger reads.
    EXPECT_LT(with.fills, kBlocks);
    EXPECT_EQ(with.fill_errors, 0u);
  }
}

TEST(BlockCacheTest, RandomReadsTriggerNoReadAhead) {
  constexpr uint64_t kBlocks = 256;
  BlockCache cache(Options(64, 16, 4));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(kBlocks * kBlock, 13));
  auto image = cache.Wrap(counting);
  // Distinct even blocks: no read starts in or right after a block read
  // before.
  std::vector<uint64_t> blocks;
  for (uint64_t b = 0; b < kBlocks; b += 2) blocks.push_back(b);
  std::mt19937_64 rng(13);
  std::shuffle(blocks.begin(), blocks.end(), rng);
  for (uint64_t b : blocks) {
    const uint64_t in_block = rng() % kBlock;
    const uint64_t length = rng() % (kBlock - in_block) + 1;
    ASSERT_TRUE(ReadsPattern(*image, 13, b * kBlock + in_block, length));
  }
  const BlockCacheStats stats = cache.stats();
  EXPECT_EQ(stats.readahead_fills, 0u);
  EXPECT_EQ(stats.misses, blocks.size());
  EXPECT_EQ(counting->reads(), blocks.size());
}

TEST(BlockCacheTest, InterleavedSequentialReadersBothReadAhead) {
  constexpr uint64_t kBlocks = 128;
  BlockCache cache(Options(256, 16, 4));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(kBlocks * kBlock, 14));
  auto image = cache.Wrap(counting);
  for (uint64_t b = 0; b < kBlocks / 2; ++b) {
    ASSERT_TRUE(ReadsPattern(*image, 14, b * kBlock, kBlock));
    ASSERT_TRUE(ReadsPattern(*image, 14, (b + kBlocks / 2) * kBlock, kBlock));
  }
  const BlockCacheStats stats = cache.stats();
  EXPECT_LE(stats.misses, 4u);
  EXPECT_GT(stats.readahead_fills, 0u);
  EXPECT_EQ(counting->bytes(), kBlocks * kBlock);
}

// In-flight blocks cannot be evicted, so read-ahead must not claim more than
// half of a shard's budget. 8 sequential readers of 8 images, 4 shards of 4
// blocks: at most 8 blocks of read-ahead plus each reader's one block in
// flight, the budget, although the readers' windows (4 blocks each) add up
// to twice the budget.
TEST(BlockCacheTest, ReadAheadInFlightStaysWithinHalfTheBudget) {
  constexpr uint64_t kBlocks = 64;
  constexpr int kReaders = 8;
  BlockCache cache(Options(16, 16, 4));
  std::atomic<uint64_t> max_inflight{0};
  auto probe = [&] {
    const uint64_t now = cache.stats().inflight_bytes;
    uint64_t seen = max_inflight.load();
    while (now > seen && !max_inflight.compare_exchange_weak(seen, now)) {
    }
  };
  std::vector<std::thread> readers;
  std::atomic<int> failures{0};
  for (int r = 0; r < kReaders; ++r) {
    // The probe runs before every read and the read is delayed, so that
    // read-ahead fills pile up in flight.
    auto probing = std::make_shared<InjectingImageSource>(
        std::make_shared<PatternSource>(kBlocks * kBlock, 20 + r));
    probing->SetProbe(probe);
    probing->set_delay(std::chrono::milliseconds(2));
    auto image = cache.Wrap(probing);
    readers.emplace_back([&failures, image, r] {
      for (uint64_t b = 0; b < kBlocks; ++b) {
        if (!ReadsPattern(*image, 20 + r, b * kBlock, kBlock)) ++failures;
      }
    });
  }
  for (std::thread& t : readers) t.join();
  EXPECT_EQ(failures.load(), 0);
  const BlockCacheStats stats = cache.stats();
  EXPECT_GT(stats.readahead_fills, 0u);
  EXPECT_GT(stats.readahead_skipped, 0u);
  EXPECT_GT(max_inflight.load(), 0u);
  EXPECT_LE(max_inflight.load(), 16 * kBlock);
}

TEST(BlockCacheTest, ReadAheadFailureFailsOnlyReadsOfTheBadBlock) {
  constexpr uint64_t kBlocks = 64;
  constexpr uint64_t kBad = 20;
  BlockCache cache(Options(256, 16, 4));
  auto fault = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(kBlocks * kBlock, 15));
  auto image = cache.Wrap(fault);
  const Status injected(Code::kIoError, "bad sector");
  fault->FailRange(kBad * kBlock + 100, 1, injected);
  std::vector<std::byte> buf(kBlock);
  for (uint64_t b = 0; b < kBlocks; ++b) {
    const Status status = image->pread(buf, b * kBlock);
    if (b == kBad) {
      EXPECT_EQ(status.code(), injected.code());
      EXPECT_EQ(status.message(), injected.message());
    } else {
      ASSERT_TRUE(status.ok()) << b << ": " << status.ToString();
      ASSERT_EQ(FirstMismatch(15, buf, b * kBlock), -1) << b;
    }
  }
  EXPECT_GT(cache.stats().fill_errors, 0u);
  fault->Clear();
  ASSERT_TRUE(ReadsPattern(*image, 15, kBad * kBlock, kBlock));
}

TEST(BlockCacheTest, DestroyingAWrapperDropsItsBlocks) {
  BlockCache cache(Options(64, 0));
  auto mem_a = std::make_shared<PatternSource>(8 * kBlock, 16);
  auto mem_b = std::make_shared<PatternSource>(4 * kBlock + 10, 17);
  auto image_a = cache.Wrap(mem_a);
  auto image_b = cache.Wrap(mem_b);
  ASSERT_TRUE(ReadsPattern(*image_a, 16, 0, 8 * kBlock));
  ASSERT_TRUE(ReadsPattern(*image_b, 17, 0, 4 * kBlock + 10));
  EXPECT_EQ(cache.stats().resident_bytes, 12u * kBlock + 10);
  image_a.reset();
  EXPECT_EQ(cache.stats().resident_bytes, 4u * kBlock + 10);

  // A new wrapper of the same source is a new image: it starts cold.
  auto again = cache.Wrap(mem_a);
  const uint64_t misses = cache.stats().misses;
  ASSERT_TRUE(ReadsPattern(*again, 16, 0, kBlock));
  EXPECT_EQ(cache.stats().misses, misses + 1);
  again.reset();
  image_b.reset();
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
}

TEST(BlockCacheTest, DestroyingAWrapperDuringReadAheadPublishesNothing) {
  BlockCache cache(Options(256, 16, 2));
  auto counting = std::make_shared<InjectingImageSource>(
      std::make_shared<PatternSource>(256 * kBlock, 18));
  counting->set_delay(std::chrono::microseconds(500));
  auto image = cache.Wrap(counting);
  for (uint64_t b = 0; b < 6; ++b) {
    ASSERT_TRUE(ReadsPattern(*image, 18, b * kBlock, kBlock));
  }
  image.reset();  // read-ahead still queued or in flight
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
  EXPECT_TRUE(WaitUntil([&] { return counting->inflight() == 0; }));
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
}

TEST(BlockCacheTest, WrapperOutlivesTheCache) {
  auto cache = std::make_unique<BlockCache>(Options(64, 16, 2));
  auto image = cache->Wrap(std::make_shared<PatternSource>(64 * kBlock, 19));
  for (uint64_t b = 0; b < 4; ++b) {
    ASSERT_TRUE(ReadsPattern(*image, 19, b * kBlock, kBlock));
  }
  cache.reset();
  // No workers any more: misses and sequential reads are served inline.
  for (uint64_t b = 4; b < 64; ++b) {
    ASSERT_TRUE(ReadsPattern(*image, 19, b * kBlock, kBlock));
  }
  ASSERT_TRUE(ReadsPattern(*image, 19, 0, 64 * kBlock));
}

TEST(BlockCacheTest, StressManyThreadsSeveralImages) {
  constexpr int kThreads = 16;
  BlockCache cache(Options(48, 8, 4));
  struct Img {
    uint64_t seed;
    uint64_t size;
    std::shared_ptr<InjectingImageSource> fault;
    std::shared_ptr<ImageSource> image;
  };
  std::vector<Img> images;
  const uint64_t sizes[] = {50 * kBlock + 77, 33 * kBlock + 4000, 120 * kBlock,
                            40 * kBlock + 1};
  for (uint64_t i = 0; i < 4; ++i) {
    Img img{100 + i, sizes[i], nullptr, nullptr};
    auto mem = std::make_shared<PatternSource>(img.size, img.seed,
                                               i == 2 ? 3 * kBlock : 32u << 20);
    img.fault = std::make_shared<InjectingImageSource>(mem);
    img.image = cache.Wrap(img.fault);
    images.push_back(img);
  }
  // Image 3 has a bad byte in block 17: the cache reads whole blocks, so reads
  // touching block 17 fail with the source's Status, all others succeed.
  const uint64_t bad_begin = 17 * kBlock, bad_end = 18 * kBlock;
  const Status injected(Code::kIoError, "bad block in image 3");
  images[3].fault->FailRange(bad_begin + 9, 1, injected);

  std::atomic<uint64_t> wrong{0}, failed_as_expected{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(1000 + t);
      std::vector<std::byte> buf;
      for (int op = 0; op < 150; ++op) {
        const Img& img = images[rng() % images.size()];
        uint64_t pos = rng() % img.size;
        const uint64_t length = rng() % (3 * kBlock) + 1;
        const int reads = rng() % 2 == 0 ? 1 : static_cast<int>(rng() % 16);
        for (int r = 0; r < reads && pos < img.size; ++r) {
          const uint64_t n = std::min(length, img.size - pos);
          buf.assign(n, std::byte{0});
          const Status status = img.image->pread(buf, pos);
          const bool touches_bad = img.seed == images[3].seed &&
                                   pos < bad_end && bad_begin < pos + n;
          if (touches_bad) {
            if (status.code() == injected.code() &&
                status.message() == injected.message()) {
              ++failed_as_expected;
            } else {
              ++wrong;
            }
          } else if (!status.ok() || FirstMismatch(img.seed, buf, pos) >= 0) {
            ++wrong;
          }
          pos += n;
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(failed_as_expected.load(), 0u);
  const BlockCacheStats stats = cache.stats();
  EXPECT_LE(stats.resident_bytes, stats.capacity_bytes);
  EXPECT_GT(stats.hits, 0u);
  EXPECT_GT(stats.evictions, 0u);
  images.clear();
  EXPECT_EQ(cache.stats().resident_bytes, 0u);
}

}  // namespace
}  // namespace ckptfs
