// ChunkIndex: how one disk of one backup maps chunk numbers to chunks, read
// through one small interface so that the code above it (StoreSource, the
// backup's base lookups, gc mark, verify) does not know how the index is
// stored. DenseIndex is the store format 1 implementation: the whole
// Manifest (one entry per chunk of virtual size) in memory.
//
// ChunkIndexBuilder is the writer side: a backup starts from its base's
// index (or from nothing) and sets the chunks it copied or reused; Finish
// yields what the store writes. Format 2 (tree_index.h) is the other pair.
//
// Chunk numbers run from 0 to chunk_count() - 1. "Allocated" means a chunk
// with data (ChunkRef::zero false); the rest are holes and read as zeros.
//
// Thread safety: a ChunkIndex is immutable after construction; every method
// may be called concurrently. A builder's Set may be called concurrently for
// distinct chunk numbers; Finish once, after every Set has returned.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/status.h"
#include "backend/store/types.h"

namespace ckptfs {

class ChunkIndex {
 public:
  virtual ~ChunkIndex() = default;

  virtual const std::string& backup_id() const = 0;
  virtual const std::string& disk() const = 0;
  virtual uint64_t size() const = 0;  // virtual disk size in bytes
  virtual uint32_t chunk_size() const = 0;
  uint64_t chunk_count() const;
  // Plain length of chunk i (the last one may be short).
  uint64_t chunk_length(uint64_t i) const;

  // REQUIRES (else kInvalidArgument): i < chunk_count(). kIoError if the
  // index cannot be read.
  virtual Result<ChunkRef> Lookup(uint64_t i) const = 0;
  // The first allocated chunk at or after `from`, chunk_count() if none
  // (SEEK_DATA in chunks). REQUIRES: from <= chunk_count().
  virtual Result<uint64_t> NextAllocated(uint64_t from) const = 0;
  // The first hole at or after `from`, chunk_count() if none (SEEK_HOLE).
  virtual Result<uint64_t> NextHole(uint64_t from) const = 0;
  // Calls fn for every allocated chunk in ascending order; stops at and
  // returns fn's first error.
  using ChunkFn = std::function<Status(uint64_t i, const ChunkRef& ref)>;
  virtual Status ForEachAllocated(const ChunkFn& fn) const = 0;

  // Steps through the index structure so far (binary search probes, runs or
  // pages visited): what tests count instead of timing a seek.
  virtual uint64_t index_steps() const = 0;
};

// Bytes of allocated chunks: ForEachAllocated summed.
Result<uint64_t> AllocatedBytes(const ChunkIndex& index);

// Format 1: the dense manifest, plus an index of its runs (maximal stretches
// of zero or of data chunks, about 8 bytes each) so that NextAllocated and
// NextHole cost O(log runs), not one step per chunk.
class DenseIndex : public ChunkIndex {
 public:
  // REQUIRES: manifest is valid (as ParseManifest returns it).
  explicit DenseIndex(Manifest manifest);

  const std::string& backup_id() const override { return manifest_.backup_id; }
  const std::string& disk() const override { return manifest_.disk; }
  uint64_t size() const override { return manifest_.size; }
  uint32_t chunk_size() const override { return manifest_.chunk_size; }
  Result<ChunkRef> Lookup(uint64_t i) const override;
  Result<uint64_t> NextAllocated(uint64_t from) const override;
  Result<uint64_t> NextHole(uint64_t from) const override;
  Status ForEachAllocated(const ChunkFn& fn) const override;
  uint64_t index_steps() const override {
    return steps_.load(std::memory_order_relaxed);
  }

  const Manifest& manifest() const { return manifest_; }

 private:
  // The first chunk at or after `from` whose zero flag is `zero`.
  uint64_t NextOfKind(uint64_t from, bool zero) const;

  const Manifest manifest_;
  // Chunk number of the first chunk of each run, ascending; runs alternate
  // between zero and data, so the kind of run r is that of its first chunk.
  const std::vector<uint64_t> runs_;
  mutable std::atomic<uint64_t> steps_{0};
};

// What a builder made: the manifest to write (format 1: the dense one;
// format 2: the tree's root) and the new pages it names (format 2 only).
struct BuiltIndex {
  std::optional<Manifest> dense;
  TreeManifest tree;  // when dense is unset
  std::map<ChunkHash, std::vector<std::byte>> pages;
};

class ChunkIndexBuilder {
 public:
  virtual ~ChunkIndexBuilder() = default;
  // Chunk i of the new index.
  virtual void Set(uint64_t i, const ChunkRef& ref) = 0;
  // True: the builder starts from its base's index, so a chunk reused
  // unchanged needs no Set. False: it starts all holes and every chunk with
  // data must be Set.
  virtual bool from_base() const = 0;
  virtual Result<BuiltIndex> Finish() = 0;
};

// Builds a format 1 (dense) index.
class DenseIndexBuilder : public ChunkIndexBuilder {
 public:
  DenseIndexBuilder(std::string backup_id, std::string disk, uint64_t size,
                    uint32_t chunk_size);
  void Set(uint64_t i, const ChunkRef& ref) override { m_.chunks[i] = ref; }
  bool from_base() const override { return false; }
  Result<BuiltIndex> Finish() override;

 private:
  Manifest m_;
};

}  // namespace ckptfs
