// The command line of `ckptfs`: every subcommand with its options and
// defaults (CLI11 definitions), parsed into plain structs that the commands
// take. The man page (dist/ckptfs.8) and the bash completion
// (dist/ckptfs.bash-completion) list the same; test_package.sh checks that
// every option `--help` shows is in both.
//
// Thread safety: none needed; called once from main().
#pragma once

#include <map>
#include <optional>
#include <string>

#include "backend/status.h"
#include "backend/store/rados_object_store.h"

namespace ckptfs {

// `ckptfs mount`.
struct MountArgs {
  std::string mountpoint;
  std::string connect = "qemu:///system";
  std::string cache_size = "256M";
  std::string run_dir = "/var/lib/ckptfs/run";
  std::string store = "/var/lib/ckptfs/store";
  std::string host_id;             // empty: the host name
  std::string lock_lease = "600";  // seconds
  std::string ceph_conf;           // --ceph-conf, for a rados: store
  std::string ceph_id;             // --ceph-id
  bool foreground = false;
  bool allow_other = false;
  bool debug = false;
};

// The clients of a mount's control directory: checkpoint, release, backup,
// jobs.
struct ClientArgs {
  std::string mount;  // -m: empty for $CKPTFS_MOUNT or the only mount
  std::string domain;
  std::string name;
  std::string disks;
  std::string checkpoint;         // release CHECKPOINT
  std::string backup_checkpoint;  // backup --checkpoint
  std::string mode = "auto";
  bool wait = false;
  bool json = false;
};

// The store commands (no daemon needed): ls, verify, reindex, gc, prune.
struct StoreArgs {
  std::string store_dir = "/var/lib/ckptfs/store";
  std::string ceph_conf;  // --ceph-conf, for a rados: store
  std::string ceph_id;    // --ceph-id
  std::string domain;     // ls DOMAIN, prune --domain
  bool json = false;
  bool dry_run = false;
  // prune's "--keep-last" ... "--keep-yearly" by name ("keep-last"); an
  // option not given is empty.
  std::map<std::string, std::string> keep;
};

struct CommandLine {
  std::string command;  // the subcommand given: "mount", "ls", ...
  MountArgs mount;
  std::string umount_mountpoint;
  ClientArgs client;
  StoreArgs store;
};

// Parses argv into `cl`. Returns the exit status to end with when there is
// nothing to run: 0 after --help or --version (printed), 2 after a usage
// error (one line on stderr, as other tools do); nullopt when cl.command
// is to run.
std::optional<int> ParseCommandLine(int argc, char** argv, CommandLine& cl);

// Checks --ceph-conf and --ceph-id for the store `store` and fills `out`:
// the conf must be a readable file (made absolute, as the daemon chdirs to
// /), the id a client id ("ckptfs" or "client.ckptfs"); both only for a
// rados: store. kInvalidArgument naming the option otherwise.
Status CheckCephOptions(const std::string& store, const std::string& conf,
                        const std::string& id, CephOptions* out);

// What `ckptfs --version` prints: the release, and the store formats this
// build reads and writes.
std::string VersionText();

}  // namespace ckptfs
