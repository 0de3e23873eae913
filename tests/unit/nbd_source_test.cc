// Tests of NbdSource against real NBD servers: nbdkit (pattern, data, and
// the error, delay, multi-conn and blocksize-policy filters) and qemu-nbd
// (export names and dirty bitmaps). Servers run as child processes on UNIX
// sockets in a per-test temporary directory; tests skip if the binaries are
// missing.
#include "backend/nbd_source.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace ckptfs {
namespace {

namespace fs = std::filesystem;
using Pairs = std::vector<std::pair<uint64_t, uint64_t>>;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;

// Full path of `name` on PATH, or empty.
std::string FindBinary(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::string dirs = path != nullptr ? path : "/usr/bin:/bin";
  size_t start = 0;
  while (start <= dirs.size()) {
    size_t colon = dirs.find(':', start);
    if (colon == std::string::npos) colon = dirs.size();
    fs::path candidate = fs::path(dirs.substr(start, colon - start)) / name;
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
    start = colon + 1;
  }
  return "";
}

// Runs a command to completion; returns its exit status.
int RunCommand(const std::vector<std::string>& argv) {
  std::string cmd;
  for (const auto& a : argv) cmd += "'" + a + "' ";
  cmd += ">/dev/null 2>&1";
  return std::system(cmd.c_str());
}

// A server child process. Dies with the test (PR_SET_PDEATHSIG) even if the
// test crashes, and is killed by the destructor.
class Server {
 public:
  // Starts argv and waits until `socket` exists. Returns an error string, or
  // empty on success.
  std::string Start(const std::vector<std::string>& argv,
                    const std::string& socket) {
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      execv(args[0], args.data());
      _exit(127);
    }
    if (pid_ < 0) return "fork failed";
    // The socket file appears before the server listens on it: wait until
    // a connection is accepted.
    for (int i = 0; i < 1000; ++i) {
      if (fs::exists(socket) && Accepts(socket)) return "";
      int status;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return argv[0] + " exited before creating its socket";
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return argv[0] + " did not create " + socket;
  }

  static bool Accepts(const std::string& socket) {
    int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, socket.c_str(), sizeof(addr.sun_path) - 1);
    const bool ok =
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
    close(fd);
    return ok;
  }

  void Kill() {
    if (pid_ <= 0) return;
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }

  ~Server() { Kill(); }

 private:
  pid_t pid_ = -1;
};

// The byte the nbdkit pattern plugin serves at `offset`: each 8-byte word
// holds its own offset, big-endian.
std::byte PatternByte(uint64_t offset) {
  const uint64_t word = offset & ~uint64_t{7};
  const unsigned shift = 8 * (7 - (offset & 7));
  return static_cast<std::byte>((word >> shift) & 0xff);
}

// Index of the first wrong byte, or -1. Whole words are compared at once so
// that checking hundreds of MiB stays cheap.
int64_t FirstPatternMismatch(std::span<const std::byte> buf, uint64_t offset) {
  size_t i = 0;
  while (i < buf.size()) {
    const uint64_t at = offset + i;
    if ((at & 7) == 0 && buf.size() - i >= 8) {
      uint64_t word;
      std::memcpy(&word, buf.data() + i, 8);
      if constexpr (std::endian::native == std::endian::little) {
        word = __builtin_bswap64(word);
      }
      if (word == at) {
        i += 8;
        continue;
      }
    }
    if (buf[i] != PatternByte(at)) return static_cast<int64_t>(i);
    ++i;
  }
  return -1;
}

class NbdSourceTest : public testing::Test {
 protected:
  void SetUp() override {
    nbdkit_ = FindBinary("nbdkit");
    std::string tmpl = fs::path(testing::TempDir()) / "nbd_source_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << std::strerror(errno);
    dir_ = tmpl;
    sock_ = (dir_ / "nbd.sock").string();
  }

  void TearDown() override {
    server_.Kill();
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Starts nbdkit with `args` (filters, plugin, parameters) on sock_.
  // Callers GTEST_SKIP if nbdkit_ is empty.
  void StartNbdkit(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {nbdkit_, "--exit-with-parent", "-f", "-U",
                                     sock_};
    argv.insert(argv.end(), args.begin(), args.end());
    const std::string err = server_.Start(argv, sock_);
    ASSERT_TRUE(err.empty()) << err;
  }

  std::shared_ptr<NbdSource> OpenOk(NbdOptions options) {
    if (options.socket.empty() && options.uri.empty()) options.socket = sock_;
    auto src = NbdSource::Open(options);
    EXPECT_TRUE(src.ok()) << src.status().ToString();
    return src.ok() ? *src : nullptr;
  }

  std::string nbdkit_;
  fs::path dir_;
  std::string sock_;
  Server server_;
};

#define REQUIRE_NBDKIT()                                       \
  do {                                                         \
    if (nbdkit_.empty()) GTEST_SKIP() << "nbdkit not on PATH"; \
  } while (0)

TEST_F(NbdSourceTest, PatternRandomReadsIncludingSplitOnes) {
  REQUIRE_NBDKIT();
  StartNbdkit({"pattern", "1G"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->size(), kGiB);
  EXPECT_EQ(src->max_request(), 32 * kMiB);
  EXPECT_GE(src->preferred_block_size(), 1 * kMiB);

  std::mt19937_64 rng(42);
  std::vector<std::byte> buf;
  // Small, unaligned, and larger than max_request() (split into pieces).
  std::vector<uint64_t> lengths = {1,
                                   7,
                                   4096,
                                   65537,
                                   1 * kMiB + 3,
                                   32 * kMiB,
                                   32 * kMiB + 1,
                                   100 * kMiB + 5};
  for (int i = 0; i < 40; ++i) lengths.push_back(1 + rng() % (4 * kMiB));
  for (uint64_t len : lengths) {
    const uint64_t offset = rng() % (kGiB - len + 1);
    buf.assign(len, std::byte{0xee});
    ASSERT_TRUE(src->pread(buf, offset).ok()) << len << "@" << offset;
    EXPECT_EQ(FirstPatternMismatch(buf, offset), -1)
        << "read of " << len << " bytes at " << offset;
  }
  // The very end, and bounds.
  buf.assign(3, std::byte{0});
  ASSERT_TRUE(src->pread(buf, kGiB - 3).ok());
  EXPECT_EQ(FirstPatternMismatch(buf, kGiB - 3), -1);
  EXPECT_EQ(src->pread(buf, kGiB - 2).code(), Code::kInvalidArgument);
  EXPECT_TRUE(src->pread({}, 0).ok());
}

TEST_F(NbdSourceTest, ScatterReadFillsEachBuffer) {
  REQUIRE_NBDKIT();
  // Unaligned buffer boundaries against a server that rejects unaligned
  // requests: every buffer gets its own bytes, bounce pieces included.
  StartNbdkit({"--filter=blocksize-policy", "pattern", "64M",
               "blocksize-minimum=512", "blocksize-maximum=1M",
               "blocksize-error-policy=error"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  std::vector<std::vector<std::byte>> storage = {
      std::vector<std::byte>(1 * kMiB, std::byte{0xee}),
      std::vector<std::byte>(100, std::byte{0xee}),
      std::vector<std::byte>(3 * kMiB + 513, std::byte{0xee}),
      std::vector<std::byte>(1, std::byte{0xee})};
  std::vector<std::span<std::byte>> bufs;
  for (auto& v : storage) bufs.emplace_back(v);
  const uint64_t offset = 4 * kMiB + 7;
  ASSERT_TRUE(src->preadv(bufs, offset).ok());
  uint64_t pos = offset;
  for (const auto& b : bufs) {
    EXPECT_EQ(FirstPatternMismatch(b, pos), -1) << b.size() << "@" << pos;
    pos += b.size();
  }
  EXPECT_EQ(src->preadv(bufs, 64 * kMiB - 10).code(), Code::kInvalidArgument);
}

TEST_F(NbdSourceTest, MultiConnOpensSeveralConnections) {
  REQUIRE_NBDKIT();
  StartNbdkit({"pattern", "64M"});
  auto src = OpenOk({.connections = 3});
  ASSERT_NE(src, nullptr);
  EXPECT_TRUE(src->can_multi_conn());
  EXPECT_EQ(src->connections(), 3u);
}

TEST_F(NbdSourceTest, WithoutMultiConnUsesOneConnection) {
  REQUIRE_NBDKIT();
  StartNbdkit(
      {"--filter=multi-conn", "pattern", "64M", "multi-conn-mode=disable"});
  auto src = OpenOk({.connections = 4});
  ASSERT_NE(src, nullptr);
  EXPECT_FALSE(src->can_multi_conn());
  EXPECT_EQ(src->connections(), 1u);
  std::vector<std::byte> buf(40 * kMiB);  // Two pieces on one connection.
  ASSERT_TRUE(src->pread(buf, 12345).ok());
  EXPECT_EQ(FirstPatternMismatch(buf, 12345), -1);
}

// 16 threads read random ranges; with and without multi-conn.
void ConcurrentPatternReads(NbdSource& src) {
  std::atomic<int> bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 16; ++t) {
    threads.emplace_back([&src, &bad, t] {
      std::mt19937_64 rng(1000 + t);
      std::vector<std::byte> buf;
      for (int i = 0; i < 24; ++i) {
        const uint64_t len = 1 + rng() % (i % 8 == 0 ? 40 * kMiB : kMiB);
        const uint64_t offset = rng() % (src.size() - len + 1);
        buf.assign(len, std::byte{0});
        if (!src.pread(buf, offset).ok() ||
            FirstPatternMismatch(buf, offset) != -1) {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_F(NbdSourceTest, SixteenThreadsMultiConn) {
  REQUIRE_NBDKIT();
  StartNbdkit({"pattern", "1G"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  EXPECT_GT(src->connections(), 1u);
  ConcurrentPatternReads(*src);
}

TEST_F(NbdSourceTest, SixteenThreadsOneConnection) {
  REQUIRE_NBDKIT();
  StartNbdkit(
      {"--filter=multi-conn", "pattern", "1G", "multi-conn-mode=disable"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->connections(), 1u);
  ConcurrentPatternReads(*src);
}

TEST_F(NbdSourceTest, ExtentsAndAllocatedBytesWithHoles) {
  REQUIRE_NBDKIT();
  // Data at 1 MiB (3 bytes, in one 32 KiB page of the sparse array) and
  // 128 KiB at 4 MiB; the rest is unallocated.
  StartNbdkit({"data", "@1048576 1 2 3 @4194304 ( 0x55 )*131072", "size=8M"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  ASSERT_EQ(src->size(), 8 * kMiB);

  auto ext = src->extents(0, 8 * kMiB);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  const std::vector<Extent> want = {
      {0, 1 * kMiB, true, true},
      {1 * kMiB, 32 * kKiB, false, false},
      {1 * kMiB + 32 * kKiB, 3 * kMiB - 32 * kKiB, true, true},
      {4 * kMiB, 128 * kKiB, false, false},
      {4 * kMiB + 128 * kKiB, 4 * kMiB - 128 * kKiB, true, true},
  };
  EXPECT_EQ(*ext, want);

  // A sub-range is clipped to exactly what was asked.
  ext = src->extents(1000, 1 * kMiB + 5000 - 1000);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  const std::vector<Extent> want_sub = {
      {1000, 1 * kMiB - 1000, true, true},
      {1 * kMiB, 5000, false, false},
  };
  EXPECT_EQ(*ext, want_sub);
  ext = src->extents(0, 0);
  ASSERT_TRUE(ext.ok());
  EXPECT_TRUE(ext->empty());
  EXPECT_EQ(src->extents(8 * kMiB - 1, 2).status().code(),
            Code::kInvalidArgument);

  auto allocated = src->allocated_bytes();
  ASSERT_TRUE(allocated.ok()) << allocated.status().ToString();
  EXPECT_EQ(*allocated, 32 * kKiB + 128 * kKiB);

  std::vector<std::byte> buf(8);
  ASSERT_TRUE(src->pread(buf, 1 * kMiB - 2).ok());
  const std::vector<std::byte> bytes = {
      std::byte{0}, std::byte{0}, std::byte{1}, std::byte{2},
      std::byte{3}, std::byte{0}, std::byte{0}, std::byte{0}};
  EXPECT_EQ(buf, bytes);

  // No bitmap was asked for.
  EXPECT_EQ(src->dirty_extents().status().code(), Code::kUnsupported);
}

TEST_F(NbdSourceTest, WithoutBaseAllocationEverythingIsData) {
  REQUIRE_NBDKIT();
  // --no-sr: no structured replies, hence no meta contexts at all.
  StartNbdkit({"--no-sr", "data", "@1048576 1 2 3", "size=8M"});
  auto src = OpenOk({.dirty_bitmap = "qemu:dirty-bitmap:b0"});
  ASSERT_NE(src, nullptr);
  auto ext = src->extents(10, 100);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  EXPECT_EQ(*ext, (std::vector<Extent>{{10, 100, false, false}}));
  auto allocated = src->allocated_bytes();
  ASSERT_TRUE(allocated.ok());
  EXPECT_EQ(*allocated, 8 * kMiB);
  EXPECT_FALSE(src->has_dirty_bitmap());
  EXPECT_EQ(src->dirty_extents().status().code(), Code::kUnsupported);
}

TEST_F(NbdSourceTest, MinimumBlockSizeAndMaximumRequest) {
  REQUIRE_NBDKIT();
  // The server rejects unaligned requests and reads over 1 MiB.
  StartNbdkit({"--filter=blocksize-policy", "pattern", "64M",
               "blocksize-minimum=512", "blocksize-maximum=1M",
               "blocksize-error-policy=error"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->max_request(), 1 * kMiB);
  std::mt19937_64 rng(7);
  std::vector<std::byte> buf;
  for (uint64_t len : {uint64_t{1}, uint64_t{100}, uint64_t{511}, uint64_t{513},
                       uint64_t{5 * kMiB + 77}}) {
    for (uint64_t offset :
         {uint64_t{0}, uint64_t{1}, uint64_t{511}, uint64_t{512},
          uint64_t{4097 * 3}, 64 * kMiB - len}) {
      buf.assign(len, std::byte{0xee});
      ASSERT_TRUE(src->pread(buf, offset).ok()) << len << "@" << offset;
      EXPECT_EQ(FirstPatternMismatch(buf, offset), -1) << len << "@" << offset;
    }
  }
  auto ext = src->extents(3, 1000);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  EXPECT_EQ(*ext, (std::vector<Extent>{{3, 1000, false, false}}));
}

TEST_F(NbdSourceTest, ServerErrorsBecomeStatusAndConnectionSurvives) {
  REQUIRE_NBDKIT();
  const std::string trigger = (dir_ / "fail-reads").string();
  StartNbdkit({"--filter=error", "pattern", "64M", "error-pread=EIO",
               "error-pread-rate=100%", "error-pread-file=" + trigger});
  auto src = OpenOk({.export_name = "", .connections = 1});
  ASSERT_NE(src, nullptr);
  std::vector<std::byte> buf(4096);
  ASSERT_TRUE(src->pread(buf, 8192).ok());

  std::ofstream(trigger).put('x');
  Status st = src->pread(buf, 8192);
  EXPECT_EQ(st.code(), Code::kIoError) << st.ToString();
  EXPECT_NE(st.message().find("offset 8192"), std::string::npos)
      << st.message();
  std::vector<std::byte> big(40 * kMiB);  // Two pieces, both failing.
  EXPECT_EQ(src->pread(big, 0).code(), Code::kIoError);

  fs::remove(trigger);
  ASSERT_TRUE(src->pread(buf, 8192).ok());
  EXPECT_EQ(FirstPatternMismatch(buf, 8192), -1);
}

TEST_F(NbdSourceTest, HungServerTimesOut) {
  REQUIRE_NBDKIT();
  StartNbdkit({"--filter=delay", "pattern", "64M", "rdelay=5"});
  auto src = OpenOk({.connections = 2, .timeout_ms = 300});
  ASSERT_NE(src, nullptr);
  std::vector<std::byte> buf(4096);
  Status st = src->pread(buf, 0);
  EXPECT_EQ(st.code(), Code::kTimedOut) << st.ToString();
  // The dropped connection stays dropped; the other one times out too, and
  // then reads fail at once.
  for (int i = 0; i < 3; ++i) {
    st = src->pread(buf, 0);
    EXPECT_EQ(st.code(), Code::kTimedOut) << st.ToString();
  }
  // Block status still answers fast on the server, but there is no live
  // connection left.
  EXPECT_FALSE(src->extents(0, 4096).ok());
}

TEST_F(NbdSourceTest, HungHandshakeTimesOut) {
  // A socket that accepts connections into its backlog but never speaks.
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof addr.sun_path, "%s", sock_.c_str());
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ASSERT_EQ(listen(fd, 8), 0);
  auto src = NbdSource::Open({.socket = sock_, .timeout_ms = 200});
  EXPECT_EQ(src.status().code(), Code::kTimedOut) << src.status().ToString();
  close(fd);
}

TEST_F(NbdSourceTest, KilledServerFailsReadsInsteadOfHanging) {
  REQUIRE_NBDKIT();
  StartNbdkit({"pattern", "1G"});
  auto src = OpenOk({});
  ASSERT_NE(src, nullptr);
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 rng(t);
      std::vector<std::byte> buf(8 * kMiB);
      // Until the first error; a correct read must still be correct.
      for (;;) {
        const uint64_t offset = rng() % (kGiB - buf.size());
        if (!src->pread(buf, offset).ok()) break;
        EXPECT_EQ(FirstPatternMismatch(buf, offset), -1);
      }
      ++failed;
    });
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  server_.Kill();
  for (auto& t : threads) t.join();
  EXPECT_EQ(failed.load(), 4);
  std::vector<std::byte> buf(4096);
  Status st = src->pread(buf, 0);
  EXPECT_EQ(st.code(), Code::kIoError) << st.ToString();
  EXPECT_FALSE(src->extents(0, kMiB).ok());
}

TEST_F(NbdSourceTest, ConnectErrors) {
  auto src = NbdSource::Open({.socket = sock_});  // Nothing listens.
  EXPECT_EQ(src.status().code(), Code::kNotFound) << src.status().ToString();
  EXPECT_EQ(NbdSource::Open({}).status().code(), Code::kInvalidArgument);
  EXPECT_EQ(NbdSource::Open(
                {.uri = "nbd+unix:///vda?socket=/x", .export_name = "vda"})
                .status()
                .code(),
            Code::kInvalidArgument);
}

TEST_F(NbdSourceTest, UriWorks) {
  REQUIRE_NBDKIT();
  StartNbdkit({"pattern", "64M"});
  auto src = OpenOk({.uri = "nbd+unix:///?socket=" + sock_});
  ASSERT_NE(src, nullptr);
  std::vector<std::byte> buf(1000);
  ASSERT_TRUE(src->pread(buf, 77).ok());
  EXPECT_EQ(FirstPatternMismatch(buf, 77), -1);
}

TEST_F(NbdSourceTest, QemuDirtyBitmapAndExportName) {
  const std::string qemu_img = FindBinary("qemu-img");
  const std::string qemu_io = FindBinary("qemu-io");
  const std::string qemu_nbd = FindBinary("qemu-nbd");
  if (qemu_img.empty() || qemu_io.empty() || qemu_nbd.empty()) {
    GTEST_SKIP() << "qemu-img, qemu-io or qemu-nbd not on PATH";
  }
  const std::string disk = (dir_ / "d.qcow2").string();
  ASSERT_EQ(RunCommand({qemu_img, "create", "-f", "qcow2", disk, "64M"}), 0);
  ASSERT_EQ(RunCommand({qemu_img, "bitmap", "--add", disk, "b0"}), 0);
  ASSERT_EQ(RunCommand({qemu_io, "-f", "qcow2", "-c", "write -P 0x41 1M 64k",
                        "-c", "write -P 0x42 10M 128k", disk}),
            0);
  // -t: stay up across our connections; -e 4: four clients, which also makes
  // qemu-nbd advertise multi-conn.
  ASSERT_EQ(server_.Start({qemu_nbd, "-r", "-t", "-e", "4", "-k", sock_, "-x",
                           "vda", "-B", "b0", "-f", "qcow2", disk},
                          sock_),
            "");

  auto src = OpenOk({.export_name = "vda",
                     .dirty_bitmap = "qemu:dirty-bitmap:b0",
                     .connections = 2});
  ASSERT_NE(src, nullptr);
  EXPECT_EQ(src->export_name(), "vda");
  EXPECT_EQ(src->size(), 64 * kMiB);
  EXPECT_EQ(src->connections(), 2u);
  EXPECT_TRUE(src->has_dirty_bitmap());

  auto dirty = src->dirty_extents();
  ASSERT_TRUE(dirty.ok()) << dirty.status().ToString();
  EXPECT_EQ(*dirty, (Pairs{{1 * kMiB, 64 * kKiB}, {10 * kMiB, 128 * kKiB}}));

  auto ext = src->extents(0, 64 * kMiB);
  ASSERT_TRUE(ext.ok()) << ext.status().ToString();
  const std::vector<Extent> want = {
      {0, 1 * kMiB, true, true},
      {1 * kMiB, 64 * kKiB, false, false},
      {1 * kMiB + 64 * kKiB, 9 * kMiB - 64 * kKiB, true, true},
      {10 * kMiB, 128 * kKiB, false, false},
      {10 * kMiB + 128 * kKiB, 54 * kMiB - 128 * kKiB, true, true},
  };
  EXPECT_EQ(*ext, want);
  auto allocated = src->allocated_bytes();
  ASSERT_TRUE(allocated.ok());
  EXPECT_EQ(*allocated, 192 * kKiB);

  std::vector<std::byte> buf(64 * kKiB + 2);
  ASSERT_TRUE(src->pread(buf, 1 * kMiB - 1).ok());
  EXPECT_EQ(buf.front(), std::byte{0});
  EXPECT_EQ(buf[1], std::byte{0x41});
  EXPECT_EQ(buf[64 * kKiB], std::byte{0x41});
  EXPECT_EQ(buf.back(), std::byte{0});

  // Wrong export name, wrong bitmap name.
  auto wrong = NbdSource::Open({.socket = sock_, .export_name = "vdb"});
  EXPECT_FALSE(wrong.ok());
  auto no_bitmap = OpenOk({.export_name = "vda",
                           .dirty_bitmap = "qemu:dirty-bitmap:nope",
                           .connections = 1});
  ASSERT_NE(no_bitmap, nullptr);
  EXPECT_FALSE(no_bitmap->has_dirty_bitmap());
  EXPECT_EQ(no_bitmap->dirty_extents().status().code(), Code::kUnsupported);
}

// Not an assertion: prints the throughput of a 1 GiB sequential read in
// 1 MiB requests from 4 threads, with multi-conn and with one connection.
TEST_F(NbdSourceTest, ThroughputReport) {
  REQUIRE_NBDKIT();
  for (bool multi_conn : {true, false}) {
    std::vector<std::string> args = {"pattern", "1G"};
    if (!multi_conn) {
      args = {"--filter=multi-conn", "pattern", "1G",
              "multi-conn-mode=disable"};
    }
    server_.Kill();
    fs::remove(sock_);
    StartNbdkit(args);
    auto src = OpenOk({});
    ASSERT_NE(src, nullptr);
    std::atomic<uint64_t> next{0};
    std::atomic<int> errors{0};
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
      threads.emplace_back([&] {
        std::vector<std::byte> buf(kMiB);
        for (uint64_t off; (off = next.fetch_add(kMiB)) < kGiB;) {
          if (!src->pread(buf, off).ok()) ++errors;
        }
      });
    }
    for (auto& t : threads) t.join();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start)
            .count();
    EXPECT_EQ(errors.load(), 0);
    std::printf(
        "[ report ] 1 GiB sequential, 1 MiB reads, 4 threads, %u "
        "connection(s): %.0f MiB/s\n",
        src->connections(), 1024 / secs);
  }
}

}  // namespace
}  // namespace ckptfs
