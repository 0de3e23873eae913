// LocalObjectStore's maintenance: Touch and the gc delete that a Touch can
// race (DeleteIfUnusedSince), Quarantine of a damaged object, ModifiedTime,
// and RemoveStaleTemporaries after a crash (local_object_store.h).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "backend/store/local_files.h"
#include "backend/store/local_object_store.h"

namespace ckptfs {

using local_files::BaseOf;
using local_files::Fd;
using local_files::Hex64;
using local_files::Join;
using local_files::kBadPrefix;
using local_files::kTempPrefix;
using local_files::kTrashPrefix;
using local_files::OpenDir;
using local_files::ParentOf;
using local_files::Walk;

Result<bool> LocalObjectStore::Touch(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  if (::utimensat(dir_fd_, key.c_str(), nullptr, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return FromErrno(errno, "touch " + PathOf(key));
  }
  // The time may have landed on an inode gc had just moved aside (the name
  // was looked up before gc's rename): then gc saw the old time and deletes
  // it, and the name is gone now. Asking again closes that window.
  struct stat st;
  if (::fstatat(dir_fd_, key.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return FromErrno(errno, "stat " + PathOf(key));
  }
  return S_ISREG(st.st_mode);
}

Result<bool> LocalObjectStore::DeleteIfUnusedSince(const std::string& key,
                                                   int64_t cutoff) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string parent = ParentOf(key);
  const std::string name = BaseOf(key);
  const std::string path = PathOf(key);
  Fd dir(OpenDir(fs_, dir_fd_, parent));
  if (dir.get() < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return FromErrno(errno, "opening directory of " + path);
  }
  struct stat st;
  if (::fstatat(dir.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return FromErrno(errno, "stat " + path);
  }
  if (!S_ISREG(st.st_mode) || st.st_mtime >= cutoff) return false;
  // Move it aside, then look at the moved inode: a Touch that resolved the
  // name before the rename has set its time by now or will find the name
  // gone when it checks (see Touch); one after the rename fails.
  const std::string trash = std::string(kTrashPrefix) + name;
  if (fs_.RenameAt2(dir.get(), name.c_str(), dir.get(), trash.c_str(), 0) !=
      0) {
    if (errno == ENOENT) return false;
    return FromErrno(errno, "moving " + path + " aside");
  }
  // ENOENT below: another gc put it back (RemoveStaleTemporaries).
  if (::fstatat(dir.get(), trash.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return false;
    return FromErrno(errno, "stat " + PathOf(Join(parent, trash)));
  }
  if (st.st_mtime >= cutoff) {
    // Touched meanwhile: put it back, unless a writer stored it again.
    if (fs_.RenameAt2(dir.get(), trash.c_str(), dir.get(), name.c_str(),
                      RENAME_NOREPLACE) != 0) {
      fs_.UnlinkAt(dir.get(), trash.c_str(), 0);
    }
    return false;
  }
  if (fs_.UnlinkAt(dir.get(), trash.c_str(), 0) != 0) {
    if (errno == ENOENT) return false;
    return FromErrno(errno, "deleting " + path);
  }
  if (fs_.Fsync(dir.get()) != 0) {
    return FromErrno(errno, "syncing directory of " + path);
  }
  return true;
}

Status LocalObjectStore::Quarantine(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string parent = ParentOf(key);
  const std::string path = PathOf(key);
  Fd dir(OpenDir(fs_, dir_fd_, parent));
  if (dir.get() < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(path + ": no such object");
    }
    return FromErrno(errno, "opening directory of " + path);
  }
  // Several damaged copies of one key may come and go: keep each.
  const std::string bad = std::string(kBadPrefix) + BaseOf(key) + "." +
                          Hex64(nonce_) + "." +
                          std::to_string(next_temp_.fetch_add(1));
  if (fs_.RenameAt2(dir.get(), BaseOf(key).c_str(), dir.get(), bad.c_str(),
                    0) != 0) {
    if (errno == ENOENT) return NotFound(path + ": no such object");
    return FromErrno(errno, "moving " + path + " aside");
  }
  if (fs_.Fsync(dir.get()) != 0) {
    return FromErrno(errno, "syncing directory of " + path);
  }
  return Status::Ok();
}

Result<int64_t> LocalObjectStore::ModifiedTime(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  struct stat st;
  if (::fstatat(dir_fd_, key.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(PathOf(key) + ": no such object");
    }
    return FromErrno(errno, "stat " + PathOf(key));
  }
  return static_cast<int64_t>(st.st_mtim.tv_sec);
}

Result<uint64_t> LocalObjectStore::RemoveStaleTemporaries(int64_t cutoff) {
  uint64_t removed = 0;
  auto descend = [](const std::string& rel) {
    return !BaseOf(rel).starts_with('.');
  };
  auto on_file = [&](const std::string& rel, int dir_fd,
                     const std::string& name) {
    if (name.starts_with(kTrashPrefix)) {
      // A gc killed while it decided: put the object back (whole; if it is
      // unused the next gc deletes it) unless a writer stored it again.
      const std::string back = name.substr(kTrashPrefix.size());
      if (fs_.RenameAt2(dir_fd, name.c_str(), dir_fd, back.c_str(),
                        RENAME_NOREPLACE) != 0 &&
          errno == EEXIST) {
        fs_.UnlinkAt(dir_fd, name.c_str(), 0);
      }
      return Status::Ok();
    }
    if (!name.starts_with(kTempPrefix)) return Status::Ok();
    struct stat st;
    if (::fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno == ENOENT) return Status::Ok();
      return FromErrno(errno, "stat " + PathOf(rel));
    }
    if (st.st_mtime >= cutoff) return Status::Ok();
    if (fs_.UnlinkAt(dir_fd, name.c_str(), 0) != 0) {
      if (errno == ENOENT) return Status::Ok();
      return FromErrno(errno, "removing " + PathOf(rel));
    }
    ++removed;
    return Status::Ok();
  };
  RETURN_IF_ERROR(
      Walk(fs_, dir_fd_, dir_, "", /*dotfiles=*/true, descend, on_file));
  return removed;
}

}  // namespace ckptfs
