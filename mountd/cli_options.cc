#include "mountd/cli_options.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cctype>
#include <filesystem>

#include "backend/store/serialize.h"
#include "backend/store/store.h"
#include "version.h"

namespace ckptfs {
namespace {

void AddMountCommands(CLI::App& app, CommandLine& cl) {
  MountArgs& ma = cl.mount;
  auto* mount =
      app.add_subcommand("mount", "mount the tree (daemonises once ready)");
  mount->add_option("MOUNTPOINT", ma.mountpoint, "empty directory to mount on")
      ->required();
  mount->add_option("--connect", ma.connect, "libvirt URI")
      ->capture_default_str();
  mount
      ->add_option("--cache-size", ma.cache_size,
                   "block cache budget (e.g. 256M, 1G)")
      ->capture_default_str();
  mount
      ->add_option("--run-dir", ma.run_dir,
                   "NBD sockets and scratch files (QEMU must reach it)")
      ->capture_default_str();
  mount
      ->add_option("--store", ma.store,
                   "backup store: a directory (created on first use) or "
                   "rados:POOL[/NAMESPACE]")
      ->capture_default_str();
  mount->add_option("--host-id", ma.host_id,
                    "this daemon's name in a shared store (default: the "
                    "host name)");
  mount
      ->add_option("--lock-lease", ma.lock_lease,
                   "seconds a running backup's store lock lasts unrenewed "
                   "(10-86400)")
      ->capture_default_str();
  mount->add_option("--ceph-conf", ma.ceph_conf,
                    "ceph.conf of a rados: store (default: $CEPH_CONF)");
  mount->add_option("--ceph-id", ma.ceph_id,
                    "Ceph client id of a rados: store (default: admin)");
  mount->add_flag("-f,--foreground", ma.foreground,
                  "do not daemonise; log to stderr");
  mount->add_flag("--allow-other", ma.allow_other,
                  "let other users read images (control stays owner-only)");
  mount->add_flag("-d,--debug", ma.debug, "debug logging");

  auto* umount =
      app.add_subcommand("umount", "end every live export, then unmount");
  umount->add_option("MOUNTPOINT", cl.umount_mountpoint)->required();
}

void AddClientCommands(CLI::App& app, ClientArgs& c) {
  auto* ckpt = app.add_subcommand(
      "checkpoint", "create a live checkpoint of a running domain");
  ckpt->add_option("DOMAIN", c.domain)->required();
  ckpt->add_option("--name", c.name, "checkpoint name (default: UTC time)");
  ckpt->add_option("--disks", c.disks,
                   "comma-separated targets (default: all qcow2 disks)");
  ckpt->add_option("-m,--mount", c.mount,
                   "the ckptfs mount (default: the only one)");

  auto* release =
      app.add_subcommand("release", "end a live checkpoint's export");
  release->add_option("DOMAIN", c.domain)->required();
  release->add_option("CHECKPOINT", c.checkpoint)->required();
  release->add_option("-m,--mount", c.mount, "the ckptfs mount");

  auto* jobs =
      app.add_subcommand("jobs", "list control requests and their state");
  jobs->add_option("-m,--mount", c.mount, "the ckptfs mount");
  jobs->add_flag("--json", c.json, "one JSON record per line");

  auto* backup = app.add_subcommand(
      "backup", "back up a domain (a new live checkpoint, or --checkpoint)");
  backup->add_option("DOMAIN", c.domain)->required();
  backup->add_option("--name", c.name, "name of the new checkpoint");
  backup->add_option("--checkpoint", c.backup_checkpoint,
                     "back up this live checkpoint instead");
  backup->add_option("--mode", c.mode, "auto, full or incremental")
      ->capture_default_str();
  backup->add_flag("--wait", c.wait,
                   "wait for the job (default on a terminal)");
  backup->add_option("-m,--mount", c.mount, "the ckptfs mount");
}

void AddStoreCommands(CLI::App& app, StoreArgs& s) {
  auto add_store = [&](CLI::App* c) {
    c->add_option("--store", s.store_dir,
                  "backup store directory or rados:POOL[/NAMESPACE]")
        ->capture_default_str();
    c->add_option("--ceph-conf", s.ceph_conf,
                  "ceph.conf of a rados: store (default: $CEPH_CONF)");
    c->add_option("--ceph-id", s.ceph_id,
                  "Ceph client id of a rados: store (default: admin)");
  };
  auto* ls = app.add_subcommand("ls", "list the backups in a store");
  ls->add_option("DOMAIN", s.domain, "only this domain (name or uuid)");
  ls->add_flag("--json", s.json, "one JSON object per line");
  add_store(ls);
  auto* verify = app.add_subcommand(
      "verify", "re-hash every chunk of every backup; exit 1 on damage");
  add_store(verify);
  auto* reindex =
      app.add_subcommand("reindex", "rebuild the catalog from the store");
  add_store(reindex);
  auto* gc = app.add_subcommand(
      "gc", "remove chunks no backup references (safe while backups run)");
  gc->add_flag("-n,--dry-run", s.dry_run, "only count");
  add_store(gc);
  auto* prune = app.add_subcommand(
      "prune", "remove backups outside keep rules (grandfather-father-son)");
  for (const char* k : {"keep-last", "keep-hourly", "keep-daily", "keep-weekly",
                        "keep-monthly", "keep-yearly"}) {
    prune->add_option(std::string("--") + k, s.keep[k],
                      std::string("number of backups to keep: ") + k);
  }
  prune->add_option("--domain", s.domain, "only this domain (name or uuid)");
  prune->add_flag("-n,--dry-run", s.dry_run, "show what would go");
  add_store(prune);
}

}  // namespace

Status CheckCephOptions(const std::string& store, const std::string& conf,
                        const std::string& id, CephOptions* out) {
  if (!IsRadosStore(store)) {
    if (!conf.empty() || !id.empty()) {
      return InvalidArgument(
          std::string(conf.empty() ? "--ceph-id" : "--ceph-conf") +
          " applies only to a rados: store (--store " + store + ")");
    }
    return Status::Ok();
  }
  if (!conf.empty()) {
    std::error_code ec;
    const auto path = std::filesystem::absolute(conf, ec).lexically_normal();
    if (ec || !std::filesystem::is_regular_file(path, ec) ||
        ::access(path.c_str(), R_OK) != 0) {
      return InvalidArgument("--ceph-conf " + conf + ": not a readable file");
    }
    out->conf = path.string();
  }
  std::string name = id;
  if (name.starts_with("client.")) name = name.substr(7);
  const bool good = std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' ||
           c == '_' || c == '-';
  });
  if ((!id.empty() && name.empty()) || !good || name.size() > 128) {
    return InvalidArgument("--ceph-id " + id +
                           ": give a client id such as \"ckptfs\" "
                           "(letters, digits, '.', '_', '-')");
  }
  out->id = name;
  return Status::Ok();
}

std::string VersionText() {
  // A store or object of another version is refused, so whoever holds a
  // store can tell from this which ckptfs reads it.
  return std::string("ckptfs ") + CKPTFS_VERSION + "\nstore formats " +
         std::to_string(kStoreFormat) + " and " +
         std::to_string(kTreeStoreFormat) + " (manifest versions " +
         std::to_string(kManifestVersion) + " and " +
         std::to_string(kTreeManifestVersion) + ", backup record format " +
         std::to_string(kBackupRecordFormat) +
         "): reads and writes; new stores are format " +
         std::to_string(kTreeStoreFormat);
}

std::optional<int> ParseCommandLine(int argc, char** argv, CommandLine& cl) {
  CLI::App app{
      "ckptfs: libvirt domains, checkpoints and disks as read-only "
      "raw image files"};
  app.set_version_flag("--version", VersionText,
                       "print the version and the store formats");
  app.require_subcommand(1);
  AddMountCommands(app, cl);
  AddClientCommands(app, cl.client);
  AddStoreCommands(app, cl.store);

  // Usage errors: one line on stderr and exit status 2, as other tools do.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("ckptfs: ") + e.what() + " (see ckptfs --help)\n";
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);  // prints --help/--version, or the error
    return rc == 0 ? 0 : 2;
  }
  cl.command = app.get_subcommands().front()->get_name();
  return std::nullopt;
}

}  // namespace ckptfs
