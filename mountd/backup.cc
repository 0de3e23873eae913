#include "mountd/backup.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <mutex>
#include <thread>
#include <vector>

namespace ckptfs {
namespace {

bool Overlaps(const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
              uint64_t begin, uint64_t end) {
  // First range ending after begin.
  auto it = std::upper_bound(
      ranges.begin(), ranges.end(), begin,
      [](uint64_t b, const auto& r) { return b < r.first + r.second; });
  return it != ranges.end() && it->first < end;
}

// True when [begin, end) holds only holes or zeros (nothing to read).
bool AllZero(const std::vector<Extent>& extents, uint64_t begin, uint64_t end) {
  auto it = std::upper_bound(
      extents.begin(), extents.end(), begin,
      [](uint64_t b, const Extent& e) { return b < e.offset + e.length; });
  for (; it != extents.end() && it->offset < end; ++it) {
    if (!it->hole && !it->zero) return false;
  }
  return true;
}

struct Task {
  size_t disk;
  uint64_t chunk;
};

}  // namespace

Result<BackupRecord> BackupRunner::Run(const BackupPlan& plan,
                                       const std::atomic<bool>& cancel) {
  const CheckpointView& view = *plan.view;
  const uint64_t cs = store_.chunk_size();
  BackupRecord record;
  record.id = BackupId(view.domain_uuid, view.name);
  record.domain = view.domain;
  record.domain_uuid = view.domain_uuid;
  record.checkpoint = view.name;
  record.base = plan.base ? plan.base->checkpoint : "";
  record.mode = plan.base ? "incremental" : "full";
  record.created = view.created;
  record.checkpoint_xml = view.xml;

  // Plan every disk: which chunks to read, which come from the base.
  std::vector<Manifest> manifests(view.disks.size());
  std::vector<Task> tasks;
  uint64_t total = 0;
  for (size_t d = 0; d < view.disks.size(); ++d) {
    const CheckpointDisk& disk = *view.disks[d];
    Manifest& m = manifests[d];
    m.backup_id = record.id;
    m.disk = disk.target;
    m.size = disk.size;
    m.chunk_size = static_cast<uint32_t>(cs);
    const uint64_t n = (disk.size + cs - 1) / cs;
    m.chunks.assign(n, ChunkRef{});
    std::optional<Manifest> base_manifest;
    if (plan.base) {
      for (const auto& bd : plan.base->disks) {
        if (bd.name != disk.target) continue;
        auto bm = store_.GetManifest(*plan.base, disk.target);
        if (!bm.ok()) return bm.status().Annotate("base " + plan.base->id);
        if (bm->size == disk.size && bm->chunk_size == cs) {
          base_manifest = std::move(bm).value();
        }
      }
      if (!base_manifest) {
        return InvalidArgument("disk " + disk.target +
                               " has no usable manifest "
                               "in base backup " +
                               plan.base->id +
                               "; take a full backup (mode=full)");
      }
    }
    BackupDisk bd;
    bd.name = disk.target;
    bd.size = disk.size;
    bd.source = disk.source;
    bd.changes = disk.changed;
    record.disks.push_back(std::move(bd));
    for (uint64_t i = 0; i < n; ++i) {
      const uint64_t begin = i * cs;
      const uint64_t end = std::min(disk.size, begin + cs);
      if (base_manifest && !Overlaps(disk.changed, begin, end)) {
        const ChunkRef& ref = base_manifest->chunks[i];
        // Touch what we reuse: gc keeps chunks touched since the oldest
        // running backup began. One that is gone (gc ran after a prune of
        // the base) is simply read again from the export.
        if (ref.zero) {
          m.chunks[i] = ref;
          continue;
        }
        ASSIGN_OR_RETURN(bool present,
                         store_.objects().Touch(Store::ChunkKey(ref.hash)));
        if (present) {
          m.chunks[i] = ref;
          continue;
        }
      }
      if (AllZero(disk.extents, begin, end)) {
        m.chunks[i].zero = true;
        continue;
      }
      tasks.push_back({d, i});
      total += end - begin;
    }
  }
  jobs_.Update(plan.job_id, [&](Job& j) {
    j.done = 0;
    j.total = total;
  });

  // Copy: every thread takes the next chunk, reads it from the export,
  // hashes, compresses and stores it.
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  std::mutex mu;
  Status first_error;  // guarded by mu
  std::vector<uint64_t> bytes_read(view.disks.size(), 0);
  auto worker = [&] {
    std::vector<std::byte> buf(cs);
    for (;;) {
      const size_t t = next.fetch_add(1);
      if (t >= tasks.size()) return;
      {
        std::lock_guard lock(mu);
        if (!first_error.ok()) return;
      }
      if (cancel.load()) {
        std::lock_guard lock(mu);
        if (first_error.ok()) {
          first_error = Status(Code::kCancelled, "backup cancelled");
        }
        return;
      }
      const Task& task = tasks[t];
      const CheckpointDisk& disk = *view.disks[task.disk];
      const uint64_t begin = task.chunk * cs;
      const uint64_t len = std::min(disk.size, begin + cs) - begin;
      std::span<std::byte> data(buf.data(), len);
      Status st = disk.raw->pread(data, begin);
      Result<ChunkRef> ref =
          st.ok() ? store_.PutChunk(data, nullptr, /*deferred=*/true)
                  : Result<ChunkRef>(st);
      if (!ref.ok()) {
        std::lock_guard lock(mu);
        if (first_error.ok()) {
          first_error = ref.status().Annotate(disk.target + " at " +
                                              std::to_string(begin));
        }
        return;
      }
      manifests[task.disk].chunks[task.chunk] = *ref;
      const uint64_t now = done.fetch_add(len) + len;
      {
        std::lock_guard lock(mu);
        bytes_read[task.disk] += len;
      }
      // Progress in the job record, every 64 chunks or so.
      if (t % 64 == 0 || now == total) {
        jobs_.Update(plan.job_id,
                     [&](Job& j) { j.done = std::max(j.done, now); });
      }
    }
  };
  std::vector<std::thread> pool;
  const unsigned n = std::max(1u, threads_);
  for (unsigned i = 0; i < n; ++i) pool.emplace_back(worker);
  for (auto& th : pool) th.join();
  RETURN_IF_ERROR(first_error);
  jobs_.Update(plan.job_id, [&](Job& j) { j.done = total; });

  // Durable in order: chunks (one commit for all), manifests, then the
  // record, then the catalog row.
  RETURN_IF_ERROR(store_.CommitChunks());
  for (size_t d = 0; d < manifests.size(); ++d) {
    uint64_t allocated = 0;
    for (uint64_t i = 0; i < manifests[d].chunks.size(); ++i) {
      if (!manifests[d].chunks[i].zero) {
        allocated += std::min<uint64_t>(cs, manifests[d].size - i * cs);
      }
    }
    record.disks[d].allocated = allocated;
    record.disks[d].bytes_read = bytes_read[d];
    RETURN_IF_ERROR(store_.PutManifest(record, manifests[d]));
  }
  record.completed = NowMs() / 1000;
  RETURN_IF_ERROR(store_.PutBackup(record));
  RETURN_IF_ERROR(catalog_.AddBackup(record));
  spdlog::info("{}: backup {} complete ({}, {} bytes read)", record.domain,
               record.checkpoint, record.mode, total);
  return record;
}

}  // namespace ckptfs
