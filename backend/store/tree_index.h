// TreeIndex: store format 2's index of one disk, a Merkle tree of index
// pages (index_page.h) read through a PageSource, and TreeIndexBuilder,
// which makes a new tree from a base tree and the chunks that changed.
//
// Geometry (fixed per tree, recorded in the manifest): a leaf covers
// leaf_span chunks, an interior page fan_out children; a page at level k
// covers leaf_span * fan_out^k chunks starting at a multiple of that, and
// the root is at level depth, the least with leaf_span * fan_out^depth >=
// chunk count. Because page ranges are fixed, an incremental rewrites only
// the leaves its changes fall in and their paths to the root; every other
// subtree is the base's, named by its hash.
//
// Pages come through the PageCache given (shared by all open images of a
// Store), else straight from the PageSource.
//
// Cost: Lookup reads depth + 1 pages; NextAllocated and NextHole read at
// most two root-to-leaf paths (an empty child has no page and a full one is
// flagged in its parent, so neither is descended into); ForEachAllocated
// reads every page once.
//
// Thread safety: a TreeIndex is immutable; its methods may be called
// concurrently if the PageSource may be. A builder's Set may be called
// concurrently (it locks); Build once, after every Set returned.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "backend/store/chunk_index.h"
#include "backend/store/index_page.h"
#include "backend/store/page_cache.h"

namespace ckptfs {

// The geometry new trees get (docs/FORMAT.md says why these).
inline constexpr uint32_t kLeafSpan = 16;
inline constexpr uint32_t kFanOut = 8;

struct TreeGeometry {
  uint32_t leaf_span = 0;
  uint32_t fan_out = 0;
  uint8_t depth = 0;
  // Chunks a page of `level` covers.
  uint64_t Span(int level) const;
  // The geometry for `chunks` chunks. REQUIRES: leaf_span, fan_out >= 2 and
  // at most kMaxIndexSlots.
  static TreeGeometry For(uint64_t chunks, uint32_t leaf_span,
                          uint32_t fan_out);
};

// The bytes of the page with this hash (kIoError if unreadable or missing).
using PageSource =
    std::function<Result<std::vector<std::byte>>(const ChunkHash& hash)>;

struct TreeRoot {
  std::optional<ChunkHash> hash;  // none: the disk holds no data
  bool full = false;              // every chunk holds data
};

class TreeIndex : public ChunkIndex {
 public:
  TreeIndex(std::string backup_id, std::string disk, uint64_t size,
            uint32_t chunk_size, TreeGeometry geometry, TreeRoot root,
            PageSource pages, std::shared_ptr<PageCache> cache = nullptr);

  const std::string& backup_id() const override { return backup_id_; }
  const std::string& disk() const override { return disk_; }
  uint64_t size() const override { return size_; }
  uint32_t chunk_size() const override { return chunk_size_; }
  Result<ChunkRef> Lookup(uint64_t i) const override;
  Result<uint64_t> NextAllocated(uint64_t from) const override;
  Result<uint64_t> NextHole(uint64_t from) const override;
  Status ForEachAllocated(const ChunkFn& fn) const override;
  uint64_t index_steps() const override {
    return steps_.load(std::memory_order_relaxed);
  }

  const TreeGeometry& geometry() const { return geometry_; }
  const TreeRoot& root() const { return root_; }
  // The page expected at (level, first), from the cache or fetched,
  // verified (hash) and parsed: a mismatch of any kind is kIoError naming
  // the page.
  Result<std::shared_ptr<const IndexPage>> ReadPage(const ChunkHash& hash,
                                                    int level,
                                                    uint64_t first) const;
  // Every page of the tree, each once per occurrence (gc mark, verify).
  Status ForEachPage(const std::function<Status(const ChunkHash&)>& fn) const;

 private:
  Result<IndexPage> LoadPage(const ChunkHash& hash) const;
  Result<std::optional<uint64_t>> Next(const ChunkHash& hash, int level,
                                       uint64_t first, uint64_t from) const;
  Result<std::optional<uint64_t>> Hole(const ChunkHash& hash, int level,
                                       uint64_t first, uint64_t from) const;
  Status Walk(const ChunkHash& hash, int level, uint64_t first,
              const ChunkFn* chunk_fn,
              const std::function<Status(const ChunkHash&)>* page_fn) const;

  const std::string backup_id_, disk_;
  const uint64_t size_;
  const uint32_t chunk_size_;
  const uint64_t count_;
  const TreeGeometry geometry_;
  const TreeRoot root_;
  const PageSource pages_;
  const std::shared_ptr<PageCache> cache_;  // null: every page is fetched
  mutable std::atomic<uint64_t> steps_{0};
};

// A new tree: the base's (if any) with the chunks Set here replaced. Set of
// a zero ChunkRef makes the chunk a hole.
class TreeIndexBuilder {
 public:
  // REQUIRES: base (if set) has the same size, chunk size and geometry.
  TreeIndexBuilder(uint64_t size, uint32_t chunk_size, TreeGeometry geometry,
                   std::shared_ptr<const TreeIndex> base);

  void Set(uint64_t i, const ChunkRef& ref);

  struct Output {
    TreeRoot root;
    // Pages this tree has and its base has not, by hash (to be written).
    std::map<ChunkHash, std::vector<std::byte>> pages;
    // Roots of the base's subtrees kept whole (to be touched for gc).
    std::vector<ChunkHash> reused;
  };
  Result<Output> Build();

 private:
  struct Sub {
    std::optional<ChunkHash> hash;
    bool full = false;
  };
  using Changes = std::map<uint64_t, ChunkRef>;
  Result<Sub> BuildSub(int level, uint64_t first, Sub base,
                       Changes::const_iterator begin,
                       Changes::const_iterator end, Output& out);

  const uint64_t count_;
  const TreeGeometry geometry_;
  const std::shared_ptr<const TreeIndex> base_;
  std::mutex mu_;
  Changes changes_;  // guarded by mu_
};

// The format 2 ChunkIndexBuilder: a TreeIndexBuilder whose Finish yields a
// TreeManifest and the new pages.
class TreeChunkIndexBuilder : public ChunkIndexBuilder {
 public:
  // base: the base's tree when it has the same size, chunk size and
  // geometry (else null: every chunk with data must be Set).
  TreeChunkIndexBuilder(std::string backup_id, std::string disk, uint64_t size,
                        uint32_t chunk_size, TreeGeometry geometry,
                        std::shared_ptr<const TreeIndex> base);
  void Set(uint64_t i, const ChunkRef& ref) override { tree_.Set(i, ref); }
  bool from_base() const override { return from_base_; }
  Result<BuiltIndex> Finish() override;

 private:
  TreeManifest m_;
  const bool from_base_;
  TreeIndexBuilder tree_;
};

// gc's mark: every page of the subtree at `root` (its level as the page
// says, or `level` if given) and every chunk its leaves name, each subtree
// once: a page already in *pages is not descended into again. A page that
// is missing, damaged or in the wrong place is kIoError.
Status MarkTree(const PageSource& source, const ChunkHash& root,
                std::optional<int> level, std::set<ChunkHash>* pages,
                std::vector<ChunkHash>* chunks);

}  // namespace ckptfs
