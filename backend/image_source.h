// ImageSource: the small contract every image provider answers (nbdkit's
// plugin table in miniature): size, read at offset, extents, and hints.
//
// Sources are decorated, not flagged: the block cache (with its read-ahead,
// docs/ARCHITECTURE.md says why that is inside it) and the tests' fault
// injection (tests/fakes/injecting_image_source.h) wrap any ImageSource, and
// the stack is assembled in one place (mountd/source_factory).
//
// Thread safety: every method may be called concurrently from any thread;
// an implementation that cannot do so serialises internally.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool hole = false;  // unallocated (reads as zeros, no storage behind it)
  bool zero = false;  // reads as zeros (may be allocated)

  bool operator==(const Extent&) const = default;
};

class ImageSource {
 public:
  virtual ~ImageSource() = default;

  // Virtual size in bytes. Constant for the life of the source.
  virtual uint64_t size() const = 0;

  // pread and preadv default to each other: a source overrides at least one
  // (the one it serves natively), or a read recurses forever.

  // Reads exactly buf.size() bytes at offset. REQUIRES: offset + buf.size()
  // <= size(). A failure is never partial data: the caller sees an error.
  // Default: a scatter read of one buffer, for sources whose native read is
  // preadv.
  virtual Status pread(std::span<std::byte> buf, uint64_t offset) {
    const std::span<std::byte> one[] = {buf};
    return preadv(one, offset);
  }

  // Reads the contiguous range starting at `offset` into `bufs`, one after
  // the other (a scatter read). Lets a caller that keeps data in separate
  // buffers (the block cache) avoid a staging copy; a source that can issue
  // the pieces in parallel should. Default: one pread per buffer.
  virtual Status preadv(std::span<const std::span<std::byte>> bufs,
                        uint64_t offset) {
    for (const auto& b : bufs) {
      RETURN_IF_ERROR(pread(b, offset));
      offset += b.size();
    }
    return Status::Ok();
  }

  // Allocation map of [offset, offset + length), in order, covering the
  // range without gaps. Default: one data extent (the "all data" answer).
  virtual Result<std::vector<Extent>> extents(uint64_t offset,
                                              uint64_t length) {
    return std::vector<Extent>{{offset, length, false, false}};
  }

  // Size of a read the source serves most efficiently (a hint).
  virtual uint32_t preferred_block_size() const { return 1u << 20; }

  // Largest single read the source accepts; callers split larger reads.
  virtual uint32_t max_request() const { return 32u << 20; }
};

}  // namespace ckptfs
