// The ObjectStore contract (backend/store/object_store.h), one set of cases
// run against every real backend: LocalObjectStore in a temporary directory
// and RadosObjectStore in a real Ceph pool. The RADOS cases need a cluster:
// they run when CKPTFS_TEST_CEPH_CONF names its ceph.conf (with
// CKPTFS_TEST_CEPH_ID, default "ckptfs", and CKPTFS_TEST_CEPH_POOL, default
// "ckptfs"); tests/integration/test_rados.sh starts one and sets them.
// Without it they are GTEST_SKIPped, which ctest reports as skipped, not
// passed. Each RADOS test uses a namespace of its own, so runs never meet.
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/store/local_object_store.h"
#include "backend/store/rados_object_store.h"

namespace ckptfs {
namespace {

using Bytes = std::vector<std::byte>;

Bytes Pattern(int seed, size_t size) {
  Bytes out(size);
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<std::byte>((i * 131 + seed * 7919 + 1) % 251);
  }
  return out;
}

int64_t Now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' ? v : fallback;
}

std::string RandomName() {
  std::random_device rd;
  return "t" + std::to_string(rd()) + std::to_string(rd());
}

class ContractTest : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "local") {
      char tmpl[] = "/tmp/ckptfs-contract-XXXXXX";
      ASSERT_NE(::mkdtemp(tmpl), nullptr);
      dir_ = tmpl;
      auto s = LocalObjectStore::Open(dir_ + "/store", /*create=*/true);
      ASSERT_TRUE(s.ok()) << s.status().ToString();
      store_ = std::move(s).value();
      return;
    }
    if (std::getenv("CKPTFS_TEST_CEPH_CONF") == nullptr) {
      GTEST_SKIP() << "no Ceph cluster: set CKPTFS_TEST_CEPH_CONF "
                      "(tests/integration/test_rados.sh does)";
    }
    auto s = OpenRados(RandomName());
    ASSERT_TRUE(s.ok()) << s.status().ToString();
    store_ = std::move(s).value();
  }

  void TearDown() override {
    if (store_ != nullptr && GetParam() == "rados") {
      auto keys = store_->List("");
      if (keys.ok()) {
        for (const auto& k : *keys) (void)store_->Delete(k);
      }
    }
    store_.reset();
    if (!dir_.empty()) std::filesystem::remove_all(dir_);
  }

  static Result<std::unique_ptr<RadosObjectStore>> OpenRados(
      const std::string& ns, const std::string& pool = "") {
    CephOptions o;
    o.conf = Env("CKPTFS_TEST_CEPH_CONF", "");
    o.id = Env("CKPTFS_TEST_CEPH_ID", "ckptfs");
    o.op_timeout_seconds = 20;
    return RadosObjectStore::Open(
        pool.empty() ? Env("CKPTFS_TEST_CEPH_POOL", "ckptfs") : pool, ns, o);
  }

  Status Put(const std::string& key, const Bytes& b) {
    return store_->Put(key, b);
  }

  std::string dir_;
  std::unique_ptr<ObjectStore> store_;
};

TEST_P(ContractTest, PutGetReplaceDelete) {
  const Bytes a = Pattern(1, 100000), b = Pattern(2, 77);
  ASSERT_TRUE(Put("chunks/ab/abc", a).ok());
  auto got = store_->Get("chunks/ab/abc");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, a);
  ASSERT_TRUE(Put("chunks/ab/abc", b).ok());  // replaces, never appends
  EXPECT_EQ(*store_->Get("chunks/ab/abc"), b);
  ASSERT_TRUE(Put("empty", {}).ok());
  EXPECT_TRUE(store_->Get("empty")->empty());
  EXPECT_TRUE(*store_->Exists("chunks/ab/abc"));
  ASSERT_TRUE(store_->Delete("chunks/ab/abc").ok());
  EXPECT_FALSE(*store_->Exists("chunks/ab/abc"));
  EXPECT_EQ(store_->Get("chunks/ab/abc").status().code(), Code::kNotFound);
  EXPECT_EQ(store_->Delete("chunks/ab/abc").code(), Code::kNotFound);
  EXPECT_EQ(store_->Get("missing").status().code(), Code::kNotFound);
}

TEST_P(ContractTest, InvalidKeys) {
  for (const char* key : {"", "/a", "a/", "../a", ".hidden", "a//b", "a b"}) {
    EXPECT_EQ(store_->Put(key, Pattern(1, 3)).code(), Code::kInvalidArgument)
        << key;
    EXPECT_EQ(store_->Get(key).status().code(), Code::kInvalidArgument) << key;
  }
  EXPECT_EQ(store_->List(".q").status().code(), Code::kInvalidArgument);
}

TEST_P(ContractTest, GetInto) {
  const Bytes a = Pattern(3, 5000);
  ASSERT_TRUE(Put("c", a).ok());
  Bytes buf(8192);
  auto n = store_->GetInto("c", buf);
  ASSERT_TRUE(n.ok()) << n.status().ToString();
  ASSERT_EQ(*n, a.size());
  EXPECT_TRUE(std::equal(a.begin(), a.end(), buf.begin()));
  Bytes small(100);
  n = store_->GetInto("c", small);  // too large: its size, bytes unspecified
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, a.size());
  Bytes exact(a.size());
  ASSERT_EQ(*store_->GetInto("c", exact), a.size());
  EXPECT_EQ(exact, a);
  EXPECT_EQ(store_->GetInto("nope", buf).status().code(), Code::kNotFound);
}

TEST_P(ContractTest, CreateRaceHasOneWinner) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 5; ++round) {
    const std::string key = "backups/u/c" + std::to_string(round) + "/rec";
    std::atomic<int> won{0}, lost{0}, other{0};
    std::atomic<int> winner{-1};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        const Status s = store_->Create(key, Pattern(t, 4096 + t));
        if (s.ok()) {
          ++won;
          winner = t;
        } else if (s.code() == Code::kAlreadyExists) {
          ++lost;
        } else {
          ++other;
        }
      });
    }
    for (auto& t : threads) t.join();
    EXPECT_EQ(won.load(), 1);
    EXPECT_EQ(lost.load(), kThreads - 1);
    EXPECT_EQ(other.load(), 0);
    ASSERT_GE(winner.load(), 0);
    EXPECT_EQ(*store_->Get(key), Pattern(winner, 4096 + winner));
  }
}

// A backup's batch, written by several threads at once with more objects
// than any store keeps in flight: after Commit every object reads back
// whole. A batch dropped without Commit returns (no hang, no crash) and
// nothing it held is needed again.
TEST_P(ContractTest, BatchFromSeveralWritersReadsBackAfterCommit) {
  constexpr int kThreads = 4, kPerThread = 24;
  auto batch = store_->NewBatch();
  std::vector<std::thread> threads;
  std::atomic<int> failed{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        const int n = t * kPerThread + i;
        const std::string key =
            "chunks/b" + std::to_string(n % 7) + "/o" + std::to_string(n);
        if (!batch->Put(key, Pattern(n, 65536 + n)).ok()) ++failed;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 0);
  ASSERT_TRUE(batch->Commit().ok());
  for (int n = 0; n < kThreads * kPerThread; ++n) {
    const std::string key =
        "chunks/b" + std::to_string(n % 7) + "/o" + std::to_string(n);
    auto got = store_->Get(key);
    ASSERT_TRUE(got.ok()) << key << ": " << got.status().ToString();
    EXPECT_EQ(*got, Pattern(n, 65536 + n)) << key;
  }
  EXPECT_EQ(store_->NewBatch()->Put("..", Pattern(1, 1)).code(),
            Code::kInvalidArgument);
  {
    auto dropped = store_->NewBatch();
    for (int i = 0; i < 20; ++i) {
      ASSERT_TRUE(
          dropped->Put("chunks/d/o" + std::to_string(i), Pattern(i, 4096))
              .ok());
    }
  }
}

TEST_P(ContractTest, ListIsSortedAndFiltered) {
  const std::vector<std::string> keys = {
      "chunks/ff/ff01", "chunks/00/0001",          "chunks/0a/0a02",
      "config.json",    "backups/u/c/backup.json", "chunksx",
      "locks/a"};
  for (const auto& k : keys) ASSERT_TRUE(Put(k, Pattern(1, 10)).ok());
  auto all = store_->List("");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(*all, sorted);
  EXPECT_EQ(*store_->List("chunks/"),
            (std::vector<std::string>{"chunks/00/0001", "chunks/0a/0a02",
                                      "chunks/ff/ff01"}));
  // A prefix may end in the middle of a component.
  EXPECT_EQ(*store_->List("chunks/0"),
            (std::vector<std::string>{"chunks/00/0001", "chunks/0a/0a02"}));
  EXPECT_EQ(store_->List("chunks")->size(), 4u);
  EXPECT_TRUE(store_->List("zzz")->empty());
}

TEST_P(ContractTest, TouchAndModifiedTime) {
  EXPECT_FALSE(*store_->Touch("absent"));
  EXPECT_FALSE(*store_->Exists("absent"));  // Touch never creates
  const int64_t before = Now();
  ASSERT_TRUE(Put("k", Pattern(1, 10)).ok());
  auto t = store_->ModifiedTime("k");
  ASSERT_TRUE(t.ok()) << t.status().ToString();
  EXPECT_GE(*t, before - 1);
  EXPECT_LE(*t, Now() + 1);
  EXPECT_TRUE(*store_->Touch("k"));
  EXPECT_GE(*store_->ModifiedTime("k"), *t);
  EXPECT_EQ(*store_->Get("k"), Pattern(1, 10));  // Touch keeps the bytes
  EXPECT_EQ(store_->ModifiedTime("absent").status().code(), Code::kNotFound);
}

TEST_P(ContractTest, DeleteIfUnusedSince) {
  ASSERT_TRUE(Put("k", Pattern(1, 10)).ok());
  const int64_t now = Now();
  EXPECT_FALSE(*store_->DeleteIfUnusedSince("k", now - 100));  // recent
  EXPECT_TRUE(*store_->Exists("k"));
  EXPECT_TRUE(*store_->DeleteIfUnusedSince("k", now + 100));
  EXPECT_FALSE(*store_->Exists("k"));
  EXPECT_FALSE(*store_->DeleteIfUnusedSince("k", now + 100));  // absent
}

// gc against a backup reusing chunks: each object is either kept by a Touch
// that succeeded or deleted while the Touch reports false; never deleted
// after a successful Touch, never both, never neither.
TEST_P(ContractTest, DeleteIfUnusedSinceVersusTouch) {
  constexpr int kObjects = 60;
  const int64_t t0 = Now();
  for (int i = 0; i < kObjects; ++i) {
    ASSERT_TRUE(Put("chunks/" + std::to_string(i), Pattern(i, 64)).ok());
    ASSERT_TRUE(Put("unused/" + std::to_string(i), Pattern(i, 64)).ok());
  }
  // Every Put is before the cutoff, every Touch at or after it.
  const int64_t cutoff = Now() + 1;
  while (Now() < cutoff) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // File times come from the kernel's coarse clock, which may lag the
  // system clock by a tick (a few ms): a Touch right at the second would
  // otherwise stamp the second before the cutoff. (gc's real cutoff keeps a
  // minute of margin.)
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ASSERT_GT(cutoff, t0);
  std::vector<int> touched(kObjects, -1), deleted(kObjects, -1);
  int unused_deleted = 0;
  std::thread toucher([&] {
    for (int i = 0; i < kObjects; ++i) {
      auto r = store_->Touch("chunks/" + std::to_string(i));
      touched[i] = r.ok() ? (*r ? 1 : 0) : 2;
    }
  });
  std::thread gc([&] {
    for (int i = 0; i < kObjects; ++i) {
      auto r =
          store_->DeleteIfUnusedSince("chunks/" + std::to_string(i), cutoff);
      deleted[i] = r.ok() ? (*r ? 1 : 0) : 2;
      // Nobody touches these: each goes.
      auto u =
          store_->DeleteIfUnusedSince("unused/" + std::to_string(i), cutoff);
      unused_deleted += u.ok() && *u;
    }
  });
  toucher.join();
  gc.join();
  EXPECT_EQ(unused_deleted, kObjects);
  EXPECT_TRUE(store_->List("unused/")->empty());
  int kept = 0;
  for (int i = 0; i < kObjects; ++i) {
    const std::string key = "chunks/" + std::to_string(i);
    ASSERT_NE(touched[i], 2) << key;
    ASSERT_NE(deleted[i], 2) << key;
    EXPECT_NE(touched[i], deleted[i])
        << key << ": touched " << touched[i] << " deleted " << deleted[i];
    EXPECT_EQ(*store_->Exists(key), touched[i] == 1) << key;
    kept += touched[i];
  }
  RecordProperty("kept", kept);
}

TEST_P(ContractTest, Quarantine) {
  ASSERT_TRUE(Put("chunks/aa/bad", Pattern(9, 300)).ok());
  ASSERT_TRUE(Put("chunks/aa/good", Pattern(8, 300)).ok());
  ASSERT_TRUE(store_->Quarantine("chunks/aa/bad").ok());
  EXPECT_EQ(store_->Get("chunks/aa/bad").status().code(), Code::kNotFound);
  EXPECT_EQ(*store_->List(""), std::vector<std::string>{"chunks/aa/good"});
  EXPECT_EQ(store_->Quarantine("chunks/aa/bad").code(), Code::kNotFound);
  // The next writer stores it afresh (and a second quarantine keeps both).
  ASSERT_TRUE(store_->Create("chunks/aa/bad", Pattern(7, 300)).ok());
  EXPECT_EQ(*store_->Get("chunks/aa/bad"), Pattern(7, 300));
  ASSERT_TRUE(store_->Quarantine("chunks/aa/bad").ok());
  EXPECT_EQ(store_->List("")->size(), 1u);
}

INSTANTIATE_TEST_SUITE_P(Backends, ContractTest,
                         ::testing::Values("local", "rados"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param;
                         });

// RADOS-only: the errors of a cluster, reached for real.
class RadosErrorsTest : public ContractTest {};

TEST_P(RadosErrorsTest, ClearErrors) {
  // A pool that does not exist.
  auto s = OpenRados("", "no-such-pool-" + RandomName());
  EXPECT_EQ(s.status().code(), Code::kNotFound) << s.status().ToString();
  // A config file that does not exist.
  CephOptions bad;
  bad.conf = "/nonexistent/ceph.conf";
  auto b = RadosObjectStore::Open("ckptfs", "", bad);
  EXPECT_EQ(b.status().code(), Code::kInvalidArgument);
  EXPECT_NE(b.status().message().find("/nonexistent/ceph.conf"),
            std::string::npos);
  // A pool the client key's caps do not allow (the mgr's pool).
  auto other = OpenRados("", "device_health_metrics");
  ASSERT_TRUE(other.ok()) << other.status().ToString();
  const Status put = (*other)->Put("x", Pattern(1, 10));
  EXPECT_EQ(put.code(), Code::kPermission) << put.ToString();
  EXPECT_NE(put.message().find("caps"), std::string::npos) << put.ToString();
}

INSTANTIATE_TEST_SUITE_P(Rados, RadosErrorsTest, ::testing::Values("rados"),
                         [](const ::testing::TestParamInfo<std::string>& p) {
                           return p.param;
                         });

}  // namespace
}  // namespace ckptfs
