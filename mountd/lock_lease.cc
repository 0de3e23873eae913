#include "mountd/lock_lease.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <utility>

namespace ckptfs {

LockLease::LockLease(Store& store, std::string name, std::chrono::seconds lease)
    : store_(store),
      name_(std::move(name)),
      every_(std::max<std::chrono::milliseconds>(
          std::chrono::seconds(1),
          std::chrono::duration_cast<std::chrono::milliseconds>(lease) / 4)),
      thread_([this] { Loop(); }) {}

LockLease::~LockLease() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

Status LockLease::Hold() {
  auto renewed = store_.RenewLock(name_);
  if (!renewed.ok()) {
    return renewed.status().Annotate("cannot renew the store lock " + name_);
  }
  if (!*renewed) {
    return Status(Code::kIoError,
                  "the store lock " + name_ +
                      " expired and was removed (by gc on some host) while "
                      "the backup ran: it may miss objects gc removed, so it "
                      "does not complete; the next backup starts from the "
                      "last good one");
  }
  return Status::Ok();
}

void LockLease::Loop() {
  std::unique_lock lock(mu_);
  while (!cv_.wait_for(lock, every_, [this] { return stop_; })) {
    // No lock held across the store's I/O.
    lock.unlock();
    auto renewed = store_.RenewLock(name_);
    lock.lock();
    if (!renewed.ok()) {
      // Transient (the store did not answer): try again next time.
      spdlog::warn("cannot renew the store lock {}: {}", name_,
                   renewed.status().ToString());
    } else if (!*renewed) {
      // Gone for good: Hold() before the record fails the backup.
      spdlog::warn("the store lock {} expired and was removed", name_);
      return;
    }
  }
}

}  // namespace ckptfs
