#include "mountd/mount_command.h"

#include <fcntl.h>
#include <malloc.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <climits>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <iostream>
#include <string>

#include "backend/trusted_dir.h"
#include "cache/block_cache.h"
#include "fs/fuse_mount.h"
#include "mountd/cli.h"
#include "mountd/daemon.h"
#include "mountd/log.h"
#include "mountd/service_notify.h"
#include "version.h"

// LeakSanitizer's check, defined only in sanitizer builds (a weak reference
// is null otherwise). The daemon ends with _exit(), which skips the check
// exit() would run, so it asks for one itself.
extern "C" void __lsan_do_leak_check() __attribute__((weak));

namespace ckptfs {
namespace {

namespace fsys = std::filesystem;

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

// The daemon's options from the command line's, refused before anything is
// created: bad input changes nothing.
Result<DaemonOptions> MakeDaemonOptions(const MountArgs& a) {
  DaemonOptions o;
  o.mountpoint = a.mountpoint;
  o.connect_uri = a.connect;
  o.run_dir = a.run_dir;
  o.store_dir = a.store;
  RETURN_IF_ERROR(
      CheckCephOptions(a.store, a.ceph_conf, a.ceph_id, &o.store_options.ceph));
  // A rados: store's catalog is this daemon's, beside its NBD sockets.
  o.store_options.catalog_dir = a.run_dir;
  o.allow_other = a.allow_other;
  o.host_id = a.host_id.empty() ? HostName() : a.host_id;
  RETURN_IF_ERROR(ValidateHostId(o.host_id).Annotate(
      a.host_id.empty() ? "the host name (give --host-id)" : "--host-id"));
  // Renewed every quarter of it; gc on any host may expire a lock that
  // was not renewed for this long.
  int64_t lease = 0;
  const auto [end, ec] = std::from_chars(
      a.lock_lease.data(), a.lock_lease.data() + a.lock_lease.size(), lease);
  if (ec != std::errc() || end != a.lock_lease.data() + a.lock_lease.size() ||
      lease < 10 || lease > 86400) {
    return InvalidArgument("--lock-lease: '" + SanitizeForRecord(a.lock_lease) +
                           "' is not a number of seconds from 10 to 86400");
  }
  o.lock_lease = std::chrono::seconds(lease);
  auto size = ParseSize(a.cache_size);
  if (!size.ok()) return size.status().Annotate("--cache-size");
  o.cache_size = *size;
  // Refused before the run dir is created.
  if (const uint64_t min = BlockCacheOptions{}.block_size; *size < min) {
    return InvalidArgument("--cache-size " + a.cache_size +
                           " is below the minimum of " +
                           std::to_string(min >> 20) + "M");
  }
  // The store is opened (and created) by path inside Daemon::Start; that is
  // safe once its path is trusted, since only root can change it then.
  // A rados: store's access is the client key's caps instead.
  if (IsRadosStore(a.store)) return o;
  TrustOptions store_trust;
  store_trust.what = "store";
  RETURN_IF_ERROR(CheckTrustedPath(a.store, store_trust));
  return o;
}

// Runs the daemon in this process until unmounted. `ready` is called once
// the mount is visible (or with the error that prevented it).
int Serve(const MountArgs& a, const std::function<void(const Status&)>& ready) {
  // glibc raises its mmap threshold to the size of the largest block freed
  // (up to 32 MiB); from then on the 1 MiB buffers of FUSE reads and backup
  // copies come from per-thread arenas that keep them: 50 MiB beyond the
  // cache budget under load (test_load.sh). A fixed threshold between the
  // two sizes keeps 1 MiB buffers in mmap, returned when freed, and the
  // 256 KiB ones (chunks, librados messages) in the heap: as fresh mmaps
  // each page of them faulted on first touch, 4-5x the CPU of a RADOS read
  // or write (docs/PERFORMANCE.md). The trim threshold (else 128 KiB once
  // the threshold is fixed) keeps a few such buffers' worth of free heap
  // instead of returning and refaulting it; at most 4 arenas bound it.
  mallopt(M_MMAP_THRESHOLD, 512 * 1024);
  mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
  mallopt(M_ARENA_MAX, 4);
  auto o = MakeDaemonOptions(a);
  if (!o.ok()) {
    ready(o.status());
    return 1;
  }
  auto lock = LockRunDir(a.run_dir);
  if (!lock.ok()) {
    ready(lock.status());
    return 1;
  }
  auto daemon = Daemon::Start(*o);
  if (!daemon.ok()) {
    ready(daemon.status());
    return 1;
  }
  FuseOptions fo;
  fo.mountpoint = a.mountpoint;
  fo.allow_other = a.allow_other;
  fo.debug = a.debug;
  auto mount = FuseMount::Mount(&(*daemon)->filesystem(), fo);
  if (!mount.ok()) {
    (*daemon)->Shutdown();
    ready(mount.status());
    return 1;
  }
  spdlog::info("ckptfs {} mounted on {} (libvirt {}, run dir {})",
               CKPTFS_VERSION, a.mountpoint, a.connect, a.run_dir);
  ready(Status::Ok());
  ServiceNotifier notifier;
  notifier.NotifyWhenServing(a.mountpoint);
  Status st = (*mount)->Run();
  // Unmounted or signalled: end every export before the mount goes, so no
  // backup job outlives the daemon.
  notifier.Stopping();
  spdlog::info("shutting down: ending live exports");
  (*daemon)->Shutdown();
  mount->reset();
  notifier.Join();
  daemon->reset();
  spdlog::info("ckptfs on {} stopped", a.mountpoint);
  return st.ok() ? 0 : 1;
}

// Absolute, normalised paths (the daemon chdirs to /), and what can be
// refused before anything is created.
Status NormaliseMountArgs(MountArgs& a) {
  char resolved[PATH_MAX];
  if (!realpath(a.mountpoint.c_str(), resolved)) {
    return FromErrno(errno, "mount point " + a.mountpoint);
  }
  a.mountpoint = resolved;
  if (!fsys::is_directory(a.mountpoint)) {
    return InvalidArgument(a.mountpoint + " is not a directory");
  }
  a.run_dir = fsys::absolute(a.run_dir).lexically_normal().string();
  if (!IsRadosStore(a.store)) {
    a.store = fsys::absolute(a.store).lexically_normal().string();
  }
  if (!a.run_dir.empty() && a.run_dir.back() == '/') a.run_dir.pop_back();
  // RUN/<uuid>/nbd.sock must fit a UNIX socket address (108 bytes).
  if (a.run_dir.size() + 1 + 36 + sizeof("/nbd.sock") > 108) {
    return InvalidArgument("--run-dir " + a.run_dir +
                           " is too long for NBD socket paths; use a "
                           "path of at most 60 characters");
  }
  if (auto s = ParseSize(a.cache_size); !s.ok()) {
    return s.status().Annotate("--cache-size");
  }
  return Status::Ok();
}

// The parent's side of daemonising: returns once the child reports the
// mount ready (0), or with its error (1).
int AwaitChild(pid_t pid, int fd) {
  std::string msg;
  char buf[512];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
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

// The child's side: serves the mount, tells the parent through `fd` when it
// is ready, then lets go of the terminal and the cwd.
[[noreturn]] void ServeDaemonised(const MountArgs& a, int fd) {
  setsid();
  SetupLogging(a.debug, true);
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

}  // namespace

int CmdMount(MountArgs a) {
  if (Status st = NormaliseMountArgs(a); !st.ok()) return ReportError(st);
  if (a.foreground) {
    SetupLogging(a.debug, false);
    return Serve(a, [](const Status& st) {
      if (!st.ok()) spdlog::error("{}", st.message());
    });
  }
  // Daemonise before any thread exists.
  int pipefd[2];
  if (pipe(pipefd) != 0) return ReportError(FromErrno(errno, "pipe"));
  pid_t pid = fork();
  if (pid < 0) return ReportError(FromErrno(errno, "fork"));
  if (pid > 0) {
    close(pipefd[1]);
    return AwaitChild(pid, pipefd[0]);
  }
  close(pipefd[0]);
  ServeDaemonised(a, pipefd[1]);
}

}  // namespace ckptfs
