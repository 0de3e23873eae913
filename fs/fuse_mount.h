// FuseMount: mounts a Filesystem with libfuse3 (high-level API, multi-
// threaded loop) and runs it until unmounted or signalled.
//
// Thread safety: Mount() and Run() from the main thread; Exit() from any.
#pragma once

#include <memory>
#include <string>

#include "backend/status.h"
#include "fs/filesystem.h"

struct fuse;  // libfuse's handle; fuse.h stays inside fs/*.cc

namespace ckptfs {

struct FuseSession;  // fs/fuse_ops.h: what the FUSE callbacks reach

struct FuseOptions {
  std::string mountpoint;
  bool allow_other = false;
  bool debug = false;
  unsigned max_threads = 16;
  std::string fsname = "ckptfs";
};

class FuseMount {
 public:
  // Mounts `fs` (which must outlive the FuseMount). On return the mount is
  // visible to other processes.
  static Result<std::unique_ptr<FuseMount>> Mount(Filesystem* fs,
                                                  const FuseOptions& options);
  ~FuseMount();  // unmounts if still mounted

  // Serves requests until the filesystem is unmounted (umount, fusermount3
  // -u) or SIGTERM/SIGINT/SIGHUP arrives.
  Status Run();
  // Asks Run() to return (from any thread).
  void Exit();
  // Detaches the mount (no-op if the kernel already unmounted it).
  void Unmount();

 private:
  FuseMount();
  std::unique_ptr<FuseSession> session_;
  struct fuse* fuse_ = nullptr;
  bool mounted_ = false;
  std::string mountpoint_;
  std::string devno_;  // "0:42": the mount's device in our namespace
  unsigned max_threads_ = 16;
};

}  // namespace ckptfs
