#include "backend/store/local_object_store.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <mutex>
#include <random>
#include <utility>
#include <vector>

namespace ckptfs {

namespace {

// Closes a descriptor on scope exit.
class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset(int fd) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

std::string ParentOf(const std::string& key) {
  const size_t slash = key.rfind('/');
  return slash == std::string::npos ? std::string() : key.substr(0, slash);
}

std::string BaseOf(const std::string& key) {
  const size_t slash = key.rfind('/');
  return slash == std::string::npos ? key : key.substr(slash + 1);
}

// Opens a directory below dir_fd ("" = dir_fd itself).
int OpenDir(PosixFs& fs, int dir_fd, const std::string& rel) {
  return fs.OpenAt(dir_fd, rel.empty() ? "." : rel.c_str(),
                   O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW, 0);
}

Status WriteAll(PosixFs& fs, int fd, std::span<const std::byte> data,
                const std::string& path) {
  while (!data.empty()) {
    const ssize_t n = fs.Write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, "writing " + path);
    }
    data = data.subspan(static_cast<size_t>(n));
  }
  return Status::Ok();
}

// Opens object `key` (a validated key below dir_fd) for reading into *file;
// returns its size.
Result<size_t> OpenForRead(int dir_fd, const std::string& key,
                           const std::string& path, Fd* file) {
  file->reset(::openat(dir_fd, key.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (file->get() < 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return NotFound(path + ": no such object");
    }
    // A symlink planted in the store is never followed.
    if (errno == ELOOP) return IoError(path + ": a symlink, not an object");
    return FromErrno(errno, "opening " + path);
  }
  struct stat st;
  if (::fstat(file->get(), &st) != 0) return FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return IoError(path + ": not a regular file");
  return static_cast<size_t>(st.st_size);
}

// Reads exactly out.size() bytes from fd.
Status ReadExact(int fd, std::span<std::byte> out, const std::string& path) {
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::read(fd, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FromErrno(errno, "reading " + path);
    }
    if (n == 0) return IoError(path + ": shorter than its size while read");
    done += static_cast<size_t>(n);
  }
  return Status::Ok();
}

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr std::string_view kTempPrefix = ".tmp.";
// Where DeleteIfUnusedSince moves an object while it decides, and
// Quarantine keeps a damaged one.
constexpr std::string_view kTrashPrefix = ".trash.";
constexpr std::string_view kBadPrefix = ".bad.";

std::string Join(const std::string& parent, std::string_view name) {
  return parent.empty() ? std::string(name) : parent + "/" + std::string(name);
}

// Calls fn(rel_path, is_dir) for every entry below `rel` ("" = the root),
// depth first; descends into a directory only if descend(rel_path) says so.
// Entries starting with '.' are passed only when `dotfiles`. A directory that
// disappears while walked (a concurrent Delete) is skipped.
Status Walk(PosixFs& fs, int root_fd, const std::string& root_path,
            const std::string& rel, bool dotfiles,
            const std::function<bool(const std::string&)>& descend,
            const std::function<Status(const std::string&, int dir_fd,
                                       const std::string& name)>& on_file) {
  const int fd = OpenDir(fs, root_fd, rel);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR) return Status::Ok();
    return FromErrno(errno, "opening directory " + root_path + "/" + rel);
  }
  DIR* dir = ::fdopendir(fd);
  if (dir == nullptr) {
    const int err = errno;
    ::close(fd);
    return FromErrno(err, "reading directory " + root_path + "/" + rel);
  }
  std::vector<std::pair<std::string, bool>> entries;
  for (;;) {
    errno = 0;
    const dirent* entry = ::readdir(dir);
    if (entry == nullptr) {
      if (errno != 0) {
        const int err = errno;
        ::closedir(dir);
        return FromErrno(err, "reading directory " + root_path + "/" + rel);
      }
      break;
    }
    const std::string name = entry->d_name;
    if (name == "." || name == "..") continue;
    if (name.front() == '.' && !dotfiles) continue;
    bool is_dir = entry->d_type == DT_DIR;
    if (entry->d_type == DT_UNKNOWN) {
      struct stat st;
      if (::fstatat(::dirfd(dir), entry->d_name, &st, AT_SYMLINK_NOFOLLOW) !=
          0) {
        continue;  // gone meanwhile
      }
      is_dir = S_ISDIR(st.st_mode);
      if (!is_dir && !S_ISREG(st.st_mode)) continue;
    } else if (!is_dir && entry->d_type != DT_REG) {
      continue;
    }
    entries.emplace_back(name, is_dir);
  }
  Status status;
  for (const auto& [name, is_dir] : entries) {
    const std::string path = rel.empty() ? name : rel + "/" + name;
    if (is_dir) {
      if (descend(path)) {
        status = Walk(fs, root_fd, root_path, path, dotfiles, descend, on_file);
      }
    } else {
      status = on_file(path, ::dirfd(dir), name);
    }
    if (!status.ok()) break;
  }
  ::closedir(dir);
  return status;
}

}  // namespace

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
