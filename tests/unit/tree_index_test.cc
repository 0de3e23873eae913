// The format 2 index tree (backend/store/tree_index.h) against a reference
// model (std::map of chunk number to hash): randomized sequences of full and
// incremental backups, lookups, NextAllocated/NextHole, deleting any backup
// alone; a corrupt page; and the metadata each backup writes for the
// issue 13 targets, counted in bytes.
#include "backend/store/tree_index.h"

#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <vector>

#include "backend/store/serialize.h"
#include "backend/store/sha256.h"

namespace ckptfs {
namespace {

constexpr uint32_t kChunk = 256 << 10;
using Model = std::map<uint64_t, ChunkHash>;  // allocated chunks only

// Pages by hash, as the store holds them.
struct PageStore {
  std::map<ChunkHash, std::vector<std::byte>> pages;
  uint64_t reads = 0;
  PageSource Source() {
    return [this](const ChunkHash& h) -> Result<std::vector<std::byte>> {
      ++reads;
      auto it = pages.find(h);
      if (it == pages.end()) return IoError("missing");
      return it->second;
    };
  }
};

ChunkHash HashOf(uint64_t v) {
  ChunkHash h{};
  for (int i = 0; i < 8; ++i) h[i] = static_cast<uint8_t>(v >> (8 * i));
  h[31] = 0x5a;
  return h;
}

struct Backup {
  Model model;
  std::shared_ptr<const TreeIndex> index;
  uint64_t written = 0;  // bytes of new pages
};

class Tree {
 public:
  Tree(uint64_t size, uint32_t leaf, uint32_t fan)
      : size_(size),
        geometry_(TreeGeometry::For(ChunkCount(size, kChunk), leaf, fan)) {}

  // A backup of `model`: incremental from `base` (set only `changed`), or
  // full (everything) if base is null.
  Backup Make(const Model& model, const Backup* base,
              const std::set<uint64_t>& changed) {
    TreeIndexBuilder b(size_, kChunk, geometry_,
                       base != nullptr ? base->index : nullptr);
    if (base == nullptr) {
      for (const auto& [i, h] : model) b.Set(i, {h, false});
    } else {
      for (uint64_t i : changed) {
        auto it = model.find(i);
        b.Set(i, it == model.end() ? ChunkRef{{}, true}
                                   : ChunkRef{it->second, false});
      }
    }
    auto out = b.Build();
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    Backup bk;
    bk.model = model;
    for (auto& [h, bytes] : out->pages) {
      bk.written += bytes.size();
      store.pages.emplace(h, std::move(bytes));
    }
    bk.index = std::make_shared<TreeIndex>(
        "u/b", "vda", size_, kChunk, geometry_, out->root, store.Source());
    return bk;
  }

  PageStore store;
  const uint64_t size_;
  const TreeGeometry geometry_;
};

std::optional<uint64_t> ModelNext(const Model& m, uint64_t from, uint64_t n,
                                  bool data) {
  if (data) {
    auto it = m.lower_bound(from);
    return it == m.end() ? n : it->first;
  }
  for (uint64_t i = from; i < n; ++i) {
    if (!m.contains(i)) return i;
  }
  return n;
}

void ExpectSame(const Backup& b, uint64_t n, std::mt19937_64& rng) {
  const TreeIndex& t = *b.index;
  for (int k = 0; k < 200; ++k) {
    const uint64_t i = rng() % n;
    auto got = t.Lookup(i);
    ASSERT_TRUE(got.ok()) << got.status().ToString();
    auto it = b.model.find(i);
    ASSERT_EQ(got->zero, it == b.model.end()) << "chunk " << i;
    if (!got->zero) {
      ASSERT_EQ(got->hash, it->second) << "chunk " << i;
    }
    for (bool data : {true, false}) {
      auto next = data ? t.NextAllocated(i) : t.NextHole(i);
      ASSERT_TRUE(next.ok()) << next.status().ToString();
      ASSERT_EQ(*next, ModelNext(b.model, i, n, data))
          << (data ? "NextAllocated(" : "NextHole(") << i << ")";
    }
  }
  Model walked;
  ASSERT_TRUE(t.ForEachAllocated([&](uint64_t i, const ChunkRef& r) {
                 walked[i] = r.hash;
                 return Status::Ok();
               }).ok());
  EXPECT_EQ(walked, b.model);
}

// Random runs of changes: data, new data, holes.
void Mutate(Model& m, std::set<uint64_t>& changed, uint64_t n,
            std::mt19937_64& rng, uint64_t& serial) {
  const int runs = 1 + static_cast<int>(rng() % 6);
  for (int r = 0; r < runs; ++r) {
    const uint64_t start = rng() % n;
    const uint64_t len = 1 + rng() % 40;
    const bool hole = rng() % 3 == 0;
    for (uint64_t i = start; i < std::min(n, start + len); ++i) {
      if (hole) {
        m.erase(i);
      } else {
        m[i] = HashOf(++serial);
      }
      changed.insert(i);
    }
  }
}

TEST(TreeIndexTest, RandomSequencesMatchTheModelAndDeleteAlone) {
  std::mt19937_64 rng(13);
  uint64_t serial = 0;
  for (const auto& [leaf, fan] : {std::pair{4u, 2u}, {8u, 4u}, {64u, 16u}}) {
    for (const uint64_t n : {1ull, 7ull, 100ull, 1000ull, 5000ull}) {
      const uint64_t size = n * kChunk - (n % 2 == 0 ? 0 : 1000);
      Tree tree(size, leaf, fan);
      std::vector<Backup> backups;
      Model m;
      for (int k = 0; k < 12; ++k) {
        std::set<uint64_t> changed;
        Mutate(m, changed, n, rng, serial);
        const bool full = backups.empty() || rng() % 4 == 0;
        backups.push_back(
            tree.Make(m, full ? nullptr : &backups.back(), changed));
        ExpectSame(backups.back(), n, rng);
      }
      // Delete any one backup: keep only the pages the others reach (what
      // gc keeps); every other backup still reads right.
      const size_t gone = rng() % backups.size();
      std::set<ChunkHash> keep;
      for (size_t k = 0; k < backups.size(); ++k) {
        if (k == gone) continue;
        ASSERT_TRUE(backups[k]
                        .index
                        ->ForEachPage([&](const ChunkHash& h) {
                          keep.insert(h);
                          return Status::Ok();
                        })
                        .ok());
      }
      std::erase_if(tree.store.pages,
                    [&](const auto& p) { return !keep.contains(p.first); });
      for (size_t k = 0; k < backups.size(); ++k) {
        if (k != gone) ExpectSame(backups[k], n, rng);
      }
    }
  }
}

TEST(TreeIndexTest, ACorruptPageIsAnIoErrorNamingIt) {
  Tree tree(1000ull * kChunk, 8, 4);
  Model m;
  for (uint64_t i = 0; i < 1000; i += 3) m[i] = HashOf(i);
  Backup b = tree.Make(m, nullptr, {});
  auto& [hash, bytes] = *tree.store.pages.begin();
  bytes[bytes.size() - 1] ^= std::byte{1};
  bool failed = false;
  for (uint64_t i = 0; i < 1000; ++i) {
    auto got = b.index->Lookup(i);
    if (!got.ok()) {
      failed = true;
      EXPECT_EQ(got.status().code(), Code::kIoError);
      EXPECT_NE(got.status().message().find(HashToHex(hash)), std::string::npos)
          << got.status().message();
      EXPECT_NE(got.status().message().find("hash mismatch"),
                std::string::npos);
    }
  }
  EXPECT_TRUE(failed);
  EXPECT_FALSE(b.index
                   ->ForEachAllocated(
                       [](uint64_t, const ChunkRef&) { return Status::Ok(); })
                   .ok());
}

// Data in runs of `len` chunks at `starts`.
Model Runs(const std::vector<uint64_t>& starts, uint64_t len, uint64_t salt) {
  Model m;
  for (uint64_t s : starts) {
    for (uint64_t i = s; i < s + len; ++i) m[i] = HashOf(i * 7 + salt);
  }
  return m;
}

TEST(TreeIndexTest, ThinTwoTebibyteDiskWritesLittleMetadata) {
  const uint64_t size = 2ull << 40;
  const uint64_t n = size / kChunk;
  Tree tree(size, kLeafSpan, kFanOut);
  // 8 x 16 MiB of data spread over the disk, not aligned to pages.
  std::vector<uint64_t> starts;
  for (uint64_t k = 0; k < 8; ++k) starts.push_back(k * (n / 8) + 12345);
  Model m = Runs(starts, 64, 0);
  Backup full = tree.Make(m, nullptr, {});
  // 4 x 1 MiB dirty.
  std::set<uint64_t> changed;
  for (uint64_t k = 0; k < 4; ++k) {
    for (uint64_t i = 0; i < 4; ++i) {
      const uint64_t c = starts[k * 2] + 10 + i;
      m[c] = HashOf(c + 999);
      changed.insert(c);
    }
  }
  Backup inc = tree.Make(m, &full, changed);
  RecordProperty("thin_full_metadata_bytes", static_cast<int>(full.written));
  RecordProperty("thin_incremental_metadata_bytes",
                 static_cast<int>(inc.written));
  EXPECT_LE(full.written, 1u << 20);
  EXPECT_LE(inc.written, 1u << 20);
  std::mt19937_64 rng(1);
  ExpectSame(inc, n, rng);
  // A lookup reads one page per level: depth + 1, not the index.
  tree.store.reads = 0;
  ASSERT_TRUE(inc.index->Lookup(starts[3] + 5).ok());
  EXPECT_EQ(tree.store.reads, tree.geometry_.depth + 1u);
}

// The most an incremental can write for `runs` changed runs of `len` chunks
// each, wherever they lie: per run, every leaf and interior page its range
// meets, each at its largest (all slots present), plus the root.
uint64_t WorstIncremental(const TreeGeometry& g, uint64_t runs, uint64_t len) {
  const uint64_t leaf =
      kIndexPageHeader + (g.leaf_span + 7) / 8 + 32ull * g.leaf_span;
  const uint64_t inner =
      kIndexPageHeader + 2 * ((g.fan_out + 7) / 8) + 32ull * g.fan_out;
  uint64_t per_run = 0;
  for (int level = 0; level < g.depth; ++level) {
    const uint64_t span = g.Span(level);
    per_run += ((len - 1) / span + 2) * (level == 0 ? leaf : inner);
  }
  return runs * per_run + inner;
}

TEST(TreeIndexTest, FullEightGibibyteDiskOnePercentDirty) {
  const uint64_t n = (8ull << 30) / kChunk;  // 32768 chunks
  Tree tree(n * kChunk, kLeafSpan, kFanOut);
  Model m = Runs({0}, n, 0);
  Backup full = tree.Make(m, nullptr, {});
  // 1% dirty (328 chunks) in 4 contiguous runs of 82 chunks.
  std::set<uint64_t> changed;
  for (uint64_t k = 0; k < 4; ++k) {
    for (uint64_t i = 0; i < 82; ++i) {
      const uint64_t c = 1000 + k * 8000 + i;
      m[c] = HashOf(c + 77777);
      changed.insert(c);
    }
  }
  Backup inc = tree.Make(m, &full, changed);
  const double ratio = static_cast<double>(inc.written) / full.written;
  RecordProperty("full_8g_metadata_bytes", static_cast<int>(full.written));
  RecordProperty("inc_8g_metadata_bytes", static_cast<int>(inc.written));
  const uint64_t worst = WorstIncremental(tree.geometry_, 4, 82);
  std::cout << "8 GiB full: " << full.written
            << " bytes, 1% dirty: " << inc.written << " bytes, ratio " << ratio
            << ", bound " << worst << " bytes ("
            << static_cast<double>(worst) / full.written << ")\n";
  EXPECT_LE(ratio, 0.015);
  EXPECT_LE(inc.written, worst);
  std::mt19937_64 rng(2);
  ExpectSame(inc, n, rng);
  // Wherever the runs lie, the bound holds.
  for (int k = 0; k < 20; ++k) {
    Model mk = m;
    std::set<uint64_t> ck;
    for (int r = 0; r < 4; ++r) {
      const uint64_t start = rng() % (n - 82);
      for (uint64_t i = start; i < start + 82; ++i) {
        mk[i] = HashOf(i + 1000000 * (k + 2));
        ck.insert(i);
      }
    }
    EXPECT_LE(tree.Make(mk, &full, ck).written, worst);
  }
}

// The page cache: hits, a byte budget, failed loads not cached, and no lock
// held while loading (a load that itself uses the cache would deadlock).
TEST(PageCacheTest, BudgetHitsAndNoLockAcrossTheLoad) {
  IndexPage page;
  page.slots = 16;
  for (uint32_t s = 0; s < 16; ++s) page.entries.emplace_back(s, HashOf(s));
  const size_t charge = PageCache::Charge(page);
  PageCache cache(10 * charge);
  int loads = 0;
  auto loader = [&]() -> Result<IndexPage> {
    ++loads;
    return page;
  };
  for (uint64_t k = 0; k < 30; ++k) {
    auto got = cache.Get(HashOf(k), [&]() -> Result<IndexPage> {
      // Re-entering the cache from a load: fine only without its lock.
      EXPECT_TRUE(cache.Get(HashOf(1000 + k), loader).ok());
      return loader();
    });
    ASSERT_TRUE(got.ok());
    EXPECT_LE(cache.bytes(), 10 * charge);
  }
  EXPECT_EQ(loads, 60);
  // The newest pages are cached; the oldest were evicted.
  ASSERT_TRUE(cache.Get(HashOf(29), loader).ok());
  EXPECT_EQ(loads, 60);
  ASSERT_TRUE(cache.Get(HashOf(0), loader).ok());
  EXPECT_EQ(loads, 61);
  auto failed = cache.Get(HashOf(5000),
                          [] { return Result<IndexPage>(IoError("gone")); });
  EXPECT_FALSE(failed.ok());
  EXPECT_FALSE(cache
                   .Get(HashOf(5000),
                        [] { return Result<IndexPage>(IoError("still gone")); })
                   .ok());
  EXPECT_GE(cache.hits(), 1u);
}

}  // namespace
}  // namespace ckptfs
