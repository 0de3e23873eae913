// FaultFs: a PosixFs over a real directory that knows what is durable, in
// the way of RocksDB's FaultInjectionTestFS. File data counts as durable up
// to the size it had at its last fsync (or a syncfs); a directory entry made
// or removed (create, rename, unlink, mkdir) counts as durable once its
// directory was fsynced (or a syncfs ran). Crash() then forgets everything
// that was not durable: it undoes the unsynced entry changes, newest first,
// and truncates files to their synced size, as a power cut would leave them.
//
// FailFrom(n) simulates the process dying at step n: the n-th mutating call
// (counting from 0) and every later one fail with EIO and change nothing.
//
// Limits of the model: files are assumed to be written by appending (as the
// store does), so truncating to the synced size restores their synced
// content; an unlinked or replaced file is kept by a hard link in `stash`
// (same file system as `root`, outside it) until the crash or Forget().
//
// Thread safety: all methods are serialised by one mutex.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "backend/store/posix_fs.h"

namespace ckptfs {

class FaultFs : public PosixFs {
 public:
  // `root`: the directory the store is opened on (file descriptors the fs
  // did not open are taken to be it); `stash`: an empty directory on the
  // same file system, outside root.
  FaultFs(std::string root, std::string stash);

  int OpenAt(int dir_fd, const char* path, int flags, mode_t mode) override;
  ssize_t Write(int fd, const void* buf, size_t n) override;
  int Fsync(int fd) override;
  int SyncFs(int fd) override;
  int RenameAt2(int from_dir, const char* from, int to_dir, const char* to,
                unsigned flags) override;
  int UnlinkAt(int dir_fd, const char* path, int flags) override;
  int MkdirAt(int dir_fd, const char* path, mode_t mode) override;

  // Mutating calls so far (also the failed ones).
  uint64_t steps() const;
  void FailFrom(uint64_t step);
  // Forgets what is not durable (see above), then works normally again
  // with everything now counted as durable.
  void Crash();

 private:
  struct Op {
    enum Kind { kCreate, kMkdir, kRename, kUnlink } kind;
    std::string dir;    // the directory whose fsync makes it durable
    std::string path;   // created / removed / renamed-to (relative to root)
    std::string from;   // kRename: the old path
    std::string saved;  // the file this op removed or replaced, in stash
    ino_t ino = 0;      // kCreate/kRename: the inode the entry names
    bool durable = false;
  };

  bool Fails();  // counts a step; true when it must fail
  std::string PathOf(int dir_fd, const char* path) const;
  std::string Save(const std::string& rel);  // hard link into stash
  void Undo(const Op& op);
  void TruncateUnsynced();
  // Calls fn for every regular file below root.
  void ForEachFile(const std::function<void(const std::filesystem::path&,
                                            const struct stat&)>& fn) const;

  const std::string root_, stash_;
  mutable std::mutex mu_;
  std::map<int, std::string> fd_paths_;  // fds opened through us
  std::map<ino_t, off_t> synced_size_;   // files created through us
  std::vector<Op> ops_;
  uint64_t steps_ = 0;
  uint64_t fail_from_ = UINT64_MAX;
  uint64_t saved_count_ = 0;
};

}  // namespace ckptfs
