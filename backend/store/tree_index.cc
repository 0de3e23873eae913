#include "backend/store/tree_index.h"

#include <algorithm>
#include <utility>

#include "backend/store/serialize.h"
#include "backend/store/sha256.h"

namespace ckptfs {

// ------------------------------------------------------------ TreeGeometry

uint64_t TreeGeometry::Span(int level) const {
  uint64_t span = leaf_span;
  for (int k = 0; k < level; ++k) span *= fan_out;
  return span;
}

TreeGeometry TreeGeometry::For(uint64_t chunks, uint32_t leaf_span,
                               uint32_t fan_out) {
  TreeGeometry g{leaf_span, fan_out, 0};
  for (uint64_t span = leaf_span; span < chunks; span *= fan_out) {
    ++g.depth;
    if (span > UINT64_MAX / fan_out) break;  // as ParseTreeManifest counts
  }
  return g;
}

// --------------------------------------------------------------- TreeIndex

TreeIndex::TreeIndex(std::string backup_id, std::string disk, uint64_t size,
                     uint32_t chunk_size, TreeGeometry geometry, TreeRoot root,
                     PageSource pages, std::shared_ptr<PageCache> cache)
    : backup_id_(std::move(backup_id)),
      disk_(std::move(disk)),
      size_(size),
      chunk_size_(chunk_size),
      count_(ChunkCount(size, chunk_size)),
      geometry_(geometry),
      root_(root),
      pages_(std::move(pages)),
      cache_(std::move(cache)) {}

Result<IndexPage> TreeIndex::LoadPage(const ChunkHash& hash) const {
  auto data = pages_(hash);
  if (!data.ok()) return data.status();
  if (Sha256(*data) != hash) return IoError("hash mismatch (store corrupt)");
  return ParseIndexPage(*data);
}

Result<std::shared_ptr<const IndexPage>> TreeIndex::ReadPage(
    const ChunkHash& hash, int level, uint64_t first) const {
  steps_.fetch_add(1, std::memory_order_relaxed);
  const std::string what =
      "index page " + HashToHex(hash) + " of " + backup_id_ + " disk " + disk_;
  Result<std::shared_ptr<const IndexPage>> got =
      cache_ ? cache_->Get(hash, [&] { return LoadPage(hash); })
             : [&]() -> Result<std::shared_ptr<const IndexPage>> {
    ASSIGN_OR_RETURN(IndexPage page, LoadPage(hash));
    return std::make_shared<const IndexPage>(std::move(page));
  }();
  if (!got.ok()) return got.status().Annotate(what);
  const IndexPage& page = **got;
  // One hash is one page: where it sits is checked on every use, cached or
  // not (a page put in the wrong place is corruption, not a hole).
  const uint32_t slots = level == 0 ? geometry_.leaf_span : geometry_.fan_out;
  if (page.level != level || page.first != first || page.slots != slots) {
    return IoError(what + ": corrupt (level " + std::to_string(page.level) +
                   " first " + std::to_string(page.first) + " where level " +
                   std::to_string(level) + " first " + std::to_string(first) +
                   " belongs)");
  }
  return got;
}

Result<ChunkRef> TreeIndex::Lookup(uint64_t i) const {
  if (i >= count_) {
    return InvalidArgument("stored image " + backup_id_ + "/" + disk_ +
                           ": chunk " + std::to_string(i) + " is beyond its " +
                           std::to_string(count_));
  }
  ChunkRef hole;
  hole.zero = true;
  if (!root_.hash) return hole;
  ChunkHash hash = *root_.hash;
  uint64_t first = 0;
  for (int level = geometry_.depth;; --level) {
    ASSIGN_OR_RETURN(const auto page_ptr, ReadPage(hash, level, first));
    const IndexPage& page = *page_ptr;
    const uint64_t span = level == 0 ? 1 : geometry_.Span(level - 1);
    const auto slot = static_cast<uint32_t>((i - first) / span);
    const auto* e = page.Find(slot);
    if (e == nullptr) return hole;
    if (level == 0) return ChunkRef{e->second, false};
    hash = e->second;
    first += slot * span;
  }
}

// The first allocated chunk >= from in the subtree, none if it has none.
Result<std::optional<uint64_t>> TreeIndex::Next(const ChunkHash& hash,
                                                int level, uint64_t first,
                                                uint64_t from) const {
  ASSIGN_OR_RETURN(const auto page_ptr, ReadPage(hash, level, first));
  const IndexPage& page = *page_ptr;
  const uint64_t span = level == 0 ? 1 : geometry_.Span(level - 1);
  const uint64_t rel = from > first ? (from - first) / span : 0;
  for (size_t k = page.LowerBound(static_cast<uint32_t>(rel));
       k < page.entries.size(); ++k) {
    const uint64_t child = first + page.entries[k].first * span;
    if (level == 0) return std::optional<uint64_t>(child);
    // Every present child holds data; only the one holding `from` may hold
    // it all before `from`, so this loop descends at most twice.
    ASSIGN_OR_RETURN(auto found, Next(page.entries[k].second, level - 1, child,
                                      std::max(from, child)));
    if (found) return found;
  }
  return std::optional<uint64_t>();
}

// The first hole >= from in the subtree (below count_), none if it has none.
Result<std::optional<uint64_t>> TreeIndex::Hole(const ChunkHash& hash,
                                                int level, uint64_t first,
                                                uint64_t from) const {
  ASSIGN_OR_RETURN(const auto page_ptr, ReadPage(hash, level, first));
  const IndexPage& page = *page_ptr;
  const uint64_t span = level == 0 ? 1 : geometry_.Span(level - 1);
  const uint64_t slots = level == 0 ? geometry_.leaf_span : geometry_.fan_out;
  uint64_t s = from > first ? (from - first) / span : 0;
  size_t k = page.LowerBound(static_cast<uint32_t>(s));
  for (; s < slots && first + s * span < count_; ++s) {
    const uint64_t child = first + s * span;
    if (k >= page.entries.size() || page.entries[k].first != s) {
      return std::optional<uint64_t>(std::max(from, child));  // a hole
    }
    if (level > 0 && !page.full[k]) {
      // Not full: it has a hole, unless all of them lie before `from`.
      ASSIGN_OR_RETURN(auto found, Hole(page.entries[k].second, level - 1,
                                        child, std::max(from, child)));
      if (found) return found;
    }
    ++k;
  }
  return std::optional<uint64_t>();
}

Result<uint64_t> TreeIndex::NextAllocated(uint64_t from) const {
  if (from >= count_ || !root_.hash) return count_;
  ASSIGN_OR_RETURN(auto found, Next(*root_.hash, geometry_.depth, 0, from));
  return found.value_or(count_);
}

Result<uint64_t> TreeIndex::NextHole(uint64_t from) const {
  if (from >= count_) return count_;
  if (!root_.hash) return from;
  if (root_.full) return count_;
  ASSIGN_OR_RETURN(auto found, Hole(*root_.hash, geometry_.depth, 0, from));
  return found.value_or(count_);
}

Status TreeIndex::Walk(
    const ChunkHash& hash, int level, uint64_t first, const ChunkFn* chunk_fn,
    const std::function<Status(const ChunkHash&)>* page_fn) const {
  if (page_fn != nullptr) RETURN_IF_ERROR((*page_fn)(hash));
  ASSIGN_OR_RETURN(const auto page_ptr, ReadPage(hash, level, first));
  const IndexPage& page = *page_ptr;
  const uint64_t span = level == 0 ? 1 : geometry_.Span(level - 1);
  for (const auto& [slot, h] : page.entries) {
    const uint64_t child = first + slot * span;
    if (level == 0) {
      if (child >= count_) return IoError("index page beyond the disk");
      if (chunk_fn != nullptr) RETURN_IF_ERROR((*chunk_fn)(child, {h, false}));
    } else {
      RETURN_IF_ERROR(Walk(h, level - 1, child, chunk_fn, page_fn));
    }
  }
  return Status::Ok();
}

Status TreeIndex::ForEachAllocated(const ChunkFn& fn) const {
  if (!root_.hash) return Status::Ok();
  return Walk(*root_.hash, geometry_.depth, 0, &fn, nullptr);
}

Status TreeIndex::ForEachPage(
    const std::function<Status(const ChunkHash&)>& fn) const {
  if (!root_.hash) return Status::Ok();
  return Walk(*root_.hash, geometry_.depth, 0, nullptr, &fn);
}

// -------------------------------------------------------- TreeIndexBuilder

TreeIndexBuilder::TreeIndexBuilder(uint64_t size, uint32_t chunk_size,
                                   TreeGeometry geometry,
                                   std::shared_ptr<const TreeIndex> base)
    : count_(ChunkCount(size, chunk_size)),
      geometry_(geometry),
      base_(std::move(base)) {}

void TreeIndexBuilder::Set(uint64_t i, const ChunkRef& ref) {
  // Without a base every chunk starts as a hole: a hole set is no change.
  if (ref.zero && !base_) return;
  std::lock_guard lock(mu_);
  changes_[i] = ref.zero ? ChunkRef{{}, true} : ref;
}

Result<TreeIndexBuilder::Sub> TreeIndexBuilder::BuildSub(
    int level, uint64_t first, Sub base, Changes::const_iterator begin,
    Changes::const_iterator end, Output& out) {
  if (begin == end) {
    if (base.hash) out.reused.push_back(*base.hash);
    return base;
  }
  IndexPage page;
  if (base.hash) {
    ASSIGN_OR_RETURN(const auto base_page,
                     base_->ReadPage(*base.hash, level, first));
    page = *base_page;
  } else {
    page.level = static_cast<uint8_t>(level);
    page.first = first;
    page.slots = level == 0 ? geometry_.leaf_span : geometry_.fan_out;
  }
  const uint64_t span = level == 0 ? 1 : geometry_.Span(level - 1);
  std::map<uint32_t, std::pair<ChunkHash, bool>> slots;
  for (size_t k = 0; k < page.entries.size(); ++k) {
    // A leaf's present slot is one whole chunk of data: full.
    slots[page.entries[k].first] = {page.entries[k].second,
                                    level == 0 || page.full[k]};
  }
  // Children of a rewritten page that no change falls in are the base's
  // subtrees, kept whole: recorded as reused below.
  std::vector<bool> changed(page.slots, false);
  for (auto it = begin; it != end;) {
    const auto s = static_cast<uint32_t>((it->first - first) / span);
    const uint64_t child_end = first + (uint64_t{s} + 1) * span;
    auto stop = it;
    while (stop != end && stop->first < child_end) ++stop;
    changed[s] = true;
    if (level == 0) {
      if (it->second.zero) {
        slots.erase(s);
      } else {
        slots[s] = {it->second.hash, true};
      }
    } else {
      Sub child;
      if (auto f = slots.find(s); f != slots.end()) {
        child = {f->second.first, f->second.second};
      }
      ASSIGN_OR_RETURN(
          Sub got, BuildSub(level - 1, first + s * span, child, it, stop, out));
      if (got.hash) {
        slots[s] = {*got.hash, got.full};
      } else {
        slots.erase(s);
      }
    }
    it = stop;
  }
  page.entries.clear();
  page.full.clear();
  bool full = true;
  for (uint64_t s = 0; s < page.slots && first + s * span < count_; ++s) {
    auto f = slots.find(static_cast<uint32_t>(s));
    if (f == slots.end() || !f->second.second) full = false;
  }
  for (const auto& [s, v] : slots) {
    page.entries.emplace_back(s, v.first);
    if (level > 0) {
      page.full.push_back(v.second);
      if (!changed[s]) out.reused.push_back(v.first);
    }
  }
  if (page.entries.empty()) return Sub{};
  std::vector<std::byte> bytes = SerializeIndexPage(page);
  const ChunkHash hash = Sha256(bytes);
  if (!base.hash || hash != *base.hash)
    out.pages.emplace(hash, std::move(bytes));
  return Sub{hash, full};
}

Result<TreeIndexBuilder::Output> TreeIndexBuilder::Build() {
  std::lock_guard lock(mu_);
  Output out;
  Sub base;
  if (base_) base = {base_->root().hash, base_->root().full};
  ASSIGN_OR_RETURN(Sub root, BuildSub(geometry_.depth, 0, base,
                                      changes_.begin(), changes_.end(), out));
  out.root = {root.hash, root.full};
  return out;
}

// --------------------------------------------------- TreeChunkIndexBuilder

TreeChunkIndexBuilder::TreeChunkIndexBuilder(
    std::string backup_id, std::string disk, uint64_t size, uint32_t chunk_size,
    TreeGeometry geometry, std::shared_ptr<const TreeIndex> base)
    : from_base_(base != nullptr),
      tree_(size, chunk_size, geometry, std::move(base)) {
  m_.backup_id = std::move(backup_id);
  m_.disk = std::move(disk);
  m_.size = size;
  m_.chunk_size = chunk_size;
  m_.leaf_span = geometry.leaf_span;
  m_.fan_out = geometry.fan_out;
  m_.depth = geometry.depth;
}

Result<BuiltIndex> TreeChunkIndexBuilder::Finish() {
  ASSIGN_OR_RETURN(TreeIndexBuilder::Output built, tree_.Build());
  BuiltIndex out;
  out.tree = m_;
  out.tree.has_root = built.root.hash.has_value();
  out.tree.root = built.root.hash.value_or(ChunkHash{});
  out.tree.full = built.root.full;
  out.pages = std::move(built.pages);
  return out;
}

// ---------------------------------------------------------------- MarkTree

Status MarkTree(const PageSource& source, const ChunkHash& root,
                std::optional<int> level, std::set<ChunkHash>* pages,
                std::vector<ChunkHash>* chunks) {
  if (!pages->insert(root).second) return Status::Ok();
  const std::string what = "index page " + HashToHex(root);
  auto data = source(root);
  if (!data.ok()) return data.status().Annotate(what);
  if (Sha256(*data) != root) {
    return IoError(what + ": hash mismatch (store corrupt)");
  }
  auto page = ParseIndexPage(*data);
  if (!page.ok()) return page.status().Annotate(what);
  if (level && page->level != *level) {
    return IoError(what + ": corrupt (level " + std::to_string(page->level) +
                   " where level " + std::to_string(*level) + " belongs)");
  }
  for (const auto& [slot, hash] : page->entries) {
    if (page->level == 0) {
      chunks->push_back(hash);
    } else {
      RETURN_IF_ERROR(MarkTree(source, hash, page->level - 1, pages, chunks));
    }
  }
  return Status::Ok();
}

}  // namespace ckptfs
