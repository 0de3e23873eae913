// InjectingImageSource: forwards to a base ImageSource and injects what a
// real source does to its caller: it records every read (count, bytes,
// offsets, the most in flight), can run a probe before each read, delay reads
// (to widen races) or hold them at a gate until ReleaseReads(), and fails
// reads that touch chosen ranges, or the first N reads, with a chosen Status.
// The one fault-injecting image source of unit tests and fuzzers (the object
// store's is MemoryObjectStore's hook).
//
// A scatter read is forwarded as one pread of the whole range, as NbdSource
// issues it, so it is counted and faulted like one request.
//
// Thread safety: all methods may be called concurrently; set the probe
// before sharing the source.
#pragma once

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "backend/image_source.h"

namespace ckptfs {

class InjectingImageSource : public ImageSource {
 public:
  explicit InjectingImageSource(std::shared_ptr<ImageSource> base)
      : base_(std::move(base)) {}

  uint64_t size() const override { return base_->size(); }
  uint32_t max_request() const override { return base_->max_request(); }

  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override {
    size_t total = 0;
    for (const auto& b : bufs) total += b.size();
    std::vector<std::byte> tmp(total);
    RETURN_IF_ERROR(pread(tmp, offset));
    size_t pos = 0;
    for (const auto& b : bufs) {
      std::memcpy(b.data(), tmp.data() + pos, b.size());
      pos += b.size();
    }
    return Status::Ok();
  }

  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    if (probe_) probe_();
    std::chrono::microseconds delay;
    {
      std::unique_lock lock(mu_);
      ++reads_;
      bytes_ += buf.size();
      max_request_seen_ = std::max<uint64_t>(max_request_seen_, buf.size());
      reads_by_offset_[offset].push_back(buf.size());
      if (Status fault = FaultLocked(offset, buf.size()); !fault.ok()) {
        return fault;
      }
      ++inflight_;
      delay = delay_;
      gate_cv_.wait(lock, [&] { return !hold_; });
    }
    if (delay.count() > 0) std::this_thread::sleep_for(delay);
    Status status = base_->pread(buf, offset);
    std::lock_guard lock(mu_);
    --inflight_;
    return status;
  }

  // Runs before every read, outside the source's lock.
  void SetProbe(std::function<void()> probe) { probe_ = std::move(probe); }
  void set_delay(std::chrono::microseconds delay) {
    std::lock_guard lock(mu_);
    delay_ = delay;
  }
  void HoldReads() {
    std::lock_guard lock(mu_);
    hold_ = true;
  }
  void ReleaseReads() {
    {
      std::lock_guard lock(mu_);
      hold_ = false;
    }
    gate_cv_.notify_all();
  }

  // Reads touching [offset, offset + length) fail with `status`.
  void FailRange(uint64_t offset, uint64_t length, Status status) {
    std::lock_guard lock(mu_);
    ranges_.push_back({offset, length, std::move(status)});
  }
  // The next n reads fail with `status`.
  void FailFirstReads(int n, Status status) {
    std::lock_guard lock(mu_);
    fail_first_ = n;
    first_status_ = std::move(status);
  }
  // No more faults.
  void Clear() {
    std::lock_guard lock(mu_);
    ranges_.clear();
    fail_first_ = 0;
  }

  uint64_t reads() const {
    std::lock_guard lock(mu_);
    return reads_;
  }
  uint64_t bytes() const {
    std::lock_guard lock(mu_);
    return bytes_;
  }
  uint64_t inflight() const {
    std::lock_guard lock(mu_);
    return inflight_;
  }
  uint64_t max_request_seen() const {
    std::lock_guard lock(mu_);
    return max_request_seen_;
  }
  // Offset -> lengths of the reads at that offset.
  std::map<uint64_t, std::vector<uint64_t>> reads_by_offset() const {
    std::lock_guard lock(mu_);
    return reads_by_offset_;
  }
  // Bytes of [offset, offset + length) read, counting overlaps.
  uint64_t BytesReadIn(uint64_t offset, uint64_t length) const {
    std::lock_guard lock(mu_);
    uint64_t total = 0;
    for (const auto& [off, lengths] : reads_by_offset_) {
      for (uint64_t len : lengths) {
        const uint64_t lo = std::max(off, offset);
        const uint64_t hi = std::min(off + len, offset + length);
        if (lo < hi) total += hi - lo;
      }
    }
    return total;
  }

 private:
  struct Range {
    uint64_t offset;
    uint64_t length;
    Status status;
  };

  // The injected failure of a read of [offset, offset + length), or OK.
  Status FaultLocked(uint64_t offset, uint64_t length) {
    if (fail_first_ > 0) {
      --fail_first_;
      return first_status_;
    }
    for (const Range& r : ranges_) {
      if (offset < r.offset + r.length && r.offset < offset + length) {
        return r.status;
      }
    }
    return Status::Ok();
  }

  const std::shared_ptr<ImageSource> base_;
  std::function<void()> probe_;
  mutable std::mutex mu_;
  std::condition_variable gate_cv_;
  bool hold_ = false;                   // guarded by mu_
  std::chrono::microseconds delay_{0};  // guarded by mu_
  uint64_t reads_ = 0;                  // guarded by mu_ (and the rest)
  uint64_t bytes_ = 0;
  uint64_t inflight_ = 0;
  uint64_t max_request_seen_ = 0;
  std::map<uint64_t, std::vector<uint64_t>> reads_by_offset_;
  std::vector<Range> ranges_;
  int fail_first_ = 0;
  Status first_status_;
};

}  // namespace ckptfs
