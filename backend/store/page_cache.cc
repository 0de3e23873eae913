#include "backend/store/page_cache.h"

#include <utility>

namespace ckptfs {

size_t PageCache::Charge(const IndexPage& page) {
  // The page, its entries and its flags, and the map and list nodes.
  return sizeof(IndexPage) + page.entries.capacity() * sizeof(page.entries[0]) +
         page.full.capacity() / 8 + 128;
}

Result<std::shared_ptr<const IndexPage>> PageCache::Get(const ChunkHash& hash,
                                                        const Loader& load) {
  {
    std::lock_guard lock(mu_);
    auto it = entries_.find(hash);
    if (it != entries_.end()) {
      ++hits_;
      lru_.splice(lru_.begin(), lru_, it->second.lru);
      return it->second.page;
    }
    ++misses_;
  }
  // The object read and the hash check run unlocked.
  ASSIGN_OR_RETURN(IndexPage page, load());
  auto shared = std::make_shared<const IndexPage>(std::move(page));
  std::lock_guard lock(mu_);
  auto [it, inserted] = entries_.try_emplace(hash);
  if (!inserted) return it->second.page;  // another thread loaded it first
  lru_.push_front(hash);
  it->second = {shared, Charge(*shared), lru_.begin()};
  bytes_ += it->second.charge;
  EvictLocked();
  return shared;
}

void PageCache::EvictLocked() {
  // Never the page just added (the front): a caller holds it anyway.
  while (bytes_ > budget_ && lru_.size() > 1) {
    auto it = entries_.find(lru_.back());
    bytes_ -= it->second.charge;
    entries_.erase(it);
    lru_.pop_back();
  }
}

size_t PageCache::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

uint64_t PageCache::hits() const {
  std::lock_guard lock(mu_);
  return hits_;
}

uint64_t PageCache::misses() const {
  std::lock_guard lock(mu_);
  return misses_;
}

}  // namespace ckptfs
