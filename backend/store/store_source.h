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
// the others as data, merging neighbours of one kind.
//
// Thread safety: immutable after construction; every method may be called
// concurrently from any thread. Reads run in the caller's thread.
#pragma once

#include <memory>

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
  Status pread(std::span<std::byte> buf, uint64_t offset) override;
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override;
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override;
  uint32_t preferred_block_size() const override {
    return manifest_.chunk_size;
  }
  uint32_t max_request() const override { return kMaxRequest; }

  const Manifest& manifest() const { return manifest_; }

  static constexpr uint32_t kMaxRequest = 32u << 20;

 private:
  Status CheckRange(uint64_t offset, uint64_t length, const char* what) const;

  const std::shared_ptr<ChunkStore> chunks_;
  const Manifest manifest_;
};

}  // namespace ckptfs
