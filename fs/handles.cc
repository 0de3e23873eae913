#include "fs/handles.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstring>

#include "fs/namespace.h"

namespace ckptfs {

Result<size_t> StringHandle::Read(std::span<std::byte> buf, uint64_t offset) {
  if (offset >= content_.size()) return size_t{0};
  size_t n = std::min<uint64_t>(buf.size(), content_.size() - offset);
  std::memcpy(buf.data(), content_.data() + offset, n);
  return n;
}

Result<uint64_t> StringHandle::Seek(uint64_t offset, int whence) {
  if (offset >= content_.size()) {
    return Status(Code::kOutOfRange, "offset beyond the end");
  }
  return whence == SEEK_DATA ? offset : content_.size();
}

Result<size_t> ImageHandle::Read(std::span<std::byte> buf, uint64_t offset) {
  if (offset >= disk_->size) return size_t{0};
  size_t n = std::min<uint64_t>(buf.size(), disk_->size - offset);
  Status st = image_->pread(buf.first(n), offset);
  if (!st.ok()) {
    // Whatever went wrong below (export ended, QEMU gone, timeout), a
    // reader of an image sees EIO, never partial or wrong bytes.
    spdlog::debug("{}: read at {}: {}", disk_->target, offset, st.ToString());
    return IoError(st.message());
  }
  return n;
}

Result<uint64_t> ImageHandle::Seek(uint64_t offset, int whence) {
  if (!disk_->extents.empty() || disk_->size == 0) {
    return SeekExtents(disk_->extents, disk_->size, offset,
                       whence == SEEK_DATA);
  }
  // Stored disks: the manifest knows its zero chunks.
  return SeekImage(*image_, offset, whence == SEEK_DATA);
}

Result<size_t> ControlHandle::Read(std::span<std::byte> buf, uint64_t offset) {
  std::string reply;
  {
    std::lock_guard lock(mu_);
    reply = reply_;
    if (offset >= reply_offset_) offset -= reply_offset_;
  }
  if (offset >= reply.size()) return size_t{0};
  size_t n = std::min<uint64_t>(buf.size(), reply.size() - offset);
  std::memcpy(buf.data(), reply.data() + offset, n);
  return n;
}

Result<size_t> ControlHandle::Write(std::span<const std::byte> data,
                                    uint64_t offset) {
  std::string_view line(reinterpret_cast<const char*>(data.data()),
                        data.size());
  NamespaceHost::Reply r = host_.Submit(kind_, line);
  {
    std::lock_guard lock(mu_);
    reply_ = r.json;
    // A failed write leaves the file offset where it was.
    reply_offset_ = r.status.ok() ? offset + data.size() : offset;
  }
  if (!r.status.ok()) return r.status;
  return data.size();
}

}  // namespace ckptfs
