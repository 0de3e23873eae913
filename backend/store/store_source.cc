#include "backend/store/store_source.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace ckptfs {

StoreSource::StoreSource(std::shared_ptr<ChunkStore> chunks,
                         std::shared_ptr<const ChunkIndex> index)
    : chunks_(std::move(chunks)), index_(std::move(index)) {}

StoreSource::StoreSource(std::shared_ptr<ChunkStore> chunks, Manifest manifest)
    : StoreSource(std::move(chunks),
                  std::make_shared<DenseIndex>(std::move(manifest))) {}

std::string StoreSource::Name() const {
  return "stored image " + index_->backup_id() + "/" + index_->disk();
}

Status StoreSource::CheckRange(uint64_t offset, uint64_t length,
                               const char* what) const {
  const uint64_t size = index_->size();
  if (offset > size || length > size - offset) {
    return InvalidArgument(
        Name() + ": " + what + " of " + std::to_string(length) + " bytes at " +
        std::to_string(offset) + " is beyond its size " + std::to_string(size));
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

  const uint64_t chunk_size = index_->chunk_size();
  std::vector<std::byte> scratch;
  uint64_t pos = offset;
  const uint64_t end = offset + total;
  while (pos < end) {
    const uint64_t index = pos / chunk_size;
    const uint64_t chunk_start = index * chunk_size;
    const size_t chunk_len = static_cast<size_t>(index_->chunk_length(index));
    const size_t skip = static_cast<size_t>(pos - chunk_start);
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(chunk_len - skip, end - pos));
    Result<ChunkRef> got = index_->Lookup(index);
    if (!got.ok()) {
      return got.status().Annotate(Name() + " at offset " +
                                   std::to_string(chunk_start));
    }
    const ChunkRef& ref = *got;
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
      return status.Annotate(Name() + " at offset " +
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
  const uint64_t chunk_size = index_->chunk_size();
  const uint64_t size = index_->size();
  const uint64_t end = offset + length;
  // Every extent is one stretch of one kind: from its first chunk's kind to
  // the next chunk of the other kind.
  for (uint64_t pos = offset; pos < end;) {
    const uint64_t c = pos / chunk_size;
    ASSIGN_OR_RETURN(const ChunkRef ref, index_->Lookup(c));
    ASSIGN_OR_RETURN(const uint64_t other,
                     ref.zero ? index_->NextAllocated(c) : index_->NextHole(c));
    const uint64_t next =
        std::min({end, size, std::max(other, c + 1) * chunk_size});
    out.push_back({pos, next - pos, ref.zero, ref.zero});
    pos = next;
  }
  return out;
}

}  // namespace ckptfs
