// The FUSE edge: every op decodes its arguments, makes one call into the
// Filesystem and maps the Status to an errno with ToErrno(). Nothing else in
// ckptfs includes fuse.h.
#include <fcntl.h>
#include <fuse.h>
#include <poll.h>
#include <spdlog/spdlog.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_set>

#include "backend/mounts.h"
#include "fs/fuse_mount.h"

namespace ckptfs {

// The FUSE callbacks' view of their mount (the private_data of fuse_new):
// the filesystem, and the handles open on it. The kernel drops RELEASE
// requests still queued when the connection ends (close() returns before the
// daemon reads its RELEASE; an unmount or an aborted connection right after
// loses it), so the handles left when the mount goes are freed with it.
struct FuseSession {
  Filesystem* fs = nullptr;
  std::mutex mu;
  std::unordered_set<FileHandle*> open;  // guarded by mu
};

namespace {

FuseSession* Session() {
  return static_cast<FuseSession*>(fuse_get_context()->private_data);
}

Filesystem* Fs() { return Session()->fs; }

FileHandle* Handle(const fuse_file_info* fi) {
  return reinterpret_cast<FileHandle*>(fi->fh);
}

int Err(const Status& st) { return -ToErrno(st); }

void FillStat(const Attr& a, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = a.ino;
  st->st_mode = a.mode;
  st->st_nlink = a.nlink;
  st->st_size = static_cast<off_t>(a.size);
  st->st_blocks = static_cast<blkcnt_t>(a.blocks);
  st->st_blksize = 1 << 20;
  st->st_uid = a.uid;
  st->st_gid = a.gid;
  st->st_mtim.tv_sec = a.mtime;
  st->st_ctim.tv_sec = a.mtime;
  st->st_atim.tv_sec = a.mtime;
}

std::atomic<bool> g_init_done{false};

void* OpInit(fuse_conn_info* conn, fuse_config* cfg) {
  cfg->use_ino = 1;
  cfg->readdir_ino = 0;
  // The tree changes under the kernel (checkpoints come and go), so the
  // kernel must not cache names or attributes: a released checkpoint must
  // vanish at once. Lookups are cheap (one hash lookup in the snapshot) and
  // reads need none; open files answer GETATTR from their handle.
  cfg->negative_timeout = 0;
  cfg->entry_timeout = 0;
  cfg->attr_timeout = 0;
  conn->max_readahead = 16u << 20;
  conn->want |= FUSE_CAP_ASYNC_READ;
  // Images never change: no need for the kernel to re-check attributes
  // before reads and drop cached pages when mtime moves.
  conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
  g_init_done = true;
  return fuse_get_context()->private_data;
}

int OpGetAttr(const char* path, struct stat* st, fuse_file_info* fi) {
  if (fi && fi->fh) {
    FillStat(Handle(fi)->attr(), st);
    return 0;
  }
  auto r = Fs()->GetAttr(path);
  if (!r.ok()) return Err(r.status());
  FillStat(*r, st);
  return 0;
}

int OpReadLink(const char* path, char* buf, size_t size) {
  auto r = Fs()->ReadLink(path);
  if (!r.ok()) return Err(r.status());
  if (size == 0) return -EINVAL;
  size_t n = std::min(size - 1, r->size());
  std::memcpy(buf, r->data(), n);
  buf[n] = '\0';
  return 0;
}

int OpReadDir(const char* path, void* buf, fuse_fill_dir_t fill, off_t,
              fuse_file_info*, fuse_readdir_flags) {
  auto r = Fs()->ReadDir(path);
  if (!r.ok()) return Err(r.status());
  fill(buf, ".", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  fill(buf, "..", nullptr, 0, static_cast<fuse_fill_dir_flags>(0));
  for (const auto& e : *r) {
    struct stat st;
    FillStat(e.attr, &st);
    if (fill(buf, e.name.c_str(), &st, 0, FUSE_FILL_DIR_PLUS)) break;
  }
  return 0;
}

int OpOpen(const char* path, fuse_file_info* fi) {
  auto r = Fs()->Open(path, fi->flags);
  if (!r.ok()) return Err(r.status());
  std::unique_ptr<FileHandle> h = std::move(r).value();
  fi->keep_cache = h->keep_cache();
  fi->direct_io = h->direct_io();
  FuseSession* s = Session();
  std::lock_guard lock(s->mu);
  fi->fh = reinterpret_cast<uint64_t>(h.get());
  s->open.insert(h.release());
  return 0;
}

int OpRelease(const char*, fuse_file_info* fi) {
  FuseSession* s = Session();
  {
    std::lock_guard lock(s->mu);
    s->open.erase(Handle(fi));
  }
  delete Handle(fi);
  return 0;
}

int OpRead(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  auto r = Handle(fi)->Read(
      std::span<std::byte>(reinterpret_cast<std::byte*>(buf), size),
      static_cast<uint64_t>(off));
  if (!r.ok()) return Err(r.status());
  return static_cast<int>(*r);
}

int OpWrite(const char*, const char* buf, size_t size, off_t off,
            fuse_file_info* fi) {
  auto r = Handle(fi)->Write(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf), size),
      static_cast<uint64_t>(off));
  if (!r.ok()) return Err(r.status());
  return static_cast<int>(*r);
}

off_t OpLseek(const char*, off_t off, int whence, fuse_file_info* fi) {
  auto r = Handle(fi)->Seek(static_cast<uint64_t>(off), whence);
  if (!r.ok()) return Err(r.status());
  return static_cast<off_t>(*r);
}

int OpTruncate(const char* path, off_t size, fuse_file_info*) {
  return Err(Fs()->Truncate(path, static_cast<uint64_t>(size)));
}

int ReadOnlyTree(const char*) {
  // The tree's shape follows libvirt and the store: creating, removing,
  // renaming or changing anything is refused with EROFS (the kernel answers
  // ENOENT for a missing parent before it asks).
  return -EROFS;
}
int OpMkdir(const char* path, mode_t) { return ReadOnlyTree(path); }
int OpUnlink(const char* path) { return ReadOnlyTree(path); }
int OpRmdir(const char* path) { return ReadOnlyTree(path); }
int OpSymlink(const char*, const char* path) { return ReadOnlyTree(path); }
int OpRename(const char* from, const char*, unsigned) {
  return ReadOnlyTree(from);
}
int OpLink(const char*, const char* to) { return ReadOnlyTree(to); }
int OpChmod(const char* path, mode_t, fuse_file_info*) {
  return ReadOnlyTree(path);
}
int OpChown(const char* path, uid_t, gid_t, fuse_file_info*) {
  return ReadOnlyTree(path);
}
int OpCreate(const char* path, mode_t, fuse_file_info*) {
  return ReadOnlyTree(path);
}
int OpUtimens(const char* path, const timespec*, fuse_file_info*) {
  return ReadOnlyTree(path);
}

fuse_operations MakeOps() {
  fuse_operations ops{};
  ops.init = OpInit;
  ops.getattr = OpGetAttr;
  ops.readlink = OpReadLink;
  ops.readdir = OpReadDir;
  ops.open = OpOpen;
  ops.release = OpRelease;
  ops.read = OpRead;
  ops.write = OpWrite;
  ops.lseek = OpLseek;
  ops.truncate = OpTruncate;
  ops.mkdir = OpMkdir;
  ops.unlink = OpUnlink;
  ops.rmdir = OpRmdir;
  ops.symlink = OpSymlink;
  ops.rename = OpRename;
  ops.link = OpLink;
  ops.chmod = OpChmod;
  ops.chown = OpChown;
  ops.create = OpCreate;
  ops.utimens = OpUtimens;
  return ops;
}

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
  static const fuse_operations ops = MakeOps();
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
  std::string mp = mountpoint_;
  std::string devno = devno_;
  // Watches our namespace's mount table (POLLPRI on a change) for the
  // unmount, and widens read-ahead once INIT is done.
  int mfd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
  int efd = eventfd(0, EFD_CLOEXEC);
  std::thread watcher([mp, devno, mfd, efd] {
    for (int i = 0; i < 100 && !g_init_done; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    if (!devno.empty()) WidenReadAhead(devno);
    for (;;) {
      pollfd fds[2] = {{mfd, POLLPRI, 0}, {efd, POLLIN, 0}};
      if (poll(fds, 2, -1) < 0 && errno != EINTR) break;
      if (fds[1].revents) break;
      if (MountDevice(mp) != devno) {
        spdlog::info("{} was unmounted; ending the FUSE connection", mp);
        AbortConnection(devno);
        break;
      }
    }
  });
  fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(cfg, max_threads_);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  int rc = fuse_loop_mt(fuse_, cfg);
  fuse_loop_cfg_destroy(cfg);
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
