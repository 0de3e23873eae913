// A format 2 store (config "format": 2, docs/FORMAT.md section 8) through the
// Store API the backup job uses (NewIndexBuilder, StageIndex, PutIndex):
// full and incremental backups read back byte-identical, manifests are tiny,
// a damaged page is EIO and verify names it, gc keeps what a running
// incremental reuses even when its base is pruned and gc runs between its
// plan and its commit; a format 1 store still writes format 1.
#include <gtest/gtest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "backend/store/store.h"
#include "tests/fakes/memory_object_store.h"
#include "tests/fakes/pattern.h"

namespace ckptfs {
namespace {

using Bytes = std::vector<std::byte>;
constexpr uint32_t kChunk = 4096;

class TreeStoreTest : public ::testing::Test {
 protected:
  void Open(uint32_t format, uint32_t chunk_size = kChunk) {
    auto objects = std::make_unique<MemoryObjectStore>();
    memory_ = objects.get();
    StoreConfig config;
    config.chunk_size = chunk_size;
    config.format = format;
    auto store = Store::Open(std::move(objects), true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }
  void SetUp() override { Open(kTreeStoreFormat); }

  static BackupRecord Record(const std::string& checkpoint, size_t size) {
    BackupRecord r;
    r.domain = "vm";
    r.domain_uuid = "uuid";
    r.checkpoint = checkpoint;
    r.id = BackupId(r.domain_uuid, checkpoint);
    r.mode = "full";
    r.created = 1000;
    r.completed = 1001;
    r.disks.push_back({"vda", size, size, "/dev/null", 0});
    return r;
  }

  // A backup's two halves, as BackupRunner runs them: plan (open and keep
  // the base, make the builder) ...
  struct Pending {
    BackupRecord record;
    std::unique_ptr<ChunkIndexBuilder> builder;
    Bytes data;
  };
  Pending Plan(const std::string& checkpoint, const Bytes& data,
               const std::string& base, bool keep = true) {
    Pending p{Record(checkpoint, data.size()), nullptr, data};
    std::shared_ptr<const ChunkIndex> index;
    if (!base.empty()) {
      auto opened = store_->OpenIndex(Record(base, data.size()), "vda");
      EXPECT_TRUE(opened.ok()) << opened.status().ToString();
      index = *opened;
      if (keep) {
        EXPECT_TRUE(*store_->KeepIndex(*index));
      }
    }
    p.builder = store_->NewIndexBuilder(p.record, "vda", data.size(), index);
    EXPECT_EQ(p.builder->from_base(), index != nullptr);
    return p;
  }
  // ... and copy + commit: only the chunks in `changed` (all if base-less)
  // are written and Set.
  Status Commit(Pending& p, const std::set<size_t>& changed) {
    auto batch = store_->NewBatch();
    for (size_t i = 0; i * kChunk < p.data.size(); ++i) {
      if (p.builder->from_base() && !changed.contains(i)) continue;
      ASSIGN_OR_RETURN(ChunkRef ref, store_->PutChunk(std::span(p.data).subspan(
                                                          i * kChunk, kChunk),
                                                      nullptr, batch.get()));
      p.builder->Set(i, ref);
    }
    ASSIGN_OR_RETURN(Bytes manifest,
                     store_->StageIndex(p.record, *p.builder, batch.get()));
    last_manifest_size_ = manifest.size();
    RETURN_IF_ERROR(batch->Commit());
    RETURN_IF_ERROR(store_->PutIndex(p.record, "vda", manifest));
    return store_->PutBackup(p.record);
  }

  void ExpectReads(const std::string& checkpoint, const Bytes& want) {
    auto image = store_->OpenImage(Record(checkpoint, want.size()), "vda");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    Bytes got(want.size());
    Status st = (*image)->pread(got, 0);
    ASSERT_TRUE(st.ok()) << st.ToString();
    EXPECT_TRUE(got == want) << checkpoint << " reads other bytes";
  }

  size_t CountPages() { return memory_->List("index/")->size(); }

  MemoryObjectStore* memory_ = nullptr;
  std::unique_ptr<Store> store_;
  size_t last_manifest_size_ = 0;
};

TEST_F(TreeStoreTest, FullAndIncrementalReadBackByteIdentical) {
  const size_t n = 300;
  Bytes data = Pattern(1, n * kChunk);
  // A hole in the middle: zeros are not data.
  std::fill(data.begin() + 100 * kChunk, data.begin() + 200 * kChunk,
            std::byte{0});
  Pending full = Plan("b1", data, "");
  ASSERT_TRUE(Commit(full, {}).ok());
  EXPECT_LT(last_manifest_size_, 200u) << "a format 2 manifest is tiny";
  const size_t pages_full = CountPages();
  ExpectReads("b1", data);

  Bytes data2 = data;
  std::set<size_t> changed;
  for (size_t i : {3, 4, 5, 250}) {
    changed.insert(i);
    std::fill_n(data2.begin() + i * kChunk, kChunk, std::byte{0x42});
  }
  Pending inc = Plan("b2", data2, "b1");
  ASSERT_TRUE(Commit(inc, changed).ok());
  ExpectReads("b2", data2);
  ExpectReads("b1", data);
  // Two changed runs: two leaves and their paths, not the whole index.
  const size_t pages_inc = CountPages() - pages_full;
  EXPECT_GT(pages_inc, 0u);
  EXPECT_LE(pages_inc,
            2 * (TreeGeometry::For(n, kLeafSpan, kFanOut).depth + 1u));
  auto problems = store_->VerifyBackup(Record("b2", data2.size()));
  ASSERT_TRUE(problems.ok());
  EXPECT_TRUE(problems->empty()) << (*problems)[0];
}

TEST_F(TreeStoreTest, ADamagedPageIsEioAndVerifyNamesIt) {
  const Bytes data = Pattern(2, 64 * kChunk);
  Pending full = Plan("b1", data, "");
  ASSERT_TRUE(Commit(full, {}).ok());
  const std::string key = memory_->List("index/")->front();
  Bytes page = *memory_->Get(key);
  page[page.size() - 1] ^= std::byte{1};
  ASSERT_TRUE(memory_->Put(key, page).ok());
  auto image = store_->OpenImage(Record("b1", data.size()), "vda");
  ASSERT_TRUE(image.ok());
  bool failed = false;
  Bytes buf(kChunk);
  for (size_t i = 0; i < 64 && !failed; ++i) {
    Status st = (*image)->pread(buf, i * kChunk);
    if (!st.ok()) {
      failed = true;
      EXPECT_EQ(st.code(), Code::kIoError);
      EXPECT_NE(st.message().find("hash mismatch"), std::string::npos);
    }
  }
  EXPECT_TRUE(failed);
  auto problems = store_->VerifyBackup(Record("b1", data.size()));
  ASSERT_TRUE(problems.ok());
  ASSERT_EQ(problems->size(), 1u);
  EXPECT_NE((*problems)[0].find(key.substr(key.rfind('/') + 1)),
            std::string::npos)
      << (*problems)[0];
}

// The base is pruned and gc runs between the incremental's plan and its
// commit: nothing the incremental references is lost, because its plan
// touched the base's root and gc keeps the subtree of every page touched
// since the oldest running backup began. Without that touch (keep=false,
// the control) gc removes the base's pages and the incremental fails.
TEST_F(TreeStoreTest, PruneAndGcBetweenPlanAndCommitLoseNothing) {
  for (const bool keep : {true, false}) {
    SCOPED_TRACE(keep ? "base kept" : "control: base not kept");
    SetUp();
    const Bytes data = Pattern(3, 200 * kChunk);
    Pending full = Plan("b1", data, "");
    ASSERT_TRUE(Commit(full, {}).ok());
    const Store::Lock lock{.name = "job", .started = memory_->now() + 1};
    ASSERT_TRUE(store_->PutLock(lock).ok());
    Bytes data2 = data;
    std::fill_n(data2.begin() + 7 * kChunk, kChunk, std::byte{9});
    Pending inc = Plan("b2", data2, "b1", keep);
    // Prune the base, then gc with the cutoff a running backup gives.
    ASSERT_TRUE(store_->DeleteBackup(Record("b1", data.size())).ok());
    auto stats = store_->CollectGarbage(lock.started, false);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    Status committed = Commit(inc, {7});
    if (!keep) {
      EXPECT_GT(stats->pages_deleted, 0u);
      EXPECT_FALSE(committed.ok() &&
                   store_->OpenImage(Record("b2", data2.size()), "vda").ok() &&
                   store_->VerifyBackup(Record("b2", data2.size()))->empty());
      continue;
    }
    EXPECT_EQ(stats->pages_deleted, 0u);
    ASSERT_TRUE(committed.ok()) << committed.ToString();
    ExpectReads("b2", data2);
    // Once the job is over, gc removes what only the pruned base named.
    ASSERT_TRUE(store_->DeleteLock(lock.name).ok());
    const size_t before = CountPages();
    auto later = store_->CollectGarbage(memory_->now() + 1, false);
    ASSERT_TRUE(later.ok());
    EXPECT_GT(later->pages_deleted, 0u);
    EXPECT_EQ(CountPages(), before - later->pages_deleted);
    ExpectReads("b2", data2);
    auto problems = store_->VerifyBackup(Record("b2", data2.size()));
    ASSERT_TRUE(problems.ok());
    EXPECT_TRUE(problems->empty()) << (*problems)[0];
  }
}

// Issue 13 step 3: an open image reads index pages on demand, through the
// Store's one page cache: opening a 2 TiB thin image reads no page, a read
// depth + 1, SEEK_DATA/SEEK_HOLE over the whole disk a few paths per data
// run; four such images open and read at once stay within the budget.
TEST_F(TreeStoreTest, HugeThinImagesReadPagesOnDemandWithinOneBudget) {
  constexpr uint32_t kBig = 256 << 10;
  Open(kTreeStoreFormat, kBig);
  const uint64_t size = 2ull << 40;
  const uint64_t n = size / kBig;
  const Bytes chunk = Pattern(5, kBig);
  std::vector<uint64_t> starts;
  for (uint64_t k = 0; k < 8; ++k) starts.push_back(k * (n / 8) + 4321);
  for (int img = 0; img < 4; ++img) {
    BackupRecord r = Record("b" + std::to_string(img), size);
    auto builder = store_->NewIndexBuilder(r, "vda", size, nullptr);
    auto batch = store_->NewBatch();
    for (uint64_t s : starts) {
      for (uint64_t i = s; i < s + 64; ++i) {
        Bytes data = chunk;
        data[0] = static_cast<std::byte>(i + img);  // distinct per image
        data[1] = static_cast<std::byte>(i >> 8);
        auto ref = store_->PutChunk(data, nullptr, batch.get());
        ASSERT_TRUE(ref.ok());
        builder->Set(i, *ref);
      }
    }
    auto manifest = store_->StageIndex(r, *builder, batch.get());
    ASSERT_TRUE(manifest.ok()) << manifest.status().ToString();
    ASSERT_TRUE(batch->Commit().ok());
    ASSERT_TRUE(store_->PutIndex(r, "vda", *manifest).ok());
    ASSERT_TRUE(store_->PutBackup(r).ok());
  }
  uint64_t page_gets = 0;
  memory_->SetHook([&](std::string_view op, const std::string& key) {
    if (op == "get" && key.starts_with("index/")) ++page_gets;
  });
  const int depth = TreeGeometry::For(n, kLeafSpan, kFanOut).depth;
  std::vector<std::shared_ptr<ImageSource>> images;
  for (int img = 0; img < 4; ++img) {
    auto image =
        store_->OpenImage(Record("b" + std::to_string(img), size), "vda");
    ASSERT_TRUE(image.ok()) << image.status().ToString();
    images.push_back(*image);
  }
  EXPECT_EQ(page_gets, 0u) << "opening reads the manifest only";
  Bytes buf(kBig);
  ASSERT_TRUE(images[0]->pread(buf, (starts[2] + 5) * kBig).ok());
  EXPECT_EQ(buf[0], static_cast<std::byte>(starts[2] + 5));
  EXPECT_EQ(page_gets, depth + 1u) << "one page per level";
  // The same leaf again: cached.
  ASSERT_TRUE(images[0]->pread(buf, (starts[2] + 6) * kBig).ok());
  EXPECT_EQ(page_gets, depth + 1u);
  // cp --sparse over every image: SEEK_DATA/SEEK_HOLE from start to end.
  for (auto& image : images) {
    auto ext = image->extents(0, size);
    ASSERT_TRUE(ext.ok()) << ext.status().ToString();
    uint64_t data_bytes = 0;
    for (const Extent& e : *ext) data_bytes += e.hole ? 0 : e.length;
    EXPECT_EQ(data_bytes, 8 * 64 * uint64_t{kBig});
    for (uint64_t s : starts) {
      ASSERT_TRUE(image->pread(buf, (s + 63) * kBig).ok());
    }
  }
  RecordProperty("page_gets_four_images", static_cast<int>(page_gets));
  // Each image's tree is some 8 leaves x (depth + 1) pages: the walk reads
  // those, never one page per hole.
  EXPECT_LE(page_gets, 4u * 8 * 2 * (depth + 1));
  EXPECT_LE(store_->page_cache().bytes(), kPageCacheBytes);
  EXPECT_GT(store_->page_cache().hits(), 0u);
  memory_->SetHook(nullptr);
}

// A format 1 store is written as format 1 by the same code path: its
// manifest is the dense one, byte for byte what PutManifest writes.
TEST_F(TreeStoreTest, AFormatOneStoreStillWritesFormatOne) {
  Open(1);
  const Bytes data = Pattern(4, 10 * kChunk);
  Pending full = Plan("b1", data, "");
  EXPECT_FALSE(full.builder->from_base());
  ASSERT_TRUE(Commit(full, {}).ok());
  EXPECT_EQ(CountPages(), 0u);
  auto m = store_->GetManifest(Record("b1", data.size()), "vda");
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(last_manifest_size_, SerializeManifest(*m).size());
  EXPECT_EQ(*memory_->Get(Store::ManifestKey("uuid", "b1", "vda")),
            SerializeManifest(*m));
  ExpectReads("b1", data);
}

}  // namespace
}  // namespace ckptfs
