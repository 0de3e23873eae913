// ckptfs: the command line. `mount` runs the daemon (mountd/mount_command.h);
// umount, checkpoint, release, backup and jobs are thin clients of a mount's
// control directory (mountd/client_commands.h); ls, verify, reindex, gc and
// prune work on a store directly (mountd/store_cli.h). The subcommands and
// their options are defined in mountd/cli_options.h.
#include <string>
#include <utility>
#include <vector>

#include "mountd/cli_options.h"
#include "mountd/client_commands.h"
#include "mountd/mount_command.h"
#include "mountd/store_cli.h"

namespace ckptfs {
namespace {

int RunStoreCommand(const std::string& command, const StoreArgs& s) {
  if (command == "ls") return StoreList(s.store_dir, s.domain, s.json);
  if (command == "verify") return StoreVerify(s.store_dir);
  if (command == "reindex") return StoreReindex(s.store_dir);
  if (command == "gc") return StoreGc(s.store_dir, s.dry_run);
  std::vector<std::pair<std::string, std::string>> keep;
  for (const auto& [k, v] : s.keep) {
    if (!v.empty()) keep.emplace_back(k, v);
  }
  return StorePrune(s.store_dir, s.domain, keep, s.dry_run);
}

int Run(const CommandLine& cl) {
  const std::string& c = cl.command;
  if (c == "mount") return CmdMount(cl.mount);
  if (c == "umount") return CmdUmount(cl.umount_mountpoint);
  if (c == "checkpoint") return CmdCheckpoint(cl.client);
  if (c == "release") return CmdRelease(cl.client);
  if (c == "backup") return CmdBackup(cl.client);
  if (c == "jobs") return CmdJobs(cl.client);
  return RunStoreCommand(c, cl.store);
}

}  // namespace
}  // namespace ckptfs

int main(int argc, char** argv) {
  ckptfs::CommandLine cl;
  if (auto rc = ckptfs::ParseCommandLine(argc, argv, cl)) return *rc;
  return ckptfs::Run(cl);
}
