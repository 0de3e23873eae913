// store_bench: the chunk store's own cost, without QEMU, NBD or FUSE.
//
//   build/bench/store_bench STORE [MIB] [THREADS]
//
// Fills MIB (default 256) of random data, stores it chunk by chunk into a new
// store STORE (a directory that must not exist, or rados:POOL/NAMESPACE with
// a fresh namespace; $CEPH_CONF and $CEPH_ID say how to reach the cluster)
// with THREADS (default 2) threads,
// commits, then reads every chunk back through a StoreSource (verify included),
// with the page cache warm (the figure that matters for the per-chunk CPU) and
// reports wall time, CPU time and CPU seconds per GiB for each phase. Used to
// find where backup and stored-read time goes (docs/PERFORMANCE.md).
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "backend/store/sha256.h"
#include "backend/store/store.h"

namespace {

double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto s = [](const timeval& t) { return t.tv_sec + t.tv_usec / 1e6; };
  return s(ru.ru_utime) + s(ru.ru_stime);
}

double Now() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void Report(const char* phase, double wall, double cpu, uint64_t bytes) {
  const double gib = bytes / double(1 << 30);
  std::printf("%-28s wall %6.3f s  %7.1f MiB/s  cpu %6.3f s  %5.2f cpu-s/GiB\n",
              phase, wall, bytes / double(1 << 20) / wall, cpu, cpu / gib);
}

[[noreturn]] void Die(const ckptfs::Status& s) {
  std::fprintf(stderr, "store_bench: %s\n", s.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: store_bench STORE [MIB] [THREADS]\n");
    return 2;
  }
  const std::string uri = argv[1];
  const uint64_t mib = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 256;
  const unsigned threads = argc > 3 ? std::atoi(argv[3]) : 2;
  ckptfs::StoreOpenOptions options;
  if (const char* id = std::getenv("CEPH_ID")) options.ceph.id = id;
  auto store = ckptfs::Store::Open(uri, /*create=*/true, {}, options);
  if (!store.ok()) Die(store.status());
  const uint64_t cs = (*store)->chunk_size();
  const uint64_t size = mib << 20;
  const uint64_t n = size / cs;

  std::vector<std::byte> data(size);
  std::mt19937_64 rng(42);
  for (size_t i = 0; i < size; i += 8) {
    const uint64_t v = rng();
    std::memcpy(&data[i], &v, 8);
  }

  ckptfs::Manifest m;
  m.backup_id = "bench";
  m.disk = "vda";
  m.size = size;
  m.chunk_size = static_cast<uint32_t>(cs);
  m.chunks.resize(n);
  {
    std::atomic<uint64_t> next{0};
    const auto batch = (*store)->NewBatch();
    const double w0 = Now(), c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        for (uint64_t i; (i = next.fetch_add(1)) < n;) {
          auto ref = (*store)->PutChunk(std::span(data).subspan(i * cs, cs),
                                        nullptr, batch.get());
          if (!ref.ok()) Die(ref.status());
          m.chunks[i] = *ref;
        }
      });
    }
    for (auto& t : pool) t.join();
    const double w1 = Now(), c1 = CpuSeconds();
    Report("put (hash+compress+write)", w1 - w0, c1 - c0, size);
    if (auto s = batch->Commit(); !s.ok()) Die(s);
    Report("commit (syncfs+rename)", Now() - w1, CpuSeconds() - c1, size);
  }
  {
    const double w0 = Now(), c0 = CpuSeconds();
    for (uint64_t i = 0; i < n; ++i) {
      auto ref = (*store)->PutChunk(std::span(data).subspan(i * cs, cs));
      if (!ref.ok()) Die(ref.status());
    }
    Report("put again (hash+dedup)", Now() - w0, CpuSeconds() - c0, size);
  }
  {
    std::vector<std::byte> out(cs);
    std::atomic<uint64_t> next{0};
    const double w0 = Now(), c0 = CpuSeconds();
    std::vector<std::thread> pool;
    for (unsigned t = 0; t < threads; ++t) {
      pool.emplace_back([&] {
        std::vector<std::byte> buf(cs);
        for (uint64_t i; (i = next.fetch_add(1)) < n;) {
          if (auto s = (*store)->GetChunk(m.chunks[i], buf); !s.ok()) Die(s);
        }
      });
    }
    for (auto& t : pool) t.join();
    Report("get (read+decode+verify)", Now() - w0, CpuSeconds() - c0, size);
  }
  {
    const double w0 = Now(), c0 = CpuSeconds();
    for (uint64_t i = 0; i < n; ++i) {
      (void)ckptfs::Sha256(std::span(data).subspan(i * cs, cs));
    }
    Report("SHA-256 alone (1 thread)", Now() - w0, CpuSeconds() - c0, size);
  }
  {
    // Compressible data (text-like: words from a small vocabulary).
    static const char* kWords[] = {"checkpoint ", "backup ", "qemu ",
                                   "libvirt ",    "disk ",   "\n"};
    std::string text;
    std::mt19937_64 r2(7);
    while (text.size() < size) text += kWords[r2() % 6];
    const auto* bytes = reinterpret_cast<const std::byte*>(text.data());
    uint64_t stored = 0;
    const auto batch = (*store)->NewBatch();
    const double w0 = Now(), c0 = CpuSeconds();
    for (uint64_t i = 0; i < n; ++i) {
      ckptfs::ChunkPutStats stats;
      auto ref = (*store)->PutChunk(std::span(bytes + i * cs, cs), &stats,
                                    batch.get());
      if (!ref.ok()) Die(ref.status());
      stored += stats.stored_bytes;
    }
    if (auto s = batch->Commit(); !s.ok()) Die(s);
    Report("put text (1 thread)", Now() - w0, CpuSeconds() - c0, size);
    std::printf("%-28s %.1f%% of the plain bytes\n", "text stored as",
                100.0 * stored / size);
  }
  return 0;
}
