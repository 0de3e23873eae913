#include "backend/store/chunk_index.h"

#include <algorithm>
#include <utility>

#include "backend/store/serialize.h"

namespace ckptfs {

namespace {

std::vector<uint64_t> RunStarts(const std::vector<ChunkRef>& chunks) {
  std::vector<uint64_t> runs;
  for (uint64_t i = 0; i < chunks.size(); ++i) {
    if (i == 0 || chunks[i].zero != chunks[i - 1].zero) runs.push_back(i);
  }
  runs.shrink_to_fit();
  return runs;
}

}  // namespace

uint64_t ChunkIndex::chunk_count() const {
  return ChunkCount(size(), chunk_size());
}

uint64_t ChunkIndex::chunk_length(uint64_t i) const {
  const uint64_t cs = chunk_size();
  return std::min<uint64_t>(cs, size() - i * cs);
}

Result<uint64_t> AllocatedBytes(const ChunkIndex& index) {
  uint64_t allocated = 0;
  RETURN_IF_ERROR(index.ForEachAllocated([&](uint64_t i, const ChunkRef&) {
    allocated += index.chunk_length(i);
    return Status::Ok();
  }));
  return allocated;
}

// -------------------------------------------------------------- DenseIndex

DenseIndex::DenseIndex(Manifest manifest)
    : manifest_(std::move(manifest)), runs_(RunStarts(manifest_.chunks)) {}

Result<ChunkRef> DenseIndex::Lookup(uint64_t i) const {
  if (i >= manifest_.chunks.size()) {
    return InvalidArgument("stored image " + manifest_.backup_id + "/" +
                           manifest_.disk + ": chunk " + std::to_string(i) +
                           " is beyond its " +
                           std::to_string(manifest_.chunks.size()));
  }
  return manifest_.chunks[i];
}

uint64_t DenseIndex::NextOfKind(uint64_t from, bool zero) const {
  const uint64_t n = manifest_.chunks.size();
  if (from >= n) return n;
  // The run holding `from`: the last run starting at or before it.
  uint64_t probes = 0;
  auto it = std::upper_bound(runs_.begin(), runs_.end(), from,
                             [&](uint64_t chunk, uint64_t start) {
                               ++probes;
                               return chunk < start;
                             });
  steps_.fetch_add(probes + 1, std::memory_order_relaxed);
  const size_t r = static_cast<size_t>(it - runs_.begin()) - 1;
  if (manifest_.chunks[runs_[r]].zero == zero) return from;
  // Neighbouring runs differ in kind: the next run is of the kind wanted.
  return r + 1 < runs_.size() ? runs_[r + 1] : n;
}

Result<uint64_t> DenseIndex::NextAllocated(uint64_t from) const {
  return NextOfKind(from, false);
}

Result<uint64_t> DenseIndex::NextHole(uint64_t from) const {
  return NextOfKind(from, true);
}

Status DenseIndex::ForEachAllocated(const ChunkFn& fn) const {
  for (uint64_t i = 0; i < manifest_.chunks.size(); ++i) {
    if (!manifest_.chunks[i].zero) RETURN_IF_ERROR(fn(i, manifest_.chunks[i]));
  }
  return Status::Ok();
}

// ------------------------------------------------------- DenseIndexBuilder

DenseIndexBuilder::DenseIndexBuilder(std::string backup_id, std::string disk,
                                     uint64_t size, uint32_t chunk_size) {
  m_.backup_id = std::move(backup_id);
  m_.disk = std::move(disk);
  m_.size = size;
  m_.chunk_size = chunk_size;
  ChunkRef hole;
  hole.zero = true;
  m_.chunks.assign(ChunkCount(size, chunk_size), hole);
}

Result<BuiltIndex> DenseIndexBuilder::Finish() {
  BuiltIndex out;
  out.dense = std::move(m_);
  return out;
}

}  // namespace ckptfs
