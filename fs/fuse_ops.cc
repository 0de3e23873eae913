// The FUSE ops; the contract is in fuse_ops.h.
#include "fs/fuse_ops.h"

#include <fuse.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace ckptfs {

void InitSignal::Set() {
  {
    std::lock_guard lock(mu_);
    set_ = true;
  }
  cv_.notify_all();
}

void InitSignal::Cancel() {
  {
    std::lock_guard lock(mu_);
    cancelled_ = true;
  }
  cv_.notify_all();
}

bool InitSignal::WaitFor(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  cv_.wait_for(lock, timeout, [this] { return set_ || cancelled_; });
  return set_;
}

bool InitSignal::cancelled() {
  std::lock_guard lock(mu_);
  return cancelled_;
}

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
  Session()->init.Set();
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

}  // namespace

const fuse_operations& FuseOperations() {
  static const fuse_operations ops = MakeOps();
  return ops;
}

}  // namespace ckptfs
