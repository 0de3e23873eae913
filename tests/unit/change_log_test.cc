// The store's change log (change_log.h) and the follower that keeps a
// second host's catalog in step with it (catalog_follower.h), over the
// in-memory ObjectStore: numbering under racing writers, the head found
// from any hint, trimming and the gaps it makes, damaged changes, and a
// catalog that follows backups added and deleted elsewhere without listing
// the store.
#include "backend/store/change_log.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "backend/store/catalog.h"
#include "backend/store/catalog_follower.h"
#include "backend/store/store.h"
#include "tests/fakes/memory_object_store.h"
#include "tests/fakes/pattern.h"

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Kind = Change::Kind;

std::span<const std::byte> Text(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

std::vector<uint64_t> Seqs(const std::vector<Change>& changes) {
  std::vector<uint64_t> out;
  for (const auto& c : changes) out.push_back(c.seq);
  return out;
}

class ChangeLogTest : public ::testing::Test {
 protected:
  std::shared_ptr<MemoryObjectStore> objects_ =
      std::make_shared<MemoryObjectStore>();
  ChangeLog log_{objects_};
};

TEST_F(ChangeLogTest, NumbersFromOneAndReadsBackInOrder) {
  EXPECT_EQ(*log_.Head(), 0u);
  EXPECT_TRUE(log_.Read(0)->changes.empty());
  EXPECT_FALSE(log_.Read(0)->gap);
  EXPECT_EQ(*log_.Append(Kind::kAdded, "u1", "b1"), 1u);
  EXPECT_EQ(*log_.Append(Kind::kAdded, "u1", "b2"), 2u);
  EXPECT_EQ(*log_.Append(Kind::kRemoved, "u1", "b1"), 3u);
  auto all = log_.Read(0);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(Seqs(all->changes), (std::vector<uint64_t>{1, 2, 3}));
  EXPECT_EQ(all->changes[2].kind, Kind::kRemoved);
  EXPECT_EQ(all->changes[2].domain_uuid, "u1");
  EXPECT_EQ(all->changes[2].checkpoint, "b1");
  EXPECT_EQ(Seqs(log_.Read(1)->changes), (std::vector<uint64_t>{2, 3}));
  EXPECT_TRUE(log_.Read(3)->changes.empty());
  EXPECT_EQ(Seqs(log_.Read(0, 2)->changes), (std::vector<uint64_t>{1, 2}));
  EXPECT_EQ(*objects_->List("changes/"),
            (std::vector<std::string>{ChangeLog::Key(1), ChangeLog::Key(2),
                                      ChangeLog::Key(3)}));
}

// Another process's log object starts with no hint: it finds the head by
// search, whatever the count.
TEST_F(ChangeLogTest, HeadIsFoundFromNoHint) {
  for (uint64_t n = 1; n <= 70; ++n) {
    ASSERT_EQ(*log_.Append(Kind::kAdded, "u", "b" + std::to_string(n)), n);
    ChangeLog other(objects_);
    ASSERT_EQ(*other.Head(), n);
  }
}

// Writers on several hosts race for the next number: each change gets one
// number, and the numbers stay one run.
TEST_F(ChangeLogTest, RacingWritersGetDistinctContiguousNumbers) {
  constexpr int kWriters = 4, kEach = 25;
  std::vector<std::thread> threads;
  for (int w = 0; w < kWriters; ++w) {
    threads.emplace_back([this, w] {
      ChangeLog mine(objects_);  // a host of its own: its own hint
      for (int i = 0; i < kEach; ++i) {
        auto seq = mine.Append(Kind::kAdded, "u" + std::to_string(w),
                               "b" + std::to_string(i));
        EXPECT_TRUE(seq.ok()) << seq.status().ToString();
      }
    });
  }
  for (auto& t : threads) t.join();
  auto all = log_.Read(0, 1000);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->changes.size(), size_t{kWriters * kEach});
  std::set<std::pair<std::string, std::string>> seen;
  for (size_t i = 0; i < all->changes.size(); ++i) {
    EXPECT_EQ(all->changes[i].seq, i + 1);
    seen.insert({all->changes[i].domain_uuid, all->changes[i].checkpoint});
  }
  EXPECT_EQ(seen.size(), size_t{kWriters * kEach});
}

TEST_F(ChangeLogTest, TrimKeepsTheNewestAndReadersBehindItSeeAGap) {
  std::vector<int64_t> mtimes;
  for (int i = 1; i <= 10; ++i) {
    ASSERT_TRUE(log_.Append(Kind::kAdded, "u", "b" + std::to_string(i)).ok());
    mtimes.push_back(*objects_->ModifiedTime(ChangeLog::Key(i)));
  }
  // The logical clock: changes 1..6 are older than the cutoff.
  const int64_t cutoff = mtimes[5] + 1;
  EXPECT_EQ(*log_.Trim(cutoff, /*dry_run=*/true), 6u);
  EXPECT_EQ(objects_->List("changes/")->size(), 10u);
  EXPECT_EQ(*log_.Trim(cutoff, /*dry_run=*/false), 6u);
  EXPECT_FALSE(*objects_->Exists(ChangeLog::Key(6)));
  EXPECT_TRUE(*objects_->Exists(ChangeLog::Key(7)));

  EXPECT_TRUE(log_.Read(3)->gap);  // trimmed past this reader
  EXPECT_TRUE(log_.Read(0)->gap);  // from the beginning: gone too
  EXPECT_FALSE(log_.Read(8)->gap);
  EXPECT_EQ(Seqs(log_.Read(8)->changes), (std::vector<uint64_t>{9, 10}));
  // A new process finds the head past the trimmed run, and appends after it.
  ChangeLog fresh(objects_);
  EXPECT_EQ(*fresh.Head(), 10u);
  EXPECT_EQ(*fresh.Append(Kind::kRemoved, "u", "b1"), 11u);

  // Everything is old now: all but the newest go, and the head stays.
  EXPECT_EQ(*log_.Trim(INT64_MAX, false), 4u);
  EXPECT_EQ(*objects_->List("changes/"),
            (std::vector<std::string>{ChangeLog::Key(11), "changes/trimmed"}));
  EXPECT_EQ(*ChangeLog(objects_).Head(), 11u);
  EXPECT_EQ(*log_.Trim(INT64_MAX, false), 0u);
}

// A trim cut short after writing its floor leaves changes below it: still
// one run up to the head, so the head and the reads stay right.
TEST_F(ChangeLogTest, TrimCutShortLeavesTheLogReadable) {
  for (int i = 1; i <= 6; ++i) {
    ASSERT_TRUE(log_.Append(Kind::kAdded, "u", "b" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(objects_->Put("changes/trimmed", Text("4\n")).ok());
  ASSERT_TRUE(objects_->Delete(ChangeLog::Key(1)).ok());
  ASSERT_TRUE(objects_->Delete(ChangeLog::Key(2)).ok());
  // 3 and 4 are left below the floor.
  EXPECT_EQ(*ChangeLog(objects_).Head(), 6u);
  EXPECT_EQ(Seqs(log_.Read(3)->changes), (std::vector<uint64_t>{4, 5, 6}));
  EXPECT_TRUE(log_.Read(1)->gap);
  EXPECT_EQ(*log_.Trim(INT64_MAX, false), 3u);  // 3, 4, 5, not the head
  EXPECT_EQ(*ChangeLog(objects_).Head(), 6u);
}

TEST_F(ChangeLogTest, ADamagedChangeIsAGap) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(log_.Append(Kind::kAdded, "u", "b" + std::to_string(i)).ok());
  }
  ASSERT_TRUE(objects_->Put(ChangeLog::Key(2), Text("{\"seq\":")).ok());
  EXPECT_TRUE(log_.Read(0)->gap);
  EXPECT_FALSE(log_.Read(2)->gap);
}

TEST(ChangeTest, ParsesWhatItWritesAndNothingElse) {
  Change c{7, Kind::kRemoved, "5a4c-uuid", "nightly 1", 1700000000};
  const std::string key = ChangeLog::Key(7);
  EXPECT_EQ(key, "changes/00000000000000000007");
  auto back = ParseChange(key, SerializeChange(c));
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  EXPECT_EQ(*back, c);
  // Its number must be its key's: a change copied elsewhere is damage.
  EXPECT_EQ(ParseChange(ChangeLog::Key(8), SerializeChange(c)).status().code(),
            Code::kIoError);
  for (
      const char* bad :
      {"", "[]", "{}", "not json",
       R"({"seq":7,"change":"renamed","domain_uuid":"u","checkpoint":"c","time":1})",
       R"({"seq":7,"change":"added","domain_uuid":"","checkpoint":"c","time":1})",
       R"({"seq":-7,"change":"added","domain_uuid":"u","checkpoint":"c","time":1})",
       R"({"seq":7,"change":"added","domain_uuid":"u","checkpoint":3,"time":1})"}) {
    EXPECT_EQ(ParseChange(key, bad).status().code(), Code::kIoError) << bad;
  }
}

// ---------------------------------------------------------------- follower

class FollowerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (fs::temp_directory_path() / "change_log_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    auto objects = std::make_unique<MemoryObjectStore>();
    memory_ = objects.get();
    StoreConfig config;
    config.chunk_size = 4096;
    auto store = Store::Open(std::move(objects), true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    auto a = Catalog::Open((dir_ / "a.db").string());
    auto b = Catalog::Open((dir_ / "b.db").string());
    ASSERT_TRUE(a.ok() && b.ok());
    a_ = std::move(a).value();
    b_ = std::move(b).value();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A complete backup made by host A: in the store and in A's catalog.
  BackupRecord Backup(const std::string& checkpoint, int seed) {
    BackupRecord r;
    r.domain = "vm";
    r.domain_uuid = "uuid-1";
    r.checkpoint = checkpoint;
    r.id = BackupId(r.domain_uuid, checkpoint);
    r.mode = "full";
    r.created = 1000 + seed;
    r.completed = r.created + 1;
    const std::vector<std::byte> data = Pattern(seed, 4096);
    Manifest m;
    m.backup_id = r.id;
    m.disk = "vda";
    m.size = data.size();
    m.chunk_size = 4096;
    auto ref = store_->PutChunk(data);
    EXPECT_TRUE(ref.ok());
    m.chunks.push_back(*ref);
    EXPECT_TRUE(store_->PutManifest(r, m).ok());
    r.disks.push_back({"vda", data.size(), data.size(), "/dev/null", 0});
    EXPECT_TRUE(store_->PutBackup(r).ok());
    EXPECT_TRUE(a_->AddBackup(r).ok());
    return r;
  }

  std::vector<std::string> Ids(Catalog& c) {
    auto all = c.ListBackups();
    EXPECT_TRUE(all.ok()) << all.status().ToString();
    std::vector<std::string> out;
    if (!all.ok()) return out;
    for (const auto& r : *all) out.push_back(r.id);
    return out;
  }

  fs::path dir_;
  MemoryObjectStore* memory_ = nullptr;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Catalog> a_, b_;
};

TEST_F(FollowerTest, FollowsBackupsAddedAndDeletedElsewhereWithoutListing) {
  const BackupRecord b1 = Backup("b1", 1);
  CatalogFollower follower(*store_, *b_);
  ASSERT_TRUE(follower.Resync().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id}));

  // From here on the store's backups are never listed.
  int lists = 0;
  memory_->SetHook([&](std::string_view op, const std::string& prefix) {
    lists += op == "list" && (prefix.empty() || prefix == "backups/");
  });
  const BackupRecord b2 = Backup("b2", 2);
  const BackupRecord b3 = Backup("b3", 3);
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id, b2.id, b3.id}));
  auto got = b_->GetBackup(b2.id);
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ((*got)->disks.size(), 1u);
  EXPECT_EQ((*got)->created, b2.created);

  // A prune on another host; then a backup of the same name made anew.
  for (const BackupRecord* r : {&b1, &b2}) {
    ASSERT_TRUE(a_->RemoveBackup(r->id).ok());
    ASSERT_TRUE(store_->DeleteBackup(*r).ok());
  }
  const BackupRecord b2again = Backup("b2", 4);
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b3.id, b2again.id}));
  EXPECT_EQ((*b_->GetBackup(b2.id))->created, b2again.created);
  // Polling again changes nothing.
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b3.id, b2again.id}));
  memory_->SetHook(nullptr);
  EXPECT_EQ(follower.stats().resyncs, 1u);
  EXPECT_EQ(follower.stats().applied, 5u);
  EXPECT_EQ(lists, 0);
}

// A record that cannot be read (damaged, or the store not answering) is
// retried at every Poll, then skipped, so it cannot stop the feed.
TEST_F(FollowerTest, ARecordThatCannotBeReadIsRetriedThenSkipped) {
  CatalogFollower follower(*store_, *b_);
  ASSERT_TRUE(follower.Resync().ok());
  const BackupRecord b1 = Backup("b1", 1);
  const std::string key = "backups/uuid-1/b1/backup.json";
  const std::vector<std::byte> good = *memory_->Get(key);
  ASSERT_TRUE(memory_->Put(key, Text("garbage")).ok());
  for (int i = 0; i + 1 < CatalogFollower::kMaxRetries; ++i) {
    EXPECT_FALSE(follower.Poll().ok());
  }
  EXPECT_TRUE(Ids(*b_).empty());
  EXPECT_EQ(follower.stats().position, 0u);
  ASSERT_TRUE(memory_->Put(key, good).ok());  // the store answers again
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id}));
  EXPECT_EQ(follower.stats().skipped, 0u);

  // Damaged for good: given up on after kMaxRetries, and the next change
  // is applied.
  const BackupRecord b2 = Backup("b2", 2);
  ASSERT_TRUE(memory_->Put("backups/uuid-1/b2/backup.json", Text("x")).ok());
  const BackupRecord b3 = Backup("b3", 3);
  for (int i = 0; i + 1 < CatalogFollower::kMaxRetries; ++i) {
    EXPECT_FALSE(follower.Poll().ok());
  }
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id, b3.id}));
  EXPECT_EQ(follower.stats().skipped, 1u);
}

TEST_F(FollowerTest, AGapListsTheStoreOnce) {
  CatalogFollower follower(*store_, *b_);
  ASSERT_TRUE(follower.Resync().ok());
  const BackupRecord b1 = Backup("b1", 1);
  const BackupRecord b2 = Backup("b2", 2);
  // gc trimmed past this reader (it was down for a week).
  ASSERT_TRUE(store_->changes().Trim(INT64_MAX, false).ok());
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id, b2.id}));
  EXPECT_EQ(follower.stats().resyncs, 2u);
  const BackupRecord b3 = Backup("b3", 3);
  ASSERT_TRUE(follower.Poll().ok());
  EXPECT_EQ(Ids(*b_), (std::vector<std::string>{b1.id, b2.id, b3.id}));
  EXPECT_EQ(follower.stats().resyncs, 2u);
}

}  // namespace
}  // namespace ckptfs
