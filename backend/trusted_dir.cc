#include "backend/trusted_dir.h"

#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <deque>
#include <filesystem>

namespace ckptfs {

UniqueFd& UniqueFd::operator=(UniqueFd&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = std::exchange(other.fd_, -1);
  }
  return *this;
}

UniqueFd::~UniqueFd() {
  if (fd_ >= 0) ::close(fd_);
}

namespace {

constexpr int kMaxLinks = 40;
constexpr int kMaxDepth = 16;

std::string Octal(mode_t mode) {
  char buf[8];
  std::snprintf(buf, sizeof(buf), "%04o", static_cast<unsigned>(mode & 07777));
  return buf;
}

bool TrustedOwner(uid_t uid) { return uid == 0 || uid == geteuid(); }

std::string TrustedOwners() {
  return geteuid() == 0 ? "root" : "root or " + DescribeUser(geteuid());
}

std::string Join(const std::string& dir, const std::string& name) {
  return dir == "/" ? "/" + name : dir + "/" + name;
}

std::vector<std::string> Split(const std::string& path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string::npos) j = path.size();
    std::string part = path.substr(i, j - i);
    if (!part.empty() && part != ".") out.push_back(std::move(part));
    i = j + 1;
  }
  return out;
}

Result<std::string> Absolute(const std::string& path, const std::string& what) {
  if (path.empty()) return InvalidArgument(what + " path is empty");
  std::error_code ec;
  std::string abs = std::filesystem::absolute(path, ec).lexically_normal();
  if (ec) return InvalidArgument(what + " " + path + ": " + ec.message());
  while (abs.size() > 1 && abs.back() == '/') abs.pop_back();
  return abs;
}

bool Searchable(const struct stat& st, const Searcher& s) {
  if (st.st_uid == s.uid) return st.st_mode & S_IXUSR;
  if (std::find(s.gids.begin(), s.gids.end(), st.st_gid) != s.gids.end()) {
    return st.st_mode & S_IXGRP;
  }
  return st.st_mode & S_IXOTH;
}

// One directory of the walk, and where it is.
struct Level {
  UniqueFd fd;  // O_PATH
  std::string path;
};

// What the walk is for: the target, and how strict to be where it stops.
struct Goal {
  const TrustOptions& options;
  const std::string& target;  // absolute
};

// The owner, mode and searchability of one directory on the way (or of the
// target itself) against the rule of the header.
Status CheckDir(const struct stat& st, const std::string& path, bool is_target,
                const Goal& goal) {
  const TrustOptions& o = goal.options;
  const std::string found = (is_target ? o.what + " " : "") + path +
                            " is owned by " + DescribeUser(st.st_uid) +
                            " with mode " + Octal(st.st_mode);
  const std::string where =
      is_target ? ""
                : " (on the way to the " + o.what + " " + goal.target + ")";
  auto refuse = [&](const std::string& required) {
    return Status(Code::kPermission, found + where + "; " + required);
  };
  if (!TrustedOwner(st.st_uid)) {
    return refuse("it must be owned by " + TrustedOwners() +
                  " and not be writable by group or others");
  }
  if ((st.st_mode & 022) && is_target) {
    return refuse("it must not be writable by group or others: chmod go-w " +
                  path);
  }
  if ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)) {
    return refuse(
        "it must not be writable by group or others unless sticky (like "
        "/tmp): chmod go-w " +
        path);
  }
  if (!is_target && o.searchable_by && !Searchable(st, *o.searchable_by)) {
    return refuse("user " + o.searchable_by->name +
                  " must be able to search it to reach the " + o.what +
                  ": chmod o+x " + path + ", or choose another directory");
  }
  return Status::Ok();
}

// A symlink met at `path`: the text to walk instead, if it may be followed.
Result<std::string> FollowLink(const Level& dir, const std::string& name,
                               const struct stat& st, bool is_target, int links,
                               const Goal& goal) {
  const std::string path = Join(dir.path, name);
  char buf[PATH_MAX];
  const ssize_t n = readlinkat(dir.fd.get(), name.c_str(), buf, sizeof(buf));
  const std::string to =
      n >= 0 && static_cast<size_t>(n) < sizeof(buf) ? std::string(buf, n) : "";
  if (is_target) {
    return Status(Code::kPermission,
                  goal.options.what + " " + path + " is a symlink (to " + to +
                      "); it must be a directory itself: ckptfs follows no "
                      "symlink there");
  }
  if (!TrustedOwner(st.st_uid)) {
    return Status(Code::kPermission,
                  path + " (on the way to the " + goal.options.what + " " +
                      goal.target + ") is a symlink owned by " +
                      DescribeUser(st.st_uid) + "; only symlinks owned by " +
                      TrustedOwners() + " are followed");
  }
  if (to.empty()) return FromErrno(n < 0 ? errno : ENAMETOOLONG, path);
  if (links > kMaxLinks) {
    return FromErrno(ELOOP, "too many symlinks on the way to " + goal.target);
  }
  return to;
}

// Opens the directory `name` of `dir` and checks it.
Result<Level> Enter(const Level& dir, const std::string& name,
                    const struct stat& lst, bool is_target, const Goal& goal) {
  const std::string path = Join(dir.path, name);
  if (!S_ISDIR(lst.st_mode)) {
    return InvalidArgument(
        is_target ? goal.options.what + " path " + path + " is not a directory"
                  : path + " (on the way to the " + goal.options.what + " " +
                        goal.target + ") is not a directory");
  }
  UniqueFd fd(openat(dir.fd.get(), name.c_str(),
                     O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  // ELOOP / ENOTDIR: replaced since the fstatat; refused like the rest.
  if (fd.get() < 0) return FromErrno(errno, "cannot open " + path);
  struct stat st;
  if (fstat(fd.get(), &st) != 0) return FromErrno(errno, "cannot stat " + path);
  RETURN_IF_ERROR(CheckDir(st, path, is_target, goal));
  return Level{std::move(fd), path};
}

// Where a walk ended: the deepest existing directory, and the components
// below it that do not exist (empty when the target was reached).
struct WalkEnd {
  Level dir;
  std::vector<std::string> missing;
};

// Walks from / to goal.target, checking every directory and following only
// trusted symlinks; stops at the first component that does not exist.
Result<WalkEnd> Walk(const Goal& goal) {
  std::vector<Level> stack;
  {
    UniqueFd root(open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (root.get() < 0) return FromErrno(errno, "cannot open /");
    struct stat st;
    if (fstat(root.get(), &st) != 0) return FromErrno(errno, "cannot stat /");
    RETURN_IF_ERROR(CheckDir(st, "/", goal.target == "/", goal));
    stack.push_back(Level{std::move(root), "/"});
  }
  std::vector<std::string> parts = Split(goal.target);
  std::deque<std::string> todo(parts.begin(), parts.end());
  int links = 0;
  while (!todo.empty()) {
    const std::string name = todo.front();
    todo.pop_front();
    if (name == "..") {  // from a symlink's text: up from where it was
      if (stack.size() > 1) stack.pop_back();
      continue;
    }
    const bool is_target = todo.empty();
    const Level& dir = stack.back();
    struct stat st;
    if (fstatat(dir.fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      if (errno != ENOENT) {
        return FromErrno(errno, "cannot check " + Join(dir.path, name));
      }
      todo.push_front(name);
      return WalkEnd{std::move(stack.back()), {todo.begin(), todo.end()}};
    }
    if (S_ISLNK(st.st_mode)) {
      ASSIGN_OR_RETURN(std::string to,
                       FollowLink(dir, name, st, is_target, ++links, goal));
      if (to.front() == '/') stack.resize(1);
      const std::vector<std::string> more = Split(to);
      todo.insert(todo.begin(), more.begin(), more.end());
      continue;
    }
    ASSIGN_OR_RETURN(Level next, Enter(dir, name, st, is_target, goal));
    stack.push_back(std::move(next));
  }
  return WalkEnd{std::move(stack.back()), {}};
}

// Creates the missing components below `end.dir`, each with its mode, and
// returns the target.
Result<UniqueFd> MakeMissing(WalkEnd end, const Goal& goal) {
  const TrustOptions& o = goal.options;
  Level dir = std::move(end.dir);
  for (size_t i = 0; i < end.missing.size(); ++i) {
    const std::string& name = end.missing[i];
    const bool is_target = i + 1 == end.missing.size();
    const std::string path = Join(dir.path, name);
    if (name == "..")
      return NotFound("cannot create " + goal.target + ": " + dir.path +
                      " has no such directory");
    // 0700 first, the final mode once it is ours: never more open meanwhile.
    const bool made = mkdirat(dir.fd.get(), name.c_str(), 0700) == 0;
    if (!made && errno != EEXIST) {
      return FromErrno(errno, "cannot create " + path);
    }
    UniqueFd fd(openat(dir.fd.get(), name.c_str(),
                       O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (fd.get() < 0) return FromErrno(errno, "cannot open " + path);
    if (made && fchmod(fd.get(), is_target ? o.mode : o.parent_mode) != 0) {
      return FromErrno(errno, "cannot set the mode of " + path);
    }
    // Made by someone else meanwhile (EEXIST): checked like any other.
    struct stat st;
    if (fstat(fd.get(), &st) != 0) return FromErrno(errno, "stat " + path);
    RETURN_IF_ERROR(CheckDir(st, path, is_target, goal));
    if (is_target) return fd;
    dir = Level{std::move(fd), path};
  }
  return Internal("nothing to create for " + goal.target);
}

}  // namespace

std::string DescribeUser(uid_t uid) {
  struct passwd pw;
  struct passwd* found = nullptr;
  char buf[2048];
  const std::string id = "uid " + std::to_string(uid);
  if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found) {
    return std::string(found->pw_name) + " (" + id + ")";
  }
  return id;
}

Result<Searcher> LookUpSearcher(const std::string& name) {
  struct passwd pw;
  struct passwd* found = nullptr;
  char buf[4096];
  if (getpwnam_r(name.c_str(), &pw, buf, sizeof(buf), &found) != 0 || !found) {
    return NotFound("no user " + name);
  }
  Searcher s{name, found->pw_uid, {}};
  int n = 64;
  s.gids.resize(static_cast<size_t>(n));
  if (getgrouplist(name.c_str(), found->pw_gid, s.gids.data(), &n) < 0) {
    s.gids.resize(static_cast<size_t>(n));
    getgrouplist(name.c_str(), found->pw_gid, s.gids.data(), &n);
  }
  s.gids.resize(static_cast<size_t>(std::max(n, 0)));
  return s;
}

Result<UniqueFd> OpenTrustedDir(const std::string& path,
                                const TrustOptions& options) {
  ASSIGN_OR_RETURN(const std::string abs, Absolute(path, options.what));
  const Goal goal{options, abs};
  ASSIGN_OR_RETURN(WalkEnd end, Walk(goal));
  if (!end.missing.empty()) {
    if (!options.create) {
      return NotFound(options.what + " " + abs + " does not exist");
    }
    return MakeMissing(std::move(end), goal);
  }
  UniqueFd fd(
      openat(end.dir.fd.get(), ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd.get() < 0) return FromErrno(errno, "cannot open " + abs);
  return fd;
}

Status CheckTrustedPath(const std::string& path, const TrustOptions& options) {
  ASSIGN_OR_RETURN(const std::string abs, Absolute(path, options.what));
  const Goal goal{options, abs};
  ASSIGN_OR_RETURN(WalkEnd end, Walk(goal));
  if (end.missing.empty()) return Status::Ok();
  struct stat st;
  if (fstat(end.dir.fd.get(), &st) != 0) {
    return FromErrno(errno, "cannot stat " + end.dir.path);
  }
  if (st.st_mode & 022) {
    return Status(Code::kPermission,
                  options.what + " " + abs + " does not exist and " +
                      end.dir.path + " (mode " + Octal(st.st_mode) +
                      ") is writable by others, who could plant it: create " +
                      "it first (mkdir -m 0700 " + abs + ")");
  }
  return Status::Ok();
}

Result<UniqueFd> OpenFileAt(int dir_fd, const std::string& name, int flags,
                            mode_t mode, const std::string& path) {
  auto refuse = [&](const struct stat& st) {
    std::string what = "not a regular file";
    if (S_ISLNK(st.st_mode)) {
      char buf[PATH_MAX];
      const ssize_t n = readlinkat(dir_fd, name.c_str(), buf, sizeof(buf) - 1);
      what = "a symlink (to " + std::string(buf, n > 0 ? n : 0) + ")";
    }
    return Status(Code::kPermission, path + " is " + what +
                                         "; ckptfs never follows or opens "
                                         "one there: remove it");
  };
  struct stat st;
  if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
    if (!S_ISREG(st.st_mode)) return refuse(st);
  } else if (errno != ENOENT || !(flags & O_CREAT)) {
    return FromErrno(errno, "cannot open " + path);
  }
  UniqueFd fd(
      openat(dir_fd, name.c_str(), flags | O_NOFOLLOW | O_CLOEXEC, mode));
  if (fd.get() < 0) return FromErrno(errno, "cannot open " + path);
  if (fstat(fd.get(), &st) != 0) return FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return refuse(st);
  return fd;
}

Result<UniqueFd> OpenSubdirAt(int dir_fd, const std::string& name,
                              std::optional<mode_t> create_mode,
                              const std::string& path) {
  struct stat st;
  bool made = false;
  if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT) return FromErrno(errno, "cannot check " + path);
    if (!create_mode) return NotFound(path + " does not exist");
    made = mkdirat(dir_fd, name.c_str(), 0700) == 0;
    if (!made && errno != EEXIST) {
      return FromErrno(errno, "cannot create " + path);
    }
  } else if (S_ISLNK(st.st_mode)) {
    char buf[PATH_MAX];
    const ssize_t n = readlinkat(dir_fd, name.c_str(), buf, sizeof(buf) - 1);
    return Status(Code::kPermission,
                  path + " is a symlink (to " +
                      std::string(buf, n > 0 ? n : 0) +
                      "); ckptfs never follows one there: remove it");
  } else if (!S_ISDIR(st.st_mode)) {
    return Status(Code::kPermission, path + " is not a directory; remove it");
  }
  UniqueFd fd(openat(dir_fd, name.c_str(),
                     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  // ELOOP / ENOTDIR: replaced meanwhile; nothing followed.
  if (fd.get() < 0) return FromErrno(errno, "cannot open " + path);
  if (made && fchmod(fd.get(), *create_mode) != 0) {
    return FromErrno(errno, "cannot set the mode of " + path);
  }
  return fd;
}

namespace {

Status EmptyDirAtDepth(int dir_fd, const std::string& path, int depth) {
  // Names first, removals after: readdir may skip entries of a directory
  // that changes under it.
  UniqueFd list(openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  DIR* d = list.get() < 0 ? nullptr : fdopendir(list.get());
  if (!d) return FromErrno(errno, "cannot list " + path);
  list.Release();  // closedir closes it
  std::vector<std::string> names;
  while (const struct dirent* e = readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  closedir(d);
  Status result;
  for (const std::string& name : names) {
    const std::string sub = Join(path, name);
    struct stat st;
    if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    int flags = 0;
    if (S_ISDIR(st.st_mode)) {
      if (depth >= kMaxDepth) {
        result = InvalidArgument(sub + " is nested too deep to remove");
        continue;
      }
      UniqueFd fd(openat(dir_fd, name.c_str(),
                         O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (fd.get() < 0) {
        result = FromErrno(errno, "cannot open " + sub);
        continue;
      }
      if (Status st2 = EmptyDirAtDepth(fd.get(), sub, depth + 1); !st2.ok()) {
        result = st2;
      }
      flags = AT_REMOVEDIR;
    }
    if (unlinkat(dir_fd, name.c_str(), flags) != 0 && errno != ENOENT) {
      result = FromErrno(errno, "cannot remove " + sub);
    }
  }
  return result;
}

}  // namespace

Status EmptyDirAt(int dir_fd, const std::string& path) {
  return EmptyDirAtDepth(dir_fd, path, 0);
}

}  // namespace ckptfs
