#include "backend/store/chunk_store.h"

#include <zstd.h>

#include <cstring>
#include <new>
#include <utility>

#include "backend/store/sha256.h"

namespace ckptfs {

namespace {

// Contexts kept for reuse; more are created when more threads need one.
constexpr size_t kMaxPooled = 16;

struct CCtxFree {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
struct DCtxFree {
  void operator()(ZSTD_DCtx* c) const { ZSTD_freeDCtx(c); }
};
using CCtx = std::unique_ptr<ZSTD_CCtx, CCtxFree>;
using DCtx = std::unique_ptr<ZSTD_DCtx, DCtxFree>;

Status Corrupt(const ChunkHash& hash, const std::string& what) {
  return IoError("chunk " + HashToHex(hash) + ": " + what + " (store corrupt)");
}

}  // namespace

struct ChunkStore::ContextPool {
  std::mutex mu;
  std::vector<CCtx> compress;    // GUARDED_BY(mu)
  std::vector<DCtx> decompress;  // GUARDED_BY(mu)

  CCtx TakeCompress() {
    {
      std::lock_guard lock(mu);
      if (!compress.empty()) {
        CCtx c = std::move(compress.back());
        compress.pop_back();
        return c;
      }
    }
    CCtx c(ZSTD_createCCtx());
    if (!c) throw std::bad_alloc();
    return c;
  }
  void Return(CCtx c) {
    std::lock_guard lock(mu);
    if (compress.size() < kMaxPooled) compress.push_back(std::move(c));
  }
  DCtx TakeDecompress() {
    {
      std::lock_guard lock(mu);
      if (!decompress.empty()) {
        DCtx d = std::move(decompress.back());
        decompress.pop_back();
        return d;
      }
    }
    DCtx d(ZSTD_createDCtx());
    if (!d) throw std::bad_alloc();
    return d;
  }
  void Return(DCtx d) {
    std::lock_guard lock(mu);
    if (decompress.size() < kMaxPooled) decompress.push_back(std::move(d));
  }
};

bool IsAllZero(std::span<const std::byte> data) {
  if (data.empty()) return true;
  // data[0] == 0 and data[i] == data[i + 1] for every i: all zero, checked
  // by one memcmp at memory speed.
  return data[0] == std::byte{0} &&
         std::memcmp(data.data(), data.data() + 1, data.size() - 1) == 0;
}

ChunkStore::ChunkStore(std::shared_ptr<ObjectStore> objects,
                       uint32_t chunk_size, int zstd_level,
                       bool plain_if_incompressible)
    : objects_(std::move(objects)),
      chunk_size_(chunk_size),
      zstd_level_(zstd_level),
      plain_if_incompressible_(plain_if_incompressible),
      pool_(std::make_unique<ContextPool>()) {}

ChunkStore::~ChunkStore() = default;

std::string ChunkStore::KeyOf(const ChunkHash& hash) {
  const std::string hex = HashToHex(hash);
  return "chunks/" + hex.substr(0, 2) + "/" + hex;
}

Result<ChunkRef> ChunkStore::Put(std::span<const std::byte> data,
                                 ChunkPutStats* stats,
                                 ObjectStore::Batch* batch) {
  if (stats != nullptr) *stats = {};
  if (data.empty() || data.size() > chunk_size_) {
    return InvalidArgument("chunk of " + std::to_string(data.size()) +
                           " bytes; chunks hold 1 to " +
                           std::to_string(chunk_size_) + " bytes");
  }
  if (IsAllZero(data)) return ChunkRef{ChunkHash{}, true};

  const ChunkRef ref{Sha256(data), false};
  const std::string key = KeyOf(ref.hash);
  // Dedup: an existing object holds these bytes already. Touching it tells
  // gc the chunk is in use again (see Store::CollectGarbage); one that gc
  // removed meanwhile is simply written again.
  ASSIGN_OR_RETURN(const bool exists, objects_->Touch(key));
  if (exists) return ref;

  const size_t bound = ZSTD_compressBound(data.size());
  auto frame = std::make_unique_for_overwrite<std::byte[]>(bound);
  CCtx cctx = pool_->TakeCompress();
  const size_t n = ZSTD_compressCCtx(cctx.get(), frame.get(), bound,
                                     data.data(), data.size(), zstd_level_);
  pool_->Return(std::move(cctx));
  if (ZSTD_isError(n)) {
    return Internal("chunk " + HashToHex(ref.hash) +
                    ": zstd compression failed: " + ZSTD_getErrorName(n));
  }
  std::span<const std::byte> bytes(frame.get(), n);
  // Not smaller compressed: store the plain bytes (see the header). A frame
  // exactly as long as the chunk goes plain too, so sizes never collide.
  if (plain_if_incompressible_ && n >= data.size()) bytes = data;
  RETURN_IF_ERROR(batch != nullptr ? batch->Put(key, bytes)
                                   : objects_->Put(key, bytes));
  if (stats != nullptr) *stats = {bytes.size(), true};
  return ref;
}

Status ChunkStore::Get(const ChunkRef& ref, std::span<std::byte> out,
                       bool* damaged) {
  bool ignored = false;
  if (damaged == nullptr) damaged = &ignored;
  *damaged = false;
  // Read whole but wrong: the object itself is bad.
  auto bad = [&](const std::string& what) {
    *damaged = true;
    return Corrupt(ref.hash, what);
  };
  if (out.empty() || out.size() > chunk_size_) {
    return InvalidArgument("chunk read of " + std::to_string(out.size()) +
                           " bytes; chunks hold 1 to " +
                           std::to_string(chunk_size_) + " bytes");
  }
  if (ref.zero) {
    std::memset(out.data(), 0, out.size());
    return Status::Ok();
  }
  const std::string key = KeyOf(ref.hash);
  auto size = objects_->GetInto(key, out);
  if (!size.ok()) {
    if (size.status().code() == Code::kNotFound) {
      return Corrupt(ref.hash, "missing");
    }
    return IoError("chunk " + HashToHex(ref.hash) + ": " +
                   size.status().ToString());
  }
  if (plain_if_incompressible_ && *size == out.size()) {
    if (Sha256(out) != ref.hash) return bad("hash mismatch");
    return Status::Ok();
  }
  // A zstd frame: GetInto left a smaller one in out (decompression cannot
  // work in place, so it moves to a per-thread buffer); a larger one (an
  // incompressible chunk of a "zstd" store) is read again whole.
  thread_local std::vector<std::byte> small;
  std::vector<std::byte> large;
  std::span<const std::byte> frame;
  if (*size <= out.size()) {
    small.assign(out.begin(), out.begin() + *size);
    frame = small;
  } else {
    auto whole = objects_->Get(key);
    if (!whole.ok()) {
      return IoError("chunk " + HashToHex(ref.hash) + ": " +
                     whole.status().ToString());
    }
    large = std::move(whole).value();
    frame = large;
  }
  const unsigned long long content =
      ZSTD_getFrameContentSize(frame.data(), frame.size());
  if (content == ZSTD_CONTENTSIZE_ERROR) {
    return bad("not a zstd frame");
  }
  if (content != ZSTD_CONTENTSIZE_UNKNOWN && content != out.size()) {
    return bad("holds " + std::to_string(content) + " bytes, expected " +
               std::to_string(out.size()));
  }
  DCtx dctx = pool_->TakeDecompress();
  const size_t n = ZSTD_decompressDCtx(dctx.get(), out.data(), out.size(),
                                       frame.data(), frame.size());
  pool_->Return(std::move(dctx));
  if (ZSTD_isError(n)) {
    return bad(std::string("undecodable: ") + ZSTD_getErrorName(n));
  }
  if (n != out.size()) {
    return bad("holds " + std::to_string(n) + " bytes, expected " +
               std::to_string(out.size()));
  }
  if (Sha256(out) != ref.hash) return bad("hash mismatch");
  return Status::Ok();
}

}  // namespace ckptfs
