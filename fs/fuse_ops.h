// The FUSE operations table and the state its callbacks share with the mount
// (fs/fuse_mount.cc). Every op decodes its arguments, makes one call into the
// Filesystem and maps the Status to an errno with ToErrno(). Internal to fs/:
// nothing else in ckptfs includes fuse.h.
//
// Thread safety: the callbacks run concurrently on libfuse's worker threads;
// FuseSession's members say what guards them.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <unordered_set>

#include "fs/filesystem.h"

struct fuse_operations;

namespace ckptfs {

// Set once by the INIT callback, so that the mount can act once the kernel
// has negotiated the connection (fuse_mount.cc widens read-ahead then).
class InitSignal {
 public:
  // INIT arrived (from the INIT callback).
  void Set();
  // The loop ended: wakes a waiter that would otherwise wait out its timeout.
  void Cancel();
  // Waits until Set() or Cancel(), at most `timeout`. True once Set().
  bool WaitFor(std::chrono::milliseconds timeout);
  // True if Cancel() was called (a timeout is neither).
  bool cancelled();

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  bool set_ = false;        // guarded by mu_
  bool cancelled_ = false;  // guarded by mu_
};

// The FUSE callbacks' view of their mount (the private_data of fuse_new):
// the filesystem, and the handles open on it. The kernel drops RELEASE
// requests still queued when the connection ends (close() returns before the
// daemon reads its RELEASE; an unmount or an aborted connection right after
// loses it), so the handles left when the mount goes are freed with it.
struct FuseSession {
  Filesystem* fs = nullptr;
  std::mutex mu;
  std::unordered_set<FileHandle*> open;  // guarded by mu
  InitSignal init;
};

// The operations table for fuse_new; private_data must be a FuseSession.
const fuse_operations& FuseOperations();

}  // namespace ckptfs
