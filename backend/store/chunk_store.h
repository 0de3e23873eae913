// ChunkStore: the content-addressed chunk objects of a store.
//
// A chunk is named by the SHA-256 of its plain bytes and stored under
// chunks/<first 2 hex digits>/<64 hex digits> as one zstd frame of them or,
// with plain_if_incompressible (compression "auto") when zstd does not make
// it smaller, as the plain bytes themselves: then the object's size equals
// the chunk's length, which no stored frame has, and a read copies it
// straight into the caller's buffer without decompressing. All-zero
// chunks are never stored (ChunkRef::zero). A chunk is written once: Put
// skips the write (and the compression) when the object exists. Get verifies
// the SHA-256 of what it decoded, so corrupt, missing or foreign data is a
// kIoError naming the chunk, never wrong bytes.
//
// Store and every StoreSource share one ChunkStore (shared_ptr), so an open
// image keeps working after the Store object is gone.
//
// Thread safety: all methods may be called concurrently from any thread.
// Hashing and (de)compression run in the caller's thread; zstd contexts are
// pooled, and the pool's mutex is never held across work or I/O.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "backend/status.h"
#include "backend/store/object_store.h"
#include "backend/store/types.h"

namespace ckptfs {

struct ChunkPutStats {
  uint64_t stored_bytes = 0;  // bytes written to the object store
  bool new_chunk = false;     // false: zero chunk, or already stored
};

class ChunkStore {
 public:
  // REQUIRES: chunk_size > 0; zstd_level a valid zstd level.
  ChunkStore(std::shared_ptr<ObjectStore> objects, uint32_t chunk_size,
             int zstd_level, bool plain_if_incompressible);
  ~ChunkStore();
  ChunkStore(const ChunkStore&) = delete;
  ChunkStore& operator=(const ChunkStore&) = delete;

  // "chunks/ab/abcd..." for the chunk with this hash.
  static std::string KeyOf(const ChunkHash& hash);

  uint32_t chunk_size() const { return chunk_size_; }
  ObjectStore& objects() const { return *objects_; }

  // REQUIRES (else kInvalidArgument): 0 < data.size() <= chunk_size().
  // With a `batch`, a new chunk is written into it: the caller must Commit()
  // the batch before anything references the chunk.
  Result<ChunkRef> Put(std::span<const std::byte> data,
                       ChunkPutStats* stats = nullptr,
                       ObjectStore::Batch* batch = nullptr);

  // Reads the chunk into out; out.size() is its plain length (chunk_size(),
  // or less for the last chunk of a disk). Zero chunks fill out with zeros.
  // `damaged`, if given, is set when the object was read but its bytes do
  // not decode or verify (as opposed to missing or unreadable).
  Status Get(const ChunkRef& ref, std::span<std::byte> out,
             bool* damaged = nullptr);

 private:
  struct ContextPool;

  const std::shared_ptr<ObjectStore> objects_;
  const uint32_t chunk_size_;
  const int zstd_level_;
  const bool plain_if_incompressible_;
  const std::unique_ptr<ContextPool> pool_;
};

// True if every byte of data is zero.
bool IsAllZero(std::span<const std::byte> data);

}  // namespace ckptfs
