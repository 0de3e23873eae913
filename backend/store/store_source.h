// StoreSource: one disk of a stored backup as an ImageSource, read through
// its manifest (Store::OpenImage makes them).
//
// Contract: size() is the manifest's size. A read maps to the chunks it
// covers; each is fetched and verified by ChunkStore::Get, so a missing or
// corrupt chunk fails the read with kIoError instead of returning wrong
// bytes. Zero chunks read as zeros without I/O. A chunk that is only partly
// covered is decoded into a scratch buffer; whole chunks decode straight into
// the caller's buffer (also across preadv's buffers when a chunk lies inside
// one of them). extents() reports zero chunks as holes (hole and zero) and
// the others as data, merging neighbours of one kind. It answers from an
// index of the manifest's runs (maximal stretches of zero or of data
// chunks), built once at construction: a call costs O(log runs + extents
// returned), not one step per chunk covered, so SEEK_DATA/SEEK_HOLE over a
// large sparse disk stay cheap however far the answer is.
//
// Thread safety: immutable after construction; every method may be called
// concurrently from any thread. Reads run in the caller's thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/image_source.h"
#include "backend/store/chunk_store.h"
#include "backend/store/types.h"

namespace ckptfs {

class StoreSource : public ImageSource {
 public:
  // REQUIRES: manifest is valid (as ParseManifest returns it) and its
  // chunk_size equals chunks->chunk_size().
  StoreSource(std::shared_ptr<ChunkStore> chunks, Manifest manifest);

  uint64_t size() const override { return manifest_.size; }
  // pread: ImageSource's default, one buffer through preadv.
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override;
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override;
  uint32_t preferred_block_size() const override {
    return manifest_.chunk_size;
  }
  uint32_t max_request() const override { return kMaxRequest; }

  const Manifest& manifest() const { return manifest_; }

  // Run-index entries extents() has looked at so far (binary search probes
  // and runs visited): what tests count instead of timing a seek.
  uint64_t index_steps() const {
    return index_steps_.load(std::memory_order_relaxed);
  }

  static constexpr uint32_t kMaxRequest = 32u << 20;

 private:
  Status CheckRange(uint64_t offset, uint64_t length, const char* what) const;

  const std::shared_ptr<ChunkStore> chunks_;
  const Manifest manifest_;
  // Chunk index of the first chunk of each run, ascending; runs alternate
  // between zero and data, so the kind of run r is that of its first chunk.
  // About 8 bytes per run: a disk with few holes costs next to nothing.
  const std::vector<uint64_t> runs_;
  mutable std::atomic<uint64_t> index_steps_{0};
};

}  // namespace ckptfs
