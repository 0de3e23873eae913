#include "backend/store/local_object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <random>
#include <utility>
#include <vector>

#include "backend/store/local_files.h"

namespace ckptfs {

using local_files::BaseOf;
using local_files::Fd;
using local_files::Hex64;
using local_files::kTempPrefix;
using local_files::OpenDir;
using local_files::OpenForRead;
using local_files::ParentOf;
using local_files::ReadExact;
using local_files::Walk;
using local_files::WriteAll;

Result<std::unique_ptr<LocalObjectStore>> LocalObjectStore::Open(
    const std::string& dir, bool create, PosixFs* fs) {
  if (dir.empty()) return InvalidArgument("store directory is empty");
  std::error_code ec;
  std::string path = std::filesystem::absolute(dir, ec).lexically_normal();
  if (ec)
    return InvalidArgument("store directory " + dir + ": " + ec.message());
  while (path.size() > 1 && path.back() == '/') path.pop_back();

  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno != ENOENT) return FromErrno(errno, "store directory " + path);
    if (!create) {
      return NotFound("store directory " + path +
                      " does not exist; create the store first");
    }
    // mkdir -p, mode 0700 (backups hold whole disks).
    std::string partial;
    for (const auto& part : std::filesystem::path(path)) {
      partial = (std::filesystem::path(partial) / part).string();
      if (part == "/") continue;
      if (::mkdir(partial.c_str(), 0700) == 0) {
        const std::string up =
            std::filesystem::path(partial).parent_path().string();
        Fd up_fd(::open(up.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
        if (up_fd.get() < 0 || ::fsync(up_fd.get()) != 0) {
          return FromErrno(errno, "syncing directory " + up);
        }
      } else if (errno != EEXIST) {
        return FromErrno(errno, "creating store directory " + partial);
      }
    }
  } else if (!S_ISDIR(st.st_mode)) {
    return InvalidArgument("store path " + path + " is not a directory");
  }
  const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return FromErrno(errno, "opening store directory " + path);
  std::random_device random;
  const uint64_t nonce = (uint64_t{random()} << 32) ^ random();
  return std::unique_ptr<LocalObjectStore>(new LocalObjectStore(
      std::move(path), fd, nonce, fs != nullptr ? *fs : PosixFs::Default()));
}

LocalObjectStore::LocalObjectStore(std::string dir, int dir_fd, uint64_t nonce,
                                   PosixFs& fs)
    : dir_(std::move(dir)), dir_fd_(dir_fd), nonce_(nonce), fs_(fs) {}

LocalObjectStore::~LocalObjectStore() { ::close(dir_fd_); }

std::string LocalObjectStore::PathOf(const std::string& key) const {
  return key.empty() ? dir_ : dir_ + "/" + key;
}

std::string LocalObjectStore::TempName() {
  return std::string(kTempPrefix) + Hex64(nonce_) + "." +
         std::to_string(next_temp_.fetch_add(1));
}

Status LocalObjectStore::MakeDirectories(const std::string& parent) {
  size_t pos = 0;
  while (pos <= parent.size()) {
    size_t end = parent.find('/', pos);
    if (end == std::string::npos) end = parent.size();
    const std::string sub = parent.substr(0, end);
    if (fs_.MkdirAt(dir_fd_, sub.c_str(), 0700) == 0) {
      // The new entry is durable only once its parent directory is.
      Fd up(OpenDir(fs_, dir_fd_, ParentOf(sub)));
      if (up.get() < 0 || fs_.Fsync(up.get()) != 0) {
        return FromErrno(errno, "syncing directory of " + PathOf(sub));
      }
    } else if (errno != EEXIST) {
      return FromErrno(errno, "creating directory " + PathOf(sub));
    }
    pos = end + 1;
  }
  return Status::Ok();
}

Status LocalObjectStore::Put(const std::string& key,
                             std::span<const std::byte> data) {
  return PutLoop(key, data, /*exclusive=*/false);
}

Status LocalObjectStore::Create(const std::string& key,
                                std::span<const std::byte> data) {
  return PutLoop(key, data, /*exclusive=*/true);
}

Status LocalObjectStore::PutLoop(const std::string& key,
                                 std::span<const std::byte> data,
                                 bool exclusive) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  // A concurrent Delete may remove an empty directory between our mkdir and
  // the creation of the temporary; try again a few times.
  Status status;
  for (int attempt = 0; attempt < 5; ++attempt) {
    bool retry = false;
    status = PutOnce(key, data, exclusive, &retry);
    if (!retry) break;
  }
  return status;
}

Status LocalObjectStore::PutOnce(const std::string& key,
                                 std::span<const std::byte> data,
                                 bool exclusive, bool* retry) {
  const std::string parent = ParentOf(key);
  const std::string name = BaseOf(key);
  const std::string path = PathOf(key);
  Fd dir(OpenDir(fs_, dir_fd_, parent));
  if (dir.get() < 0 && errno == ENOENT && !parent.empty()) {
    RETURN_IF_ERROR(MakeDirectories(parent).Annotate("putting " + path));
    dir.reset(OpenDir(fs_, dir_fd_, parent));
    if (dir.get() < 0 && errno == ENOENT) *retry = true;
  }
  if (dir.get() < 0) {
    return FromErrno(errno, "putting " + path + ": opening directory");
  }

  const std::string temp = TempName();
  const std::string temp_path =
      PathOf(parent.empty() ? temp : parent + "/" + temp);
  Fd file(fs_.OpenAt(dir.get(), temp.c_str(),
                     O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
                     0600));
  if (file.get() < 0) {
    if (errno == ENOENT) *retry = true;  // directory removed meanwhile
    return FromErrno(errno, "creating " + temp_path);
  }
  auto fail = [&](Status s) {
    fs_.UnlinkAt(dir.get(), temp.c_str(), 0);
    return s;
  };
  if (Status s = WriteAll(fs_, file.get(), data, temp_path); !s.ok()) {
    return fail(std::move(s));
  }
  if (fs_.Fsync(file.get()) != 0) {
    return fail(FromErrno(errno, "syncing " + temp_path));
  }
  if (::close(file.release()) != 0) {
    return fail(FromErrno(errno, "closing " + temp_path));
  }
  if (fs_.RenameAt2(dir.get(), temp.c_str(), dir.get(), name.c_str(),
                    exclusive ? RENAME_NOREPLACE : 0) != 0) {
    if (errno == EEXIST) return fail(AlreadyExists(path + " exists"));
    return fail(FromErrno(errno, "renaming " + temp_path + " to " + path));
  }
  if (fs_.Fsync(dir.get()) != 0) {
    // Visible but not known durable: report the failure and take the object
    // back, so the caller's view (failed = absent) holds.
    const int err = errno;
    fs_.UnlinkAt(dir.get(), name.c_str(), 0);
    return FromErrno(err, "syncing directory of " + path);
  }
  return Status::Ok();
}

Result<std::vector<std::byte>> LocalObjectStore::Get(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  Fd file(-1);
  ASSIGN_OR_RETURN(const size_t size, OpenForRead(dir_fd_, key, path, &file));
  std::vector<std::byte> data(size);
  RETURN_IF_ERROR(ReadExact(file.get(), data, path));
  return data;
}

Result<size_t> LocalObjectStore::GetInto(const std::string& key,
                                         std::span<std::byte> buf) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  Fd file(-1);
  ASSIGN_OR_RETURN(const size_t size, OpenForRead(dir_fd_, key, path, &file));
  if (size <= buf.size()) {
    RETURN_IF_ERROR(ReadExact(file.get(), buf.first(size), path));
  }
  return size;
}

Result<bool> LocalObjectStore::Exists(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  struct stat st;
  if (::fstatat(dir_fd_, key.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) return false;
    return FromErrno(errno, "stat " + PathOf(key));
  }
  return S_ISREG(st.st_mode);
}

Result<std::vector<std::string>> LocalObjectStore::List(
    const std::string& prefix) {
  RETURN_IF_ERROR(ValidateObjectPrefix(prefix));
  std::vector<std::string> keys;
  // Only directories on the way to the prefix or inside it are read.
  auto descend = [&](const std::string& rel) {
    const std::string as_dir = rel + "/";
    return as_dir.starts_with(prefix) || prefix.starts_with(as_dir);
  };
  auto on_file = [&](const std::string& rel, int, const std::string&) {
    if (rel.starts_with(prefix)) keys.push_back(rel);
    return Status::Ok();
  };
  RETURN_IF_ERROR(Walk(fs_, dir_fd_, dir_, ParentOf(prefix), /*dotfiles=*/false,
                       descend, on_file));
  std::sort(keys.begin(), keys.end());
  return keys;
}

Status LocalObjectStore::Delete(const std::string& key) {
  RETURN_IF_ERROR(ValidateObjectKey(key));
  const std::string path = PathOf(key);
  if (fs_.UnlinkAt(dir_fd_, key.c_str(), 0) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(path + ": no such object");
    }
    return FromErrno(errno, "deleting " + path);
  }
  std::string parent = ParentOf(key);
  {
    Fd dir(OpenDir(fs_, dir_fd_, parent));
    if (dir.get() < 0 || fs_.Fsync(dir.get()) != 0) {
      return FromErrno(errno, "syncing directory of " + path);
    }
  }
  // Drop directories that became empty (fails harmlessly on the first that
  // is not). Not synced: an empty directory that survives a crash is harmless.
  while (!parent.empty() &&
         fs_.UnlinkAt(dir_fd_, parent.c_str(), AT_REMOVEDIR) == 0) {
    parent = ParentOf(parent);
  }
  return Status::Ok();
}

}  // namespace ckptfs
