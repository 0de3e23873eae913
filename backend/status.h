// Status and Result<T>: the one error type of ckptfs.
//
// A Status is either OK or carries a Code and a one-line message that tells a
// user what was wrong and what to do. Codes are coarse and errno-like; the only
// place that turns them into errno values is fs/errno_map.cc (FUSE edge), and
// the control protocol reports them through the same function.
//
// Thread safety: values; copy freely.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ckptfs {

enum class Code {
  kOk = 0,
  kInvalidArgument,  // malformed input: EINVAL
  kNotFound,         // unknown domain, checkpoint, path: ENOENT
  kAlreadyExists,    // name taken: EEXIST
  kBusy,             // a job holds the domain: EBUSY
  kIoError,          // libvirt, NBD or store failure: EIO
  kReadOnly,         // write under domains/: EROFS
  kPermission,       // EACCES
  kNoSpace,          // ENOSPC
  kTimedOut,         // ETIMEDOUT
  kUnsupported,      // EOPNOTSUPP
  kCancelled,        // ECANCELED
  kOutOfRange,       // no data/hole after an offset (lseek): ENXIO
  kInternal,         // a bug: EIO
};

// Name of a code, as used in logs and JSON ("invalid-argument", ...).
std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message)
      : code_(code), message_(std::move(message)) {}

  static Status Ok() { return Status(); }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }
  std::string ToString() const;

  // Prefixes the message with context ("vda: " + message); no-op on OK.
  Status Annotate(std::string_view context) const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {Code::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {Code::kNotFound, std::move(m)};
}
inline Status AlreadyExists(std::string m) {
  return {Code::kAlreadyExists, std::move(m)};
}
inline Status Busy(std::string m) { return {Code::kBusy, std::move(m)}; }
inline Status IoError(std::string m) { return {Code::kIoError, std::move(m)}; }
inline Status ReadOnly(std::string m) {
  return {Code::kReadOnly, std::move(m)};
}
inline Status Internal(std::string m) {
  return {Code::kInternal, std::move(m)};
}

// Builds a Status from an errno value reported by a C library (libnbd, POSIX).
Status FromErrno(int err, std::string message);

// Result<T>: a T or a non-OK Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "OK as error");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  Status status() const { return ok() ? Status() : std::get<Status>(v_); }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

 private:
  std::variant<T, Status> v_;
};

#define CKPTFS_CONCAT_INNER(a, b) a##b
#define CKPTFS_CONCAT(a, b) CKPTFS_CONCAT_INNER(a, b)

#define RETURN_IF_ERROR(expr)      \
  do {                             \
    ::ckptfs::Status _st = (expr); \
    if (!_st.ok()) return _st;     \
  } while (0)

#define ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                          \
  if (!tmp.ok()) return tmp.status();         \
  lhs = std::move(tmp).value()

#define ASSIGN_OR_RETURN(lhs, expr) \
  ASSIGN_OR_RETURN_IMPL(CKPTFS_CONCAT(_res_, __LINE__), lhs, expr)

}  // namespace ckptfs
