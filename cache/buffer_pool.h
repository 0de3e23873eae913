#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace ckptfs::cache_internal {

// Recycles full-size block buffers. A cold sequential read evicts a block for
// every block it fills; reusing the evicted buffer saves an allocation whose
// first touch page-faults 256 times per MiB, and keeps the memory the cache
// holds at its budget instead of at whatever the allocator retains. Buffers
// are mmap'ed so those beyond the small free list go back to the system.
//
// Thread safety: thread-safe; buffers may be released on any thread, also
// after the cache is gone (deleters hold the pool).
class BufferPool : public std::enable_shared_from_this<BufferPool> {
 public:
  BufferPool(size_t block_size, size_t max_free)
      : block_size_(block_size), max_free_(max_free) {}
  ~BufferPool() {
    for (void* p : free_) munmap(p, block_size_);
  }

  // A writable buffer of n bytes, freed (or recycled) with its last owner.
  std::shared_ptr<std::byte[]> Get(size_t n) {
    if (n != block_size_) {
      return std::make_shared_for_overwrite<std::byte[]>(n);
    }
    void* p = nullptr;
    {
      std::lock_guard lock(mu_);
      if (!free_.empty()) {
        p = free_.back();
        free_.pop_back();
      }
    }
    if (p == nullptr) {
      p = mmap(nullptr, block_size_, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
    }
    auto self = shared_from_this();
    return std::shared_ptr<std::byte[]>(static_cast<std::byte*>(p),
                                        [self](std::byte* b) { self->Put(b); });
  }

 private:
  void Put(std::byte* b) {
    {
      std::lock_guard lock(mu_);
      if (free_.size() < max_free_) {
        free_.push_back(b);
        return;
      }
    }
    munmap(b, block_size_);
  }

  const size_t block_size_;
  const size_t max_free_;
  std::mutex mu_;
  std::vector<void*> free_;  // guarded by mu_
};

}  // namespace ckptfs::cache_internal
