// StoreSource: one disk of a stored backup as an ImageSource, read through
// its ChunkIndex (Store::OpenImage makes them).
//
// Contract: size() is the index's size. A read maps to the chunks it
// covers; each is fetched and verified by ChunkStore::Get, so a missing or
// corrupt chunk fails the read with kIoError instead of returning wrong
// bytes. Zero chunks read as zeros without I/O. A chunk that is only partly
// covered is decoded into a scratch buffer; whole chunks decode straight into
// the caller's buffer (also across preadv's buffers when a chunk lies inside
// one of them). extents() reports zero chunks as holes (hole and zero) and
// the others as data, merging neighbours of one kind. It answers with the
// index's NextAllocated/NextHole: a call costs a few index steps per extent
// returned, not one step per chunk covered, so SEEK_DATA/SEEK_HOLE over a
// large sparse disk stay cheap however far the answer is.
//
// Thread safety: immutable after construction; every method may be called
// concurrently from any thread. Reads run in the caller's thread.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "backend/image_source.h"
#include "backend/store/chunk_index.h"
#include "backend/store/chunk_store.h"
#include "backend/store/types.h"

namespace ckptfs {

class StoreSource : public ImageSource {
 public:
  // REQUIRES: index->chunk_size() equals chunks->chunk_size().
  StoreSource(std::shared_ptr<ChunkStore> chunks,
              std::shared_ptr<const ChunkIndex> index);
  // A format 1 manifest (as ParseManifest returns it) as its DenseIndex.
  StoreSource(std::shared_ptr<ChunkStore> chunks, Manifest manifest);

  uint64_t size() const override { return index_->size(); }
  // pread: ImageSource's default, one buffer through preadv.
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override;
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override;
  uint32_t preferred_block_size() const override {
    return index_->chunk_size();
  }
  uint32_t max_request() const override { return kMaxRequest; }

  const ChunkIndex& index() const { return *index_; }

  // Index steps so far (ChunkIndex::index_steps): what tests count instead
  // of timing a seek.
  uint64_t index_steps() const { return index_->index_steps(); }

  static constexpr uint32_t kMaxRequest = 32u << 20;

 private:
  Status CheckRange(uint64_t offset, uint64_t length, const char* what) const;
  std::string Name() const;

  const std::shared_ptr<ChunkStore> chunks_;
  const std::shared_ptr<const ChunkIndex> index_;
};

}  // namespace ckptfs
