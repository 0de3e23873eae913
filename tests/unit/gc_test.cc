// gc and the trust rules of the store (issue 11 items 1, 5, 9, 10 and the
// interrupted prune): each test injects what a concurrent or later writer
// does at every step of the code under test, through the hook of the shared
// MemoryObjectStore, instead of relying on timing.
#include <gtest/gtest.h>

#include <algorithm>
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

class GcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto objects = std::make_unique<MemoryObjectStore>();
    memory_ = objects.get();
    StoreConfig config;
    config.chunk_size = kChunk;
    auto store = Store::Open(std::move(objects), true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  static BackupRecord Record(const std::string& checkpoint) {
    BackupRecord r;
    r.domain = "vm";
    r.domain_uuid = "uuid";
    r.checkpoint = checkpoint;
    r.id = BackupId(r.domain_uuid, checkpoint);
    r.mode = "full";
    r.created = 1000;
    r.completed = 1001;
    return r;
  }

  // A complete one-disk backup of `data`.
  Status Backup(const std::string& checkpoint, const Bytes& data) {
    BackupRecord r = Record(checkpoint);
    Manifest m;
    m.backup_id = r.id;
    m.disk = "vda";
    m.size = data.size();
    m.chunk_size = kChunk;
    for (size_t off = 0; off < data.size(); off += kChunk) {
      ASSIGN_OR_RETURN(ChunkRef ref,
                       store_->PutChunk(std::span(data).subspan(off, kChunk)));
      m.chunks.push_back(ref);
    }
    RETURN_IF_ERROR(store_->PutManifest(r, m));
    r.disks.push_back({"vda", data.size(), data.size(), "/dev/null", 0});
    return store_->PutBackup(r);
  }

  // Every chunk some manifest names exists.
  void ExpectNoDanglingChunk() {
    auto refs = store_->ReferencedChunks();
    ASSERT_TRUE(refs.ok()) << refs.status().ToString();
    for (const ChunkHash& h : *refs) {
      EXPECT_TRUE(*memory_->Exists(Store::ChunkKey(h)))
          << "chunk " << HashToHex(h) << " is named but gone";
    }
  }

  MemoryObjectStore* memory_ = nullptr;
  std::unique_ptr<Store> store_;
};

// Issue 11 item 5: a backup that starts while gc runs and reuses a chunk gc
// is about to delete (unreferenced since a prune, old) must never end up
// naming a deleted chunk, whichever step of gc it runs between. On 43d0e95
// gc read the time and deleted later: a Touch in between was lost.
TEST_F(GcTest, BackupReusingAChunkAtEveryStepOfGcKeepsIt) {
  const Bytes data = Pattern(1, 4 * kChunk);
  // Count gc's steps once.
  size_t steps = 0;
  {
    ASSERT_TRUE(Backup("old", data).ok());
    ASSERT_TRUE(store_->DeleteBackup(Record("old")).ok());
    memory_->SetHook([&](std::string_view, const std::string&) { ++steps; });
    ASSERT_TRUE(store_->CollectGarbage(memory_->now() + 1, false).ok());
    memory_->SetHook(nullptr);
  }
  ASSERT_GT(steps, 5u);
  for (size_t at = 0; at <= steps; ++at) {
    SCOPED_TRACE("backup runs before gc step " + std::to_string(at));
    SetUp();
    ASSERT_TRUE(Backup("old", data).ok());
    ASSERT_TRUE(store_->DeleteBackup(Record("old")).ok());
    // gc as early as it may be: everything stored so far is old.
    const int64_t cutoff = memory_->now() + 1;
    size_t step = 0;
    bool ran = false;
    const std::string name = "new" + std::to_string(at);
    memory_->SetHook([&](std::string_view, const std::string&) {
      if (step++ != at || ran) return;
      ran = true;
      // The concurrent backup: lock, then chunks (deduplicated onto the
      // old objects when they are still there), manifest, record.
      Store::Lock lock{.name = "job", .started = memory_->now()};
      memory_->SetHook(nullptr);
      EXPECT_TRUE(store_->PutLock(lock).ok());
      EXPECT_TRUE(Backup(name, data).ok());
      EXPECT_TRUE(store_->DeleteLock("job").ok());
    });
    auto stats = store_->CollectGarbage(cutoff, false);
    memory_->SetHook(nullptr);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    if (!ran) {
      ASSERT_TRUE(Backup(name, data).ok());
    }
    ExpectNoDanglingChunk();
    auto record = store_->GetBackup("uuid", name);
    ASSERT_TRUE(record.ok());
    EXPECT_TRUE(store_->VerifyBackup(*record)->empty());
  }
}

TEST_F(GcTest, UnreferencedOldChunksGoRecentOnesStay) {
  ASSERT_TRUE(Backup("a", Pattern(2, 2 * kChunk)).ok());
  ASSERT_TRUE(store_->DeleteBackup(Record("a")).ok());
  const int64_t cutoff = memory_->now() + 1;
  ASSERT_TRUE(store_->PutChunk(Pattern(3, kChunk)).ok());  // after cutoff
  auto stats = store_->CollectGarbage(cutoff, false);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->deleted, 2u);
  EXPECT_EQ(stats->recent, 1u);
  EXPECT_EQ(memory_->List("chunks/")->size(), 1u);
}

// The cutoff follows the oldest lock.
TEST_F(GcTest, CutoffIsBeforeTheOldestLock) {
  EXPECT_EQ(*store_->GcCutoff(5000), 5000 - 60);
  ASSERT_TRUE(store_->PutLock({.name = "a", .started = 3000}).ok());
  ASSERT_TRUE(store_->PutLock({.name = "b", .started = 4000}).ok());
  EXPECT_EQ(*store_->GcCutoff(5000), 3000 - 60);
}

// A lock whose lease ran out goes, with the incomplete backup it names; a
// renewed one, one without a lease and complete backups stay.
TEST_F(GcTest, ExpiredLocksGoWithTheirIncompleteBackup) {
  ASSERT_TRUE(Backup("a", Pattern(1, 2 * kChunk)).ok());
  ASSERT_TRUE(store_
                  ->PutLock({.name = "dead",
                             .started = 1,
                             .host = "hostA",
                             .domain_uuid = "uuid",
                             .checkpoint = "p",
                             .lease = 10})
                  .ok());
  // What hostA's backup had written when it died: a manifest, no record.
  BackupRecord partial = Record("p");
  Manifest m{partial.id, "vda", kChunk, kChunk, {}};
  m.chunks.push_back(*store_->PutChunk(Pattern(2, kChunk)));
  ASSERT_TRUE(store_->PutManifest(partial, m).ok());
  ASSERT_TRUE(
      store_->PutLock({.name = "live", .started = 2, .lease = 10}).ok());
  ASSERT_TRUE(store_->PutLock({.name = "old", .started = 3}).ok());
  ASSERT_TRUE(*store_->RenewLock("live"));
  const int64_t now = memory_->now() + 10;  // "live" was renewed just now

  auto expired = store_->ExpireLocks(now);
  ASSERT_TRUE(expired.ok()) << expired.status().ToString();
  ASSERT_EQ(expired->size(), 1u);
  EXPECT_EQ((*expired)[0].name, "dead");
  EXPECT_EQ((*expired)[0].host, "hostA");
  auto locks = store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  std::vector<std::string> left;
  for (const auto& l : *locks) left.push_back(l.name);
  EXPECT_EQ(left, (std::vector<std::string>{"live", "old"}));
  EXPECT_FALSE(*memory_->Exists(Store::ManifestKey("uuid", "p", "vda")));
  EXPECT_TRUE(store_->GetBackup("uuid", "a").ok());
  ExpectNoDanglingChunk();
  // The dead writer learns it at its next renewal, before its record.
  EXPECT_FALSE(*store_->RenewLock("dead"));
  EXPECT_TRUE(*store_->RenewLock("live"));
  // gc is held back by the live locks only.
  EXPECT_EQ(*store_->GcCutoff(now), 2 - 60);
}

// A writer renewing while gc expires its lock: the delete is atomic with the
// renewal, so the lock either stays (renewed first) or the writer's renewal
// reports it gone; never a lock gc ignores that its writer thinks it holds.
TEST_F(GcTest, RenewalRacingExpiryKeepsTheLock) {
  ASSERT_TRUE(store_->PutLock({.name = "w", .started = 1, .lease = 10}).ok());
  const int64_t now = memory_->now() + 11;  // expired, unless renewed
  bool renewed = false;
  memory_->SetHook([&](std::string_view op, const std::string& key) {
    if (op == "delete-if-unused" && key.starts_with("locks/") && !renewed) {
      renewed = true;
      // Renewed after gc listed the lock, before its delete.
      ASSERT_TRUE(*memory_->Touch(key));
    }
  });
  auto expired = store_->ExpireLocks(now);
  memory_->SetHook(nullptr);
  ASSERT_TRUE(expired.ok());
  EXPECT_TRUE(renewed);
  EXPECT_TRUE(expired->empty());
  EXPECT_EQ(store_->ListLocks()->size(), 1u);
  EXPECT_TRUE(*store_->RenewLock("w"));
}

// Issue 11 item 9: owners are fields, not name prefixes.
TEST_F(GcTest, LocksKeepTheirOwnerExactly) {
  ASSERT_TRUE(store_
                  ->PutLock({.name = "node-2-77-job9",
                             .started = 7,
                             .host = "node-2",
                             .pid = 77,
                             .domain_uuid = "u",
                             .checkpoint = "c"})
                  .ok());
  auto locks = store_->ListLocks();
  ASSERT_TRUE(locks.ok());
  ASSERT_EQ(locks->size(), 1u);
  const Store::Lock& l = (*locks)[0];
  EXPECT_EQ(l.host, "node-2");
  EXPECT_NE(l.host, "node");  // what a prefix match took for its own
  EXPECT_EQ(l.pid, 77);
  EXPECT_EQ(l.domain_uuid, "u");
  EXPECT_EQ(l.checkpoint, "c");
  EXPECT_EQ(l.started, 7);
}

// Issue 11 item 1: a name in the store is taken; undo removes only what the
// job wrote.
TEST_F(GcTest, TakenNamesAndUndoOfOwnObjectsOnly) {
  ASSERT_TRUE(Backup("weekly", Pattern(4, kChunk)).ok());
  const auto before = memory_->objects();
  EXPECT_EQ(store_->CheckNameFree("uuid", "weekly").code(),
            Code::kAlreadyExists);
  // A second job with the same name can write nothing over the first.
  EXPECT_EQ(Backup("weekly", Pattern(5, kChunk)).code(), Code::kAlreadyExists);
  // Its undo (nothing of its own written) removes nothing.
  ASSERT_TRUE(store_->DeleteWritten(Record("weekly"), {}, false).ok());
  auto after = memory_->objects();
  for (const auto& [key, bytes] : before) {
    if (key.starts_with("backups/")) {
      EXPECT_EQ(after[key], bytes) << key;
    }
  }
  auto r = store_->GetBackup("uuid", "weekly");
  ASSERT_TRUE(r.ok());
  auto image = store_->OpenImage(*r, "vda");
  ASSERT_TRUE(image.ok());
  Bytes out(kChunk);
  ASSERT_TRUE((*image)->pread(out, 0).ok());
  EXPECT_EQ(out, Pattern(4, kChunk));
}

// The interrupted prune: killed at every step of DeleteBackup, the store is
// never left with manifests that verify would call damage for ever: gc
// finishes the delete.
TEST_F(GcTest, DeleteCutShortAtEveryStepIsFinishedByGc) {
  size_t steps = 0;
  ASSERT_TRUE(Backup("p", Pattern(6, 2 * kChunk)).ok());
  memory_->SetHook([&](std::string_view, const std::string&) { ++steps; });
  ASSERT_TRUE(store_->DeleteBackup(Record("p")).ok());
  memory_->SetHook(nullptr);
  for (size_t at = 0; at < steps; ++at) {
    SCOPED_TRACE("killed at step " + std::to_string(at));
    SetUp();
    ASSERT_TRUE(Backup("keep", Pattern(7, 2 * kChunk)).ok());
    ASSERT_TRUE(Backup("p", Pattern(6, 2 * kChunk)).ok());
    size_t step = 0;
    bool dead = false;
    // A dead process does nothing more: every later mutation is dropped by
    // making the store refuse it (the hook throws past the Store API).
    struct Killed {};
    memory_->SetHook([&](std::string_view op, const std::string&) {
      if (step++ == at) dead = true;
      if (dead && op != "list" && op != "get" && op != "exists" &&
          op != "mtime") {
        throw Killed{};
      }
    });
    try {
      (void)store_->DeleteBackup(Record("p"));
    } catch (const Killed&) {
    }
    memory_->SetHook(nullptr);
    // Served whole or not at all: a record never outlives its manifest.
    if (store_->GetBackup("uuid", "p").ok()) {
      EXPECT_TRUE(*memory_->Exists(Store::ManifestKey("uuid", "p", "vda")));
    }
    auto incomplete = store_->ListIncomplete();
    ASSERT_TRUE(incomplete.ok());
    for (const auto& inc : *incomplete) EXPECT_TRUE(inc.deleting);
    ASSERT_TRUE(store_->CollectGarbage(memory_->now() + 1, false).ok());
    EXPECT_TRUE(store_->ListIncomplete()->empty());
    auto list = store_->ListBackups();
    ASSERT_TRUE(list.ok());
    EXPECT_TRUE(std::any_of(list->begin(), list->end(),
                            [](auto& b) { return b.checkpoint == "keep"; }));
    ExpectNoDanglingChunk();
  }
}

// Issue 11 item 10: a damaged chunk is moved aside by verify, so the next
// backup holding the same bytes stores it again and the old backup heals.
TEST_F(GcTest, DamagedChunkIsQuarantinedAndStoredAgain) {
  const Bytes data = Pattern(8, 2 * kChunk);
  ASSERT_TRUE(Backup("b1", data).ok());
  auto b1 = store_->GetBackup("uuid", "b1");
  ASSERT_TRUE(b1.ok());
  const ChunkRef ref = store_->GetManifest(*b1, "vda")->chunks[0];
  const std::string key = Store::ChunkKey(ref.hash);
  Bytes junk = Pattern(9, 100);
  ASSERT_TRUE(memory_->Put(key, junk).ok());
  auto problems = store_->VerifyBackup(*b1);
  ASSERT_TRUE(problems.ok());
  ASSERT_EQ(problems->size(), 1u);
  EXPECT_NE((*problems)[0].find("moved aside"), std::string::npos);
  EXPECT_FALSE(*memory_->Exists(key));
  ASSERT_EQ(memory_->quarantined().size(), 1u);
  EXPECT_EQ(memory_->quarantined()[0].second, junk);
  // On 43d0e95 this backup deduplicated onto the bad object: born damaged.
  ASSERT_TRUE(Backup("b2", data).ok());
  EXPECT_TRUE(store_->VerifyBackup(*store_->GetBackup("uuid", "b2"))->empty());
  EXPECT_TRUE(store_->VerifyBackup(*b1)->empty());  // healed
}

// A read fault that does not repeat moves nothing aside.
TEST_F(GcTest, TransientDamageIsNotQuarantined) {
  const Bytes data = Pattern(10, kChunk);
  ASSERT_TRUE(Backup("b", data).ok());
  auto b = store_->GetBackup("uuid", "b");
  const ChunkRef ref = store_->GetManifest(*b, "vda")->chunks[0];
  const std::string key = Store::ChunkKey(ref.hash);
  const Bytes good = *memory_->Get(key);
  int gets = 0;
  memory_->SetHook([&](std::string_view op, const std::string& k) {
    // The first read of the chunk sees junk, the second the real bytes.
    if (op == "get" && k == key && gets++ == 0) {
      memory_->SetHook(nullptr);
      EXPECT_TRUE(memory_->Put(key, Pattern(11, 50)).ok());
      memory_->SetHook([&](std::string_view op2, const std::string& k2) {
        if (op2 == "get" && k2 == key) {
          memory_->SetHook(nullptr);
          EXPECT_TRUE(memory_->Put(key, good).ok());
        }
      });
    }
  });
  Bytes out(kChunk);
  EXPECT_TRUE(store_->CheckChunk(ref, out).ok());
  memory_->SetHook(nullptr);
  EXPECT_TRUE(memory_->quarantined().empty());
  EXPECT_TRUE(*memory_->Exists(key));
}

}  // namespace
}  // namespace ckptfs
