// The mount lifecycle: session setup, the unmount watch, read-ahead widening
// of the connection and the connection abort. The ops themselves are in
// fuse_ops.cc.
#include "fs/fuse_mount.h"

#include <fcntl.h>
#include <fuse.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <functional>
#include <string>
#include <thread>

#include "backend/mounts.h"
#include "fs/fuse_ops.h"

namespace ckptfs {
namespace {

// How long the kernel may take to send INIT after the mount; past it the
// watcher widens read-ahead anyway (the kernel may then clamp it back).
constexpr std::chrono::milliseconds kInitTimeout{2000};
// Between our INIT reply and the kernel applying it: INIT would clamp a
// read-ahead widened before that, and no event tells us when it is done.
constexpr std::chrono::milliseconds kInitReplyGrace{200};

// The device number ("0:42") of the FUSE mount on `mountpoint` in our mount
// namespace, or "" when it is not mounted here (any more).
std::string MountDevice(const std::string& mountpoint) {
  std::string found;
  for (const MountEntry& e : ReadMountInfo()) {
    // The last one is on top.
    if (e.mountpoint == mountpoint && e.fstype.starts_with("fuse.")) {
      found = e.devno;
    }
  }
  return found;
}

// The kernel sizes FUSE read-ahead from the bdi (128 KiB by default), which
// caps sequential reads at small requests. As root we widen it once the INIT
// reply has been processed (INIT would clamp it back).
void WidenReadAhead(const std::string& devno) {
  std::ofstream ra("/sys/class/bdi/" + devno + "/read_ahead_kb");
  ra << 8192 << std::endl;
  if (!ra) spdlog::debug("cannot widen read-ahead of bdi {}", devno);
}

// Aborts the FUSE connection: every blocked read of /dev/fuse returns and
// the loop ends. Used when our mount is gone from our namespace but copies
// of it live on in others (libvirt gives each QEMU a private copy of the
// host's mounts), which would otherwise keep the connection up forever.
void AbortConnection(const std::string& devno) {
  const std::string minor = devno.substr(devno.find(':') + 1);
  const std::string dir = "/sys/fs/fuse/connections";
  const std::string abort_file = dir + "/" + minor + "/abort";
  if (access(abort_file.c_str(), F_OK) != 0) {
    mount("fusectl", dir.c_str(), "fusectl", 0, nullptr);
  }
  std::ofstream f(abort_file);
  f << 1 << std::endl;
  if (!f) spdlog::warn("cannot abort FUSE connection {}", devno);
}

// Widens read-ahead once INIT is done, then watches our namespace's mount
// table (POLLPRI on a change) for the unmount of `mountpoint` until `stop_fd`
// (an eventfd) is signalled.
void WatchMount(InitSignal& init, const std::string& mountpoint,
                const std::string& devno, int mountinfo_fd, int stop_fd) {
  if (init.WaitFor(kInitTimeout)) {
    std::this_thread::sleep_for(kInitReplyGrace);
  } else if (!init.cancelled()) {
    spdlog::warn(
        "no FUSE INIT from the kernel within {} ms of mounting {}; widening "
        "read-ahead anyway (sequential reads may stay at 128 KiB requests)",
        kInitTimeout.count(), mountpoint);
  }
  if (!devno.empty()) WidenReadAhead(devno);
  for (;;) {
    pollfd fds[2] = {{mountinfo_fd, POLLPRI, 0}, {stop_fd, POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
    if (fds[1].revents) break;
    if (MountDevice(mountpoint) != devno) {
      spdlog::info("{} was unmounted; ending the FUSE connection", mountpoint);
      AbortConnection(devno);
      break;
    }
  }
}

}  // namespace

Result<std::unique_ptr<FuseMount>> FuseMount::Mount(
    Filesystem* fs, const FuseOptions& options) {
  std::string opts =
      "fsname=" + options.fsname + ",subtype=ckptfs,default_permissions";
  if (options.allow_other) opts += ",allow_other";
  std::vector<std::string> argv_s = {"ckptfs", "-o", opts};
  if (options.debug) argv_s.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  const fuse_operations& ops = FuseOperations();
  std::unique_ptr<FuseMount> m(new FuseMount());
  m->max_threads_ = options.max_threads;
  m->session_->fs = fs;
  m->fuse_ = fuse_new(&args, &ops, sizeof(ops), m->session_.get());
  // fuse_new re-allocates args while it parses them (fuse_opt_parse) and
  // keeps copies of what it needs; the rest is ours to free.
  fuse_opt_free_args(&args);
  if (!m->fuse_) return InvalidArgument("fuse_new failed (bad FUSE options)");
  if (fuse_mount(m->fuse_, options.mountpoint.c_str()) != 0) {
    return Status(Code::kIoError,
                  "cannot mount on " + options.mountpoint +
                      " (does it exist, is it already mounted, is /dev/fuse "
                      "available?)");
  }
  m->mounted_ = true;
  m->mountpoint_ = options.mountpoint;
  m->devno_ = MountDevice(options.mountpoint);
  return m;
}

FuseMount::FuseMount() : session_(std::make_unique<FuseSession>()) {}

FuseMount::~FuseMount() {
  if (fuse_) {
    if (mounted_) fuse_unmount(fuse_);
    fuse_destroy(fuse_);
  }
  // No callback runs any more; these never got their RELEASE.
  for (FileHandle* h : session_->open) delete h;
}

Status FuseMount::Run() {
  fuse_session* se = fuse_get_session(fuse_);
  if (fuse_set_signal_handlers(se) != 0) {
    return Internal("cannot install signal handlers");
  }
  int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  int efd = eventfd(0, EFD_CLOEXEC);
  std::thread watcher(WatchMount, std::ref(session_->init), mountpoint_, devno_,
                      mfd, efd);
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, max_threads_);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  int rc = fuse_loop_mt(fuse_, cfg);
  fuse_loop_cfg_destroy(cfg);
  session_->init.Cancel();
  uint64_t one = 1;
  if (write(efd, &one, sizeof(one)) < 0) {
    // The watcher then ends with the process.
  }
  watcher.join();
  close(efd);
  close(mfd);
  fuse_remove_signal_handlers(se);
  if (rc < 0) return Internal("FUSE loop failed");
  return Status::Ok();
}

void FuseMount::Exit() { fuse_exit(fuse_); }

void FuseMount::Unmount() {
  if (mounted_) {
    fuse_unmount(fuse_);
    mounted_ = false;
  }
}

}  // namespace ckptfs
