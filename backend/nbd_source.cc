#include "backend/nbd_source.h"

#include <fcntl.h>
#include <libnbd.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>

namespace ckptfs {
namespace {

using Clock = std::chrono::steady_clock;

constexpr uint32_t kMaxRequest = 32u << 20;
constexpr uint32_t kMinPreferred = 1u << 20;
// The request length of NBD_CMD_BLOCK_STATUS is 32 bits on the wire, and
// some servers mishandle lengths >= 2 GiB.
constexpr uint64_t kMaxBlockStatus = (uint64_t{1} << 31) - 1;
// How long a destructor waits for a graceful NBD_CMD_DISC before dropping.
constexpr unsigned kDisconnectGraceMs = 1000;
// qemu:dirty-bitmap:* contexts report dirty blocks with bit 0.
constexpr uint32_t kDirtyFlag = 1;

// The error of the libnbd call that just failed in this thread (libnbd keeps
// it thread-local, so call this right after the failure).
Status LastNbdError(const std::string& what) {
  const char* msg = nbd_get_error();
  return FromErrno(nbd_get_errno(),
                   what + ": " + (msg != nullptr ? msg : "unknown NBD error"));
}

// Counts commands still in flight for one caller; the completion callbacks
// count down, the caller waits for zero.
class Batch {
 public:
  void Add() {
    std::lock_guard lock(mu_);
    ++pending_;
  }
  // Notifies under the lock: once the waiter sees zero it may destroy us.
  void Done() {
    std::lock_guard lock(mu_);
    if (--pending_ == 0) cv_.notify_all();
  }
  void Wait() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [this] { return pending_ == 0; });
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int pending_ = 0;  // Guarded by mu_.
};

}  // namespace

// One libnbd handle plus the I/O thread that drives its state machine. Any
// thread may start commands; completion callbacks run in whichever thread
// drives libnbd at the time (normally the I/O thread) with the handle lock
// held, so they only record the result and signal.
class NbdSource::Connection {
 public:
  // One command in flight. Written by libnbd callbacks, read by the caller
  // after Batch::Wait() (the Batch mutex orders the two).
  struct Command {
    Batch* batch = nullptr;
    Connection* conn = nullptr;
    const char* context = nullptr;  // Block status: the context to keep.
    std::vector<uint32_t> entries;  // Block status: (length, flags) pairs.
    bool got_entries = false;
    int err = 0;
    bool timed_out = false;
  };

  // Connects and finishes the handshake before `deadline`, then starts the
  // I/O thread.
  static Result<std::unique_ptr<Connection>> Connect(
      const NbdOptions& options, const std::string& label,
      Clock::time_point deadline);

  ~Connection();

  nbd_handle* handle() const { return h_; }
  bool alive() const { return !dead_.load(std::memory_order_acquire); }
  // Why the connection died; OK while alive.
  Status failure() const {
    std::lock_guard lock(mu_);
    return failure_;
  }

  // Start a command; on success cmd->batch counts it until its completion
  // callback has run. REQUIRES: cmd->batch set.
  Status StartPread(void* buf, uint32_t length, uint64_t offset, Command* cmd);
  Status StartBlockStatus(uint64_t length, uint64_t offset, Command* cmd);

  // The result of a completed command. `what` describes it for the message.
  Status CommandStatus(const Command& cmd, const std::string& what) const;

 private:
  explicit Connection(unsigned timeout_ms) : timeout_ms_(timeout_ms) {}

  // Common part of Start*: accounting, submission, kick.
  template <typename Submit>
  Status Start(Command* cmd, const char* op, uint64_t length, uint64_t offset,
               Submit&& submit);
  void Loop();
  void Kick();
  void MarkDead(Status why);
  Status TimedOutStatus(const std::string& what) const;

  static int OnComplete(void* user_data, int* error);
  static int OnExtent(void* user_data, const char* metacontext, uint64_t offset,
                      uint32_t* entries, size_t nr_entries, int* error);

  const unsigned timeout_ms_;
  std::string label_;  // "NBD export 'vda' at /run/...", for messages.
  nbd_handle* h_ = nullptr;
  // Our own dup of libnbd's socket: libnbd closes its descriptor when the
  // connection dies, and shutdown()/poll() on a recycled number would hit an
  // unrelated file. The dup stays valid until the destructor.
  int sock_ = -1;
  int wake_ = -1;  // eventfd that kicks the I/O thread out of poll().
  std::thread thread_;
  std::atomic<int> in_flight_{0};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> timed_out_{false};  // Set before the socket is shut.
  std::atomic<bool> dead_{false};
  mutable std::mutex mu_;
  Status failure_;  // Guarded by mu_; first reason wins.
};

Result<std::unique_ptr<NbdSource::Connection>> NbdSource::Connection::Connect(
    const NbdOptions& options, const std::string& label,
    Clock::time_point deadline) {
  std::unique_ptr<Connection> conn(new Connection(options.timeout_ms));
  conn->label_ = label;
  nbd_handle* h = nbd_create();
  if (h == nullptr) return LastNbdError(label + ": nbd_create");
  conn->h_ = h;
  // libnbd zeroes every read buffer first so a failed read cannot leak old
  // memory; our callers discard the buffer on any error, and the memset
  // costs a tenth of the daemon's CPU on a cold read.
  nbd_set_pread_initialize(h, false);

  if (nbd_add_meta_context(h, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      (!options.dirty_bitmap.empty() &&
       nbd_add_meta_context(h, options.dirty_bitmap.c_str()) == -1)) {
    return LastNbdError(label + ": requesting meta contexts");
  }
  int rc;
  if (!options.uri.empty()) {
    rc = nbd_aio_connect_uri(h, options.uri.c_str());
  } else {
    rc = nbd_set_export_name(h, options.export_name.c_str());
    if (rc != -1) rc = nbd_aio_connect_unix(h, options.socket.c_str());
  }
  if (rc == -1) return LastNbdError(label);

  // Nothing else uses the handle yet, so nbd_poll() may drive it here; it
  // bounds the handshake, which a hung server would otherwise stall forever.
  while (nbd_aio_is_connecting(h) == 1) {
    const auto left =
        std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) {
      return Status(Code::kTimedOut, label + ": no NBD handshake within " +
                                         std::to_string(options.timeout_ms) +
                                         " ms; is the server alive?");
    }
    if (nbd_poll(h, static_cast<int>(left.count())) == -1) {
      return LastNbdError(label);
    }
  }
  if (nbd_aio_is_ready(h) != 1) {
    return IoError(label + ": NBD handshake did not complete");
  }

  const int fd = nbd_aio_get_fd(h);
  if (fd == -1) return LastNbdError(label + ": socket");
  conn->sock_ = fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (conn->sock_ == -1) return FromErrno(errno, label + ": dup socket");
  conn->wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (conn->wake_ == -1) return FromErrno(errno, label + ": eventfd");
  conn->thread_ = std::thread([c = conn.get()] { c->Loop(); });
  return conn;
}

NbdSource::Connection::~Connection() {
  if (thread_.joinable()) {
    stopping_.store(true);
    // Polite goodbye; fails harmlessly on a dead handle. The I/O thread ends
    // when the server closes, or drops the socket after the grace period.
    if (alive()) (void)nbd_aio_disconnect(h_, 0);
    Kick();
    thread_.join();
  }
  if (h_ != nullptr) nbd_close(h_);
  if (sock_ != -1) close(sock_);
  if (wake_ != -1) close(wake_);
}

void NbdSource::Connection::Kick() {
  const uint64_t one = 1;
  // EAGAIN means the counter is already non-zero: the thread will wake.
  (void)!write(wake_, &one, sizeof one);
}

void NbdSource::Connection::MarkDead(Status why) {
  {
    std::lock_guard lock(mu_);
    if (failure_.ok()) failure_ = std::move(why);
  }
  dead_.store(true, std::memory_order_release);
}

Status NbdSource::Connection::TimedOutStatus(const std::string& what) const {
  return Status(Code::kTimedOut, what +
                                     ": no reply from the NBD server within " +
                                     std::to_string(timeout_ms_) +
                                     " ms; connection dropped (is QEMU hung?)");
}

template <typename Submit>
Status NbdSource::Connection::Start(Command* cmd, const char* op,
                                    uint64_t length, uint64_t offset,
                                    Submit&& submit) {
  if (!alive()) return failure();
  cmd->conn = this;
  // Counted before submission: the reply may arrive before submit returns.
  in_flight_.fetch_add(1);
  cmd->batch->Add();
  const int64_t cookie = submit(nbd_completion_callback{
      .callback = &OnComplete, .user_data = cmd, .free = nullptr});
  if (cookie == -1) {
    // libnbd did not queue the command, so its callback will never run.
    Status st =
        LastNbdError(label_ + ": " + op + " of " + std::to_string(length) +
                     " bytes at offset " + std::to_string(offset));
    in_flight_.fetch_sub(1);
    cmd->batch->Done();
    // A handle that died or closed (its I/O thread may not have recorded
    // why yet) is finished: record why, so callers move to another
    // connection and see the real cause, not libnbd's "invalid state".
    if (nbd_aio_is_dead(h_) == 1 || nbd_aio_is_closed(h_) == 1) {
      MarkDead(timed_out_.load() ? TimedOutStatus(label_)
                                 : IoError(label_ + ": NBD connection closed"));
    }
    Kick();
    return alive() ? st : failure();
  }
  Kick();  // The I/O thread may have to poll for POLLOUT now.
  return Status::Ok();
}

Status NbdSource::Connection::StartPread(void* buf, uint32_t length,
                                         uint64_t offset, Command* cmd) {
  return Start(cmd, "read", length, offset, [&](nbd_completion_callback done) {
    return nbd_aio_pread(h_, buf, length, offset, done, 0);
  });
}

Status NbdSource::Connection::StartBlockStatus(uint64_t length, uint64_t offset,
                                               Command* cmd) {
  return Start(
      cmd, "block status", length, offset, [&](nbd_completion_callback done) {
        return nbd_aio_block_status(
            h_, length, offset,
            nbd_extent_callback{
                .callback = &OnExtent, .user_data = cmd, .free = nullptr},
            done, 0);
      });
}

Status NbdSource::Connection::CommandStatus(const Command& cmd,
                                            const std::string& what) const {
  if (cmd.err == 0) return Status::Ok();
  if (cmd.timed_out) return TimedOutStatus(what);
  return FromErrno(cmd.err, what + " failed");
}

int NbdSource::Connection::OnComplete(void* user_data, int* error) {
  auto* cmd = static_cast<Command*>(user_data);
  Connection* conn = cmd->conn;
  cmd->err = *error;
  // Commands aborted because the watchdog shut the socket report ENOTCONN;
  // the caller should learn that the server hung.
  cmd->timed_out = *error != 0 && conn->timed_out_.load();
  conn->in_flight_.fetch_sub(1);
  cmd->batch->Done();  // Last: the caller may free cmd from here on.
  return 1;            // Retire the command automatically.
}

int NbdSource::Connection::OnExtent(void* user_data, const char* metacontext,
                                    uint64_t /*offset*/, uint32_t* entries,
                                    size_t nr_entries, int* /*error*/) {
  auto* cmd = static_cast<Command*>(user_data);
  // Only the first answer for our context counts (a buggy server may repeat).
  if (cmd->got_entries || std::strcmp(metacontext, cmd->context) != 0) {
    return 0;
  }
  cmd->entries.assign(entries, entries + nr_entries);
  cmd->got_entries = true;
  return 0;
}

// The I/O thread. Everything that touches the socket from here is
// non-blocking; the only wait is poll(). Ends when libnbd reports the
// connection dead or closed, at which point libnbd has completed every
// command (with an error), so no caller is left waiting.
void NbdSource::Connection::Loop() {
  bool was_busy = false;
  bool killed = false;
  Clock::time_point last_progress = Clock::now();
  while (nbd_aio_is_dead(h_) != 1 && nbd_aio_is_closed(h_) != 1) {
    const bool busy = in_flight_.load() > 0 || stopping_.load();
    const Clock::time_point now = Clock::now();
    // An idle server owes us nothing; the clock starts with the first
    // command after an idle spell.
    if (busy && !was_busy) last_progress = now;
    was_busy = busy;

    int timeout = -1;
    if (busy && !killed) {
      const unsigned limit_ms = stopping_.load()
                                    ? std::min(timeout_ms_, kDisconnectGraceMs)
                                    : timeout_ms_;
      const Clock::time_point deadline =
          last_progress + std::chrono::milliseconds(limit_ms);
      if (now >= deadline) {
        // Shutting the socket makes libnbd's next read or write fail, so it
        // moves to DEAD and completes every command with an error.
        if (!stopping_.load()) timed_out_.store(true);
        killed = true;
        shutdown(sock_, SHUT_RDWR);
      } else {
        timeout = static_cast<int>(
            std::chrono::ceil<std::chrono::milliseconds>(deadline - now)
                .count());
      }
    }

    const unsigned dir = nbd_aio_get_direction(h_);
    short events = 0;
    if (dir & LIBNBD_AIO_DIRECTION_READ) events |= POLLIN;
    if (dir & LIBNBD_AIO_DIRECTION_WRITE) events |= POLLOUT;
    pollfd fds[2] = {{events != 0 ? sock_ : -1, events, 0}, {wake_, POLLIN, 0}};
    if (poll(fds, 2, timeout) == -1) {
      if (errno == EINTR) continue;
      // Cannot wait any more; make libnbd fail what is in flight.
      MarkDead(FromErrno(errno, label_ + ": poll"));
      killed = true;
      shutdown(sock_, SHUT_RDWR);
      (void)nbd_aio_notify_read(h_);
      continue;
    }
    if (fds[1].revents & POLLIN) {
      uint64_t count;
      (void)!read(wake_, &count, sizeof count);
    }
    const short revents = fds[0].revents;
    if (revents == 0) continue;
    // Another thread may have moved the state machine since poll() began.
    const unsigned now_dir = nbd_aio_get_direction(h_);
    int rc = 0;
    if ((now_dir & LIBNBD_AIO_DIRECTION_READ) &&
        (revents & (POLLIN | POLLHUP | POLLERR))) {
      last_progress = Clock::now();
      rc = nbd_aio_notify_read(h_);
    } else if ((now_dir & LIBNBD_AIO_DIRECTION_WRITE) &&
               (revents & (POLLOUT | POLLHUP | POLLERR))) {
      rc = nbd_aio_notify_write(h_);
    }
    // Keep the reason; the loop ends at the top if the handle died.
    if (rc == -1 && nbd_aio_is_dead(h_) == 1) {
      MarkDead(timed_out_.load() ? TimedOutStatus(label_)
                                 : LastNbdError(label_));
    }
  }
  MarkDead(timed_out_.load()
               ? TimedOutStatus(label_)
               : IoError(label_ + ": NBD connection closed by the server"));
}

// ---------------------------------------------------------------------------

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

  // A piece is one NBD read. Unaligned head and tail pieces (only when the
  // server has a minimum block size) read whole blocks into `bounce`.
  struct Piece {
    Connection::Command cmd;
    uint64_t offset = 0;  // Of the NBD read.
    uint32_t length = 0;
    std::byte* dst = nullptr;
    std::vector<std::byte> bounce;
    size_t skip = 0;  // Bounce: bytes before the caller's data.
    size_t copy = 0;  // Bounce: bytes to copy to dst.
  };
  const uint64_t mask = min_block_ - 1;
  std::vector<Piece> pieces;
  pieces.reserve(bufs.size() + total / max_request_ + 2);
  // Each buffer is covered by its own pieces, so no piece straddles two
  // buffers and every byte lands where it belongs without a staging copy.
  uint64_t buf_offset = offset;
  for (const auto& buf : bufs) {
    const uint64_t end = buf_offset + buf.size();
    auto add_bounce = [&](uint64_t from, uint64_t to) {
      Piece& p = pieces.emplace_back();
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
      Piece& p = pieces.emplace_back();
      p.offset = pos;
      p.length = static_cast<uint32_t>(
          std::min<uint64_t>(max_request_, aligned_end - pos));
      p.dst = buf.data() + (pos - buf_offset);
      pos += p.length;
    }
    if (pos < end) add_bounce(pos, end);
    buf_offset = end;
  }

  // Everything goes in flight at once; pieces must not move from here on.
  Batch batch;
  Status st;
  for (Piece& p : pieces) {
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

  for (const Piece& p : pieces) {
    if (p.cmd.err != 0) {
      return p.cmd.conn->CommandStatus(
          p.cmd, "NBD export '" + export_name_ + "': read of " +
                     std::to_string(p.length) + " bytes at offset " +
                     std::to_string(p.offset));
    }
  }
  for (const Piece& p : pieces) {
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
