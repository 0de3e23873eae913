// Filesystem: the core the FUSE edge calls. fs/fuse_ops.cc decodes a FUSE
// request, makes one call here and maps the Status to an errno (ToErrno).
// Nothing behind this interface knows FUSE exists, so tests call it directly.
//
// Thread safety: all methods are called concurrently from FUSE worker
// threads. A FileHandle is used by whichever thread serves a request on its
// open file; the kernel may issue concurrent reads on one handle.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

struct Attr {
  uint64_t ino = 0;
  mode_t mode = 0;  // type and permission bits
  uint32_t nlink = 1;
  uint64_t size = 0;
  uint64_t blocks = 0;  // 512-byte units
  int64_t mtime = 0;    // seconds since the epoch
  uint32_t uid = 0;
  uint32_t gid = 0;
};

struct DirEntry {
  std::string name;
  Attr attr;
};

class FileHandle {
 public:
  virtual ~FileHandle() = default;
  // Reads up to buf.size() bytes at offset; returns bytes read (0 at EOF).
  virtual Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) = 0;
  virtual Result<size_t> Write(std::span<const std::byte> data,
                               uint64_t offset) {
    (void)data;
    (void)offset;
    return ReadOnly("read-only file");
  }
  // SEEK_DATA / SEEK_HOLE; other whence values are handled by the kernel.
  virtual Result<uint64_t> Seek(uint64_t offset, int whence) = 0;
  // Immutable content: the kernel may keep its page cache across opens.
  virtual bool keep_cache() const { return false; }
  // Content generated per open (JSON, control replies): bypass the cache.
  virtual bool direct_io() const { return false; }

  // Attributes as of open: fstat() on an open file answers from here, so a
  // file whose checkpoint was released meanwhile still stats (and reads EIO).
  const Attr& attr() const { return attr_; }
  void set_attr(const Attr& attr) { attr_ = attr; }

 private:
  Attr attr_;
};

class Filesystem {
 public:
  virtual ~Filesystem() = default;
  virtual Result<Attr> GetAttr(std::string_view path) = 0;
  virtual Result<std::vector<DirEntry>> ReadDir(std::string_view path) = 0;
  virtual Result<std::string> ReadLink(std::string_view path) = 0;
  virtual Result<std::unique_ptr<FileHandle>> Open(std::string_view path,
                                                   int flags) = 0;
  // Truncation (shells open control files with O_TRUNC).
  virtual Status Truncate(std::string_view path, uint64_t size) = 0;
};

// The one place a Status becomes an errno value (positive).
int ToErrno(const Status& status);

}  // namespace ckptfs
