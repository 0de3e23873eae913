#include "backend/store/local_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <vector>

namespace ckptfs::local_files {

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

}  // namespace ckptfs::local_files
