// `ckptfs mount`: checks the options, takes the run dir, starts the daemon
// and serves the FUSE mount in this process until it is unmounted or
// signalled (SIGTERM, SIGINT, SIGHUP), then ends every export it made.
// Without --foreground the process daemonises first and the command returns
// once the mount is ready (0), or with the error that prevented it (1).
// A service manager that set NOTIFY_SOCKET hears READY=1 once the mount
// answers and STOPPING=1 when it shuts down (mountd/service_notify.h).
//
// Thread safety: call once, from main(), before any thread exists.
#pragma once

#include "mountd/cli_options.h"

namespace ckptfs {

// Returns the process exit status.
int CmdMount(MountArgs args);

}  // namespace ckptfs
