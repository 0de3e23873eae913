// Durability without trusting the page cache (issue 11): the local store runs
// over FaultFs, which forgets at a simulated crash everything that was not
// made durable (fsync, directory fsync, syncfs). A full and an incremental
// backup (the real BackupRunner, two disks with holes, a partly dirty
// chunk), a delete and a gc are each cut at every one of their steps; after
// each crash the store is reopened and recovered as a restarting daemon does
// (its stale lock and the incomplete backup it names removed, the catalog
// rebuilt from the store). Then: every backup that had completed verifies
// and reads byte-identical, the interrupted one is complete or absent (never
// served half, never a base), gc leaves no orphan chunk and no temporary,
// and the next backup is right.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/store/catalog.h"
#include "backend/store/local_object_store.h"
#include "backend/store/store.h"
#include "mountd/backup.h"
#include "mountd/jobs.h"
#include "tests/fakes/fault_fs.h"
#include "tests/fakes/memory_image_source.h"

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;
using Ranges = std::vector<std::pair<uint64_t, uint64_t>>;

constexpr uint32_t kChunk = 64 << 10;
constexpr uint64_t kDisk = 1 << 20;
constexpr char kHost[] = "crash-test-host";

// Guest writes of version u (2, 3) of disk d; version 1 is the base pattern.
Ranges ChangesOf(int u) {
  if (u == 2) return {{(64 << 10) + 100, 4000}, {640 << 10, 64 << 10}};
  if (u == 3) return {{0, 64 << 10}, {(900 << 10) + 7, 300}};
  return {};
}

// The allocation: a hole at [256 KiB, 512 KiB), data around it.
std::vector<Extent> Map() {
  return {{0, 256 << 10, false, false},
          {256 << 10, 256 << 10, true, false},
          {512 << 10, 512 << 10, false, false}};
}

Bytes Disk(int version, int d) {
  Bytes out(kDisk);
  for (uint64_t i = 0; i < kDisk; ++i) {
    out[i] = static_cast<std::byte>((i * 7 + d * 13 + i / 4093) % 251 + 1);
  }
  std::fill(out.begin() + (256 << 10), out.begin() + (512 << 10), std::byte{0});
  for (int u = 2; u <= version; ++u) {
    for (const auto& [off, len] : ChangesOf(u)) {
      for (uint64_t i = off; i < off + len; ++i) {
        out[i] = static_cast<std::byte>((i + u * 31 + d) % 253 + 2);
      }
    }
  }
  return out;
}

class CrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const fs::path shm = fs::exists("/dev/shm") ? "/dev/shm" : "/tmp";
    dir_ = shm / ("ckptfs-crash-" + std::to_string(getpid()) + "-" +
                  std::to_string(counter_++));
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "store");
    fs::create_directories(dir_ / "stash");
    fs_ = std::make_unique<FaultFs>(dir_ / "store", dir_ / "stash");
    catalog_dir_ = fs::temp_directory_path() / (dir_.filename().string());
    fs::create_directories(catalog_dir_);
    auto catalog = Catalog::Open(catalog_dir_ / "catalog.db");
    ASSERT_TRUE(catalog.ok()) << catalog.status().ToString();
    catalog_ = std::move(catalog).value();
    OpenStore();
  }
  void TearDown() override {
    store_.reset();
    catalog_.reset();
    fs::remove_all(dir_);
    fs::remove_all(catalog_dir_);
  }

  void OpenStore() {
    store_.reset();
    auto objects = LocalObjectStore::Open(dir_ / "store", true, fs_.get());
    ASSERT_TRUE(objects.ok()) << objects.status().ToString();
    StoreConfig config;
    config.chunk_size = kChunk;
    config.format = format_;
    auto store = Store::Open(std::move(objects).value(), true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
  }

  // A backup of `version` named `name`, incremental from `base` if given.
  Result<BackupRecord> Backup(const std::string& name, int version,
                              const std::optional<BackupRecord>& base) {
    auto view = std::make_shared<CheckpointView>();
    view->domain = "vm";
    view->domain_uuid = "uuid";
    view->name = name;
    view->created = 1000 + version;
    view->xml = "<domaincheckpoint/>";
    view->mode = base ? "incremental" : "full";
    for (int d = 0; d < 2; ++d) {
      auto disk = std::make_shared<CheckpointDisk>();
      disk->target = d == 0 ? "vda" : "vdb";
      disk->source = "/dev/null";
      disk->size = kDisk;
      disk->extents = Map();
      if (base) {
        const int from = static_cast<int>(base->created - 1000);
        for (int u = from + 1; u <= version; ++u) {
          for (const auto& r : ChangesOf(u)) disk->changed.push_back(r);
        }
        std::sort(disk->changed.begin(), disk->changed.end());
      }
      disk->raw = std::make_shared<MemoryImageSource>(Disk(version, d), Map());
      view->disks.push_back(disk);
    }
    const Store::Lock lock{.name = std::string(kHost) + "-1-" + name,
                           .started = std::time(nullptr),
                           .host = kHost,
                           .pid = 1,
                           .domain_uuid = "uuid",
                           .checkpoint = name};
    RETURN_IF_ERROR(store_->PutLock(lock));
    BackupRunner runner(*store_, *catalog_, jobs_, 2);
    std::atomic<bool> cancel{false};
    auto record =
        runner.Run({view, base, jobs_.Create("backup", name)}, cancel);
    (void)store_->DeleteLock(lock.name);
    return record;
  }

  // What a daemon starting on the store after a crash does.
  void Recover() {
    fs_->Crash();
    OpenStore();
    auto locks = store_->ListLocks();
    ASSERT_TRUE(locks.ok());
    for (const Store::Lock& lock : *locks) {
      ASSERT_EQ(lock.host, kHost);
      BackupRecord partial;
      partial.domain_uuid = lock.domain_uuid;
      partial.checkpoint = lock.checkpoint;
      if (store_->GetBackup(lock.domain_uuid, lock.checkpoint)
              .status()
              .code() == Code::kNotFound) {
        Status st = store_->DeleteBackup(partial);
        ASSERT_TRUE(st.ok() || st.code() == Code::kNotFound) << st.ToString();
      }
      ASSERT_TRUE(store_->DeleteLock(lock.name).ok());
    }
    auto backups = store_->ListBackups();
    ASSERT_TRUE(backups.ok());
    ASSERT_TRUE(catalog_->ReplaceBackups(*backups).ok());
  }

  // The backup is complete, verifies and reads as `version`; or, if
  // `may_be_absent`, it is nowhere. Returns whether it is complete.
  bool Check(const std::string& name, int version, bool may_be_absent) {
    auto record = store_->GetBackup("uuid", name);
    auto row = catalog_->GetBackup(BackupId("uuid", name));
    EXPECT_TRUE(row.ok());
    if (!record.ok()) {
      EXPECT_EQ(record.status().code(), Code::kNotFound)
          << record.status().ToString();
      EXPECT_TRUE(may_be_absent) << name << " is gone";
      EXPECT_FALSE(row.ok() && row->has_value()) << name << " is catalogued";
      return false;
    }
    EXPECT_TRUE(row.ok() && row->has_value()) << name << " not catalogued";
    auto problems = store_->VerifyBackup(*record);
    EXPECT_TRUE(problems.ok() && problems->empty())
        << name << ": " << (problems.ok() ? (*problems)[0] : "");
    for (int d = 0; d < 2; ++d) {
      auto image = store_->OpenImage(*record, d == 0 ? "vda" : "vdb");
      EXPECT_TRUE(image.ok()) << image.status().ToString();
      if (!image.ok()) continue;
      Bytes out(kDisk);
      EXPECT_TRUE((*image)->pread(out, 0).ok());
      EXPECT_TRUE(out == Disk(version, d)) << name << " disk " << d;
    }
    return true;
  }

  // gc after time passed: nothing unreferenced, nothing temporary stays.
  void GcLeavesNoOrphan() {
    const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir_ / "store", ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      fs::last_write_time(it->path(), old, ec);
    }
    auto stats = store_->CollectGarbage(std::time(nullptr) + 10, false);
    ASSERT_TRUE(stats.ok()) << stats.status().ToString();
    for (auto it = fs::recursive_directory_iterator(dir_ / "store", ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const std::string base = it->path().filename().string();
      EXPECT_FALSE(base.starts_with(".tmp.") || base.starts_with(".trash."))
          << "left behind: " << it->path();
    }
    auto refs = store_->ReferencedChunks();
    ASSERT_TRUE(refs.ok());
    auto keys = store_->objects().List("chunks/");
    ASSERT_TRUE(keys.ok());
    EXPECT_EQ(keys->size(), refs->size()) << "orphan chunks after gc";
    EXPECT_TRUE(store_->ListIncomplete()->empty());
  }

  // An incremental backup cut at every step, then recovery, gc and the next
  // backup (IncrementalBackupCutAtEveryStep*).
  void IncrementalCutAtEveryStep();

  // The store's format (config.json, when a test's SetUp makes it).
  uint32_t format_ = 1;
  static inline int counter_ = 0;
  fs::path dir_, catalog_dir_;
  std::unique_ptr<FaultFs> fs_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<Store> store_;
  JobTable jobs_;
};

#ifndef CKPTFS_CRASH_DEFAULT_STRIDE
#define CKPTFS_CRASH_DEFAULT_STRIDE 1
#endif

// Every step, or every CKPTFS_CRASH_STRIDE-th (the sanitizer builds set 7
// to bound their time), and always the last.
uint64_t Next(uint64_t n, uint64_t steps) {
  static const uint64_t stride = [] {
    const char* v = std::getenv("CKPTFS_CRASH_STRIDE");
    const long s = v != nullptr ? std::atol(v) : CKPTFS_CRASH_DEFAULT_STRIDE;
    return static_cast<uint64_t>(s > 0 ? s : 1);
  }();
  return n < steps && n + stride > steps ? steps : n + stride;
}

// Steps a clean run of `work` takes.
template <typename Fn>
uint64_t CountSteps(CrashTest* test, FaultFs& fs, Fn work) {
  const uint64_t before = fs.steps();
  work();
  (void)test;
  return fs.steps() - before;
}

TEST_F(CrashTest, FaultFsForgetsWhatWasNotSynced) {
  const std::string root = dir_ / "store";
  int dir = ::open(root.c_str(), O_RDONLY | O_DIRECTORY);
  int a = fs_->OpenAt(dir, "a", O_WRONLY | O_CREAT, 0600);
  ASSERT_EQ(fs_->Write(a, "1234", 4), 4);
  ASSERT_EQ(fs_->Fsync(a), 0);
  ASSERT_EQ(fs_->Fsync(dir), 0);
  ASSERT_EQ(fs_->Write(a, "5678", 4), 4);  // not synced
  int b = fs_->OpenAt(dir, "b", O_WRONLY | O_CREAT, 0600);
  ASSERT_EQ(fs_->Write(b, "x", 1), 1);
  ASSERT_EQ(fs_->Fsync(b), 0);  // data, but not its entry
  ASSERT_EQ(fs_->RenameAt2(dir, "a", dir, "c", 0), 0);  // not synced
  ::close(a);
  ::close(b);
  fs_->Crash();
  EXPECT_EQ(fs::file_size(root + "/a"), 4u);
  EXPECT_FALSE(fs::exists(root + "/b"));
  EXPECT_FALSE(fs::exists(root + "/c"));
  // Synced: kept; an unsynced unlink comes back.
  ASSERT_EQ(fs_->UnlinkAt(dir, "a", 0), 0);
  fs_->Crash();
  EXPECT_EQ(fs::file_size(root + "/a"), 4u);
  ASSERT_EQ(fs_->UnlinkAt(dir, "a", 0), 0);
  ASSERT_EQ(fs_->Fsync(dir), 0);
  fs_->Crash();
  EXPECT_FALSE(fs::exists(root + "/a"));
  ::close(dir);
}

TEST_F(CrashTest, FullBackupCutAtEveryStep) {
  const uint64_t steps = CountSteps(
      this, *fs_, [&] { ASSERT_TRUE(Backup("b1", 1, std::nullopt).ok()); });
  ASSERT_GT(steps, 50u);
  for (uint64_t n = 0; n <= steps; n = Next(n, steps)) {
    SCOPED_TRACE("crash at step " + std::to_string(n) + " of " +
                 std::to_string(steps));
    TearDown();
    SetUp();
    fs_->FailFrom(fs_->steps() + n);
    (void)Backup("b1", 1, std::nullopt);
    Recover();
    const bool complete = Check("b1", 1, /*may_be_absent=*/true);
    if (n == steps) {
      EXPECT_TRUE(complete);
    }
    GcLeavesNoOrphan();
    std::optional<BackupRecord> base;
    if (complete) base = *store_->GetBackup("uuid", "b1");
    ASSERT_TRUE(Backup("b2", 2, base).ok());
    Check("b2", 2, false);
    if (complete) Check("b1", 1, false);
    if (HasFailure()) break;
  }
}

TEST_F(CrashTest, IncrementalBackupCutAtEveryStep) {
  IncrementalCutAtEveryStep();
}

// The same over a format 2 store (index pages in the job's batch, written
// before the manifest; gc over pages).
TEST_F(CrashTest, IncrementalBackupCutAtEveryStepFormat2) {
  format_ = kTreeStoreFormat;
  TearDown();
  SetUp();
  IncrementalCutAtEveryStep();
}

void CrashTest::IncrementalCutAtEveryStep() {
  ASSERT_TRUE(Backup("b1", 1, std::nullopt).ok());
  auto b1 = store_->GetBackup("uuid", "b1");
  ASSERT_TRUE(b1.ok());
  const uint64_t steps =
      CountSteps(this, *fs_, [&] { ASSERT_TRUE(Backup("b2", 2, *b1).ok()); });
  ASSERT_GT(steps, 10u);
  for (uint64_t n = 0; n <= steps; n = Next(n, steps)) {
    SCOPED_TRACE("crash at step " + std::to_string(n) + " of " +
                 std::to_string(steps));
    TearDown();
    SetUp();
    ASSERT_TRUE(Backup("b1", 1, std::nullopt).ok());
    b1 = store_->GetBackup("uuid", "b1");
    fs_->FailFrom(fs_->steps() + n);
    (void)Backup("b2", 2, *b1);
    Recover();
    Check("b1", 1, false);
    const bool complete = Check("b2", 2, true);
    if (n == steps) {
      EXPECT_TRUE(complete);
    }
    GcLeavesNoOrphan();
    Check("b1", 1, false);
    // The next backup: incremental from the newest complete one.
    auto base = store_->GetBackup("uuid", complete ? "b2" : "b1");
    ASSERT_TRUE(base.ok());
    ASSERT_TRUE(Backup("b3", 3, *base).ok());
    Check("b3", 3, false);
    if (format_ == kTreeStoreFormat) {
      EXPECT_FALSE(store_->objects().List("index/")->empty()) << "no pages";
    }
    if (HasFailure()) break;
  }
}

// A prune (DeleteBackup) and then gc, cut at every step of both.
TEST_F(CrashTest, DeleteAndGcCutAtEveryStep) {
  auto prepare = [&] {
    ASSERT_TRUE(Backup("b1", 1, std::nullopt).ok());
    auto b1 = store_->GetBackup("uuid", "b1");
    ASSERT_TRUE(Backup("b2", 3, *b1).ok());
  };
  auto work = [&] {
    (void)store_->DeleteBackup(*store_->GetBackup("uuid", "b1"));
    (void)store_->CollectGarbage(std::time(nullptr) + 10, false);
  };
  prepare();
  const uint64_t steps = CountSteps(this, *fs_, work);
  ASSERT_GT(steps, 5u);
  for (uint64_t n = 0; n <= steps; n = Next(n, steps)) {
    SCOPED_TRACE("crash at step " + std::to_string(n) + " of " +
                 std::to_string(steps));
    TearDown();
    SetUp();
    prepare();
    fs_->FailFrom(fs_->steps() + n);
    work();
    Recover();
    Check("b2", 3, false);
    Check("b1", 1, true);
    GcLeavesNoOrphan();
    Check("b2", 3, false);
    if (HasFailure()) break;
  }
}

// gc's delete against a backup's Touch at the file-system level (issue 11
// item 5): a Touch run before each of DeleteIfUnusedSince's changes (by
// another store instance on the same directory, as another process would)
// that reports true always leaves the object in place; with no Touch, the
// object goes.
class HookFs : public PosixFs {
 public:
  std::function<void()> before;
  int RenameAt2(int a, const char* b, int c, const char* d,
                unsigned f) override {
    Run();
    return PosixFs::RenameAt2(a, b, c, d, f);
  }
  int UnlinkAt(int a, const char* b, int f) override {
    Run();
    return PosixFs::UnlinkAt(a, b, f);
  }
  int Fsync(int fd) override {
    Run();
    return PosixFs::Fsync(fd);
  }

 private:
  void Run() {
    if (auto f = std::exchange(before, nullptr)) f();
  }
};

TEST(GcInterleavingTest, TouchAtEveryStepOfDeleteIfUnusedSince) {
  const fs::path dir =
      fs::temp_directory_path() / ("ckptfs-gcfs-" + std::to_string(getpid()));
  const std::string key = "chunks/ab/abcdef";
  const Bytes data(100, std::byte{7});
  for (int at = -1; at < 4; ++at) {
    SCOPED_TRACE("touch before change " + std::to_string(at));
    fs::remove_all(dir);
    HookFs hook;
    auto gc = LocalObjectStore::Open(dir, true, &hook);
    auto backup = LocalObjectStore::Open(dir, false);
    ASSERT_TRUE(gc.ok() && backup.ok());
    ASSERT_TRUE((*backup)->Put(key, data).ok());
    const int64_t cutoff = std::time(nullptr) + 5;  // the object is old
    // Make the Put's own time old, so that only a Touch makes it recent.
    fs::last_write_time(
        dir / key, fs::file_time_type::clock::now() - std::chrono::hours(1));
    std::optional<bool> touched;
    int change = 0;
    std::function<void()> arm = [&] {
      if (change++ == at) {
        // Touch sets "now", which is before the cutoff here; a real gc's
        // cutoff lies before a running backup's start. Push the time past
        // the cutoff as a later Touch would.
        auto t = (*backup)->Touch(key);
        ASSERT_TRUE(t.ok());
        touched = *t;
        if (*t) {
          fs::last_write_time(dir / key, fs::file_time_type::clock::now() +
                                             std::chrono::hours(1));
        }
      } else {
        hook.before = arm;
      }
    };
    hook.before = at < 0 ? nullptr : arm;
    auto deleted = (*gc)->DeleteIfUnusedSince(key, cutoff);
    ASSERT_TRUE(deleted.ok()) << deleted.status().ToString();
    const bool exists = *(*backup)->Exists(key);
    if (touched.value_or(false)) {
      EXPECT_TRUE(exists) << "a Touch that reported true lost its object";
      EXPECT_FALSE(*deleted);
    }
    if (at < 0) {
      EXPECT_TRUE(*deleted && !exists);
    }
    EXPECT_EQ(*deleted, !exists);
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace ckptfs
