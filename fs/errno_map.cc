#include <cerrno>

#include "fs/filesystem.h"

namespace ckptfs {

int ToErrno(const Status& status) {
  switch (status.code()) {
    case Code::kOk:
      return 0;
    case Code::kInvalidArgument:
      return EINVAL;
    case Code::kNotFound:
      return ENOENT;
    case Code::kAlreadyExists:
      return EEXIST;
    case Code::kBusy:
      return EBUSY;
    case Code::kIoError:
      return EIO;
    case Code::kReadOnly:
      return EROFS;
    case Code::kPermission:
      return EACCES;
    case Code::kNoSpace:
      return ENOSPC;
    case Code::kTimedOut:
      return ETIMEDOUT;
    case Code::kUnsupported:
      return EOPNOTSUPP;
    case Code::kCancelled:
      return ECANCELED;
    case Code::kOutOfRange:
      return ENXIO;
    case Code::kInternal:
      return EIO;
  }
  return EIO;
}

}  // namespace ckptfs
