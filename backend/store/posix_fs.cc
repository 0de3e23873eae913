#include "backend/store/posix_fs.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

namespace ckptfs {

int PosixFs::OpenAt(int dir_fd, const char* path, int flags, mode_t mode) {
  return ::openat(dir_fd, path, flags, mode);
}

ssize_t PosixFs::Write(int fd, const void* buf, size_t n) {
  return ::write(fd, buf, n);
}

int PosixFs::Fsync(int fd) { return ::fsync(fd); }

int PosixFs::SyncFs(int fd) { return ::syncfs(fd); }

int PosixFs::RenameAt2(int from_dir, const char* from, int to_dir,
                       const char* to, unsigned flags) {
  return ::renameat2(from_dir, from, to_dir, to, flags);
}

int PosixFs::UnlinkAt(int dir_fd, const char* path, int flags) {
  return ::unlinkat(dir_fd, path, flags);
}

int PosixFs::MkdirAt(int dir_fd, const char* path, mode_t mode) {
  return ::mkdirat(dir_fd, path, mode);
}

PosixFs& PosixFs::Default() {
  static PosixFs fs;
  return fs;
}

}  // namespace ckptfs
