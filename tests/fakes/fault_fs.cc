#include "tests/fakes/fault_fs.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <system_error>
#include <utility>

namespace ckptfs {

namespace fs = std::filesystem;

namespace {

std::string Parent(const std::string& rel) {
  const size_t slash = rel.rfind('/');
  return slash == std::string::npos ? std::string() : rel.substr(0, slash);
}

}  // namespace

FaultFs::FaultFs(std::string root, std::string stash)
    : root_(std::move(root)), stash_(std::move(stash)) {}

bool FaultFs::Fails() {
  if (steps_++ >= fail_from_) {
    errno = EIO;
    return true;
  }
  return false;
}

std::string FaultFs::PathOf(int dir_fd, const char* path) const {
  const auto it = fd_paths_.find(dir_fd);
  const std::string base = it == fd_paths_.end() ? "" : it->second;
  const std::string p = path;
  if (p == ".") return base;
  return base.empty() ? p : base + "/" + p;
}

std::string FaultFs::Save(const std::string& rel) {
  const std::string saved = stash_ + "/" + std::to_string(saved_count_++);
  if (::link((root_ + "/" + rel).c_str(), saved.c_str()) != 0) return "";
  return saved;
}

int FaultFs::OpenAt(int dir_fd, const char* path, int flags, mode_t mode) {
  std::lock_guard lock(mu_);
  const std::string rel = PathOf(dir_fd, path);
  bool created = false;
  if (flags & O_CREAT) {
    if (Fails()) return -1;
    struct stat st;
    created = ::fstatat(dir_fd, path, &st, AT_SYMLINK_NOFOLLOW) != 0;
  }
  const int fd = ::openat(dir_fd, path, flags, mode);
  if (fd < 0) return fd;
  fd_paths_[fd] = rel;
  if (created) {
    struct stat st;
    ::fstat(fd, &st);
    synced_size_[st.st_ino] = 0;
    ops_.push_back({Op::kCreate, Parent(rel), rel, "", "", st.st_ino});
  }
  return fd;
}

ssize_t FaultFs::Write(int fd, const void* buf, size_t n) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  return ::write(fd, buf, n);
}

int FaultFs::Fsync(int fd) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  const int rc = ::fsync(fd);
  if (rc != 0) return rc;
  struct stat st;
  ::fstat(fd, &st);
  if (S_ISDIR(st.st_mode)) {
    const auto it = fd_paths_.find(fd);
    const std::string dir = it == fd_paths_.end() ? "" : it->second;
    for (Op& op : ops_) {
      if (op.dir == dir) op.durable = true;
    }
  } else if (auto it = synced_size_.find(st.st_ino); it != synced_size_.end()) {
    it->second = st.st_size;
  }
  return 0;
}

int FaultFs::SyncFs(int fd) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  const int rc = ::syncfs(fd);
  if (rc != 0) return rc;
  for (Op& op : ops_) op.durable = true;
  ForEachFile([&](const fs::path&, const struct stat& st) {
    if (auto s = synced_size_.find(st.st_ino); s != synced_size_.end()) {
      s->second = st.st_size;
    }
  });
  return 0;
}

int FaultFs::RenameAt2(int from_dir, const char* from, int to_dir,
                       const char* to, unsigned flags) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  const std::string from_rel = PathOf(from_dir, from);
  const std::string to_rel = PathOf(to_dir, to);
  struct stat st;
  std::string saved;
  if (!(flags & RENAME_NOREPLACE) &&
      ::lstat((root_ + "/" + to_rel).c_str(), &st) == 0 &&
      S_ISREG(st.st_mode)) {
    saved = Save(to_rel);
  }
  const int rc = ::renameat2(from_dir, from, to_dir, to, flags);
  if (rc != 0) {
    const int err = errno;
    if (!saved.empty()) ::unlink(saved.c_str());
    errno = err;
    return rc;
  }
  ::lstat((root_ + "/" + to_rel).c_str(), &st);
  ops_.push_back(
      {Op::kRename, Parent(to_rel), to_rel, from_rel, saved, st.st_ino});
  return 0;
}

int FaultFs::UnlinkAt(int dir_fd, const char* path, int flags) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  // An empty directory that comes back after a crash is harmless: rmdir is
  // not modelled.
  if (flags & AT_REMOVEDIR) return ::unlinkat(dir_fd, path, flags);
  const std::string rel = PathOf(dir_fd, path);
  const std::string saved = Save(rel);
  const int rc = ::unlinkat(dir_fd, path, flags);
  if (rc != 0) {
    const int err = errno;
    if (!saved.empty()) ::unlink(saved.c_str());
    errno = err;
    return rc;
  }
  ops_.push_back({Op::kUnlink, Parent(rel), rel, "", saved, 0});
  return 0;
}

int FaultFs::MkdirAt(int dir_fd, const char* path, mode_t mode) {
  std::lock_guard lock(mu_);
  if (Fails()) return -1;
  const std::string rel = PathOf(dir_fd, path);
  const int rc = ::mkdirat(dir_fd, path, mode);
  if (rc == 0) ops_.push_back({Op::kMkdir, Parent(rel), rel, "", "", 0});
  return rc;
}

uint64_t FaultFs::steps() const {
  std::lock_guard lock(mu_);
  return steps_;
}

void FaultFs::FailFrom(uint64_t step) {
  std::lock_guard lock(mu_);
  fail_from_ = step;
}

void FaultFs::Undo(const Op& op) {
  const std::string path = root_ + "/" + op.path;
  std::error_code ec;
  struct stat st;
  const bool there = ::lstat(path.c_str(), &st) == 0;
  switch (op.kind) {
    case Op::kCreate:
      if (there && st.st_ino == op.ino) ::unlink(path.c_str());
      break;
    case Op::kMkdir:
      // The entry is lost, and with it everything below it.
      fs::remove_all(path, ec);
      break;
    case Op::kRename:
      if (there && st.st_ino == op.ino) {
        fs::create_directories(fs::path(root_ + "/" + op.from).parent_path(),
                               ec);
        ::rename(path.c_str(), (root_ + "/" + op.from).c_str());
      }
      if (!op.saved.empty()) ::link(op.saved.c_str(), path.c_str());
      break;
    case Op::kUnlink:
      if (!op.saved.empty()) {
        fs::create_directories(fs::path(path).parent_path(), ec);
        ::link(op.saved.c_str(), path.c_str());
      }
      break;
  }
}

void FaultFs::ForEachFile(
    const std::function<void(const fs::path&, const struct stat&)>& fn) const {
  std::error_code ec;
  for (auto it = fs::recursive_directory_iterator(root_, ec);
       it != fs::recursive_directory_iterator(); it.increment(ec)) {
    struct stat st;
    if (::lstat(it->path().c_str(), &st) == 0 && S_ISREG(st.st_mode)) {
      fn(it->path(), st);
    }
  }
}

void FaultFs::TruncateUnsynced() {
  ForEachFile([&](const fs::path& path, const struct stat& st) {
    const auto s = synced_size_.find(st.st_ino);
    if (s != synced_size_.end() && s->second < st.st_size) {
      ::truncate(path.c_str(), s->second);
    }
  });
}

void FaultFs::Crash() {
  std::lock_guard lock(mu_);
  for (auto it = ops_.rbegin(); it != ops_.rend(); ++it) {
    if (!it->durable) Undo(*it);
  }
  TruncateUnsynced();
  ops_.clear();
  fd_paths_.clear();
  synced_size_.clear();
  fail_from_ = UINT64_MAX;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(stash_, ec)) {
    fs::remove(entry.path(), ec);
  }
}

}  // namespace ckptfs
