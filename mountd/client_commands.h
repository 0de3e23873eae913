// The client subcommands of a running mount: umount, checkpoint, release,
// backup and jobs. Each finds the mount (mountd/cli.h), writes one request
// to its control directory or reads its job records, and prints the reply;
// none holds state.
//
// Each returns the process exit status: 0 on success, 1 on a failure (one
// line on stderr, "ckptfs: ...").
#pragma once

#include <string>

#include "mountd/cli_options.h"

namespace ckptfs {

// Ends every live export, unmounts, and waits for the daemon to exit.
int CmdUmount(const std::string& mountpoint);
int CmdCheckpoint(const ClientArgs& args);
int CmdRelease(const ClientArgs& args);
// Waits for the job (with a progress bar) with --wait or on a terminal.
int CmdBackup(const ClientArgs& args);
int CmdJobs(const ClientArgs& args);

}  // namespace ckptfs
