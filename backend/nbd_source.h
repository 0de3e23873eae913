// NbdSource: an ImageSource that reads a disk image from an NBD server, e.g.
// the export QEMU opens for a libvirt pull-mode backup (one export per disk,
// named after the disk target, optionally with a dirty-bitmap meta context).
//
// Contract: pread() returns exactly the bytes the server returned or an
// error, never partial or stale data. extents() comes from the server's
// "base:allocation" context (one data extent if the server has none) and
// covers the asked range exactly; dirty_extents() comes from the optional
// dirty-bitmap context. The export is only read, never written.
//
// Design (why it looks like this): a synchronous libnbd call holds the handle
// lock until its reply arrives, so synchronous calls on one handle do not
// overlap and cannot be timed out. Instead each connection has one I/O thread
// running a poll(2) loop over the socket and an eventfd (the "pipe-to-self"
// pattern of libnbd(3)). Reader threads start commands with nbd_aio_pread /
// nbd_aio_block_status, kick the eventfd, and wait on a condition variable
// that the completion callback signals. Any number of commands are in flight
// per connection; a large pread is split into max_request() pieces that are
// all in flight at once, round-robin over the connections. More than one
// connection is opened only if the server advertises multi-conn (QEMU does for
// read-only exports that allow several clients); otherwise one connection
// carries all requests, pipelined.
//
// Timeouts: the I/O thread watches progress. When commands are in flight and
// nothing arrives from the server for timeout_ms, it shuts the socket down;
// libnbd then fails every in-flight command (reported as kTimedOut) and the
// connection is dead. A server that dies closes the socket, which fails the
// commands at once (kIoError). Dead connections are not reconnected: reads go
// to the remaining live connections and fail fast when none is left; the
// owner re-opens the source (a dead QEMU usually means a new backup job and a
// new export anyway).
//
// Thread safety: all methods may be called concurrently from any thread. No
// lock of ours is held while waiting for the server; libnbd's per-handle lock
// is held only for non-blocking socket work.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "backend/image_source.h"
#include "backend/status.h"

namespace ckptfs {

struct NbdOptions {
  // Exactly one of socket and uri is set.
  std::string socket;  // UNIX socket path (QEMU's pull-mode backup export).
  std::string uri;     // An NBD URI (nbd+unix://..., nbd://host:port/export);
                       // the export name comes from the URI.
  // Export name with socket (for a libvirt backup export: the disk target,
  // e.g. "vda"). Must be empty with uri.
  std::string export_name;
  // Optional meta context to request too, e.g.
  // "qemu:dirty-bitmap:backup-vda".
  std::string dirty_bitmap;
  // Connections to open; used only when the server advertises multi-conn.
  unsigned connections = 4;
  // A connection that has requests in flight and receives nothing for this
  // long is dropped and its requests fail with kTimedOut. Also bounds the
  // connect + handshake. REQUIRES: > 0.
  unsigned timeout_ms = 30000;
};

class NbdSource : public ImageSource {
 public:
  // Connects (bounded by timeout_ms), negotiates base:allocation and
  // dirty_bitmap if set, reads size and block size limits, and opens extra
  // connections if the server advertises multi-conn. If an extra connection
  // fails the source works with those that opened.
  static Result<std::shared_ptr<NbdSource>> Open(const NbdOptions& options);

  // Disconnects gracefully (bounded; a hung server is just dropped).
  // REQUIRES: no method is running.
  ~NbdSource() override;

  NbdSource(const NbdSource&) = delete;
  NbdSource& operator=(const NbdSource&) = delete;

  uint64_t size() const override { return size_; }

  // One NBD read per buffer (split further at max_request()), all in flight
  // at once across the connections; pread (ImageSource's default) is one
  // buffer. Offsets and lengths need no alignment: if the server demands a
  // minimum block size, unaligned head and tail blocks go through a bounce
  // buffer.
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override;

  // From base:allocation: NBD_STATE_HOLE -> hole, NBD_STATE_ZERO -> zero.
  // Adjacent extents with equal flags are merged. REQUIRES: offset + length
  // <= size().
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override;

  // min(32 MiB, the server's maximum block size).
  uint32_t max_request() const override { return max_request_; }
  // max(1 MiB, the server's preferred block size), at most max_request().
  uint32_t preferred_block_size() const override { return preferred_; }

  // Connections opened (including ones that have died since).
  unsigned connections() const { return static_cast<unsigned>(conns_.size()); }
  bool can_multi_conn() const { return can_multi_conn_; }
  // True if the server agreed to options.dirty_bitmap.
  bool has_dirty_bitmap() const { return has_dirty_bitmap_; }
  // The export name in use (from options or from the URI), for messages.
  const std::string& export_name() const { return export_name_; }

  // Dirty ranges (offset, length) of options.dirty_bitmap over [0, size()):
  // ranges whose bitmap flag (bit 0) is set, merged, in order. kUnsupported if
  // no dirty_bitmap was requested or the server did not agree to it.
  Result<std::vector<std::pair<uint64_t, uint64_t>>> dirty_extents();

  // Allocated bytes (sum of non-hole extents over the image), for st_blocks.
  Result<uint64_t> allocated_bytes();

 private:
  class Connection;  // One libnbd handle and its I/O thread (nbd_connection.h).

  NbdSource() = default;

  // Picks a live connection round-robin; nullptr if all are dead.
  Connection* Pick();
  // Runs start(connection) (which starts one command) on a live connection,
  // moving on if the picked one turns out dead.
  template <typename StartFn>
  Status StartOnLiveConnection(StartFn&& start);
  // The reason why no connection is usable, for errors.
  Status AllDead() const;
  // One NBD read of a preadv (nbd_source.cc), and the reads covering `bufs`:
  // split at max_request(), unaligned heads and tails bounced through whole
  // min_block_ blocks.
  struct ReadPiece;
  std::vector<ReadPiece> PlanRead(std::span<const std::span<std::byte>> bufs,
                                  uint64_t offset, uint64_t total) const;
  // Walks `context` over [offset, offset + length) with block status calls,
  // calling fn(offset, length, flags) for each extent, clipped, in order.
  template <typename Fn>
  Status WalkBlockStatus(const std::string& context, uint64_t offset,
                         uint64_t length, Fn&& fn);

  // Immutable after Open().
  std::vector<std::unique_ptr<Connection>> conns_;
  std::string export_name_;
  std::string dirty_context_;
  uint64_t size_ = 0;
  uint32_t min_block_ = 1;  // The server's minimum block size (power of 2).
  uint32_t max_request_ = 32u << 20;
  uint32_t preferred_ = 1u << 20;
  bool can_multi_conn_ = false;
  bool has_base_allocation_ = false;
  bool has_dirty_bitmap_ = false;

  std::atomic<unsigned> next_conn_{0};
};

}  // namespace ckptfs
