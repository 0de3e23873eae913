#include "backend/store/store_source.h"

#include <algorithm>
#include <cstring>
#include <utility>

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

StoreSource::StoreSource(std::shared_ptr<ChunkStore> chunks, Manifest manifest)
    : chunks_(std::move(chunks)),
      manifest_(std::move(manifest)),
      runs_(RunStarts(manifest_.chunks)) {}

Status StoreSource::CheckRange(uint64_t offset, uint64_t length,
                               const char* what) const {
  if (offset > manifest_.size || length > manifest_.size - offset) {
    return InvalidArgument("stored image " + manifest_.backup_id + "/" +
                           manifest_.disk + ": " + what + " of " +
                           std::to_string(length) + " bytes at " +
                           std::to_string(offset) + " is beyond its size " +
                           std::to_string(manifest_.size));
  }
  return Status::Ok();
}

Status StoreSource::preadv(std::span<const std::span<std::byte>> bufs,
                           uint64_t offset) {
  uint64_t total = 0;
  for (const auto& b : bufs) total += b.size();
  RETURN_IF_ERROR(CheckRange(offset, total, "read"));

  // Cursor over the destination buffers.
  size_t b = 0;
  size_t in_buf = 0;
  auto skip_empty = [&] {
    while (b < bufs.size() && in_buf == bufs[b].size()) {
      ++b;
      in_buf = 0;
    }
  };
  // Copies n bytes from src (zeros if null) to the cursor, across buffers.
  auto emit = [&](const std::byte* src, size_t n) {
    while (n > 0) {
      skip_empty();
      const size_t step = std::min(n, bufs[b].size() - in_buf);
      std::byte* dst = bufs[b].data() + in_buf;
      if (src != nullptr) {
        std::memcpy(dst, src, step);
        src += step;
      } else {
        std::memset(dst, 0, step);
      }
      in_buf += step;
      n -= step;
    }
  };

  const uint64_t chunk_size = manifest_.chunk_size;
  std::vector<std::byte> scratch;
  uint64_t pos = offset;
  const uint64_t end = offset + total;
  while (pos < end) {
    const uint64_t index = pos / chunk_size;
    const uint64_t chunk_start = index * chunk_size;
    const size_t chunk_len =
        static_cast<size_t>(std::min(chunk_size, manifest_.size - chunk_start));
    const size_t skip = static_cast<size_t>(pos - chunk_start);
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(chunk_len - skip, end - pos));
    const ChunkRef& ref = manifest_.chunks[index];
    skip_empty();
    Status status;
    if (ref.zero) {
      emit(nullptr, n);
    } else if (skip == 0 && n == chunk_len &&
               bufs[b].size() - in_buf >= chunk_len) {
      status = chunks_->Get(ref, bufs[b].subspan(in_buf, chunk_len));
      in_buf += chunk_len;
    } else {
      if (scratch.empty()) scratch.resize(chunk_size);
      status = chunks_->Get(ref, std::span(scratch).first(chunk_len));
      if (status.ok()) emit(scratch.data() + skip, n);
    }
    if (!status.ok()) {
      return status.Annotate("stored image " + manifest_.backup_id + "/" +
                             manifest_.disk + " at offset " +
                             std::to_string(chunk_start));
    }
    pos += n;
  }
  return Status::Ok();
}

Result<std::vector<Extent>> StoreSource::extents(uint64_t offset,
                                                 uint64_t length) {
  RETURN_IF_ERROR(CheckRange(offset, length, "extents"));
  std::vector<Extent> out;
  if (length == 0) return out;
  const uint64_t chunk_size = manifest_.chunk_size;
  const uint64_t end = offset + length;
  // The run holding offset's chunk: the last run starting at or before it.
  uint64_t probes = 0;
  auto it = std::upper_bound(runs_.begin(), runs_.end(), offset / chunk_size,
                             [&](uint64_t chunk, uint64_t start) {
                               ++probes;
                               return chunk < start;
                             });
  size_t r = static_cast<size_t>(it - runs_.begin()) - 1;
  // Neighbouring runs differ in kind, so every run is one extent.
  for (uint64_t pos = offset; pos < end; ++r) {
    const uint64_t run_end =
        r + 1 < runs_.size() ? runs_[r + 1] * chunk_size : manifest_.size;
    const uint64_t next = std::min(run_end, end);
    const bool zero = manifest_.chunks[runs_[r]].zero;
    out.push_back({pos, next - pos, zero, zero});
    pos = next;
  }
  index_steps_.fetch_add(probes + out.size(), std::memory_order_relaxed);
  return out;
}

}  // namespace ckptfs
