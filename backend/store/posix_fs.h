// PosixFs: the system calls by which LocalObjectStore changes its directory,
// as a seam. Production uses Default() (the calls themselves); the crash
// tests put a fault-injecting file system here (tests/fakes/fault_fs.h) that
// records what was made durable and forgets the rest at a simulated crash,
// which SIGKILL cannot prove (the page cache survives it).
//
// Each method has the contract of the system call it names (return value
// and errno). Reads, stat and directory listing are not in the seam: they
// change nothing that a crash could lose.
//
// Thread safety: Default() is stateless; implementations must be safe to
// call from any thread.
#pragma once

#include <sys/stat.h>
#include <sys/types.h>

#include <cstddef>

namespace ckptfs {

class PosixFs {
 public:
  virtual ~PosixFs() = default;

  virtual int OpenAt(int dir_fd, const char* path, int flags, mode_t mode);
  virtual ssize_t Write(int fd, const void* buf, size_t n);
  virtual int Fsync(int fd);
  virtual int SyncFs(int fd);
  virtual int RenameAt2(int from_dir, const char* from, int to_dir,
                        const char* to, unsigned flags);
  virtual int UnlinkAt(int dir_fd, const char* path, int flags);
  virtual int MkdirAt(int dir_fd, const char* path, mode_t mode);

  // The system calls themselves.
  static PosixFs& Default();
};

}  // namespace ckptfs
