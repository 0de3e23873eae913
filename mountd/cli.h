// Helpers shared by the command-line front end: option parsing and the
// thin control-directory client. Exposed for unit tests.
#pragma once

#include <cstdint>
#include <string>

#include "backend/status.h"

namespace ckptfs {

// "256M", "1G", "65536", "512K" (binary units) -> bytes.
Result<uint64_t> ParseSize(const std::string& text);

// The ckptfs mount to talk to: `explicit_mount` if set, else $CKPTFS_MOUNT,
// else the only fuse.ckptfs mount in /proc/mounts.
Result<std::string> FindMount(const std::string& explicit_mount);

struct ControlReply {
  int err = 0;       // errno of the write, 0 when accepted
  std::string json;  // the reply read back from the control file
};
// Writes one request line into MOUNT/control/<file> and reads the reply.
Result<ControlReply> SendControl(const std::string& mount,
                                 const std::string& file,
                                 const std::string& line);

}  // namespace ckptfs
