// ckptfs: the command line. `mount` runs the daemon (mountd/mount_command.h);
// umount, checkpoint, release, backup and jobs are thin clients of a mount's
// control directory (mountd/client_commands.h); ls, verify, reindex, gc and
// prune work on a store directly (mountd/store_cli.h). The subcommands and
// their options are defined in mountd/cli_options.h.
#include <iostream>
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
  StoreRef ref{s.store_dir, {}};
  if (const Status st = CheckCephOptions(s.store_dir, s.ceph_conf, s.ceph_id,
                                         &ref.options.ceph);
      !st.ok()) {
    std::cerr << "ckptfs: " << st.message() << "\n";
    return 2;
  }
  if (command == "ls") return StoreList(ref, s.domain, s.json);
  if (command == "verify") return StoreVerify(ref);
  if (command == "reindex") return StoreReindex(ref);
  if (command == "gc") return StoreGc(ref, s.dry_run);
  std::vector<std::pair<std::string, std::string>> keep;
  for (const auto& [k, v] : s.keep) {
    if (!v.empty()) keep.emplace_back(k, v);
  }
  return StorePrune(ref, s.domain, keep, s.dry_run);
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
