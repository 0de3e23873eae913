// LocalObjectStore: an ObjectStore over a local directory; key "a/b/c" is the
// file DIR/a/b/c. The embedded default store.
//
// Crash safety: Put writes DIR/<parent>/.tmp.<name>.<random>, fsyncs it,
// renames it over the final name and fsyncs the directory (and, when it had
// to create directories, their parents), so after a crash an object is either
// complete or absent. Temporaries start with '.', which no key component may,
// so List never returns them; one a crash left behind is removed by
// RemoveStaleTemporaries. gc's DeleteIfUnusedSince first renames the object
// to DIR/<parent>/.trash.<name>, then checks its time on the moved inode: a
// Touch that found the object before the rename shows there (the object is
// put back), one after it finds nothing (Touch checks the name again after
// setting the time). Delete removes directories that became empty (a
// Put racing with that retries).
//
// Errors: the errno of a failed system call maps through FromErrno (ENOSPC ->
// kNoSpace, EIO -> kIoError, EACCES -> kPermission, ...) with the path in the
// message. A failed Put unlinks its temporary.
//
// Thread safety: all methods may be called concurrently from any thread and
// from several processes. The store holds a descriptor of DIR, so it keeps
// working on the directory it opened even if DIR is renamed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/store/object_store.h"
#include "backend/store/posix_fs.h"

namespace ckptfs {

class LocalObjectStore : public ObjectStore {
 public:
  // Opens the directory `dir`; with `create`, makes it (mode 0700, parents
  // as needed) if it is missing. kNotFound if it is missing otherwise.
  // Every change to the directory goes through `fs` (default: the system
  // calls; tests pass a fault-injecting one, which must outlive the store).
  static Result<std::unique_ptr<LocalObjectStore>> Open(const std::string& dir,
                                                        bool create,
                                                        PosixFs* fs = nullptr);
  ~LocalObjectStore() override;
  LocalObjectStore(const LocalObjectStore&) = delete;
  LocalObjectStore& operator=(const LocalObjectStore&) = delete;

  Status Put(const std::string& key, std::span<const std::byte> data) override;
  Status Create(const std::string& key,
                std::span<const std::byte> data) override;
  Result<std::vector<std::byte>> Get(const std::string& key) override;
  Result<size_t> GetInto(const std::string& key,
                         std::span<std::byte> buf) override;
  Result<bool> Exists(const std::string& key) override;
  Result<bool> Touch(const std::string& key) override;
  Result<int64_t> ModifiedTime(const std::string& key) override;
  Result<std::vector<std::string>> List(const std::string& prefix) override;
  Status Delete(const std::string& key) override;
  std::string location() const override { return dir_; }

  Result<bool> DeleteIfUnusedSince(const std::string& key,
                                   int64_t cutoff) override;
  Status Quarantine(const std::string& key) override;

  // Removes temporaries last modified before `cutoff` (epoch seconds): left
  // by a crashed writer. A running backup's temporaries are younger than its
  // store lock, so gc passes a cutoff before the oldest lock. Puts back an
  // object a killed gc had moved aside (see DeleteIfUnusedSince). Returns how
  // many temporaries it removed.
  Result<uint64_t> RemoveStaleTemporaries(int64_t cutoff) override;

  // Each batch writes its temporaries without fsync; its Commit() syncs the
  // filesystem once, renames the batch's temporaries into place, and syncs
  // again: two syncfs calls instead of two fsyncs per object. Destroyed
  // uncommitted, it removes its temporaries.
  std::unique_ptr<Batch> NewBatch() override;

 private:
  class LocalBatch;
  LocalObjectStore(std::string dir, int dir_fd, uint64_t nonce, PosixFs& fs);

  // Makes the directories of `parent` (a key prefix without trailing '/')
  // below the root, fsyncing the parent of each directory it creates.
  Status MakeDirectories(const std::string& parent);
  Status PutLoop(const std::string& key, std::span<const std::byte> data,
                 bool exclusive);
  Status PutOnce(const std::string& key, std::span<const std::byte> data,
                 bool exclusive, bool* retry);
  std::string PathOf(const std::string& key) const;
  // A fresh temporary name (no directory): never used before by any process.
  std::string TempName();

  const std::string dir_;
  const int dir_fd_;
  const uint64_t nonce_;  // random per instance: temporaries never collide
  std::atomic<uint64_t> next_temp_{0};
  PosixFs& fs_;
};

}  // namespace ckptfs
