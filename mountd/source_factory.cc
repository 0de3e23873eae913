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

// Opens the real source (the manifest) on first use; a failed open is
// retried next time. While a hold is taken (an open file) the source stays
// loaded; when the last hold goes it is dropped, and with it the manifest.
// A read outside any hold (read-ahead finishing after the close) loads it
// for as long as that read, or another one, runs.
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

  void Hold() {
    std::lock_guard lock(mu_);
    ++holds_;
  }
  void Unhold() {
    std::lock_guard lock(mu_);
    if (--holds_ == 0) held_.reset();
  }

 private:
  Result<std::shared_ptr<ImageSource>> Source() {
    std::lock_guard lock(mu_);
    std::shared_ptr<ImageSource> src = held_ ? held_ : loaded_.lock();
    if (!src) {
      ASSIGN_OR_RETURN(src, store_.OpenImage(record_, disk_));
      if (src->size() != size_) {
        return IoError("backup " + record_.id + " disk " + disk_ +
                       ": manifest size differs from the backup record");
      }
      loaded_ = src;
    }
    if (holds_ > 0) held_ = src;
    return src;
  }

  Store& store_;
  const BackupRecord record_;
  const std::string disk_;
  const uint64_t size_;
  std::mutex mu_;
  size_t holds_ = 0;                   // guarded by mu_
  std::shared_ptr<ImageSource> held_;  // while holds_ > 0; guarded by mu_
  std::weak_ptr<ImageSource> loaded_;  // guarded by mu_
};

// Reads through the cache; a read that fails there is tried once more
// straight from the store. The cache fills whole blocks (1 MiB = 4 chunks),
// so one damaged chunk fails the reads of its whole block; the direct read
// touches only the chunks the request covers, so the good chunks beside a
// damaged one still read (the kernel retries a failed read page by page).
class SalvagingSource : public ImageSource {
 public:
  SalvagingSource(std::shared_ptr<ImageSource> cached,
                  std::shared_ptr<LazySource> direct)
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

  LazySource& lazy() const { return *direct_; }

 private:
  const std::shared_ptr<ImageSource> cached_;
  const std::shared_ptr<LazySource> direct_;
};

// What HoldImage hands out: the image, and the hold released with it.
struct Held {
  explicit Held(std::shared_ptr<SalvagingSource> s) : image(std::move(s)) {
    image->lazy().Hold();
  }
  ~Held() { image->lazy().Unhold(); }
  Held(const Held&) = delete;
  Held& operator=(const Held&) = delete;

  const std::shared_ptr<SalvagingSource> image;
};

}  // namespace

std::shared_ptr<ImageSource> OpenStoredDisk(Store& store,
                                            const BackupRecord& record,
                                            const BackupDisk& disk,
                                            BlockCache& cache) {
  auto lazy = std::make_shared<LazySource>(store, record, disk.name, disk.size);
  return std::make_shared<SalvagingSource>(cache.Wrap(lazy), lazy);
}

std::shared_ptr<ImageSource> HoldImage(
    const std::shared_ptr<ImageSource>& image) {
  auto stored = std::dynamic_pointer_cast<SalvagingSource>(image);
  if (!stored) return image;
  auto held = std::make_shared<Held>(std::move(stored));
  // Aliasing: reads go to the image, the count keeps the hold.
  return std::shared_ptr<ImageSource>(held, held->image.get());
}

}  // namespace ckptfs
