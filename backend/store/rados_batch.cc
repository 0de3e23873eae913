// RadosObjectStore's Batch: a backup's chunk writes as asynchronous RADOS
// operations, several in flight, so the OSD always has work queued while
// the writer's threads read, hash and compress the next chunks (a blocking
// write per chunk left the OSD idle between a reply and the next request).
#include <deque>
#include <mutex>
#include <rados/librados.hpp>
#include <utility>

#include "backend/store/rados_object_store.h"

namespace ckptfs {

class RadosObjectStore::AioBatch : public ObjectStore::Batch {
 public:
  explicit AioBatch(RadosObjectStore& store) : store_(store) {}
  // An uncommitted batch still waits for what it sent: the completions
  // must not be released while librados may call them (each is bounded by
  // the op timeout). What was written stays, unnamed, for gc.
  ~AioBatch() override { (void)WaitAll(); }

  Status Put(const std::string& key, std::span<const std::byte> data) override {
    RETURN_IF_ERROR(ValidateObjectKey(key));
    librados::ObjectWriteOperation op;
    store_.AddWrite(op, data, /*exclusive=*/false);
    Pending p{key, librados::Rados::aio_create_completion()};
    const int r = store_.io_->aio_operate(key, p.completion, &op);
    if (r < 0) {
      p.completion->release();
      return store_.Error(r, "put", key);
    }
    // Beyond the bound, this writer waits for the oldest write (outside the
    // lock: other writers go on queueing).
    Pending oldest;
    {
      std::lock_guard lock(mu_);
      pending_.push_back(std::move(p));
      if (pending_.size() <= kMaxInFlight) return first_error_;
      oldest = std::move(pending_.front());
      pending_.pop_front();
    }
    return Finish(std::move(oldest));
  }

  // Every write of the batch acked (durable on the OSDs), or the first
  // error of any of them.
  Status Commit() override { return WaitAll(); }

 private:
  // A bound on the writes in flight: enough to keep one OSD's queue busy
  // across the writer's gaps, little memory (16 x 256 KiB chunks).
  static constexpr size_t kMaxInFlight = 16;
  struct Pending {
    std::string key;
    librados::AioCompletion* completion = nullptr;
  };

  // Waits for p's write; the batch's first error, p's included.
  Status Finish(Pending p) {
    p.completion->wait_for_complete();
    const int r = p.completion->get_return_value();
    p.completion->release();
    std::lock_guard lock(mu_);
    if (r < 0 && first_error_.ok())
      first_error_ = store_.Error(r, "put", p.key);
    return first_error_;
  }

  Status WaitAll() {
    for (;;) {
      Pending p;
      {
        std::lock_guard lock(mu_);
        if (pending_.empty()) return first_error_;
        p = std::move(pending_.front());
        pending_.pop_front();
      }
      (void)Finish(std::move(p));
    }
  }

  RadosObjectStore& store_;
  std::mutex mu_;
  std::deque<Pending> pending_;  // guarded by mu_, oldest first
  Status first_error_;           // guarded by mu_
};

std::unique_ptr<ObjectStore::Batch> RadosObjectStore::NewBatch() {
  return std::make_unique<AioBatch>(*this);
}

}  // namespace ckptfs
