#include "mountd/source_factory.h"

namespace ckptfs {

Result<LiveDiskSource> OpenLiveDisk(const NbdOptions& options,
                                    BlockCache& cache) {
  ASSIGN_OR_RETURN(std::shared_ptr<NbdSource> nbd, NbdSource::Open(options));
  LiveDiskSource out;
  out.image = cache.Wrap(nbd);
  out.nbd = std::move(nbd);
  return out;
}

}  // namespace ckptfs

#include <mutex>

#include "backend/store/store.h"

namespace ckptfs {
namespace {

// Opens the real source on first use; a failed open is retried next time.
class LazySource : public ImageSource {
 public:
  LazySource(Store& store, BackupRecord record, std::string disk, uint64_t size)
      : store_(store),
        record_(std::move(record)),
        disk_(std::move(disk)),
        size_(size) {}

  uint64_t size() const override { return size_; }
  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    ASSIGN_OR_RETURN(auto src, Source());
    return src->pread(buf, offset);
  }
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override {
    ASSIGN_OR_RETURN(auto src, Source());
    return src->preadv(bufs, offset);
  }
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override {
    ASSIGN_OR_RETURN(auto src, Source());
    return src->extents(offset, length);
  }
  uint32_t preferred_block_size() const override { return store_.chunk_size(); }

 private:
  Result<std::shared_ptr<ImageSource>> Source() {
    std::lock_guard lock(mu_);
    if (!source_) {
      ASSIGN_OR_RETURN(source_, store_.OpenImage(record_, disk_));
      if (source_->size() != size_) {
        source_.reset();
        return IoError("backup " + record_.id + " disk " + disk_ +
                       ": manifest size differs from the backup record");
      }
    }
    return source_;
  }

  Store& store_;
  const BackupRecord record_;
  const std::string disk_;
  const uint64_t size_;
  std::mutex mu_;
  std::shared_ptr<ImageSource> source_;  // guarded by mu_
};

// Reads through the cache; a read that fails there is tried once more
// straight from the store. The cache fills whole blocks (1 MiB = 4 chunks),
// so one damaged chunk fails the reads of its whole block; the direct read
// touches only the chunks the request covers, so the good chunks beside a
// damaged one still read (the kernel retries a failed read page by page).
class SalvagingSource : public ImageSource {
 public:
  SalvagingSource(std::shared_ptr<ImageSource> cached,
                  std::shared_ptr<ImageSource> direct)
      : cached_(std::move(cached)), direct_(std::move(direct)) {}

  uint64_t size() const override { return cached_->size(); }
  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    Status st = cached_->pread(buf, offset);
    return st.ok() ? st : direct_->pread(buf, offset);
  }
  Status preadv(std::span<const std::span<std::byte>> bufs,
                uint64_t offset) override {
    Status st = cached_->preadv(bufs, offset);
    return st.ok() ? st : direct_->preadv(bufs, offset);
  }
  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override {
    return cached_->extents(offset, length);
  }
  uint32_t preferred_block_size() const override {
    return cached_->preferred_block_size();
  }
  uint32_t max_request() const override { return cached_->max_request(); }

 private:
  const std::shared_ptr<ImageSource> cached_;
  const std::shared_ptr<ImageSource> direct_;
};

}  // namespace

std::shared_ptr<ImageSource> OpenStoredDisk(Store& store,
                                            const BackupRecord& record,
                                            const BackupDisk& disk,
                                            BlockCache& cache) {
  auto lazy = std::make_shared<LazySource>(store, record, disk.name, disk.size);
  return std::make_shared<SalvagingSource>(cache.Wrap(lazy), lazy);
}

}  // namespace ckptfs
