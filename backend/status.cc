#include "backend/status.h"

#include <cerrno>
#include <cstring>

namespace ckptfs {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk:
      return "ok";
    case Code::kInvalidArgument:
      return "invalid-argument";
    case Code::kNotFound:
      return "not-found";
    case Code::kAlreadyExists:
      return "already-exists";
    case Code::kBusy:
      return "busy";
    case Code::kIoError:
      return "io-error";
    case Code::kReadOnly:
      return "read-only";
    case Code::kPermission:
      return "permission-denied";
    case Code::kNoSpace:
      return "no-space";
    case Code::kTimedOut:
      return "timed-out";
    case Code::kUnsupported:
      return "unsupported";
    case Code::kCancelled:
      return "cancelled";
    case Code::kOutOfRange:
      return "out-of-range";
    case Code::kInternal:
      return "internal";
  }
  return "unknown";
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  return std::string(CodeName(code_)) + ": " + message_;
}

Status Status::Annotate(std::string_view context) const {
  if (ok()) return *this;
  return Status(code_, std::string(context) + ": " + message_);
}

Status FromErrno(int err, std::string message) {
  Code code = Code::kIoError;
  switch (err) {
    case EINVAL:
      code = Code::kInvalidArgument;
      break;
    case ENOENT:
      code = Code::kNotFound;
      break;
    case EEXIST:
      code = Code::kAlreadyExists;
      break;
    case EBUSY:
      code = Code::kBusy;
      break;
    case EROFS:
      code = Code::kReadOnly;
      break;
    case EACCES:
    case EPERM:
      code = Code::kPermission;
      break;
    case ENOSPC:
      code = Code::kNoSpace;
      break;
    case ETIMEDOUT:
      code = Code::kTimedOut;
      break;
    case ENOTSUP:
      code = Code::kUnsupported;
      break;
    case ECANCELED:
      code = Code::kCancelled;
      break;
    case ENXIO:
      code = Code::kOutOfRange;
      break;
    default:
      break;
  }
  if (err != 0 && message.find(std::strerror(err)) == std::string::npos)
    message += std::string(" (") + std::strerror(err) + ")";
  return Status(code, std::move(message));
}

}  // namespace ckptfs
