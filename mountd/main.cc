// ckptfs: the command line. `mount` runs the daemon; everything else is a
// thin client of a mount's control directory.
#include <fcntl.h>
#include <malloc.h>
#include <signal.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "backend/store/serialize.h"
#include "backend/store/store.h"
#include "backend/trusted_dir.h"
#include "cache/block_cache.h"
#include "fs/fuse_mount.h"
#include "mountd/cli.h"
#include "mountd/daemon.h"
#include "mountd/log.h"
#include "mountd/store_cli.h"
#include "version.h"

// LeakSanitizer's check, defined only in sanitizer builds (a weak reference
// is null otherwise). The daemon ends with _exit(), which skips the check
// exit() would run, so it asks for one itself.
extern "C" void __lsan_do_leak_check() __attribute__((weak));

namespace ckptfs {
namespace {

namespace fsys = std::filesystem;

struct MountArgs {
  std::string mountpoint;
  std::string connect = "qemu:///system";
  std::string cache_size = "256M";
  std::string run_dir = "/var/lib/ckptfs/run";
  std::string store = "/var/lib/ckptfs/store";
  bool foreground = false;
  bool allow_other = false;
  bool debug = false;
};

int Fail(const Status& st) {
  std::cerr << "ckptfs: " << st.message() << "\n";
  return 1;
}

// Holds an exclusive lock on the run dir for the daemon's life: two daemons
// on one run dir would end each other's exports as stale. The run dir and
// its parents are trusted directories (backend/trusted_dir.h): created
// 0711, or refused if another user could have planted or changed them, and
// every parent must let QEMU's user through to RUN/<uuid>.
Result<UniqueFd> LockRunDir(const std::string& run_dir) {
  TrustOptions o;
  o.what = "run dir";
  o.create = true;
  o.mode = 0711;
  o.parent_mode = 0711;
  // Without QEMU's user (not a libvirt host?) there is nobody to let in.
  if (auto qemu = LookUpSearcher(ExportOptions{}.qemu_user); qemu.ok()) {
    o.searchable_by = *qemu;
  }
  ASSIGN_OR_RETURN(UniqueFd dir, OpenTrustedDir(run_dir, o));
  ASSIGN_OR_RETURN(UniqueFd lock,
                   OpenFileAt(dir.get(), ".lock", O_RDWR | O_CREAT, 0600,
                              run_dir + "/.lock"));
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return Busy("run dir " + run_dir +
                " is in use by another ckptfs daemon; use another --run-dir");
  }
  // QEMU must traverse it to reach its per-domain directory; nobody may
  // list it. Set only once the lock is ours: a refusal changes nothing.
  struct stat st;
  if (fstat(dir.get(), &st) != 0) return FromErrno(errno, "stat " + run_dir);
  if ((st.st_mode & 07777) != 0711 && fchmod(dir.get(), 0711) != 0) {
    return FromErrno(errno, "cannot chmod " + run_dir);
  }
  return lock;
}

// Runs the daemon in this process until unmounted. `ready` is called once
// the mount is visible (or with the error that prevented it).
int Serve(const MountArgs& a, const std::function<void(const Status&)>& ready) {
  // glibc raises its mmap threshold to the size of the largest block freed
  // (up to 32 MiB); from then on the 1 MiB buffers of FUSE reads and backup
  // copies come from per-thread arenas that keep them: 50 MiB beyond the
  // cache budget under load (test_load.sh). A fixed threshold keeps large
  // buffers in mmap, returned to the system when freed.
  mallopt(M_MMAP_THRESHOLD, 128 * 1024);
  DaemonOptions o;
  o.mountpoint = a.mountpoint;
  o.connect_uri = a.connect;
  o.run_dir = a.run_dir;
  o.store_dir = a.store;
  o.allow_other = a.allow_other;
  auto size = ParseSize(a.cache_size);
  if (!size.ok()) {
    ready(size.status().Annotate("--cache-size"));
    return 1;
  }
  o.cache_size = *size;
  // Bad input changes nothing: refuse before the run dir is created.
  if (const uint64_t min = BlockCacheOptions{}.block_size; *size < min) {
    ready(InvalidArgument("--cache-size " + a.cache_size +
                          " is below the minimum of " +
                          std::to_string(min >> 20) + "M"));
    return 1;
  }
  // The store is opened (and created) by path inside Daemon::Start; that is
  // safe once its path is trusted, since only root can change it then.
  TrustOptions store_trust;
  store_trust.what = "store";
  if (Status st = CheckTrustedPath(a.store, store_trust); !st.ok()) {
    ready(st);
    return 1;
  }
  auto lock = LockRunDir(a.run_dir);
  if (!lock.ok()) {
    ready(lock.status());
    return 1;
  }
  auto daemon = Daemon::Start(o);
  if (!daemon.ok()) {
    ready(daemon.status());
    return 1;
  }
  FuseOptions fo;
  fo.mountpoint = a.mountpoint;
  fo.allow_other = a.allow_other;
  fo.debug = a.debug;
  auto mount = FuseMount::Mount(daemon->get(), fo);
  if (!mount.ok()) {
    (*daemon)->Shutdown();
    ready(mount.status());
    return 1;
  }
  spdlog::info("ckptfs {} mounted on {} (libvirt {}, run dir {})",
               CKPTFS_VERSION, a.mountpoint, a.connect, a.run_dir);
  ready(Status::Ok());
  Status st = (*mount)->Run();
  // Unmounted or signalled: end every export before the mount goes, so no
  // backup job outlives the daemon.
  spdlog::info("shutting down: ending live exports");
  (*daemon)->Shutdown();
  mount->reset();
  daemon->reset();
  spdlog::info("ckptfs on {} stopped", a.mountpoint);
  return st.ok() ? 0 : 1;
}

int CmdMount(MountArgs a) {
  char resolved[PATH_MAX];
  if (!realpath(a.mountpoint.c_str(), resolved)) {
    return Fail(FromErrno(errno, "mount point " + a.mountpoint));
  }
  a.mountpoint = resolved;
  if (!fsys::is_directory(a.mountpoint)) {
    return Fail(InvalidArgument(a.mountpoint + " is not a directory"));
  }
  a.run_dir = fsys::absolute(a.run_dir).lexically_normal().string();
  if (a.store.rfind("rados:", 0) == 0) {
    return Fail(Status(Code::kUnsupported,
                       "RADOS stores are not available yet; use a directory"));
  }
  a.store = fsys::absolute(a.store).lexically_normal().string();
  if (!a.run_dir.empty() && a.run_dir.back() == '/') a.run_dir.pop_back();
  // RUN/<uuid>/nbd.sock must fit a UNIX socket address (108 bytes).
  if (a.run_dir.size() + 1 + 36 + sizeof("/nbd.sock") > 108) {
    return Fail(InvalidArgument("--run-dir " + a.run_dir +
                                " is too long for NBD socket paths; use a "
                                "path of at most 60 characters"));
  }
  if (auto s = ParseSize(a.cache_size); !s.ok()) {
    return Fail(s.status().Annotate("--cache-size"));
  }

  if (a.foreground) {
    SetupLogging(a.debug, false);
    return Serve(a, [](const Status& st) {
      if (!st.ok()) spdlog::error("{}", st.message());
    });
  }

  // Daemonise before any thread exists; the parent returns once the child
  // reports the mount ready, with its error otherwise.
  int pipefd[2];
  if (pipe(pipefd) != 0) return Fail(FromErrno(errno, "pipe"));
  pid_t pid = fork();
  if (pid < 0) return Fail(FromErrno(errno, "fork"));
  if (pid > 0) {
    close(pipefd[1]);
    std::string msg;
    char buf[512];
    ssize_t n;
    while ((n = read(pipefd[0], buf, sizeof(buf))) > 0) {
      msg.append(buf, static_cast<size_t>(n));
      if (msg.find('\n') != std::string::npos) break;
    }
    if (msg.rfind("OK", 0) == 0) return 0;
    int status = 0;
    waitpid(pid, &status, 0);
    if (msg.empty()) msg = "daemon exited before the mount was ready\n";
    std::cerr << "ckptfs: " << msg;
    return 1;
  }
  close(pipefd[0]);
  setsid();
  SetupLogging(a.debug, true);
  int fd = pipefd[1];
  int rc = Serve(a, [fd](const Status& st) {
    std::string msg = st.ok() ? "OK\n" : st.message() + "\n";
    if (write(fd, msg.data(), msg.size()) < 0) {
      // The parent went away; nothing to tell.
    }
    close(fd);
    if (st.ok()) {
      int null = open("/dev/null", O_RDWR);
      if (null >= 0) {
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2) close(null);
      }
      if (chdir("/") != 0) {
        // Keeping the cwd is harmless.
      }
    }
  });
  if (__lsan_do_leak_check != nullptr) __lsan_do_leak_check();
  _exit(rc);
}

// Runs a program found in $PATH with `argv`, no shell (a mount point may
// hold any character, quotes and ';' too); its exit status, -1 if it could
// not run or was killed.
int RunProgram(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) !=
      0) {
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int CmdUmount(const std::string& mountpoint) {
  char resolved[PATH_MAX];
  std::string mp =
      realpath(mountpoint.c_str(), resolved) ? resolved : mountpoint;
  pid_t pid = 0;
  // The pid to wait for (and signal) only from a mount root or we made:
  // another user's daemon could name any process.
  if (CheckMountTrusted(mp).ok()) {
    std::ifstream in(mp + "/control/status.json");
    try {
      auto j = nlohmann::json::parse(in);
      pid = j.value("pid", 0);
    } catch (const std::exception&) {
      // Not a live ckptfs mount (or its daemon is dead): just unmount.
    }
  }
  int rc = 0;
  if (getuid() == 0) {
    rc = umount2(mp.c_str(), 0);
    if (rc != 0 && errno == EBUSY) {
      return Fail(
          Busy(mp + " is busy (files open below it); close them and retry"));
    }
    if (rc != 0 && errno != EINVAL) {
      return Fail(FromErrno(errno, "cannot unmount " + mp));
    }
  } else {
    // fusermount3 says why it failed on stderr.
    if (RunProgram({"fusermount3", "-u", "--", mp}) != 0) {
      return Fail(IoError("fusermount3 -u " + mp + " failed"));
    }
  }
  // The daemon ends its exports after the unmount; wait for it to finish.
  if (pid > 0) {
    auto wait = [pid](int tenths) {
      for (int i = 0; i < tenths && kill(pid, 0) == 0; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
      return kill(pid, 0) != 0;
    };
    // A copy of the mount held in another mount namespace keeps the FUSE
    // connection open after our unmount; then tell the daemon directly.
    if (!wait(100)) kill(pid, SIGTERM);
    if (!wait(1100)) {
      return Fail(Status(Code::kTimedOut,
                         "daemon " + std::to_string(pid) +
                             " still running after 120 s; see syslog"));
    }
  }
  return 0;
}

int PrintReply(const Result<ControlReply>& r) {
  if (!r.ok()) return Fail(r.status());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r->json);
  } catch (const std::exception&) {
    if (r->err) return Fail(FromErrno(r->err, "request refused"));
    std::cout << r->json;
    return 0;
  }
  if (r->err) {
    std::cerr << "ckptfs: " << j.value("error", std::string(strerror(r->err)))
              << " (job " << j.value("id", std::string("?")) << ")\n";
    return 1;
  }
  std::cout << j.value("state", std::string("?")) << ": "
            << j.value("domain", std::string()) << " "
            << j.value("checkpoint", std::string()) << " (job "
            << j.value("id", std::string("?")) << ")\n";
  return 0;
}

// Follows a job record until it ends; a progress bar on a terminal.
int WaitJob(const std::string& mount, const std::string& id) {
  const std::string path = mount + "/control/jobs/" + id + ".json";
  const bool tty = isatty(STDERR_FILENO);
  for (;;) {
    nlohmann::json j;
    try {
      std::ifstream in(path);
      j = nlohmann::json::parse(in);
    } catch (const std::exception&) {
      return Fail(IoError("cannot read " + path));
    }
    const std::string state = j.value("state", "");
    const uint64_t done = j["progress"].value("done", uint64_t{0});
    const uint64_t total = j["progress"].value("total", uint64_t{0});
    if (tty) {
      const int pct = total ? static_cast<int>(100 * done / total) : 0;
      const int bar = pct / 4;
      std::fprintf(stderr, "\r[%-25s] %3d%% %8.1f / %.1f MiB %s   ",
                   std::string(static_cast<size_t>(bar), '#').c_str(), pct,
                   static_cast<double>(done) / (1 << 20),
                   static_cast<double>(total) / (1 << 20), state.c_str());
    }
    if (state != "running" && state != "queued") {
      if (tty) std::fprintf(stderr, "\n");
      if (state == "succeeded") {
        std::cout << "succeeded: " << j.value("domain", "") << " "
                  << j.value("checkpoint", "") << " (" << j.value("mode", "")
                  << ", job " << id << ")\n";
        return 0;
      }
      std::cerr << "ckptfs: job " << id << " " << state << ": "
                << j.value("error", std::string("?")) << "\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

int CmdJobs(const std::string& mount_opt, bool json) {
  auto mp = FindMount(mount_opt);
  if (!mp.ok()) return Fail(mp.status());
  std::vector<fsys::path> files;
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(*mp + "/control/jobs", ec)) {
    files.push_back(e.path());
  }
  if (ec) return Fail(IoError("cannot list jobs: " + ec.message()));
  std::sort(files.begin(), files.end());
  if (!json) {
    std::printf("%-24s %-10s %-16s %-24s %-10s %s\n", "ID", "KIND", "DOMAIN",
                "CHECKPOINT", "STATE", "ERROR");
  }
  for (const auto& f : files) {
    std::ifstream in(f);
    try {
      auto j = nlohmann::json::parse(in);
      if (json) {
        std::cout << j.dump() << "\n";
        continue;
      }
      auto str = [&](const char* k) {
        return j.contains(k) && j[k].is_string() ? j[k].get<std::string>()
                                                 : std::string("-");
      };
      std::printf("%-24s %-10s %-16s %-24s %-10s %s\n", str("id").c_str(),
                  str("kind").c_str(), str("domain").c_str(),
                  str("checkpoint").c_str(), str("state").c_str(),
                  j.contains("error") ? str("error").c_str() : "");
    } catch (const std::exception&) {
      // A record evicted between listing and reading.
    }
  }
  return 0;
}

// `ckptfs --version`: the release, and the store formats this build reads
// and writes (a store or object of another version is refused, so a tool
// reading a store can tell which ckptfs it needs).
std::string VersionText() {
  return std::string("ckptfs ") + CKPTFS_VERSION + "\nstore format " +
         std::to_string(kStoreFormat) + " (manifest version " +
         std::to_string(kManifestVersion) + ", backup record format " +
         std::to_string(kBackupRecordFormat) + "): reads and writes";
}

}  // namespace
}  // namespace ckptfs

int main(int argc, char** argv) {
  using namespace ckptfs;
  CLI::App app{
      "ckptfs: libvirt domains, checkpoints and disks as read-only "
      "raw image files"};
  app.set_version_flag("--version", VersionText,
                       "print the version and the store formats");
  app.require_subcommand(1);

  MountArgs ma;
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
                   "backup store directory (created on first use)")
      ->capture_default_str();
  mount->add_flag("-f,--foreground", ma.foreground,
                  "do not daemonise; log to stderr");
  mount->add_flag("--allow-other", ma.allow_other,
                  "let other users read images (control stays owner-only)");
  mount->add_flag("-d,--debug", ma.debug, "debug logging");

  std::string umount_mp;
  auto* umount =
      app.add_subcommand("umount", "end every live export, then unmount");
  umount->add_option("MOUNTPOINT", umount_mp)->required();

  std::string mount_opt;
  std::string domain, name, disks, checkpoint;
  auto* ckpt = app.add_subcommand(
      "checkpoint", "create a live checkpoint of a running domain");
  ckpt->add_option("DOMAIN", domain)->required();
  ckpt->add_option("--name", name, "checkpoint name (default: UTC time)");
  ckpt->add_option("--disks", disks,
                   "comma-separated targets (default: all qcow2 disks)");
  ckpt->add_option("-m,--mount", mount_opt,
                   "the ckptfs mount (default: the only one)");

  auto* release =
      app.add_subcommand("release", "end a live checkpoint's export");
  release->add_option("DOMAIN", domain)->required();
  release->add_option("CHECKPOINT", checkpoint)->required();
  release->add_option("-m,--mount", mount_opt, "the ckptfs mount");

  bool json = false;
  auto* jobs =
      app.add_subcommand("jobs", "list control requests and their state");
  jobs->add_option("-m,--mount", mount_opt, "the ckptfs mount");
  jobs->add_flag("--json", json, "one JSON record per line");

  std::string backup_checkpoint, mode = "auto";
  bool wait = false;
  auto* backup = app.add_subcommand(
      "backup", "back up a domain (a new live checkpoint, or --checkpoint)");
  backup->add_option("DOMAIN", domain)->required();
  backup->add_option("--name", name, "name of the new checkpoint");
  backup->add_option("--checkpoint", backup_checkpoint,
                     "back up this live checkpoint instead");
  backup->add_option("--mode", mode, "auto, full or incremental")
      ->capture_default_str();
  backup->add_flag("--wait", wait, "wait for the job (default on a terminal)");
  backup->add_option("-m,--mount", mount_opt, "the ckptfs mount");

  std::string store_dir = "/var/lib/ckptfs/store";
  bool dry_run = false;
  auto add_store = [&](CLI::App* c) {
    c->add_option("--store", store_dir, "backup store directory")
        ->capture_default_str();
  };
  std::string ls_domain;
  auto* ls = app.add_subcommand("ls", "list the backups in a store");
  ls->add_option("DOMAIN", ls_domain, "only this domain (name or uuid)");
  ls->add_flag("--json", json, "one JSON object per line");
  add_store(ls);
  auto* verify = app.add_subcommand(
      "verify", "re-hash every chunk of every backup; exit 1 on damage");
  add_store(verify);
  auto* reindex =
      app.add_subcommand("reindex", "rebuild the catalog from the store");
  add_store(reindex);
  auto* gc = app.add_subcommand(
      "gc", "remove chunks no backup references (safe while backups run)");
  gc->add_flag("-n,--dry-run", dry_run, "only count");
  add_store(gc);
  std::map<std::string, std::string> keep_values;
  auto* prune = app.add_subcommand(
      "prune", "remove backups outside keep rules (grandfather-father-son)");
  for (const char* k : {"keep-last", "keep-hourly", "keep-daily", "keep-weekly",
                        "keep-monthly", "keep-yearly"}) {
    prune->add_option(std::string("--") + k, keep_values[k],
                      std::string("number of backups to keep: ") + k);
  }
  prune->add_option("--domain", ls_domain, "only this domain (name or uuid)");
  prune->add_flag("-n,--dry-run", dry_run, "show what would go");
  add_store(prune);

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

  if (*ls) return StoreList(store_dir, ls_domain, json);
  if (*verify) return StoreVerify(store_dir);
  if (*reindex) return StoreReindex(store_dir);
  if (*gc) return StoreGc(store_dir, dry_run);
  if (*prune) {
    std::vector<std::pair<std::string, std::string>> keep;
    for (const auto& [k, v] : keep_values) {
      if (!v.empty()) keep.emplace_back(k, v);
    }
    return StorePrune(store_dir, ls_domain, keep, dry_run);
  }

  if (*mount) return CmdMount(ma);
  if (*umount) return CmdUmount(umount_mp);
  if (*jobs) return CmdJobs(mount_opt, json);
  auto mp = FindMount(mount_opt);
  if (!mp.ok()) return Fail(mp.status());
  if (*ckpt) {
    std::string line = domain;
    if (!name.empty()) line += " name=" + name;
    if (!disks.empty()) line += " disks=" + disks;
    return PrintReply(SendControl(*mp, "checkpoint", line));
  }
  if (*release) {
    return PrintReply(SendControl(*mp, "release", domain + " " + checkpoint));
  }
  if (*backup) {
    std::string line = domain;
    if (!name.empty()) line += " name=" + name;
    if (!backup_checkpoint.empty()) line += " checkpoint=" + backup_checkpoint;
    line += " mode=" + mode;
    auto reply = SendControl(*mp, "backup", line);
    if (!reply.ok() || reply->err || !(wait || isatty(STDOUT_FILENO))) {
      return PrintReply(reply);
    }
    std::string id;
    try {
      id = nlohmann::json::parse(reply->json).value("id", "");
    } catch (const std::exception&) {
      return PrintReply(reply);
    }
    return WaitJob(*mp, id);
  }
  return 0;
}
