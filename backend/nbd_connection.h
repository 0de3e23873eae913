// NbdSource::Connection: one libnbd handle and the I/O thread that drives
// it, with the deadlines and failure tracking of its commands. NbdSource
// (nbd_source.cc) keeps a pool of them and spreads and retries reads over it.
//
// Thread safety: see the class comment below. Not for use outside
// backend/nbd_*.
#pragma once

#include <libnbd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/nbd_source.h"
#include "backend/status.h"

namespace ckptfs {
namespace nbd_internal {

using Clock = std::chrono::steady_clock;

inline constexpr uint32_t kMaxRequest = 32u << 20;
inline constexpr uint32_t kMinPreferred = 1u << 20;
// The request length of NBD_CMD_BLOCK_STATUS is 32 bits on the wire, and
// some servers mishandle lengths >= 2 GiB.
inline constexpr uint64_t kMaxBlockStatus = (uint64_t{1} << 31) - 1;
// How long a destructor waits for a graceful NBD_CMD_DISC before dropping.
inline constexpr unsigned kDisconnectGraceMs = 1000;
// qemu:dirty-bitmap:* contexts report dirty blocks with bit 0.
inline constexpr uint32_t kDirtyFlag = 1;

// The error of the libnbd call that just failed in this thread (libnbd keeps
// it thread-local, so call this right after the failure).
inline Status LastNbdError(const std::string& what) {
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

}  // namespace nbd_internal

using nbd_internal::Batch;
using nbd_internal::Clock;
using nbd_internal::kDirtyFlag;
using nbd_internal::kDisconnectGraceMs;
using nbd_internal::kMaxBlockStatus;
using nbd_internal::kMaxRequest;
using nbd_internal::kMinPreferred;
using nbd_internal::LastNbdError;

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

}  // namespace ckptfs
