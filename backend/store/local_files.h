// The file helpers LocalObjectStore's files share (local_object_store.cc,
// local_batch.cc, local_maintenance.cc): descriptors, key paths, exact reads
// and writes, and the directory walk. Internal to backend/store/.
//
// Thread safety: free functions over descriptors the caller owns.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "backend/status.h"
#include "backend/store/posix_fs.h"

namespace ckptfs::local_files {

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

// "a/b/c" -> "a/b" and "c" ("" and the key for a top-level key).
std::string ParentOf(const std::string& key);
std::string BaseOf(const std::string& key);

// Opens a directory below dir_fd ("" = dir_fd itself).
int OpenDir(PosixFs& fs, int dir_fd, const std::string& rel);

// Writes all of data to fd (through fs, so a fault layer sees it).
Status WriteAll(PosixFs& fs, int fd, std::span<const std::byte> data,
                const std::string& path);

// Opens object `key` (a validated key below dir_fd) for reading into *file;
// returns its size.
Result<size_t> OpenForRead(int dir_fd, const std::string& key,
                           const std::string& path, Fd* file);

// Reads exactly out.size() bytes from fd.
Status ReadExact(int fd, std::span<std::byte> out, const std::string& path);

// 16 hex digits: the random part of a temporary's name.
std::string Hex64(uint64_t v);

constexpr std::string_view kTempPrefix = ".tmp.";
// Where DeleteIfUnusedSince moves an object while it decides, and
// Quarantine keeps a damaged one.
constexpr std::string_view kTrashPrefix = ".trash.";
constexpr std::string_view kBadPrefix = ".bad.";

// parent + "/" + name, or name alone at the root.
std::string Join(const std::string& parent, std::string_view name);

// Calls fn(rel_path, is_dir) for every entry below `rel` ("" = the root),
// depth first; descends into a directory only if descend(rel_path) says so.
// Entries starting with '.' are passed only when `dotfiles`. A directory that
// disappears while walked (a concurrent Delete) is skipped.
Status Walk(PosixFs& fs, int root_fd, const std::string& root_path,
            const std::string& rel, bool dotfiles,
            const std::function<bool(const std::string&)>& descend,
            const std::function<Status(const std::string&, int dir_fd,
                                       const std::string& name)>& on_file);

}  // namespace ckptfs::local_files
