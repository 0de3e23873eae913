// Trusted directories: the run dir (NBD sockets, scratch files holding disk
// data) and the store (every backup) are reached one path component at a
// time from /, and refused unless nobody but root (or this process's user)
// could have put them there or could change them. Otherwise a user who
// pre-creates /var/lib/ckptfs, or plants a symlink on the way, gets the
// daemon (root) to chmod, chown, empty or write whatever the link names.
//
// The rule, in the spirit of OpenSSH's StrictModes:
//  - every directory from / down to the target is owned by root or by the
//    process's effective uid (the "trusted owners");
//  - none is writable by group or others, except a parent with the sticky
//    bit (like /tmp): others may add names there but not remove or rename
//    ours, and whatever lies below it is checked in turn;
//  - the target itself is a real directory (never a symlink) and is not
//    writable by group or others, sticky or not;
//  - a symlink on the way (/var/run -> /run) is followed only if a trusted
//    owner owns it: its directory is trusted, so only they could have made
//    it; at most 40 of them;
//  - directories created here get exactly the requested mode (fchmod, so
//    the umask does not matter) and belong to the process.
// Each step is an openat() relative to the directory above with O_NOFOLLOW,
// so what is checked is what is then used. A refusal is one line naming the
// path, the owner and mode found and what is required; it changes nothing.
//
// Thread safety: free functions of the file system; reentrant.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

// Owns a file descriptor; closes it on destruction.
class UniqueFd {
 public:
  UniqueFd() = default;
  explicit UniqueFd(int fd) : fd_(fd) {}
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept;
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  ~UniqueFd();

  int get() const { return fd_; }
  // Gives up ownership.
  int Release() { return std::exchange(fd_, -1); }

 private:
  int fd_ = -1;
};

// "name (uid N)", or "uid N" for a uid without a name: for messages.
std::string DescribeUser(uid_t uid);

// A user who must be able to pass through the directories above a target
// (QEMU's user, for the run dir).
struct Searcher {
  std::string name;
  uid_t uid = 0;
  std::vector<gid_t> gids;  // every group of the user
};
// The user `name` and its groups; NotFound if there is no such user.
Result<Searcher> LookUpSearcher(const std::string& name);

struct TrustOptions {
  // What the directory is, for messages: "run dir", "store".
  std::string what = "directory";
  // Create the target and its missing parents.
  bool create = false;
  mode_t mode = 0700;         // of a target created here
  mode_t parent_mode = 0711;  // of parents created here: searchable only
  // If set, every directory above the target must let this user search it.
  std::optional<Searcher> searchable_by;
};

// Opens the directory `path` (made absolute and lexically normal) under the
// rule above, creating it first if options.create; returns an O_RDONLY
// directory fd of the target. NotFound if it does not exist and
// !options.create.
Result<UniqueFd> OpenTrustedDir(const std::string& path,
                                const TrustOptions& options);

// The same checks, without creating or opening anything, for a directory
// that other code then opens or creates by path (the local store). A target
// that does not exist yet is fine if what exists of its path is trusted and
// its deepest existing directory is writable by trusted owners only (sticky
// or not: in /tmp another user could plant the name between this check and
// the creation by path).
Status CheckTrustedPath(const std::string& path, const TrustOptions& options);

// Opens the regular file `name` of directory `dir_fd` with `flags` (plus
// O_NOFOLLOW | O_CLOEXEC; O_CREAT creates it with `mode`). A symlink, or
// anything but a regular file, is refused without opening it. `path` names
// it in messages.
Result<UniqueFd> OpenFileAt(int dir_fd, const std::string& name, int flags,
                            mode_t mode, const std::string& path);

// Opens the subdirectory `name` of `dir_fd` (O_RDONLY), creating it with
// `create_mode` if it is missing and a mode is given (NotFound otherwise).
// A symlink or a non-directory there is refused and left as it is.
Result<UniqueFd> OpenSubdirAt(int dir_fd, const std::string& name,
                              std::optional<mode_t> create_mode,
                              const std::string& path);

// Removes everything below the directory `dir_fd`, not the directory
// itself, without following any symlink: links are removed, never what they
// point at. Subdirectories at most 16 deep.
Status EmptyDirAt(int dir_fd, const std::string& path);

}  // namespace ckptfs
