#include "mountd/backup.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "backend/clock.h"

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

// Consecutive chunks of one disk read with one request: QEMU's NBD server
// and the socket do far better with 1 MiB requests than with 256 KiB ones.
constexpr uint64_t kReadBytes = 1 << 20;

// A full store is the one failure the user fixes: say how.
Status ExplainNoSpace(const Status& st) {
  if (st.code() != Code::kNoSpace) return st;
  return st.Annotate(
      "the store's filesystem is full: free space (ckptfs prune, then "
      "ckptfs gc) and retry");
}

struct Task {
  size_t disk;
  uint64_t chunk;  // first chunk
  uint64_t count;  // consecutive chunks to read
  // Set for a partly dirty chunk of an incremental (count 1): only these
  // ranges (disk offsets) come from the export, the rest from `base`.
  std::vector<std::pair<uint64_t, uint64_t>> dirty;
  ChunkRef base;
};

// The parts of ranges (sorted, disjoint) inside [begin, end).
std::vector<std::pair<uint64_t, uint64_t>> Clip(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges, uint64_t begin,
    uint64_t end) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto it = std::upper_bound(
      ranges.begin(), ranges.end(), begin,
      [](uint64_t b, const auto& r) { return b < r.first + r.second; });
  for (; it != ranges.end() && it->first < end; ++it) {
    const uint64_t b = std::max(begin, it->first);
    const uint64_t e = std::min(end, it->first + it->second);
    out.emplace_back(b, e - b);
  }
  return out;
}

// Reads the task's bytes into data (its chunks at disk offset begin); counts
// what came from the export in *from_export.
Status ReadTask(Store& store, const Task& task, const CheckpointDisk& disk,
                std::span<std::byte> data, uint64_t begin,
                uint64_t* from_export) {
  if (!task.dirty.empty()) {
    Status base = Status::Ok();
    if (task.base.zero) {
      std::memset(data.data(), 0, data.size());
    } else {
      // A damaged base chunk is moved aside, so that the whole chunk read
      // below is stored afresh instead of deduplicated onto the bad copy.
      base = store.CheckChunk(task.base, data);
    }
    if (base.ok()) {
      *from_export = 0;
      for (const auto& [off, len] : task.dirty) {
        RETURN_IF_ERROR(disk.raw->pread(data.subspan(off - begin, len), off));
        *from_export += len;
      }
      return Status::Ok();
    }
    // The base's chunk is damaged or gone (gc after a prune): the export
    // has the whole chunk as of this checkpoint.
    spdlog::warn(
        "{} at {}: base chunk unreadable ({}); reading the whole "
        "chunk from the export",
        disk.target, begin, base.ToString());
  }
  *from_export = data.size();
  return disk.raw->pread(data, begin);
}

}  // namespace

struct BackupRunner::Work {
  Work(const CheckpointView& v, uint64_t chunk_size)
      : view(v),
        cs(chunk_size),
        indexes(v.disks.size()),
        bytes_read(v.disks.size(), 0),
        allocated(v.disks.size(), 0) {}

  const CheckpointView& view;
  const uint64_t cs;
  BackupRecord record;
  // The new index of each disk.
  std::vector<std::unique_ptr<ChunkIndexBuilder>> indexes;
  std::vector<Task> tasks;
  uint64_t total = 0;  // bytes the tasks read from the export
  // This job's chunk writes, made durable and visible together; nothing of
  // another job's commits with them, nor fails with them.
  std::unique_ptr<ObjectStore::Batch> batch;
  // The copy's progress, shared by its threads.
  std::atomic<size_t> next{0};
  std::atomic<uint64_t> done{0};
  std::mutex mu;
  Status first_error;                // guarded by mu
  std::vector<uint64_t> bytes_read;  // per disk; guarded by mu
  std::vector<uint64_t> allocated;   // per disk, bytes of data; guarded by mu
};

Result<BackupRecord> BackupRunner::Run(const BackupPlan& plan,
                                       const std::atomic<bool>& cancel) {
  const CheckpointView& view = *plan.view;
  Work w(view, store_.chunk_size());
  BackupRecord& record = w.record;
  record.id = BackupId(view.domain_uuid, view.name);
  record.domain = view.domain;
  record.domain_uuid = view.domain_uuid;
  record.checkpoint = view.name;
  record.base = plan.base ? plan.base->checkpoint : "";
  record.mode = plan.base ? "incremental" : "full";
  record.created = view.created;
  record.checkpoint_xml = view.xml;
  // A backup never changes once written: a name taken in the store (also
  // by an attempt that did not complete) fails before anything is written.
  RETURN_IF_ERROR(store_.CheckNameFree(record.domain_uuid, record.checkpoint));

  for (size_t d = 0; d < view.disks.size(); ++d) {
    RETURN_IF_ERROR(PlanDisk(plan, d, w));
  }
  jobs_.Update(plan.job_id, [&](Job& j) {
    j.done = 0;
    j.total = w.total;
  });
  RETURN_IF_ERROR(Copy(plan, w, cancel));
  jobs_.Update(plan.job_id, [&](Job& j) { j.done = w.total; });
  return Commit(plan, w);
}

Status BackupRunner::PlanDisk(const BackupPlan& plan, size_t d, Work& w) {
  const CheckpointDisk& disk = *w.view.disks[d];
  const uint64_t cs = w.cs;
  const uint64_t n = (disk.size + cs - 1) / cs;
  // A disk exported full in an incremental checkpoint (its bitmap of the
  // base was unusable) is copied in full: nothing comes from the base.
  std::shared_ptr<const ChunkIndex> base;
  if (plan.base && !disk.full) {
    base = BaseIndex(plan, disk);
    if (!base) {
      jobs_.Update(plan.job_id,
                   [&](Job& j) { j.full_disks.push_back(disk.target); });
    }
  }
  BackupDisk bd;
  bd.name = disk.target;
  bd.size = disk.size;
  bd.source = disk.source;
  // Without a base the record lists the allocation, also when the
  // checkpoint was exported relative to a checkpoint that has no backup
  // (the parent rule): .changes is always relative to the record's base.
  bd.changes = plan.base || disk.full ? disk.changed : DataRanges(disk.extents);
  w.record.disks.push_back(std::move(bd));
  w.indexes[d] = store_.NewIndexBuilder(w.record, disk.target, disk.size, base);
  // The base's chunks with data, in order: O(allocated), one walk of its
  // index, whatever its format.
  BaseChunks base_chunks;
  if (base) {
    base_chunks.tree = dynamic_cast<const TreeIndex*>(base.get()) != nullptr;
    RETURN_IF_ERROR(base->ForEachAllocated([&](uint64_t i, const ChunkRef& r) {
      base_chunks.data.emplace_back(i, r.hash);
      return Status::Ok();
    }));
  }
  for (uint64_t i = 0; i < n; ++i) {
    RETURN_IF_ERROR(PlanChunk(d, i, base ? &base_chunks : nullptr, w));
  }
  return Status::Ok();
}

std::shared_ptr<const ChunkIndex> BackupRunner::BaseIndex(
    const BackupPlan& plan, const CheckpointDisk& disk) {
  const uint64_t cs = store_.chunk_size();
  std::shared_ptr<const ChunkIndex> base_index;
  for (const auto& bd : plan.base->disks) {
    if (bd.name != disk.target) continue;
    auto bm = store_.OpenIndex(*plan.base, disk.target);
    if (!bm.ok()) {
      spdlog::warn("{}: base {}: {}", plan.view->domain, plan.base->id,
                   bm.status().ToString());
      continue;
    }
    if ((*bm)->size() != disk.size || (*bm)->chunk_size() != cs) continue;
    // Kept from gc from now until this backup commits (or its lock goes).
    auto kept = store_.KeepIndex(**bm);
    if (kept.ok() && *kept) {
      base_index = std::move(bm).value();
    } else {
      spdlog::warn("{}: base {}: its index is gone or unreadable ({})",
                   plan.view->domain, plan.base->id,
                   kept.ok() ? "missing" : kept.status().ToString());
    }
  }
  if (!base_index) {
    // No usable manifest in the base (damaged, resized disk): copy the
    // disk in full rather than fail this and every later backup.
    spdlog::warn(
        "{}: disk {} has no usable manifest in base {}: copying "
        "it in full",
        plan.view->domain, disk.target, plan.base->id);
  }
  return base_index;
}

ChunkRef BackupRunner::BaseChunks::At(uint64_t i) const {
  auto it = std::lower_bound(data.begin(), data.end(), i,
                             [](const std::pair<uint64_t, ChunkHash>& e,
                                uint64_t c) { return e.first < c; });
  if (it == data.end() || it->first != i) return ChunkRef{{}, true};
  return ChunkRef{it->second, false};
}

Status BackupRunner::PlanChunk(size_t d, uint64_t i, const BaseChunks* base,
                               Work& w) {
  const CheckpointDisk& disk = *w.view.disks[d];
  const uint64_t cs = w.cs;
  ChunkIndexBuilder& m = *w.indexes[d];
  std::vector<Task>& tasks = w.tasks;
  const ChunkRef base_ref = base ? base->At(i) : ChunkRef{{}, true};
  const uint64_t len = std::min(disk.size, i * cs + cs) - i * cs;
  const uint64_t begin = i * cs;
  const uint64_t end = std::min(disk.size, begin + cs);
  if (base && !Overlaps(disk.changed, begin, end)) {
    const ChunkRef& ref = base_ref;
    // A hole stays one (every builder starts from holes or from the base).
    if (ref.zero) return Status::Ok();
    // Touch what we reuse: gc keeps chunks touched since the oldest
    // running backup began. One that is gone (gc ran after a prune of
    // the base) is simply read again from the export. A format 2 base is
    // kept whole by its root, touched at plan (Store::KeepIndex): none of
    // its chunks needs a touch of its own.
    bool present = base->tree;
    if (!present) {
      ASSIGN_OR_RETURN(present, store_.TouchChunk(ref.hash));
    }
    if (present) {
      if (!m.from_base()) m.Set(i, ref);
      w.allocated[d] += len;
      return Status::Ok();
    }
  }
  if (AllZero(disk.extents, begin, end)) {
    if (!base_ref.zero) m.Set(i, ChunkRef{{}, true});
    return Status::Ok();
  }
  // A partly dirty chunk of an incremental: read only its dirty ranges
  // and take the rest from the base's chunk, so the job reads exactly
  // the dirty bytes (a 64 KiB write costs 64 KiB, not a whole chunk).
  if (base) {
    auto dirty = Clip(disk.changed, begin, end);
    uint64_t dirty_bytes = 0;
    for (const auto& r : dirty) dirty_bytes += r.second;
    if (dirty_bytes > 0 && dirty_bytes < end - begin) {
      tasks.push_back({d, i, 1, std::move(dirty), base_ref});
      w.total += dirty_bytes;
      return Status::Ok();
    }
  }
  if (!tasks.empty() && tasks.back().disk == d && tasks.back().dirty.empty() &&
      tasks.back().chunk + tasks.back().count == i &&
      (tasks.back().count + 1) * cs <= kReadBytes) {
    ++tasks.back().count;
  } else {
    tasks.push_back({d, i, 1});
  }
  w.total += end - begin;
  return Status::Ok();
}

Status BackupRunner::Copy(const BackupPlan& plan, Work& w,
                          const std::atomic<bool>& cancel) {
  // Every thread takes the next run of chunks, reads it from the export,
  // and hashes, compresses and stores each chunk.
  w.batch = store_.NewBatch();
  std::vector<std::thread> pool;
  const unsigned n = std::max(1u, threads_);
  for (unsigned i = 0; i < n; ++i) {
    pool.emplace_back([&] { CopyTasks(plan, w, cancel); });
  }
  for (auto& th : pool) th.join();
  // A failed job's chunks are dropped with its batch: nothing names them.
  std::lock_guard lock(w.mu);
  return ExplainNoSpace(w.first_error);
}

void BackupRunner::CopyTasks(const BackupPlan& plan, Work& w,
                             const std::atomic<bool>& cancel) {
  const uint64_t cs = w.cs;
  std::vector<std::byte> buf(std::max(cs, kReadBytes));
  for (;;) {
    const size_t t = w.next.fetch_add(1);
    if (t >= w.tasks.size()) return;
    {
      std::lock_guard lock(w.mu);
      if (!w.first_error.ok()) return;
    }
    if (cancel.load()) {
      std::lock_guard lock(w.mu);
      if (w.first_error.ok()) {
        w.first_error = Status(Code::kCancelled, "backup cancelled");
      }
      return;
    }
    const Task& task = w.tasks[t];
    const CheckpointDisk& disk = *w.view.disks[task.disk];
    const uint64_t begin = task.chunk * cs;
    const uint64_t len = std::min(disk.size, begin + task.count * cs) - begin;
    uint64_t at = begin;  // where a failure happened
    uint64_t from_export = 0;
    Status st = ReadTask(store_, task, disk, std::span(buf.data(), len), begin,
                         &from_export);
    for (uint64_t c = 0; st.ok() && c < task.count; ++c) {
      const uint64_t off = c * cs;
      Result<ChunkRef> ref =
          store_.PutChunk(std::span(buf.data() + off, std::min(cs, len - off)),
                          nullptr, w.batch.get());
      if (ref.ok()) {
        w.indexes[task.disk]->Set(task.chunk + c, *ref);
        if (!ref->zero) {
          std::lock_guard lock(w.mu);
          w.allocated[task.disk] += std::min(cs, len - off);
        }
      } else {
        st = ref.status();
        at = begin + off;
      }
    }
    if (!st.ok()) {
      std::lock_guard lock(w.mu);
      if (w.first_error.ok()) {
        w.first_error = st.Annotate(disk.target + " at " + std::to_string(at));
      }
      return;
    }
    const uint64_t now = w.done.fetch_add(from_export) + from_export;
    {
      std::lock_guard lock(w.mu);
      w.bytes_read[task.disk] += from_export;
    }
    // Progress in the job record, every 16 runs or so.
    if (t % 16 == 0 || now >= w.total) {
      jobs_.Update(plan.job_id, [&](Job& j) {
        j.done = std::max(j.done, std::min(now, w.total));
      });
    }
  }
}

Result<BackupRecord> BackupRunner::Commit(const BackupPlan& plan, Work& w) {
  BackupRecord& record = w.record;
  // Durable in order: chunks and format 2 index pages (one commit for this
  // job's), manifests, then the record, then the catalog row. Every chunk
  // and page a manifest names is then durable: this job's by the commit,
  // the reused ones were durable when found (only committed objects are
  // visible) and touched, so gc keeps them (see Store::CollectGarbage).
  std::vector<std::vector<std::byte>> manifests;
  for (size_t d = 0; d < w.indexes.size(); ++d) {
    record.disks[d].allocated = w.allocated[d];
    record.disks[d].bytes_read = w.bytes_read[d];
    auto staged = store_.StageIndex(record, *w.indexes[d], w.batch.get());
    if (!staged.ok()) return ExplainNoSpace(staged.status());
    manifests.push_back(std::move(staged).value());
  }
  RETURN_IF_ERROR(ExplainNoSpace(w.batch->Commit()));
  // A failure from here on takes back what this job wrote, and only that: a
  // failed job leaves no manifests (they would pin chunks against gc) and no
  // record (a failed backup is never served nor a base).
  std::vector<std::string> written;
  bool record_written = false;
  auto undo = [&](const Status& st) {
    Status ds = store_.DeleteWritten(record, written, record_written);
    if (!ds.ok()) spdlog::warn("{}: {}", record.id, ds.ToString());
    return ExplainNoSpace(st);
  };
  for (size_t d = 0; d < manifests.size(); ++d) {
    const std::string& name = record.disks[d].name;
    Status ms = store_.PutIndex(record, name, manifests[d]);
    if (!ms.ok()) return undo(ms);
    written.push_back(name);
  }
  if (plan.before_record) {
    if (Status hs = plan.before_record(); !hs.ok()) return undo(hs);
  }
  record.completed = NowMs() / 1000;
  if (Status ps = store_.PutBackup(record); !ps.ok()) return undo(ps);
  record_written = true;
  if (Status as = catalog_.AddBackup(record); !as.ok()) return undo(as);
  spdlog::info("{}: backup {} complete ({}, {} bytes read)", record.domain,
               record.checkpoint, record.mode, w.total);
  return record;
}

}  // namespace ckptfs
