// LockLease: keeps a running backup's store lock alive. A lock with a lease
// (Store::Lock::lease) expires when it is not renewed for that long, and
// gc on any host may then remove it (Store::ExpireLocks) and stop keeping
// what the backup wrote or reused. The lease renews the lock in the
// background every quarter of the lease, and Hold() renews it once more
// right before the backup writes its record: if the lock is gone by then,
// the backup fails instead of completing with objects gc may have deleted.
//
// Thread safety: Hold() may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>

#include "backend/status.h"
#include "backend/store/store.h"

namespace ckptfs {

class LockLease {
 public:
  // Starts renewing `name` every `lease` / 4 (at least every second).
  LockLease(Store& store, std::string name, std::chrono::seconds lease);
  ~LockLease();  // stops renewing; deleting the lock is the caller's
  LockLease(const LockLease&) = delete;
  LockLease& operator=(const LockLease&) = delete;

  // Renews the lock now: an error if it is gone or cannot be renewed.
  Status Hold();

 private:
  void Loop();

  Store& store_;
  const std::string name_;
  const std::chrono::milliseconds every_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;  // guarded by mu_
  std::thread thread_;
};

}  // namespace ckptfs
