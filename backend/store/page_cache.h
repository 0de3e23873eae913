// PageCache: parsed format 2 index pages (index_page.h) of every open image
// of a Store, in one LRU with one byte budget, so that memory stays bounded
// however many and however large the open images are, while the pages near
// the root (shared by every lookup) stay cached. Pages are content-addressed:
// one hash is one page, whichever image or backup reads it.
//
// Get runs `load` (fetch, verify, parse) without holding the cache's lock,
// so a slow object read never blocks hits on other pages; two threads
// missing the same page may both load it (the second keeps the first's).
// A failed load is not cached.
//
// Thread safety: every method may be called concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>

#include "backend/status.h"
#include "backend/store/index_page.h"

namespace ckptfs {

class PageCache {
 public:
  explicit PageCache(size_t budget_bytes) : budget_(budget_bytes) {}

  using Loader = std::function<Result<IndexPage>()>;
  Result<std::shared_ptr<const IndexPage>> Get(const ChunkHash& hash,
                                               const Loader& load);

  // Bytes the cached pages are charged (at most the budget, except for one
  // page larger than it).
  size_t bytes() const;
  uint64_t hits() const;
  uint64_t misses() const;

  // What a page is charged: its entries plus a fixed overhead.
  static size_t Charge(const IndexPage& page);

 private:
  struct Entry {
    std::shared_ptr<const IndexPage> page;
    size_t charge = 0;
    std::list<ChunkHash>::iterator lru;  // position in lru_
  };
  void EvictLocked();

  const size_t budget_;
  mutable std::mutex mu_;
  std::map<ChunkHash, Entry> entries_;  // guarded by mu_
  std::list<ChunkHash> lru_;            // most recent first; guarded by mu_
  size_t bytes_ = 0;                    // guarded by mu_
  uint64_t hits_ = 0, misses_ = 0;      // guarded by mu_
};

}  // namespace ckptfs
