#include "backend/nbd_source.h"

#include <libnbd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "backend/nbd_connection.h"

namespace ckptfs {

Result<std::shared_ptr<NbdSource>> NbdSource::Open(const NbdOptions& options) {
  if (options.socket.empty() == options.uri.empty()) {
    return InvalidArgument(
        "NBD source: give exactly one of a UNIX socket path or an NBD URI");
  }
  if (!options.uri.empty() && !options.export_name.empty()) {
    return InvalidArgument("NBD source: with a URI, put the export name '" +
                           options.export_name + "' in the URI");
  }
  if (options.timeout_ms == 0) {
    return InvalidArgument("NBD source: timeout_ms must be positive");
  }

  std::shared_ptr<NbdSource> src(new NbdSource());
  const std::string where = options.uri.empty() ? options.socket : options.uri;
  std::string label = "NBD export '" + options.export_name + "' at " + where;
  if (!options.uri.empty()) label = "NBD " + options.uri;
  const auto deadline =
      Clock::now() + std::chrono::milliseconds(options.timeout_ms);
  ASSIGN_OR_RETURN(auto first, Connection::Connect(options, label, deadline));
  nbd_handle* h = first->handle();

  if (char* name = nbd_get_export_name(h); name != nullptr) {
    src->export_name_ = name;
    free(name);
  }
  const int64_t size = nbd_get_size(h);
  if (size < 0) return LastNbdError(label + ": export size");
  src->size_ = static_cast<uint64_t>(size);

  const int64_t min_block = nbd_get_block_size(h, LIBNBD_SIZE_MINIMUM);
  const int64_t preferred = nbd_get_block_size(h, LIBNBD_SIZE_PREFERRED);
  const int64_t max_block = nbd_get_block_size(h, LIBNBD_SIZE_MAXIMUM);
  if (min_block > 1) src->min_block_ = static_cast<uint32_t>(min_block);
  uint64_t max_request = kMaxRequest;
  if (max_block > 0) max_request = std::min<uint64_t>(max_request, max_block);
  // Whole minimum blocks, so split pieces stay aligned.
  max_request -= max_request % src->min_block_;
  if (max_request == 0) {
    return IoError(label + ": server block size limits are inconsistent");
  }
  src->max_request_ = static_cast<uint32_t>(max_request);
  src->preferred_ = static_cast<uint32_t>(std::min<uint64_t>(
      std::max<uint64_t>(kMinPreferred, std::max<int64_t>(preferred, 0)),
      max_request));

  src->has_base_allocation_ =
      nbd_can_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1;
  if (!options.dirty_bitmap.empty()) {
    src->dirty_context_ = options.dirty_bitmap;
    src->has_dirty_bitmap_ =
        nbd_can_meta_context(h, options.dirty_bitmap.c_str()) == 1;
  }
  src->can_multi_conn_ = nbd_can_multi_conn(h) == 1;
  src->conns_.push_back(std::move(first));

  // Extra connections are an optimisation: if one fails (e.g. the server
  // limits clients despite multi-conn), carry on with those we have.
  if (src->can_multi_conn_) {
    for (unsigned i = 1; i < options.connections; ++i) {
      auto extra = Connection::Connect(options, label, deadline);
      if (!extra.ok()) break;
      nbd_handle* eh = (*extra)->handle();
      // Same export on every connection, or the reads would mix images.
      if (nbd_get_size(eh) != size || nbd_can_multi_conn(eh) != 1 ||
          (src->has_dirty_bitmap_ &&
           nbd_can_meta_context(eh, options.dirty_bitmap.c_str()) != 1) ||
          (src->has_base_allocation_ &&
           nbd_can_meta_context(eh, LIBNBD_CONTEXT_BASE_ALLOCATION) != 1)) {
        break;
      }
      src->conns_.push_back(std::move(extra).value());
    }
  }
  return src;
}

NbdSource::~NbdSource() = default;

NbdSource::Connection* NbdSource::Pick() {
  const size_t n = conns_.size();
  const size_t start = next_conn_.fetch_add(1, std::memory_order_relaxed);
  for (size_t i = 0; i < n; ++i) {
    Connection* c = conns_[(start + i) % n].get();
    if (c->alive()) return c;
  }
  return nullptr;
}

template <typename StartFn>
Status NbdSource::StartOnLiveConnection(StartFn&& start) {
  for (;;) {
    Connection* conn = Pick();
    if (conn == nullptr) return AllDead();
    Status st = start(*conn);
    // A connection that died under us is not this command's fault; every
    // round marks one more connection dead, so this ends.
    if (st.ok() || conn->alive()) return st;
  }
}

Status NbdSource::AllDead() const {
  Status why = conns_.front()->failure();
  if (why.ok()) why = IoError("NBD export '" + export_name_ + "': lost");
  return Status(
      why.code(),
      why.message() + "; no NBD connection is left, reopen the source");
}

// A piece is one NBD read. Unaligned head and tail pieces (only when the
// server has a minimum block size) read whole blocks into `bounce`.
struct NbdSource::ReadPiece {
  Connection::Command cmd;
  uint64_t offset = 0;  // Of the NBD read.
  uint32_t length = 0;
  std::byte* dst = nullptr;
  std::vector<std::byte> bounce;
  size_t skip = 0;  // Bounce: bytes before the caller's data.
  size_t copy = 0;  // Bounce: bytes to copy to dst.
};

// Each buffer is covered by its own pieces, so no piece straddles two
// buffers and every byte lands where it belongs without a staging copy.
std::vector<NbdSource::ReadPiece> NbdSource::PlanRead(
    std::span<const std::span<std::byte>> bufs, uint64_t offset,
    uint64_t total) const {
  const uint64_t mask = min_block_ - 1;
  std::vector<ReadPiece> pieces;
  pieces.reserve(bufs.size() + total / max_request_ + 2);
  uint64_t buf_offset = offset;
  for (const auto& buf : bufs) {
    const uint64_t end = buf_offset + buf.size();
    auto add_bounce = [&](uint64_t from, uint64_t to) {
      ReadPiece& p = pieces.emplace_back();
      p.offset = from & ~mask;
      p.length = static_cast<uint32_t>(
          std::min<uint64_t>(min_block_, size_ - p.offset));
      p.dst = buf.data() + (from - buf_offset);
      p.bounce.resize(p.length);
      p.skip = from - p.offset;
      p.copy = to - from;
    };
    uint64_t pos = buf_offset;
    if (pos & mask) {
      const uint64_t to = std::min(end, (pos & ~mask) + min_block_);
      add_bounce(pos, to);
      pos = to;
    }
    const uint64_t aligned_end = std::max(pos, end & ~mask);
    while (pos < aligned_end) {
      ReadPiece& p = pieces.emplace_back();
      p.offset = pos;
      p.length = static_cast<uint32_t>(
          std::min<uint64_t>(max_request_, aligned_end - pos));
      p.dst = buf.data() + (pos - buf_offset);
      pos += p.length;
    }
    if (pos < end) add_bounce(pos, end);
    buf_offset = end;
  }
  return pieces;
}

Status NbdSource::preadv(std::span<const std::span<std::byte>> bufs,
                         uint64_t offset) {
  uint64_t total = 0;
  for (const auto& b : bufs) total += b.size();
  if (total == 0) return Status::Ok();
  if (offset > size_ || total > size_ - offset) {
    return InvalidArgument("NBD export '" + export_name_ + "': read of " +
                           std::to_string(total) + " bytes at offset " +
                           std::to_string(offset) + " is beyond the size " +
                           std::to_string(size_));
  }

  std::vector<ReadPiece> pieces = PlanRead(bufs, offset, total);

  // Everything goes in flight at once; pieces must not move from here on.
  Batch batch;
  Status st;
  for (ReadPiece& p : pieces) {
    p.cmd.batch = &batch;
    void* target = p.bounce.empty() ? static_cast<void*>(p.dst)
                                    : static_cast<void*>(p.bounce.data());
    st = StartOnLiveConnection([&](Connection& conn) {
      return conn.StartPread(target, p.length, p.offset, &p.cmd);
    });
    if (!st.ok()) break;
  }
  batch.Wait();
  if (!st.ok()) return st;

  for (const ReadPiece& p : pieces) {
    if (p.cmd.err != 0) {
      return p.cmd.conn->CommandStatus(
          p.cmd, "NBD export '" + export_name_ + "': read of " +
                     std::to_string(p.length) + " bytes at offset " +
                     std::to_string(p.offset));
    }
  }
  for (const ReadPiece& p : pieces) {
    if (!p.bounce.empty()) {
      std::memcpy(p.dst, p.bounce.data() + p.skip, p.copy);
    }
  }
  return Status::Ok();
}

template <typename Fn>
Status NbdSource::WalkBlockStatus(const std::string& context, uint64_t offset,
                                  uint64_t length, Fn&& fn) {
  const uint64_t mask = min_block_ - 1;
  const uint64_t max_count = kMaxBlockStatus & ~mask;
  const uint64_t end = offset + length;
  uint64_t pos = offset;
  // The server may describe less than asked (or, for the last extent, more):
  // ask again from where the answer ended.
  while (pos < end) {
    const uint64_t req = pos & ~mask;
    const uint64_t req_end =
        std::min({(end + mask) & ~mask, size_, req + max_count});
    const std::string what = "NBD export '" + export_name_ + "': " + context +
                             " status at offset " + std::to_string(req);
    Batch batch;
    Connection::Command cmd;
    cmd.batch = &batch;
    cmd.context = context.c_str();
    RETURN_IF_ERROR(StartOnLiveConnection([&](Connection& conn) {
      return conn.StartBlockStatus(req_end - req, req, &cmd);
    }));
    batch.Wait();
    RETURN_IF_ERROR(cmd.conn->CommandStatus(cmd, what));

    uint64_t at = req;
    for (size_t i = 0; i + 1 < cmd.entries.size() && at < end; i += 2) {
      const uint64_t len = cmd.entries[i];
      const uint64_t from = std::max(at, pos);
      const uint64_t to = std::min(at + len, end);
      if (from < to) fn(from, to - from, cmd.entries[i + 1]);
      at += len;
    }
    if (at <= pos) {
      return IoError(what + ": the server described no blocks");
    }
    pos = std::min(at, end);
  }
  return Status::Ok();
}

Result<std::vector<Extent>> NbdSource::extents(uint64_t offset,
                                               uint64_t length) {
  if (offset > size_ || length > size_ - offset) {
    return InvalidArgument("NBD export '" + export_name_ + "': extents of " +
                           std::to_string(length) + " bytes at offset " +
                           std::to_string(offset) + " are beyond the size " +
                           std::to_string(size_));
  }
  std::vector<Extent> out;
  if (length == 0) return out;
  if (!has_base_allocation_) {
    out.push_back({offset, length, false, false});
    return out;
  }
  RETURN_IF_ERROR(
      WalkBlockStatus(LIBNBD_CONTEXT_BASE_ALLOCATION, offset, length,
                      [&out](uint64_t off, uint64_t len, uint32_t flags) {
                        const bool hole = (flags & LIBNBD_STATE_HOLE) != 0;
                        const bool zero = (flags & LIBNBD_STATE_ZERO) != 0;
                        if (!out.empty() && out.back().hole == hole &&
                            out.back().zero == zero &&
                            out.back().offset + out.back().length == off) {
                          out.back().length += len;
                        } else {
                          out.push_back({off, len, hole, zero});
                        }
                      }));
  return out;
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> NbdSource::dirty_extents() {
  if (dirty_context_.empty()) {
    return Status(Code::kUnsupported,
                  "NBD export '" + export_name_ +
                      "': no dirty bitmap was requested; set dirty_bitmap");
  }
  if (!has_dirty_bitmap_) {
    return Status(Code::kUnsupported,
                  "NBD export '" + export_name_ + "': the server does not " +
                      "offer meta context '" + dirty_context_ +
                      "'; check the bitmap name of the backup job");
  }
  std::vector<std::pair<uint64_t, uint64_t>> out;
  RETURN_IF_ERROR(WalkBlockStatus(
      dirty_context_, 0, size_,
      [&out](uint64_t off, uint64_t len, uint32_t flags) {
        if ((flags & kDirtyFlag) == 0) return;
        if (!out.empty() && out.back().first + out.back().second == off) {
          out.back().second += len;
        } else {
          out.emplace_back(off, len);
        }
      }));
  return out;
}

Result<uint64_t> NbdSource::allocated_bytes() {
  if (!has_base_allocation_) return size_;
  uint64_t total = 0;
  RETURN_IF_ERROR(
      WalkBlockStatus(LIBNBD_CONTEXT_BASE_ALLOCATION, 0, size_,
                      [&total](uint64_t, uint64_t len, uint32_t flags) {
                        if ((flags & LIBNBD_STATE_HOLE) == 0) total += len;
                      }));
  return total;
}

}  // namespace ckptfs
