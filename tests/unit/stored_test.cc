// Stored checkpoints (issue 11 item 11): a stored disk's manifest lives only
// while a file holds it open (b), and the catalog is re-read only when it
// changed (c).
#include "mountd/stored.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/store/store.h"
#include "fs/checkpoint_view.h"
#include "mountd/source_factory.h"
#include "tests/fakes/memory_object_store.h"
#include "tests/fakes/pattern.h"

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;
constexpr uint32_t kChunk = 4096;

BlockCacheOptions SmallCache() {
  BlockCacheOptions o;
  o.capacity_bytes = 8 * kChunk;
  o.block_size = kChunk;
  o.shards = 1;
  o.prefetch_threads = 0;  // no read-ahead: every load below is a read's
  return o;
}

class StoredTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto objects = std::make_unique<MemoryObjectStore>();
    memory_ = objects.get();
    StoreConfig config;
    config.chunk_size = kChunk;
    auto store = Store::Open(std::move(objects), true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    memory_->SetHook([this](std::string_view op, const std::string& key) {
      if (op == "get" && key.find("manifest") != std::string::npos) {
        ++manifest_reads_;
      }
    });
    std::string tmpl = (fs::temp_directory_path() / "stored_test.XXXXXX");
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    memory_->SetHook(nullptr);
    fs::remove_all(dir_);
  }

  // A complete one-disk backup of `data` in the store.
  BackupRecord Backup(const std::string& checkpoint, const Bytes& data) {
    BackupRecord r;
    r.domain = "vm";
    r.domain_uuid = "uuid";
    r.checkpoint = checkpoint;
    r.id = BackupId(r.domain_uuid, checkpoint);
    r.mode = "full";
    r.created = 1000;
    r.completed = 1001;
    Manifest m;
    m.backup_id = r.id;
    m.disk = "vda";
    m.size = data.size();
    m.chunk_size = kChunk;
    for (size_t off = 0; off < data.size(); off += kChunk) {
      auto ref = store_->PutChunk(std::span(data).subspan(off, kChunk));
      EXPECT_TRUE(ref.ok()) << ref.status().ToString();
      m.chunks.push_back(ref.ok() ? *ref : ChunkRef{});
    }
    EXPECT_TRUE(store_->PutManifest(r, m).ok());
    r.disks.push_back({"vda", data.size(), data.size(), "/dev/null", 0});
    EXPECT_TRUE(store_->PutBackup(r).ok());
    return r;
  }

  std::unique_ptr<Catalog> OpenCatalog() {
    auto cat = Catalog::Open((dir_ / "catalog.db").string());
    EXPECT_TRUE(cat.ok()) << cat.status().ToString();
    return cat.ok() ? std::move(cat).value() : nullptr;
  }

  MemoryObjectStore* memory_ = nullptr;
  std::unique_ptr<Store> store_;
  std::atomic<int> manifest_reads_{0};
  fs::path dir_;
};

Bytes Read(ImageSource& image, uint64_t offset, size_t n) {
  Bytes out(n);
  Status st = image.pread(out, offset);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return out;
}

// 43d0e95 kept every stored disk's manifest from its first read to the
// daemon's end: one read of each backup held them all in memory.
TEST_F(StoredTest, ManifestIsDroppedWhenTheLastHoldGoes) {
  const Bytes data = Pattern(1, 8 * kChunk);
  const BackupRecord r = Backup("b1", data);
  BlockCache cache(SmallCache());
  auto image = OpenStoredDisk(*store_, r, r.disks[0], cache);
  EXPECT_EQ(manifest_reads_, 0) << "read when the tree is built";

  auto first = HoldImage(image);
  auto second = HoldImage(image);
  EXPECT_EQ(Read(*first, 0, kChunk),
            Bytes(data.begin(), data.begin() + kChunk));
  EXPECT_EQ(manifest_reads_, 1);
  // Held: reads and seeks of either file use the loaded manifest.
  EXPECT_EQ(Read(*second, 3 * kChunk, kChunk),
            Bytes(data.begin() + 3 * kChunk, data.begin() + 4 * kChunk));
  EXPECT_EQ(*SeekImage(*second, 0, false), data.size());
  first.reset();
  EXPECT_EQ(*SeekImage(*second, kChunk, true), kChunk);
  EXPECT_EQ(manifest_reads_, 1);

  // The last one closed: nothing keeps it. A seek without a hold loads it
  // for its own length only.
  second.reset();
  EXPECT_EQ(*SeekImage(*image, 0, true), 0u);
  EXPECT_EQ(manifest_reads_, 2);
  EXPECT_EQ(*SeekImage(*image, 0, true), 0u);
  EXPECT_EQ(manifest_reads_, 3);

  // Reopened: right bytes, loaded once more, held again.
  auto again = HoldImage(image);
  EXPECT_EQ(Read(*again, 5 * kChunk, 2 * kChunk),
            Bytes(data.begin() + 5 * kChunk, data.begin() + 7 * kChunk));
  EXPECT_EQ(*SeekImage(*again, 0, false), data.size());
  EXPECT_EQ(manifest_reads_, 4);
}

// Live images hold no manifest: a hold is the image itself.
TEST_F(StoredTest, HoldOfAnyOtherImageIsTheImage) {
  class Zeros : public ImageSource {
   public:
    uint64_t size() const override { return kChunk; }
    Status pread(std::span<std::byte> buf, uint64_t) override {
      std::fill(buf.begin(), buf.end(), std::byte{0});
      return Status::Ok();
    }
  };
  std::shared_ptr<ImageSource> live = std::make_shared<Zeros>();
  EXPECT_EQ(HoldImage(live), live);
}

// 43d0e95 re-read every backup row and disk row from the catalog every 5 s.
TEST_F(StoredTest, CatalogIsReadAgainOnlyWhenItChanged) {
  auto cat = OpenCatalog();
  ASSERT_NE(cat, nullptr);
  BlockCache cache(SmallCache());
  StoredCheckpoints stored(*store_, *cat, cache);
  ASSERT_TRUE(stored.Refresh().ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 1u);

  // The daemon's own job records change no backup.
  Job job;
  job.id = "j1";
  job.kind = "checkpoint";
  ASSERT_TRUE(cat->PutJob(job).ok());
  ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 1u);

  // Its own backup write (a backup completing in the daemon).
  BackupRecord b1 = Backup("b1", Pattern(1, kChunk));
  ASSERT_TRUE(cat->AddBackup(b1).ok());
  ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 2u);
  ASSERT_EQ(stored.List().size(), 1u);
  ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 2u);

  // Another connection (`ckptfs prune`, `reindex` in another process).
  auto other = OpenCatalog();
  ASSERT_NE(other, nullptr);
  ASSERT_TRUE(other->RemoveBackup(b1.id).ok());
  ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 3u);
  EXPECT_TRUE(stored.List().empty());
  BackupRecord b2 = Backup("b2", Pattern(2, kChunk));
  ASSERT_TRUE(other->ReplaceBackups({b1, b2}).ok());
  ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 4u);
  EXPECT_EQ(stored.List().size(), 2u);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(stored.Refresh().ok());
  EXPECT_EQ(stored.reloads(), 4u);
}

}  // namespace
}  // namespace ckptfs
