// Helpers shared by the command-line front end: option parsing and the
// thin control-directory client. Exposed for unit tests.
#pragma once

#include <cstdint>
#include <string>

#include "backend/status.h"

namespace ckptfs {

// Prints `st` as the one line of a failed command ("ckptfs: MESSAGE" on
// stderr); returns the exit status of a failure, 1.
int ReportError(const Status& st);

// "256M", "1G", "65536", "512K" (binary units) -> bytes.
Result<uint64_t> ParseSize(const std::string& text);

// The ckptfs mount to talk to: `explicit_mount` if set, else $CKPTFS_MOUNT,
// else the only fuse.ckptfs mount in the mount table mounted by root or the
// caller. Whichever it is must pass CheckMountTrusted.
Result<std::string> FindMount(const std::string& explicit_mount);

// A mount the clients may write requests to and believe: if its control
// files are on a FUSE file system, that is a fuse.ckptfs mounted by root or
// the caller (the kernel's user_id=, which the daemon cannot forge), and
// control/ and control/status.json are owned by root or the caller (a
// genuine ckptfs daemon of another user reports its own uid). Otherwise a
// user could answer root's requests, or name a pid for `umount` to signal.
Status CheckMountTrusted(const std::string& mount);

struct ControlReply {
  int err = 0;       // errno of the write, 0 when accepted
  std::string json;  // the reply read back from the control file
};
// Writes one request line into MOUNT/control/<file> and reads the reply.
Result<ControlReply> SendControl(const std::string& mount,
                                 const std::string& file,
                                 const std::string& line);

}  // namespace ckptfs
