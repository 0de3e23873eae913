// LocalObjectStore::Batch: one writer's temporaries, renamed into place
// together at Commit with two syncfs calls (local_object_store.h).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <mutex>
#include <vector>

#include "backend/store/local_files.h"
#include "backend/store/local_object_store.h"

namespace ckptfs {

using local_files::Fd;
using local_files::ParentOf;
using local_files::WriteAll;

// The temporaries of one writer, renamed into place together.
class LocalObjectStore::LocalBatch : public ObjectStore::Batch {
 public:
  explicit LocalBatch(LocalObjectStore& store) : store_(store) {}
  ~LocalBatch() override {
    for (const Pending& p : pending_) {
      store_.fs_.UnlinkAt(store_.dir_fd_, p.temp.c_str(), 0);
    }
  }
  Status Put(const std::string& key, std::span<const std::byte> data) override;
  Status Commit() override;

 private:
  struct Pending {
    std::string temp;  // relative to the root
    std::string key;
  };
  LocalObjectStore& store_;
  std::mutex mu_;
  std::vector<Pending> pending_;  // guarded by mu_
};

std::unique_ptr<ObjectStore::Batch> LocalObjectStore::NewBatch() {
  return std::make_unique<LocalBatch>(*this);
}

Status LocalObjectStore::LocalBatch::Put(const std::string& key,
                                         std::span<const std::byte> data) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string parent = ParentOf(key);
  const std::string path = store_.PathOf(key);
  if (!parent.empty()) {
    RETURN_IF_ERROR(store_.MakeDirectories(parent).Annotate("putting " + path));
  }
  const std::string temp =
      (parent.empty() ? "" : parent + "/") + store_.TempName();
  const int root = store_.dir_fd_;
  Fd file(store_.fs_.OpenAt(
      root, temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
      0600));
  if (file.get() < 0) {
    return FromErrno(errno, "creating " + store_.PathOf(temp));
  }
  Status st = WriteAll(store_.fs_, file.get(), data, store_.PathOf(temp));
  // Start writing back now, so the disk works while the backup copies on
  // and Commit's syncfs finds little left to flush. Only a hint: failures
  // here surface at the syncfs.
  if (st.ok()) {
    (void)::sync_file_range(file.get(), 0, 0, SYNC_FILE_RANGE_WRITE);
  }
  if (st.ok() && ::close(file.release()) != 0) {
    st = FromErrno(errno, "closing " + store_.PathOf(temp));
  }
  if (!st.ok()) {
    store_.fs_.UnlinkAt(root, temp.c_str(), 0);
    return st;
  }
  std::lock_guard lock(mu_);
  pending_.push_back({temp, key});
  return Status::Ok();
}

Status LocalObjectStore::LocalBatch::Commit() {
  std::vector<Pending> pending;
  {
    std::lock_guard lock(mu_);
    pending.swap(pending_);
  }
  if (pending.empty()) return Status::Ok();
  const int root = store_.dir_fd_;
  const std::string& dir = store_.dir_;
  // Whatever fails below, no temporary of this batch stays behind.
  auto drop_from = [&](size_t i) {
    for (; i < pending.size(); ++i) {
      store_.fs_.UnlinkAt(root, pending[i].temp.c_str(), 0);
    }
  };
  // Data first: no object becomes visible before its bytes are durable.
  if (store_.fs_.SyncFs(root) != 0) {
    const int err = errno;
    drop_from(0);
    return FromErrno(err, "syncing " + dir);
  }
  for (size_t i = 0; i < pending.size(); ++i) {
    const Pending& p = pending[i];
    if (store_.fs_.RenameAt2(root, p.temp.c_str(), root, p.key.c_str(), 0) !=
        0) {
      const int err = errno;
      drop_from(i);
      return FromErrno(err, "renaming " + store_.PathOf(p.temp) + " to " +
                                store_.PathOf(p.key));
    }
  }
  // Then the names.
  if (store_.fs_.SyncFs(root) != 0) return FromErrno(errno, "syncing " + dir);
  return Status::Ok();
}

}  // namespace ckptfs
