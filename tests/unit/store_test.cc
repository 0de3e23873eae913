// Tests of the backup store (backend/store/): LocalObjectStore on temporary
// directories, chunk encoding and verification, manifest and backup record
// serialisation (round trips and every kind of corruption), backup listing,
// StoreSource reads and extents, config handling and verification. Damage is
// done to the object files directly, as a disk or a bad hand would.
// Throughput is measured by bench/store_bench, not here.
#include "backend/store/store.h"

#include <gtest/gtest.h>
#include <sched.h>
#include <sys/fsuid.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "backend/store/local_object_store.h"
#include "backend/store/serialize.h"
#include "backend/store/sha256.h"
#include "backend/store/store_source.h"
#include "tests/fakes/memory_object_store.h"

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Bytes = std::vector<std::byte>;

constexpr uint32_t kChunk = 64 * 1024;  // small chunks keep the tests fast

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "store_test.XXXXXX");
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path_, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path_, ec);
  }
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& rel) const {
    return path_ + "/" + rel;
  }

 private:
  std::string path_;
};

Bytes RandomBytes(uint64_t seed, size_t n) {
  std::mt19937_64 rng(seed);
  Bytes out(n);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(out.data() + i, &v, 8);
  }
  for (; i < n; ++i) out[i] = static_cast<std::byte>(rng());
  return out;
}

// Text-like data: compresses well.
Bytes CompressibleBytes(size_t n) {
  static constexpr char kText[] =
      "the quick brown fox jumps over the lazy dog; lorem ipsum dolor sit "
      "amet 0123456789\n";
  Bytes out(n);
  for (size_t i = 0; i < n; ++i) {
    out[i] = static_cast<std::byte>(kText[(i * 7 / 5) % (sizeof kText - 1)]);
  }
  return out;
}

Bytes ToBytes(std::string_view s) {
  const auto* p = reinterpret_cast<const std::byte*>(s.data());
  return Bytes(p, p + s.size());
}

std::string AsText(const Bytes& data) {
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

Bytes ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), {});
  return ToBytes(s);
}

void WriteFile(const std::string& path, std::span<const std::byte> data) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data.data()),
            static_cast<std::streamsize>(data.size()));
}

// Every file name under dir (recursive), as relative paths.
std::vector<std::string> FilesUnder(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file()) {
      out.push_back(fs::relative(it->path(), dir).string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

bool HasTempFiles(const std::string& dir) {
  for (const std::string& f : FilesUnder(dir)) {
    if (fs::path(f).filename().string().starts_with(".tmp.")) return true;
  }
  return false;
}

// ============================================================ object store

TEST(LocalObjectStoreTest, PutGetExistsDelete) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir / "store", /*create=*/true);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  ObjectStore& s = **store;
  const Bytes data = RandomBytes(1, 10000);

  ASSERT_TRUE(s.Put("a/b/c", data).ok());
  auto got = s.Get("a/b/c");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  EXPECT_EQ(*got, data);
  EXPECT_TRUE(*s.Exists("a/b/c"));
  EXPECT_FALSE(*s.Exists("a/b/d"));
  EXPECT_FALSE(*s.Exists("a/b/c/d"));  // a file is not a directory
  EXPECT_FALSE(*s.Exists("a/b"));      // a directory is not an object
  EXPECT_EQ(s.Get("a/b/d").status().code(), Code::kNotFound);
  EXPECT_EQ(s.Get("a/b").status().code(), Code::kIoError);

  // Replacing is atomic and whole; empty objects are fine.
  ASSERT_TRUE(s.Put("a/b/c", ToBytes("short")).ok());
  EXPECT_EQ(*s.Get("a/b/c"), ToBytes("short"));
  ASSERT_TRUE(s.Put("empty", {}).ok());
  EXPECT_TRUE(s.Get("empty")->empty());

  EXPECT_TRUE(s.Delete("a/b/c").ok());
  EXPECT_EQ(s.Delete("a/b/c").code(), Code::kNotFound);
  EXPECT_EQ(s.Get("a/b/c").status().code(), Code::kNotFound);
  // Directories that became empty are gone; the store root stays.
  EXPECT_FALSE(fs::exists(dir / "store/a"));
  EXPECT_TRUE(fs::exists(dir / "store/empty"));
  EXPECT_EQ(s.location(), dir / "store");
  // Objects are owner-only, like the store directory.
  ASSERT_TRUE(s.Put("x/y", data).ok());
  EXPECT_EQ(fs::status(dir / "store/x/y").permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  EXPECT_EQ(fs::status(dir / "store").permissions() & fs::perms::all,
            fs::perms::owner_all);
}

TEST(LocalObjectStoreTest, OpenMissingWithoutCreate) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir / "nope", /*create=*/false);
  EXPECT_EQ(store.status().code(), Code::kNotFound);
  EXPECT_NE(store.status().message().find(dir / "nope"), std::string::npos);
  WriteFile(dir / "file", ToBytes("x"));
  EXPECT_EQ(LocalObjectStore::Open(dir / "file", true).status().code(),
            Code::kInvalidArgument);
}

TEST(LocalObjectStoreTest, ListIsRecursiveSortedAndByPrefix) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  ObjectStore& s = **store;
  const std::vector<std::string> keys = {
      "b/2", "a/b/c", "a/bc", "a/b/a", "top", "chunks/ab/abcd", "a/bd/x"};
  for (const auto& k : keys) ASSERT_TRUE(s.Put(k, ToBytes(k)).ok());

  auto all = s.List("");
  ASSERT_TRUE(all.ok());
  std::vector<std::string> sorted = keys;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(*all, sorted);
  EXPECT_EQ(*s.List("a/"),
            (std::vector<std::string>{"a/b/a", "a/b/c", "a/bc", "a/bd/x"}));
  EXPECT_EQ(*s.List("a/b/"), (std::vector<std::string>{"a/b/a", "a/b/c"}));
  EXPECT_EQ(*s.List("a/b"),
            (std::vector<std::string>{"a/b/a", "a/b/c", "a/bc", "a/bd/x"}));
  EXPECT_EQ(*s.List("chunks/"), (std::vector<std::string>{"chunks/ab/abcd"}));
  EXPECT_TRUE(s.List("zz/")->empty());
  EXPECT_TRUE(s.List("top/")->empty());
}

TEST(LocalObjectStoreTest, TemporariesAreNeverListedNorLeftBehind) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(
        (*store)->Put("d/" + std::to_string(i), RandomBytes(i, 100)).ok());
  }
  EXPECT_FALSE(HasTempFiles(dir.path()));
  EXPECT_EQ((*store)->List("")->size(), 20u);

  // A temporary a crashed writer left behind is invisible, and removed once
  // it is old enough.
  WriteFile(dir / "d/.tmp.0123.7", ToBytes("partial"));
  WriteFile(dir / ".tmp.0123.8", ToBytes("partial"));
  EXPECT_EQ((*store)->List("")->size(), 20u);
  const int64_t hour_ago = std::time(nullptr) - 3600;
  EXPECT_EQ(*(*store)->RemoveStaleTemporaries(hour_ago), 0u);
  const auto old = fs::file_time_type::clock::now() - std::chrono::hours(2);
  fs::last_write_time(dir / "d/.tmp.0123.7", old);
  fs::last_write_time(dir / ".tmp.0123.8", old);
  EXPECT_EQ(*(*store)->RemoveStaleTemporaries(hour_ago), 2u);
  EXPECT_FALSE(HasTempFiles(dir.path()));
  EXPECT_EQ((*store)->List("")->size(), 20u);
}

TEST(LocalObjectStoreTest, BatchPutsAppearOnlyAtCommit) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  ObjectStore& s = **store;
  const Bytes data = RandomBytes(3, 5000);
  auto batch = s.NewBatch();
  ASSERT_TRUE(batch->Put("chunks/ab/x", data).ok());
  ASSERT_TRUE(batch->Put("chunks/cd/y", data).ok());
  // Invisible, and not torn, until the commit.
  EXPECT_FALSE(*s.Exists("chunks/ab/x"));
  EXPECT_FALSE(*s.Touch("chunks/ab/x"));
  EXPECT_TRUE(s.List("chunks/")->empty());
  ASSERT_TRUE(batch->Commit().ok());
  EXPECT_EQ(*s.Get("chunks/ab/x"), data);
  EXPECT_EQ(*s.Get("chunks/cd/y"), data);
  EXPECT_FALSE(HasTempFiles(dir.path()));
  EXPECT_TRUE(batch->Commit().ok());  // nothing pending
}

// Issue 11 item 4: one writer's commit makes only its own objects visible,
// and a writer that fails (its batch dropped) takes nothing of another's
// with it.
TEST(LocalObjectStoreTest, BatchesCommitSeparately) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  ObjectStore& s = **store;
  const Bytes data = RandomBytes(4, 3000);
  auto a = s.NewBatch();
  auto b = s.NewBatch();
  ASSERT_TRUE(a->Put("chunks/aa/a", data).ok());
  ASSERT_TRUE(b->Put("chunks/bb/b", data).ok());
  ASSERT_TRUE(a->Commit().ok());
  EXPECT_TRUE(*s.Exists("chunks/aa/a"));
  EXPECT_FALSE(*s.Exists("chunks/bb/b"));  // b's stays b's
  a.reset();
  ASSERT_TRUE(b->Commit().ok());
  EXPECT_TRUE(*s.Exists("chunks/bb/b"));
  // A batch destroyed uncommitted leaves nothing, not even temporaries, and
  // another batch's pending object survives it.
  auto c = s.NewBatch();
  auto d = s.NewBatch();
  ASSERT_TRUE(c->Put("chunks/cc/c", data).ok());
  ASSERT_TRUE(d->Put("chunks/dd/d", data).ok());
  c.reset();
  ASSERT_TRUE(d->Commit().ok());
  EXPECT_FALSE(*s.Exists("chunks/cc/c"));
  EXPECT_TRUE(*s.Exists("chunks/dd/d"));
  EXPECT_FALSE(HasTempFiles(dir.path()));
}

TEST(LocalObjectStoreTest, KeyValidation) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  ObjectStore& s = **store;
  const std::vector<std::string> bad = {"",
                                        "/a",
                                        "a/",
                                        "a//b",
                                        "..",
                                        "../x",
                                        "a/../b",
                                        ".",
                                        "a/./b",
                                        ".hidden",
                                        "a/.b",
                                        "a b",
                                        "a\\b",
                                        "a*b",
                                        "a?b",
                                        "\xc3\xbc",
                                        "a\nb",
                                        std::string("a\0b", 3),
                                        std::string(1025, 'x')};
  for (const auto& key : bad) {
    SCOPED_TRACE("key '" + key + "'");
    EXPECT_EQ(s.Put(key, ToBytes("x")).code(), Code::kInvalidArgument);
    EXPECT_EQ(s.Get(key).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(s.Exists(key).status().code(), Code::kInvalidArgument);
    EXPECT_EQ(s.Delete(key).code(), Code::kInvalidArgument);
  }
  for (const std::string prefix : {"/", "../", "a//", ".x", "a b"}) {
    EXPECT_EQ(s.List(prefix).status().code(), Code::kInvalidArgument) << prefix;
  }
  EXPECT_TRUE(FilesUnder(dir.path()).empty());
  const std::string good = "A-z_0.9:+@/x.y";
  ASSERT_TRUE(s.Put(good, ToBytes("ok")).ok());
  EXPECT_EQ(*s.List(""), std::vector<std::string>{good});
}

TEST(LocalObjectStoreTest, PutIntoVanishedDirectoryFailsCleanly) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir / "s", true);
  ASSERT_TRUE(store.ok());
  fs::remove_all(dir / "s");
  const Status st = (*store)->Put("chunks/ab/cd", ToBytes("data"));
  EXPECT_FALSE(st.ok());
  EXPECT_NE(st.message().find(dir / "s"), std::string::npos) << st.ToString();
  EXPECT_FALSE(fs::exists(dir / "s"));
  EXPECT_EQ((*store)->Get("chunks/ab/cd").status().code(), Code::kNotFound);
  EXPECT_TRUE((*store)->List("")->empty());
}

TEST(LocalObjectStoreTest, PutIntoReadOnlyDirectoryFailsCleanly) {
  TempDir dir;
  auto store = LocalObjectStore::Open(dir.path(), true);
  ASSERT_TRUE(store.ok());
  ASSERT_TRUE((*store)->Put("sub/old", ToBytes("old")).ok());
  fs::permissions(dir.path(), fs::perms::owner_read | fs::perms::owner_exec);
  fs::permissions(dir / "sub", fs::perms::owner_read | fs::perms::owner_exec);
  // Root ignores permissions; drop the file system capabilities of one
  // thread (setfsuid is per thread) to see what everyone else would.
  Status new_dir, existing_dir;
  std::thread([&] {
    const bool root = ::geteuid() == 0;
    if (root) ::setfsuid(65534);
    new_dir = (*store)->Put("other/x", ToBytes("x"));
    existing_dir = (*store)->Put("sub/x", ToBytes("x"));
    if (root) ::setfsuid(0);
  }).join();
  fs::permissions(dir / "sub", fs::perms::owner_all);
  fs::permissions(dir.path(), fs::perms::owner_all);
  EXPECT_EQ(new_dir.code(), Code::kPermission) << new_dir.ToString();
  EXPECT_EQ(existing_dir.code(), Code::kPermission) << existing_dir.ToString();
  EXPECT_NE(existing_dir.message().find(dir / "sub"), std::string::npos);
  EXPECT_EQ(FilesUnder(dir.path()), std::vector<std::string>{"sub/old"});
}

// ENOSPC on a tiny tmpfs, in a child with its own mount namespace (needs
// CAP_SYS_ADMIN; skipped otherwise).
TEST(LocalObjectStoreTest, NoSpaceIsReportedAndLeavesNothing) {
  TempDir dir;
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    if (::unshare(CLONE_NEWNS) != 0 ||
        ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
        ::mount("tmpfs", dir.path().c_str(), "tmpfs", 0, "size=256k") != 0) {
      ::_exit(77);
    }
    auto store = LocalObjectStore::Open(dir.path(), true);
    if (!store.ok()) ::_exit(10);
    if (!(*store)->Put("small", ToBytes("fits")).ok()) ::_exit(11);
    const Status st = (*store)->Put("chunks/ab/big", RandomBytes(7, 1 << 20));
    if (st.code() != Code::kNoSpace) {
      std::fprintf(stderr, "got %s\n", st.ToString().c_str());
      ::_exit(12);
    }
    if (st.message().find(dir.path()) == std::string::npos) ::_exit(13);
    if (HasTempFiles(dir.path())) ::_exit(14);
    auto keys = (*store)->List("");
    if (!keys.ok() || *keys != std::vector<std::string>{"small"}) ::_exit(15);
    ::_exit(0);
  }
  int wstatus = 0;
  ASSERT_EQ(::waitpid(pid, &wstatus, 0), pid);
  ASSERT_TRUE(WIFEXITED(wstatus));
  if (WEXITSTATUS(wstatus) == 77) GTEST_SKIP() << "cannot mount a tmpfs here";
  EXPECT_EQ(WEXITSTATUS(wstatus), 0);
}

TEST(KeyComponentTest, EncodingIsInjectiveValidAndReversible) {
  const std::vector<std::string> names = {"vda",      "20261123T081500Z",
                                          "my snap",  ".hidden",
                                          "a+b",      "a+2Bb",
                                          "a/b",      "..",
                                          "\xc3\xbc", "x.y",
                                          "+",        "%41",
                                          "a:b@c",    std::string("\0", 1)};
  std::set<std::string> encoded;
  for (const auto& name : names) {
    const std::string e = EncodeKeyComponent(name);
    EXPECT_TRUE(ValidateObjectKey(e).ok()) << e;
    EXPECT_EQ(e.find('/'), std::string::npos);
    std::string back;
    ASSERT_TRUE(DecodeKeyComponent(e, &back)) << e;
    EXPECT_EQ(back, name);
    encoded.insert(e);
  }
  EXPECT_EQ(encoded.size(), names.size());
  EXPECT_EQ(EncodeKeyComponent("vda"), "vda");
  EXPECT_EQ(EncodeKeyComponent("my snap"), "my+20snap");
  std::string out;
  for (const std::string bad : {"+41", "+4", "+zz", "+2b", "", "+"}) {
    EXPECT_FALSE(DecodeKeyComponent(bad, &out)) << bad;
  }
}

TEST(HashHexTest, RoundTrip) {
  ChunkHash h;
  for (size_t i = 0; i < h.size(); ++i) h[i] = static_cast<uint8_t>(i * 37);
  const std::string hex = HashToHex(h);
  EXPECT_EQ(hex.size(), 64u);
  ChunkHash back{};
  ASSERT_TRUE(HexToHash(hex, &back));
  EXPECT_EQ(back, h);
  std::string upper = hex;
  std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
  ASSERT_TRUE(HexToHash(upper, &back));
  EXPECT_EQ(back, h);
  EXPECT_FALSE(HexToHash(hex.substr(1), &back));
  EXPECT_FALSE(HexToHash(hex + "0", &back));
  EXPECT_FALSE(HexToHash(std::string(63, '0') + "g", &back));
}

// ================================================================= chunks

class StoreTest : public ::testing::Test {
 protected:
  void SetUp() override { Reopen(); }

  void Reopen() {
    store_.reset();
    StoreConfig config;
    config.chunk_size = kChunk;
    auto store = Store::OpenLocal(dir_.path(), /*create=*/true, config);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(*store);
  }

  std::string ChunkPath(const ChunkRef& ref) const {
    return dir_ / Store::ChunkKey(ref.hash);
  }

  static BackupRecord Record(const std::string& uuid, const std::string& ckpt,
                             int64_t created = 1000) {
    BackupRecord r;
    r.id = BackupId(uuid, ckpt);
    r.domain = "dom-" + uuid.substr(0, 4);
    r.domain_uuid = uuid;
    r.checkpoint = ckpt;
    r.mode = "full";
    r.created = created;
    r.completed = created + 60;
    r.checkpoint_xml =
        "<domaincheckpoint><name>" + ckpt + "</name></domaincheckpoint>";
    return r;
  }

  // Chunks `data`, stores the chunks and the manifest, and adds the disk to
  // the record (which the caller puts, or not).
  Manifest WriteDisk(BackupRecord* record, const std::string& disk,
                     std::span<const std::byte> data) {
    Manifest m;
    m.backup_id = record->id;
    m.disk = disk;
    m.size = data.size();
    m.chunk_size = store_->chunk_size();
    uint64_t allocated = 0;
    for (size_t off = 0; off < data.size(); off += m.chunk_size) {
      auto piece =
          data.subspan(off, std::min<size_t>(m.chunk_size, data.size() - off));
      auto ref = store_->PutChunk(piece);
      EXPECT_TRUE(ref.ok()) << ref.status().ToString();
      if (!ref->zero) allocated += piece.size();
      m.chunks.push_back(*ref);
    }
    EXPECT_TRUE(store_->PutManifest(*record, m).ok());
    record->disks.push_back(
        {disk, data.size(), allocated, "/var/lib/" + disk, data.size()});
    return m;
  }

  // 3 full chunks + a partial one; chunk 1 is all zero.
  static Bytes DiskData(uint64_t seed) {
    Bytes data = RandomBytes(seed, 3 * kChunk + 12345);
    std::fill(data.begin() + kChunk, data.begin() + 2 * kChunk, std::byte{0});
    return data;
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(StoreTest, ChunkIsNamedBySha256AndStoredOnce) {
  Store::PutStats stats;
  auto ref = store_->PutChunk(ToBytes("abc"), &stats);
  ASSERT_TRUE(ref.ok());
  EXPECT_FALSE(ref->zero);
  EXPECT_EQ(HashToHex(ref->hash),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Store::ChunkKey(ref->hash),
            "chunks/ba/"
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_TRUE(stats.new_chunk);
  EXPECT_GT(stats.stored_bytes, 0u);

  const Bytes data = RandomBytes(2, kChunk);
  auto first = store_->PutChunk(data, &stats);
  ASSERT_TRUE(first.ok());
  EXPECT_TRUE(stats.new_chunk);
  EXPECT_EQ(fs::file_size(ChunkPath(*first)), stats.stored_bytes);
  auto second = store_->PutChunk(data, &stats);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, *first);
  EXPECT_FALSE(stats.new_chunk);
  EXPECT_EQ(stats.stored_bytes, 0u);
  EXPECT_EQ(store_->objects().List("chunks/")->size(), 2u);

  Bytes out(kChunk);
  ASSERT_TRUE(store_->GetChunk(*first, out).ok());
  EXPECT_EQ(out, data);
}

TEST_F(StoreTest, ZeroChunksAreNotStored) {
  Store::PutStats stats;
  stats.new_chunk = true;
  auto full = store_->PutChunk(Bytes(kChunk), &stats);
  ASSERT_TRUE(full.ok());
  EXPECT_TRUE(full->zero);
  EXPECT_EQ(full->hash, ChunkHash{});
  EXPECT_FALSE(stats.new_chunk);
  auto short_zero = store_->PutChunk(Bytes(100));
  ASSERT_TRUE(short_zero.ok());
  EXPECT_TRUE(short_zero->zero);
  EXPECT_TRUE(store_->objects().List("chunks/")->empty());

  Bytes out(kChunk, std::byte{0xff});
  ASSERT_TRUE(store_->GetChunk(*full, out).ok());
  EXPECT_TRUE(std::all_of(out.begin(), out.end(),
                          [](std::byte b) { return b == std::byte{0}; }));
  // One non-zero byte at the very end is not a zero chunk.
  Bytes almost(kChunk);
  almost.back() = std::byte{1};
  EXPECT_FALSE(store_->PutChunk(almost)->zero);
}

TEST_F(StoreTest, ShortLastChunkAndSizeLimits) {
  const Bytes data = RandomBytes(3, 1000);
  auto ref = store_->PutChunk(data);
  ASSERT_TRUE(ref.ok());
  Bytes out(1000);
  ASSERT_TRUE(store_->GetChunk(*ref, out).ok());
  EXPECT_EQ(out, data);
  // Asking for the wrong length is corruption, not a silent short read.
  Bytes wrong(kChunk);
  const Status st = store_->GetChunk(*ref, wrong);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_NE(st.message().find(HashToHex(ref->hash)), std::string::npos);

  EXPECT_EQ(store_->PutChunk(Bytes(kChunk + 1)).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(store_->PutChunk({}).status().code(), Code::kInvalidArgument);
  Bytes too_big(kChunk + 1);
  EXPECT_EQ(store_->GetChunk(*ref, too_big).code(), Code::kInvalidArgument);
}

TEST_F(StoreTest, CompressionShrinksCompressibleData) {
  Store::PutStats stats;
  const Bytes text = CompressibleBytes(kChunk);
  auto ref = store_->PutChunk(text, &stats);
  ASSERT_TRUE(ref.ok());
  EXPECT_LT(stats.stored_bytes, kChunk / 10);
  EXPECT_EQ(fs::file_size(ChunkPath(*ref)), stats.stored_bytes);
  // Random data cannot shrink: compression "auto" stores the plain bytes.
  const Bytes noise = RandomBytes(4, kChunk);
  auto random = store_->PutChunk(noise, &stats);
  ASSERT_TRUE(random.ok());
  EXPECT_EQ(stats.stored_bytes, kChunk);
  EXPECT_EQ(ReadFile(ChunkPath(*random)), noise);
  Bytes out(kChunk);
  ASSERT_TRUE(store_->GetChunk(*ref, out).ok());
  EXPECT_EQ(out, text);
  ASSERT_TRUE(store_->GetChunk(*random, out).ok());
  EXPECT_EQ(out, noise);
  // A short last chunk that does not shrink is plain too.
  const Bytes tail = RandomBytes(7, 1000);
  auto short_ref = store_->PutChunk(tail, &stats);
  ASSERT_TRUE(short_ref.ok());
  EXPECT_EQ(stats.stored_bytes, 1000u);
  Bytes short_out(1000);
  ASSERT_TRUE(store_->GetChunk(*short_ref, short_out).ok());
  EXPECT_EQ(short_out, tail);
}

TEST(StoreCompressionTest, ZstdStoresAlwaysWriteFramesAndBothKindsRead) {
  // A store made with compression "zstd" (as every store was before "auto")
  // keeps writing frames, also for random data, and reads them back; an
  // "auto" store reads such frames too (a chunk copied between stores). The
  // "auto" store here is in memory: the ObjectStore's default GetInto.
  TempDir dir;
  StoreConfig zc;
  zc.chunk_size = 64 * 1024;
  zc.compression = "zstd";
  auto zs = Store::OpenLocal(dir / "z", true, zc);
  ASSERT_TRUE(zs.ok()) << zs.status().ToString();
  StoreConfig ac = zc;
  ac.compression = "auto";
  auto as = Store::Open(std::make_unique<MemoryObjectStore>(), true, ac);
  ASSERT_TRUE(as.ok()) << as.status().ToString();
  for (const Bytes& data :
       {RandomBytes(8, zc.chunk_size), CompressibleBytes(zc.chunk_size)}) {
    Store::PutStats stats;
    auto ref = (*zs)->PutChunk(data, &stats);
    ASSERT_TRUE(ref.ok());
    EXPECT_NE(stats.stored_bytes, data.size());  // a frame, never plain
    const std::string key = Store::ChunkKey(ref->hash);
    Bytes out(data.size());
    ASSERT_TRUE((*zs)->GetChunk(*ref, out).ok());
    EXPECT_EQ(out, data);
    ASSERT_TRUE((*as)->objects().Put(key, ReadFile(dir / ("z/" + key))).ok());
    std::fill(out.begin(), out.end(), std::byte{0});
    ASSERT_TRUE((*as)->GetChunk(*ref, out).ok());
    EXPECT_EQ(out, data);
  }
  const Bytes noise = RandomBytes(9, zc.chunk_size);
  Store::PutStats stats;
  auto plain = (*as)->PutChunk(noise, &stats);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(stats.stored_bytes, noise.size());
  Bytes out(noise.size());
  ASSERT_TRUE((*as)->GetChunk(*plain, out).ok());
  EXPECT_EQ(out, noise);
  StoreConfig bad = zc;
  bad.compression = "lz4";
  auto refused = Store::OpenLocal(dir / "b", true, bad);
  EXPECT_EQ(refused.status().code(), Code::kInvalidArgument);
}

TEST_F(StoreTest, GetChunkNeverReturnsWrongBytes) {
  const Bytes a = CompressibleBytes(kChunk);
  const Bytes b = RandomBytes(5, kChunk);
  auto ra = store_->PutChunk(a);
  auto rb = store_->PutChunk(b);
  ASSERT_TRUE(ra.ok() && rb.ok());
  const std::string path = ChunkPath(*ra);
  const Bytes good = ReadFile(path);
  const std::string hex = HashToHex(ra->hash);
  Bytes out(kChunk);

  auto expect_corrupt = [&](const char* what, const char* reason) {
    SCOPED_TRACE(what);
    const Status st = store_->GetChunk(*ra, out);
    EXPECT_EQ(st.code(), Code::kIoError);
    EXPECT_NE(st.message().find("chunk " + hex), std::string::npos)
        << st.ToString();
    EXPECT_NE(st.message().find(reason), std::string::npos) << st.ToString();
  };

  // Every flipped byte of the frame is caught (by zstd or by the hash), or
  // hits a bit zstd ignores (the frame header has unused bits) and the
  // verified bytes are still the right ones; never wrong data.
  int caught = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    for (std::byte mask : {std::byte{0x01}, std::byte{0x10}, std::byte{0x80}}) {
      Bytes bad = good;
      bad[i] ^= mask;
      WriteFile(path, bad);
      std::fill(out.begin(), out.end(), std::byte{0});
      const Status st = store_->GetChunk(*ra, out);
      if (st.ok()) {
        ASSERT_EQ(out, a) << "byte " << i << " mask " << int(mask);
        continue;
      }
      ++caught;
      SCOPED_TRACE("byte " + std::to_string(i));
      expect_corrupt("flipped byte", "store corrupt");
    }
  }
  EXPECT_GT(caught, static_cast<int>(3 * good.size() - 8));
  // Another chunk's valid frame under this name.
  WriteFile(path, ReadFile(ChunkPath(*rb)));
  expect_corrupt("foreign frame", "hash mismatch (store corrupt)");
  WriteFile(path, RandomBytes(6, 5000));
  expect_corrupt("garbage", "not a zstd frame");
  WriteFile(path, RandomBytes(6, kChunk));
  expect_corrupt("garbage of the chunk's size", "hash mismatch");
  WriteFile(path, RandomBytes(6, 2 * kChunk));
  expect_corrupt("garbage larger than the chunk", "not a zstd frame");
  WriteFile(path, {});
  expect_corrupt("empty", "store corrupt");
  WriteFile(path, std::span(good).first(good.size() / 2));
  expect_corrupt("truncated", "store corrupt");
  fs::remove(path);
  expect_corrupt("deleted", "missing (store corrupt)");

  WriteFile(path, good);
  ASSERT_TRUE(store_->GetChunk(*ra, out).ok());
  EXPECT_EQ(out, a);

  // A plain (incompressible) chunk: every flipped byte is a hash mismatch.
  const std::string plain_path = ChunkPath(*rb);
  ASSERT_EQ(fs::file_size(plain_path), kChunk);
  for (size_t i = 0; i < kChunk; i += 997) {
    Bytes bad = b;
    bad[i] ^= std::byte{0x04};
    WriteFile(plain_path, bad);
    const Status st = store_->GetChunk(*rb, out);
    ASSERT_EQ(st.code(), Code::kIoError) << "byte " << i;
    EXPECT_NE(st.message().find("hash mismatch"), std::string::npos);
  }
}

TEST_F(StoreTest, ConcurrentPutAndGet) {
  constexpr int kThreads = 4;
  constexpr int kPerThread = 40;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      Bytes out(kChunk);
      for (int i = 0; i < kPerThread; ++i) {
        // Half of the chunks are shared between threads.
        const uint64_t seed = i % 2 == 0 ? 100 + i : 1000 * (t + 1) + i;
        const Bytes data = RandomBytes(seed, kChunk);
        auto ref = store_->PutChunk(data);
        if (!ref.ok() || !store_->GetChunk(*ref, out).ok() || out != data) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int f : failures) EXPECT_EQ(f, 0);
  EXPECT_EQ(store_->objects().List("chunks/")->size(),
            static_cast<size_t>(kPerThread / 2 + kThreads * kPerThread / 2));
  EXPECT_FALSE(HasTempFiles(dir_.path()));
}

// =============================================================== manifests

Manifest SampleManifest(uint64_t size = 5 * kChunk - 7) {
  Manifest m;
  m.backup_id = "0b4a-uuid/20261123T081500Z";
  m.disk = "vda";
  m.size = size;
  m.chunk_size = kChunk;
  std::mt19937_64 rng(size);
  for (uint64_t i = 0; i < ChunkCount(size, kChunk); ++i) {
    ChunkRef ref;
    ref.zero = i % 3 == 1;
    if (!ref.zero) {
      for (auto& b : ref.hash) b = static_cast<uint8_t>(rng());
    }
    m.chunks.push_back(ref);
  }
  return m;
}

void ExpectSameManifest(const Manifest& a, const Manifest& b) {
  EXPECT_EQ(a.backup_id, b.backup_id);
  EXPECT_EQ(a.disk, b.disk);
  EXPECT_EQ(a.size, b.size);
  EXPECT_EQ(a.chunk_size, b.chunk_size);
  EXPECT_EQ(a.chunks, b.chunks);
}

// Replaces the trailing checksum so that only the semantic checks can object.
void Reseal(Bytes* data) {
  const ChunkHash sum = Sha256(std::span(*data).first(data->size() - 32));
  std::memcpy(data->data() + data->size() - 32, sum.data(), 32);
}

TEST(ManifestTest, RoundTrip) {
  for (uint64_t size : {uint64_t{0}, uint64_t{1}, uint64_t{kChunk},
                        uint64_t{kChunk} + 1, uint64_t{5 * kChunk - 7}}) {
    const Manifest m = SampleManifest(size);
    const Bytes data = SerializeManifest(m);
    EXPECT_EQ(data.size(), 8 + 4 + 4 + 8 + 8 + 2 + m.backup_id.size() + 2 +
                               m.disk.size() + 33 * m.chunks.size() + 32);
    auto parsed = ParseManifest(data);
    ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
    ExpectSameManifest(*parsed, m);
  }
  // A zero entry is written without its hash.
  Manifest m = SampleManifest();
  m.chunks[1].hash[0] = 42;
  auto parsed = ParseManifest(SerializeManifest(m));
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(parsed->chunks[1].hash, ChunkHash{});
}

TEST(ManifestTest, EveryCorruptionIsAnIoError) {
  const Bytes good = SerializeManifest(SampleManifest());
  auto expect_error = [](const Bytes& data, const std::string& reason) {
    auto parsed = ParseManifest(data);
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), Code::kIoError);
    EXPECT_NE(parsed.status().message().find(reason), std::string::npos)
        << parsed.status().message();
  };
  // Every flipped byte (one bit or all bits).
  for (size_t i = 0; i < good.size(); ++i) {
    for (std::byte mask : {std::byte{0x01}, std::byte{0xff}}) {
      Bytes bad = good;
      bad[i] ^= mask;
      SCOPED_TRACE("byte " + std::to_string(i));
      expect_error(bad, "");
    }
  }
  // Truncation at every length, and a trailing byte.
  for (size_t n = 0; n < good.size(); ++n) {
    SCOPED_TRACE("length " + std::to_string(n));
    expect_error(Bytes(good.begin(), good.begin() + n),
                 n < 8 ? "truncated" : "");
  }
  expect_error(Bytes(good.begin(), good.begin() + 30), "truncated header");
  expect_error(Bytes(good.begin(), good.end() - 1), "truncated");
  Bytes longer = good;
  longer.push_back(std::byte{0});
  expect_error(longer, "1 trailing bytes");

  Bytes bad = good;
  bad[0] = std::byte{'X'};
  expect_error(bad, "bad magic");
  bad = good;
  bad[8] = std::byte{2};
  expect_error(bad, "manifest version 2; this ckptfs reads version 1");
  bad = good;
  bad[good.size() - 1] ^= std::byte{1};
  expect_error(bad, "checksum mismatch");
  bad = good;
  bad[50] ^= std::byte{1};
  expect_error(bad, "checksum mismatch");

  // Semantic errors behind a valid checksum.
  Manifest m = SampleManifest();
  m.chunks.pop_back();
  expect_error(SerializeManifest(m),
               "entry count 4 != ceil(size 327673 / "
               "chunk size 65536) = 5");
  m = SampleManifest();
  m.chunk_size = 0;
  m.chunks.clear();
  expect_error(SerializeManifest(m), "chunk size 0");
  m = SampleManifest();
  m.disk.clear();
  expect_error(SerializeManifest(m), "empty disk name");
  const size_t first_entry = 8 + 4 + 4 + 8 + 8 + 2 + m.backup_id.size() + 2 + 3;
  bad = good;
  bad[first_entry] = std::byte{0x02};  // unknown flag
  Reseal(&bad);
  expect_error(bad, "entry 0: unknown flags 2");
  bad = good;
  bad[first_entry + 33 + 5] = std::byte{1};  // entry 1 is a zero chunk
  Reseal(&bad);
  expect_error(bad, "entry 1: zero chunk with a hash");
  // An entry count that would overflow the length arithmetic.
  bad = good;
  for (int i = 0; i < 8; ++i) bad[24 + i] = std::byte{0xff};
  expect_error(bad, "truncated");
}

TEST(ManifestTest, ArbitraryInputNeverCrashes) {
  std::mt19937_64 rng(99);
  const Bytes good = SerializeManifest(SampleManifest());
  for (int i = 0; i < 20000; ++i) {
    Bytes data;
    if (i % 2 == 0) {
      data = RandomBytes(rng(), rng() % 400);
      if (data.size() >= 8 && i % 4 == 0) {
        std::memcpy(data.data(), kManifestMagic, 8);  // get past the magic
      }
      if (data.size() >= 12 && i % 8 == 0) data[8] = std::byte{1};
      if (data.size() >= 12 && i % 8 == 0) {
        data[9] = data[10] = data[11] = std::byte{0};
      }
    } else {
      data = good;
      for (int k = 0; k < 1 + static_cast<int>(rng() % 3); ++k) {
        data[rng() % data.size()] = static_cast<std::byte>(rng());
      }
      if (data == good) continue;
    }
    auto parsed = ParseManifest(data);
    EXPECT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), Code::kIoError);
  }
}

// ========================================================== backup records

BackupRecord SampleRecord() {
  BackupRecord r;
  r.domain_uuid = "0b4a1f2e-1111-2222-3333-444455556666";
  r.checkpoint = "20261123T081500Z";
  r.id = BackupId(r.domain_uuid, r.checkpoint);
  r.domain = "web \"01\" \xc3\xbc";
  r.base = "20261122T081500Z";
  r.mode = "incremental";
  r.created = 1795000000;
  r.completed = -5;
  r.checkpoint_xml =
      "<domaincheckpoint>\n  <name>x</name>\n  <description>a\\b "
      "&amp;</description>\n</domaincheckpoint>\n";
  BackupDisk vda;
  vda.name = "vda";
  vda.size = 10ull << 30;
  vda.allocated = 3ull << 30;
  vda.source = "/var/lib/libvirt/images/a.qcow2";
  vda.bytes_read = 1ull << 20;
  vda.changes = {
      {0, 65536}, {1 << 20, 3 << 16}, {(10ull << 30) - 65536, 65536}};
  BackupDisk vdb;
  vdb.name = "vdb";
  vdb.size = UINT64_MAX;
  r.disks = {vda, vdb};
  return r;
}

void ExpectSameRecord(const BackupRecord& a, const BackupRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.domain, b.domain);
  EXPECT_EQ(a.domain_uuid, b.domain_uuid);
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.base, b.base);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.created, b.created);
  EXPECT_EQ(a.completed, b.completed);
  EXPECT_EQ(a.checkpoint_xml, b.checkpoint_xml);
  ASSERT_EQ(a.disks.size(), b.disks.size());
  for (size_t i = 0; i < a.disks.size(); ++i) {
    EXPECT_EQ(a.disks[i].name, b.disks[i].name);
    EXPECT_EQ(a.disks[i].size, b.disks[i].size);
    EXPECT_EQ(a.disks[i].allocated, b.disks[i].allocated);
    EXPECT_EQ(a.disks[i].source, b.disks[i].source);
    EXPECT_EQ(a.disks[i].bytes_read, b.disks[i].bytes_read);
    EXPECT_EQ(a.disks[i].changes, b.disks[i].changes);
  }
}

TEST(BackupRecordTest, RoundTrip) {
  const BackupRecord r = SampleRecord();
  const std::string text = SerializeBackupRecord(r);
  EXPECT_NE(text.find("\"format\": 1"), std::string::npos) << text;
  auto parsed = ParseBackupRecord(text);
  ASSERT_TRUE(parsed.ok()) << parsed.status().ToString();
  ExpectSameRecord(*parsed, r);
}

TEST(BackupRecordTest, MalformedIsAnIoError) {
  using nlohmann::json;
  const json good = json::parse(SerializeBackupRecord(SampleRecord()));
  auto expect_error = [](const std::string& text, const std::string& reason) {
    auto parsed = ParseBackupRecord(text);
    ASSERT_FALSE(parsed.ok()) << text;
    EXPECT_EQ(parsed.status().code(), Code::kIoError);
    EXPECT_NE(parsed.status().message().find(reason), std::string::npos)
        << parsed.status().message();
  };
  expect_error("", "not JSON");
  expect_error("{", "not JSON");
  expect_error(good.dump().substr(0, 100), "not JSON");
  expect_error("[]", "not a JSON object");
  expect_error("null", "not a JSON object");
  expect_error("\"\xff\"", "not JSON");
  for (const auto& [key, value] : good.items()) {
    json j = good;
    j.erase(key);
    expect_error(j.dump(), "missing field \"" + key + "\"");
  }
  for (const char* key :
       {"name", "size", "allocated", "source", "bytes_read"}) {
    json j = good;
    j["disks"][0].erase(key);
    expect_error(j.dump(), std::string("missing field \"") + key + "\"");
  }
  json j = good;
  j["format"] = 2;
  expect_error(j.dump(), "backup record format 2; this ckptfs reads format 1");
  j = good;
  j["created"] = "yesterday";
  expect_error(j.dump(), "\"created\" is not a 64-bit integer");
  j = good;
  j["created"] = 1.5;
  expect_error(j.dump(), "\"created\" is not a 64-bit integer");
  j = good;
  j["disks"][0]["size"] = -1;
  expect_error(j.dump(), "\"size\" is not a non-negative integer");
  j = good;
  j["mode"] = 7;
  expect_error(j.dump(), "\"mode\" is not a string");
  j = good;
  j["mode"] = "differential";
  expect_error(j.dump(), "neither full nor incremental");
  j = good;
  j["id"] = "other/x";
  expect_error(j.dump(), "is not domain_uuid/checkpoint");
  j = good;
  j["disks"][1]["name"] = "vda";
  expect_error(j.dump(), "listed twice");
  j = good;
  j["disks"] = "vda";
  expect_error(j.dump(), "\"disks\" is not an array");
  j = good;
  j["disks"][0]["changes"] = 5;
  expect_error(j.dump(), "disk \"vda\": field \"changes\" is not an array");
  for (const char* changes :
       {"[[1]]", "[[1, 2, 3]]", "[[-1, 2]]", "[[\"0\", 2]]", "[1, 2]"}) {
    j = good;
    j["disks"][0]["changes"] = json::parse(changes);
    expect_error(j.dump(), "a change is not [offset, length]");
  }
  for (const char* changes : {"[[10737418240, 1]]", "[[0, 10737418241]]",
                              "[[100, 10], [50, 10]]", "[[0, 10], [5, 10]]"}) {
    j = good;
    j["disks"][0]["changes"] = json::parse(changes);
    expect_error(j.dump(), "is out of order or beyond the disk");
  }
  // "changes" is optional (added after the first records).
  j = good;
  j["disks"][0].erase("changes");
  auto without = ParseBackupRecord(j.dump());
  ASSERT_TRUE(without.ok()) << without.status().ToString();
  EXPECT_TRUE(without->disks[0].changes.empty());
  // Unknown fields are ignored (a later writer may add some).
  j = good;
  j["future"] = {1, 2};
  EXPECT_TRUE(ParseBackupRecord(j.dump()).ok());
}

// ========================================================= store: backups

TEST_F(StoreTest, BackupLifecycleAndListing) {
  const Bytes data = DiskData(1);
  BackupRecord a = Record("uuid-b", "ckpt1", 2000);
  WriteDisk(&a, "vda", data);
  WriteDisk(&a, "vdb", RandomBytes(2, 2 * kChunk));
  ASSERT_TRUE(store_->PutBackup(a).ok());
  BackupRecord a0 = Record("uuid-b", "ckpt0", 1000);
  WriteDisk(&a0, "vda", data);
  ASSERT_TRUE(store_->PutBackup(a0).ok());
  BackupRecord other = Record("uuid-a", "x", 5000);
  WriteDisk(&other, "sda", RandomBytes(3, 100));
  ASSERT_TRUE(store_->PutBackup(other).ok());

  // Incomplete: manifests, no record (a running or crashed backup).
  BackupRecord incomplete = Record("uuid-b", "ckpt2", 3000);
  WriteDisk(&incomplete, "vda", data);
  // Corrupt record.
  BackupRecord broken = Record("uuid-c", "ckpt", 1);
  WriteDisk(&broken, "vda", data);
  ASSERT_TRUE(store_->PutBackup(broken).ok());
  const std::string broken_key = Store::RecordKey("uuid-c", "ckpt");
  ASSERT_TRUE(
      store_->objects().Put(broken_key, ToBytes("{\"format\": 1,")).ok());
  // A record stored under another backup's name.
  BackupRecord moved = Record("uuid-d", "ckpt", 1);
  WriteDisk(&moved, "vda", data);
  ASSERT_TRUE(store_->objects()
                  .Put(Store::RecordKey("uuid-d", "ckpt"),
                       ToBytes(SerializeBackupRecord(a)))
                  .ok());

  std::vector<std::string> problems;
  auto list = store_->ListBackups(&problems);
  ASSERT_TRUE(list.ok()) << list.status().ToString();
  ASSERT_EQ(list->size(), 3u);
  EXPECT_EQ((*list)[0].id, other.id);  // sorted by uuid, then created
  EXPECT_EQ((*list)[1].id, a0.id);
  EXPECT_EQ((*list)[2].id, a.id);
  ExpectSameRecord((*list)[2], a);
  ASSERT_EQ(problems.size(), 2u);
  EXPECT_NE(problems[0].find(broken_key), std::string::npos) << problems[0];
  EXPECT_NE(problems[0].find("corrupt (not JSON"), std::string::npos);
  EXPECT_NE(problems[1].find("names backup 'uuid-b/ckpt1'"), std::string::npos)
      << problems[1];
  EXPECT_EQ(store_->ListBackups()->size(), 3u);

  auto got = store_->GetBackup("uuid-b", "ckpt1");
  ASSERT_TRUE(got.ok());
  ExpectSameRecord(*got, a);
  EXPECT_EQ(store_->GetBackup("uuid-b", "ckpt2").status().code(),
            Code::kNotFound);
  const auto corrupt = store_->GetBackup("uuid-c", "ckpt");
  EXPECT_EQ(corrupt.status().code(), Code::kIoError);
  EXPECT_NE(corrupt.status().message().find("backup record " + broken_key +
                                            ": corrupt ("),
            std::string::npos)
      << corrupt.status().message();
  EXPECT_EQ(store_->GetBackup("uuid-d", "ckpt").status().code(),
            Code::kIoError);

  // Deleting: the record and manifests go, the chunks stay for gc.
  const size_t chunks = store_->objects().List("chunks/")->size();
  ASSERT_TRUE(store_->DeleteBackup(a).ok());
  EXPECT_EQ(store_->GetBackup("uuid-b", "ckpt1").status().code(),
            Code::kNotFound);
  EXPECT_TRUE(
      store_->objects().List(Store::BackupPrefix("uuid-b", "ckpt1"))->empty());
  EXPECT_EQ(store_->objects().List("chunks/")->size(), chunks);
  EXPECT_EQ(store_->DeleteBackup(a).code(), Code::kNotFound);
  // An incomplete backup is cleaned up by uuid + checkpoint alone.
  BackupRecord key_only;
  key_only.domain_uuid = "uuid-b";
  key_only.checkpoint = "ckpt2";
  ASSERT_TRUE(store_->DeleteBackup(key_only).ok());
  EXPECT_TRUE(
      store_->objects().List(Store::BackupPrefix("uuid-b", "ckpt2"))->empty());
  EXPECT_EQ(store_->ListBackups()->size(), 2u);
}

// Issue 11 item 5: gc during a backup older than an hour keeps the
// backup's uncommitted temporaries (43d0e95 removed every .tmp.* older than
// an hour, and the backup's commit then failed), yet removes a crashed
// writer's once no lock protects it.
TEST_F(StoreTest, GcKeepsALongBackupsTemporaries) {
  const int64_t now = std::time(nullptr);
  ASSERT_TRUE(
      store_->PutLock({.name = "long", .started = now - 3 * 3600}).ok());
  auto batch = store_->NewBatch();
  auto ref = store_->PutChunk(RandomBytes(21, kChunk), nullptr, batch.get());
  ASSERT_TRUE(ref.ok());
  const auto two_hours_ago =
      fs::file_time_type::clock::now() - std::chrono::hours(2);
  std::string temp;
  for (const std::string& f : FilesUnder(dir_.path())) {
    if (fs::path(f).filename().string().starts_with(".tmp.")) temp = dir_ / f;
  }
  ASSERT_FALSE(temp.empty());
  fs::last_write_time(temp, two_hours_ago);
  auto stats = store_->CollectGarbage(*store_->GcCutoff(now), false);
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_EQ(stats->temporaries, 0u);
  ASSERT_TRUE(batch->Commit().ok());
  EXPECT_TRUE(*store_->objects().Exists(Store::ChunkKey(ref->hash)));

  // A crashed writer's temporary, once its lock is gone.
  ASSERT_TRUE(store_->DeleteLock("long").ok());
  auto crashed = store_->NewBatch();
  ASSERT_TRUE(
      store_->PutChunk(RandomBytes(22, kChunk), nullptr, crashed.get()).ok());
  for (const std::string& f : FilesUnder(dir_.path())) {
    if (fs::path(f).filename().string().starts_with(".tmp.")) {
      fs::last_write_time(dir_ / f, two_hours_ago);
    }
  }
  stats = store_->CollectGarbage(*store_->GcCutoff(now), false);
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->temporaries, 1u);
  EXPECT_FALSE(HasTempFiles(dir_.path()));
  // The dead writer's batch finds its temporary gone; nothing shows.
  EXPECT_FALSE(crashed->Commit().ok());
}

TEST_F(StoreTest, NamesAreEncodedIntoKeys) {
  BackupRecord r = Record("uuid", "my snap/1");
  const Bytes data = RandomBytes(8, 1000);
  WriteDisk(&r, "disk 0", data);
  ASSERT_TRUE(store_->PutBackup(r).ok());
  EXPECT_EQ(*store_->objects().List("backups/"),
            (std::vector<std::string>{
                "backups/uuid/my+20snap+2F1/backup.json",
                "backups/uuid/my+20snap+2F1/disk+200.manifest"}));
  auto image =
      store_->OpenImage(*store_->GetBackup("uuid", "my snap/1"), "disk 0");
  ASSERT_TRUE(image.ok()) << image.status().ToString();
  Bytes out(1000);
  ASSERT_TRUE((*image)->pread(out, 0).ok());
  EXPECT_EQ(out, data);
}

TEST_F(StoreTest, PutChecksTheWriteOrderAndFields) {
  BackupRecord r = Record("uuid", "c1");
  // The record cannot come before its manifests.
  r.disks.push_back({"vda", 100, 100, "", 100});
  Status st = store_->PutBackup(r);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("no manifest"), std::string::npos);
  r.disks.clear();
  EXPECT_EQ(store_->PutBackup(r).code(), Code::kInvalidArgument);  // no disks
  WriteDisk(&r, "vda", RandomBytes(9, 100));
  BackupRecord bad = r;
  bad.mode = "weekly";
  EXPECT_EQ(store_->PutBackup(bad).code(), Code::kInvalidArgument);
  bad = r;
  bad.id = "something";
  EXPECT_EQ(store_->PutBackup(bad).code(), Code::kInvalidArgument);
  bad = r;
  bad.disks.push_back(bad.disks[0]);
  EXPECT_EQ(store_->PutBackup(bad).code(), Code::kInvalidArgument);
  // A record that would not read back is refused at write time.
  bad = r;
  bad.disks[0].changes = {{50, 10}, {0, 10}};
  st = store_->PutBackup(bad);
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("out of order"), std::string::npos);
  bad = r;
  bad.disks[0].changes = {{0, 101}};
  EXPECT_EQ(store_->PutBackup(bad).code(), Code::kInvalidArgument);
  EXPECT_EQ(store_->GetBackup("uuid", "c1").status().code(), Code::kNotFound);
  EXPECT_TRUE(store_->PutBackup(r).ok());

  // Issue 11 item 1: a complete backup never changes; neither its record
  // nor a manifest is ever replaced.
  const Bytes record_before = ReadFile(dir_ / Store::RecordKey("uuid", "c1"));
  BackupRecord again = r;
  again.created += 100;
  EXPECT_EQ(store_->PutBackup(again).code(), Code::kAlreadyExists);
  EXPECT_EQ(ReadFile(dir_ / Store::RecordKey("uuid", "c1")), record_before);
  const std::string mkey = Store::ManifestKey("uuid", "c1", "vda");
  const Bytes manifest_before = ReadFile(dir_ / mkey);
  Manifest m = SampleManifest(3 * kChunk);
  m.backup_id = r.id;
  EXPECT_EQ(store_->PutManifest(r, m).code(), Code::kAlreadyExists);
  EXPECT_EQ(ReadFile(dir_ / mkey), manifest_before);
  EXPECT_EQ(store_->CheckNameFree("uuid", "c1").code(), Code::kAlreadyExists);
  EXPECT_TRUE(store_->CheckNameFree("uuid", "c9").ok());
  Manifest wrong = m;
  wrong.backup_id = "uuid/c2";
  EXPECT_EQ(store_->PutManifest(r, wrong).code(), Code::kInvalidArgument);
  wrong = m;
  wrong.chunk_size = 2 * kChunk;
  EXPECT_EQ(store_->PutManifest(r, wrong).code(), Code::kInvalidArgument);
  wrong = m;
  wrong.chunks.pop_back();
  EXPECT_EQ(store_->PutManifest(r, wrong).code(), Code::kInvalidArgument);
  wrong = m;
  wrong.disk = "";
  EXPECT_EQ(store_->PutManifest(r, wrong).code(), Code::kInvalidArgument);
  wrong = m;
  wrong.disk = std::string(300, 'x');
  EXPECT_EQ(store_->PutManifest(r, wrong).code(), Code::kInvalidArgument);
}

TEST_F(StoreTest, GetManifestReportsDamage) {
  BackupRecord r = Record("uuid", "c1");
  const Manifest m = WriteDisk(&r, "vda", DiskData(2));
  WriteDisk(&r, "vdb", DiskData(3));
  ASSERT_TRUE(store_->PutBackup(r).ok());
  auto got = store_->GetManifest(r, "vda");
  ASSERT_TRUE(got.ok());
  ExpectSameManifest(*got, m);

  const std::string key = Store::ManifestKey("uuid", "c1", "vda");
  const std::string path = dir_ / key;
  const Bytes good = ReadFile(path);
  auto expect_error = [&](Code code, const std::string& text) {
    auto res = store_->GetManifest(r, "vda");
    ASSERT_FALSE(res.ok());
    EXPECT_EQ(res.status().code(), code);
    EXPECT_NE(res.status().message().find(text), std::string::npos)
        << res.status().message();
  };
  Bytes bad = good;
  bad[bad.size() / 2] ^= std::byte{4};
  WriteFile(path, bad);
  expect_error(Code::kIoError,
               "manifest " + key + ": corrupt (checksum mismatch)");
  WriteFile(path, std::span(good).first(40));
  expect_error(Code::kIoError, "manifest " + key + ": corrupt (truncated");
  // vdb's manifest under vda's name: valid, but not this disk's.
  WriteFile(path, ReadFile(dir_ / Store::ManifestKey("uuid", "c1", "vdb")));
  expect_error(Code::kIoError, "names backup 'uuid/c1' disk 'vdb'");
  fs::remove(path);
  expect_error(Code::kIoError, "manifest " + key + ": missing (store corrupt)");
  auto unknown = store_->GetManifest(r, "vdz");
  EXPECT_EQ(unknown.status().code(), Code::kNotFound);
  EXPECT_EQ(store_->OpenImage(r, "vdz").status().code(), Code::kNotFound);
}

// =========================================================== StoreSource

TEST_F(StoreTest, ImageReadsBackByteIdentical) {
  const Bytes data = DiskData(4);
  BackupRecord r = Record("uuid", "c1");
  const Manifest m = WriteDisk(&r, "vda", data);
  ASSERT_TRUE(store_->PutBackup(r).ok());
  EXPECT_TRUE(m.chunks[1].zero);
  EXPECT_EQ(m.chunks.size(), 4u);
  auto opened = store_->OpenImage(r, "vda");
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  ImageSource& image = **opened;
  EXPECT_EQ(image.size(), data.size());
  EXPECT_EQ(image.preferred_block_size(), kChunk);
  EXPECT_EQ(image.max_request(), 32u << 20);

  Bytes all(data.size());
  ASSERT_TRUE(image.pread(all, 0).ok());
  EXPECT_EQ(all, data);

  std::mt19937_64 rng(7);
  for (int i = 0; i < 500; ++i) {
    const uint64_t offset = rng() % data.size();
    const uint64_t length = rng() % (data.size() - offset + 1);
    Bytes buf(length, std::byte{0x5a});
    ASSERT_TRUE(image.pread(buf, offset).ok());
    ASSERT_TRUE(std::equal(buf.begin(), buf.end(), data.begin() + offset))
        << "pread " << length << " at " << offset;

    // The same range as a scatter read over random pieces (some empty,
    // some chunk-sized and chunk-aligned so they decode in place).
    std::vector<Bytes> pieces;
    for (uint64_t left = length; left > 0 || pieces.empty();) {
      uint64_t n = rng() % 4 == 0 ? kChunk : rng() % (kChunk + kChunk / 2);
      n = std::min(n, left);
      pieces.emplace_back(n, std::byte{0x5a});
      left -= n;
      if (left == 0) break;
    }
    std::vector<std::span<std::byte>> spans(pieces.begin(), pieces.end());
    ASSERT_TRUE(image.preadv(spans, offset).ok());
    uint64_t pos = offset;
    for (const Bytes& p : pieces) {
      ASSERT_TRUE(std::equal(p.begin(), p.end(), data.begin() + pos))
          << "preadv " << length << " at " << offset;
      pos += p.size();
    }
  }
  // Aligned multi-chunk scatter read (the block cache's pattern).
  std::vector<Bytes> pieces = {Bytes(kChunk), Bytes(2 * kChunk),
                               Bytes(data.size() - 3 * kChunk)};
  std::vector<std::span<std::byte>> spans(pieces.begin(), pieces.end());
  ASSERT_TRUE(image.preadv(spans, 0).ok());
  Bytes joined;
  for (const Bytes& p : pieces) joined.insert(joined.end(), p.begin(), p.end());
  EXPECT_EQ(joined, data);

  Bytes one(1);
  EXPECT_FALSE(image.pread(one, data.size()).ok());
  Bytes two(2);
  EXPECT_FALSE(image.pread(two, data.size() - 1).ok());
  EXPECT_TRUE(image.pread(std::span<std::byte>(), data.size()).ok());
}

TEST_F(StoreTest, ImageExtentsShowZeroChunksAsHoles) {
  const Bytes data = DiskData(5);  // chunk 1 is zero
  BackupRecord r = Record("uuid", "c1");
  WriteDisk(&r, "vda", data);
  auto image = store_->OpenImage(r, "vda");
  ASSERT_TRUE(image.ok());
  const uint64_t size = data.size();
  auto all = (*image)->extents(0, size);
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(*all, (std::vector<Extent>{
                      {0, kChunk, false, false},
                      {kChunk, kChunk, true, true},
                      {2 * kChunk, size - 2 * kChunk, false, false}}));
  auto part = (*image)->extents(100, kChunk);
  ASSERT_TRUE(part.ok());
  EXPECT_EQ(*part, (std::vector<Extent>{{100, kChunk - 100, false, false},
                                        {kChunk, 100, true, true}}));
  EXPECT_TRUE((*image)->extents(size, 0)->empty());
  EXPECT_FALSE((*image)->extents(size - 1, 2).ok());

  // Adjacent zero chunks merge into one hole; an all-zero disk is one hole.
  BackupRecord z = Record("uuid", "zero");
  WriteDisk(&z, "vda", Bytes(3 * kChunk + 1));
  auto zero = store_->OpenImage(z, "vda");
  ASSERT_TRUE(zero.ok());
  EXPECT_EQ(*(*zero)->extents(0, 3 * kChunk + 1),
            (std::vector<Extent>{{0, 3 * kChunk + 1, true, true}}));
  EXPECT_TRUE(store_->objects().List("chunks/")->size() == 3u);
}

TEST_F(StoreTest, ImageReadOfCorruptChunkFailsInsteadOfLying) {
  const Bytes data = DiskData(6);
  BackupRecord r = Record("uuid", "c1");
  const Manifest m = WriteDisk(&r, "vda", data);
  auto image = store_->OpenImage(r, "vda");
  ASSERT_TRUE(image.ok());
  // Chunk 2 now holds chunk 0's (valid) frame.
  WriteFile(ChunkPath(m.chunks[2]), ReadFile(ChunkPath(m.chunks[0])));
  // The Store may go away; open images keep the chunk layer alive.
  store_.reset();

  Bytes buf(kChunk);
  const Status st = (*image)->pread(buf, 2 * kChunk + 10);
  EXPECT_EQ(st.code(), Code::kIoError);
  EXPECT_NE(st.message().find("hash mismatch"), std::string::npos);
  EXPECT_NE(st.message().find(HashToHex(m.chunks[2].hash)), std::string::npos);
  Bytes whole(data.size());
  EXPECT_EQ((*image)->pread(whole, 0).code(), Code::kIoError);
  std::vector<std::span<std::byte>> spans = {std::span(whole)};
  EXPECT_EQ((*image)->preadv(spans, 0).code(), Code::kIoError);
  // Other chunks still read.
  ASSERT_TRUE((*image)->pread(buf, 0).ok());
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), data.begin()));
  fs::remove(ChunkPath(m.chunks[3]));
  EXPECT_EQ((*image)->pread(std::span(buf).first(10), 3 * kChunk).code(),
            Code::kIoError);
}

TEST_F(StoreTest, ConcurrentImageReads) {
  const Bytes data = RandomBytes(11, 40 * kChunk + 99);
  BackupRecord r = Record("uuid", "c1");
  WriteDisk(&r, "vda", data);
  auto image = store_->OpenImage(r, "vda");
  ASSERT_TRUE(image.ok());
  std::vector<std::thread> threads;
  std::vector<int> bad(4);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      for (int i = 0; i < 100; ++i) {
        const uint64_t offset = rng() % data.size();
        Bytes buf(
            std::min<uint64_t>(rng() % (3 * kChunk), data.size() - offset));
        if (!(*image)->pread(buf, offset).ok() ||
            !std::equal(buf.begin(), buf.end(), data.begin() + offset)) {
          ++bad[t];
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int b : bad) EXPECT_EQ(b, 0);
}

// ================================================================= config

TEST(StoreConfigTest, ReopenKeepsTheStoresConfig) {
  TempDir dir;
  StoreConfig config;
  config.format = 1;  // a store made before format 2 stays format 1
  config.chunk_size = 128 * 1024;
  config.zstd_level = 5;
  auto store = Store::OpenLocal(dir / "s", true, config);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ((*store)->chunk_size(), 128u * 1024);
  store->reset();

  auto again = Store::OpenLocal(dir / "s", /*create=*/true);  // default config
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->config(), config);
  auto plain = Store::OpenLocal(dir / "s", /*create=*/false);
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ((*plain)->chunk_size(), 128u * 1024);
  auto parsed = nlohmann::json::parse(AsText(ReadFile(dir / "s/config.json")));
  EXPECT_EQ(parsed["format"], 1);
  EXPECT_EQ(parsed["chunk_size"], 131072);
  EXPECT_EQ(parsed["compression"], "auto");
  EXPECT_EQ(parsed["zstd_level"], 5);
}

TEST(StoreConfigTest, MissingOrInvalidConfigIsRefused) {
  TempDir dir;
  auto missing = Store::OpenLocal(dir / "none", /*create=*/false);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  fs::create_directory(dir / "empty");
  auto no_config = Store::OpenLocal(dir / "empty", /*create=*/false);
  EXPECT_EQ(no_config.status().code(), Code::kNotFound);
  EXPECT_NE(no_config.status().message().find("config.json"),
            std::string::npos);

  StoreConfig bad;
  bad.chunk_size = 3000;
  EXPECT_EQ(Store::OpenLocal(dir / "new", true, bad).status().code(),
            Code::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir / "new"));

  const std::string store_dir = dir / "s";
  ASSERT_TRUE(Store::OpenLocal(store_dir, true).ok());
  auto open_with = [&](const std::string& config) {
    WriteFile(store_dir + "/config.json", ToBytes(config));
    return Store::OpenLocal(store_dir, /*create=*/true).status();
  };
  Status st = open_with(
      R"({"format": 7, "chunk_size": 262144, "compression": "zstd", "zstd_level": 3})");
  EXPECT_EQ(st.code(), Code::kInvalidArgument);
  EXPECT_NE(st.message().find("store " + store_dir +
                              " has format 7; this ckptfs reads format 1"),
            std::string::npos)
      << st.message();
  EXPECT_EQ(open_with(R"({"format": 7})").code(), Code::kInvalidArgument);
  for (
      const char* config : {
          "not json",
          "[1]",
          R"({"chunk_size": 262144, "compression": "zstd", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": 3000, "compression": "zstd", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": 1073741824, "compression": "zstd", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": -1, "compression": "zstd", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": "big", "compression": "zstd", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": 262144, "compression": "lz4", "zstd_level": 3})",
          R"({"format": 1, "chunk_size": 262144, "zstd_level": 3})",
          R"({"format": 1, "chunk_size": 262144, "compression": "zstd", "zstd_level": 99})",
          R"({"format": 1, "chunk_size": 262144, "compression": "zstd"})",
      }) {
    st = open_with(config);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << config;
    EXPECT_NE(st.message().find(store_dir), std::string::npos) << st.message();
  }
  EXPECT_TRUE(
      open_with(
          R"({"format": 1, "chunk_size": 262144, "compression": "zstd", "zstd_level": 3, "later": true})")
          .ok());
}

// ============================================================ verification

TEST_F(StoreTest, VerifyBackupFindsFlippedAndMissingChunks) {
  BackupRecord r = Record("uuid", "c1");
  const Manifest m = WriteDisk(&r, "vda", DiskData(7));
  WriteDisk(&r, "vdb", DiskData(7));  // same chunks: verified once
  ASSERT_TRUE(store_->PutBackup(r).ok());
  auto healthy = store_->VerifyBackup(r);
  ASSERT_TRUE(healthy.ok());
  EXPECT_TRUE(healthy->empty());

  const std::string path = ChunkPath(m.chunks[0]);
  Bytes frame = ReadFile(path);
  frame[frame.size() / 2] ^= std::byte{1};
  WriteFile(path, frame);
  fs::remove(ChunkPath(m.chunks[3]));
  auto problems = store_->VerifyBackup(r);
  ASSERT_TRUE(problems.ok());
  ASSERT_EQ(problems->size(), 4u);  // 2 chunks, each in 2 disks
  EXPECT_NE((*problems)[0].find("uuid/c1 disk vda offset 0: chunk " +
                                HashToHex(m.chunks[0].hash)),
            std::string::npos)
      << (*problems)[0];
  EXPECT_NE((*problems)[1].find("offset " + std::to_string(3 * kChunk)),
            std::string::npos);
  EXPECT_NE((*problems)[1].find("missing"), std::string::npos);

  fs::remove(dir_ / Store::ManifestKey("uuid", "c1", "vdb"));
  problems = store_->VerifyBackup(r);
  ASSERT_TRUE(problems.ok());
  ASSERT_EQ(problems->size(), 3u);
  EXPECT_NE((*problems)[2].find("missing (store corrupt)"), std::string::npos)
      << (*problems)[2];
}

TEST_F(StoreTest, ReferencedChunksCoversEveryManifest) {
  BackupRecord a = Record("uuid", "c1");
  const Manifest ma = WriteDisk(&a, "vda", DiskData(8));
  ASSERT_TRUE(store_->PutBackup(a).ok());
  BackupRecord b = Record("uuid", "c2");  // incomplete: still counts
  Bytes data = DiskData(8);
  data[0] ^= std::byte{1};  // chunk 0 differs, the rest is shared
  const Manifest mb = WriteDisk(&b, "vda", data);
  std::set<ChunkHash> want;
  for (const Manifest* m : {&ma, &mb}) {
    for (const ChunkRef& ref : m->chunks) {
      if (!ref.zero) want.insert(ref.hash);
    }
  }
  EXPECT_EQ(want.size(), 4u);
  // An unreferenced chunk is not listed.
  ASSERT_TRUE(store_->PutChunk(RandomBytes(99, 10)).ok());
  auto refs = store_->ReferencedChunks();
  ASSERT_TRUE(refs.ok());
  EXPECT_EQ(*refs, std::vector<ChunkHash>(want.begin(), want.end()));

  // gc must stop rather than work from a partial answer.
  WriteFile(dir_ / Store::ManifestKey("uuid", "c2", "vda"), ToBytes("junk"));
  EXPECT_EQ(store_->ReferencedChunks().status().code(), Code::kIoError);
}

// ===================================================== fuzzing findings

// Found by fuzz.backup_record and fuzz.store_config (tests/fuzz/corpus/
// */crash-number-overflow): a number beyond a double ("1e400") made
// nlohmann::json throw out_of_range, which the parsers did not catch, so one
// damaged file ended the daemon or the command reading it.
TEST(FuzzFindingsTest, NumberOverflowIsCorruptNotACrash) {
  auto r = ParseBackupRecord(R"({"format": 1, "created": 1e400})");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), Code::kIoError);
  EXPECT_NE(r.status().message().find("not JSON"), std::string::npos)
      << r.status().message();
  auto c = ParseStoreConfig("[1e32621e300 \"ztd\"1 3]\n", "/s");
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.status().code(), Code::kInvalidArgument);
}

// Found by fuzz.backup_record (crash-time-out-of-range): times whose
// milliseconds overflow int64 were accepted, and info.json and `ckptfs ls`
// show created * 1000.
TEST(FuzzFindingsTest, RecordTimesMustFitMilliseconds) {
  BackupRecord r = SampleRecord();
  r.created = kMaxEpochSeconds;
  r.completed = -kMaxEpochSeconds;
  EXPECT_TRUE(ParseBackupRecord(SerializeBackupRecord(r)).ok());
  for (const auto& [created, completed] :
       {std::pair{kMaxEpochSeconds + 1, int64_t{0}},
        std::pair{int64_t{0}, std::numeric_limits<int64_t>::min()}}) {
    r.created = created;
    r.completed = completed;
    auto parsed = ParseBackupRecord(SerializeBackupRecord(r));
    ASSERT_FALSE(parsed.ok());
    EXPECT_EQ(parsed.status().code(), Code::kIoError);
    EXPECT_NE(parsed.status().message().find("out of range"), std::string::npos)
        << parsed.status().message();
  }
}

// Found by fuzz.store_objects (crash-float-lock-started): a lock whose
// "started" is a float beyond int64 was converted with undefined behaviour
// (on x86: INT64_MIN). Like any unreadable lock it counts as started at 0.
TEST(FuzzFindingsTest, LockWithHugeFloatCountsAsStartedAtZero) {
  StoreConfig config;
  config.chunk_size = kChunk;
  auto store = Store::Open(std::make_unique<MemoryObjectStore>(), true, config);
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  const Bytes lock = ToBytes(R"({"started": 1e300})");
  ASSERT_TRUE((*store)->objects().Put("locks/x", lock).ok());
  ASSERT_TRUE((*store)->PutLock({.name = "y", .started = 1795000000}).ok());
  auto locks = (*store)->ListLocks();
  ASSERT_TRUE(locks.ok()) << locks.status().ToString();
  ASSERT_EQ(locks->size(), 2u);
  EXPECT_EQ((*locks)[0].name, "x");
  EXPECT_EQ((*locks)[0].started, 0);
  EXPECT_EQ((*locks)[1].name, "y");
  EXPECT_EQ((*locks)[1].started, 1795000000);
}

}  // namespace
}  // namespace ckptfs
