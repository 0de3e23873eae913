#include "backend/nbd_connection.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace ckptfs {

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

}  // namespace ckptfs
