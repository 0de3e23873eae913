#include "mountd/daemon.h"

#include <fcntl.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>

#include "mountd/source_factory.h"
#include "version.h"

namespace ckptfs {
namespace {

// Serves bytes fixed at open (README, info.json, a rendered job record).
class StringHandle : public FileHandle {
 public:
  StringHandle(std::string content, bool direct)
      : content_(std::move(content)), direct_(direct) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override {
    if (offset >= content_.size()) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), content_.size() - offset);
    std::memcpy(buf.data(), content_.data() + offset, n);
    return n;
  }
  Result<uint64_t> Seek(uint64_t offset, int whence) override {
    if (offset >= content_.size()) {
      return Status(Code::kOutOfRange, "offset beyond the end");
    }
    return whence == SEEK_DATA ? offset : content_.size();
  }
  bool keep_cache() const override { return !direct_; }
  bool direct_io() const override { return direct_; }

 private:
  const std::string content_;
  const bool direct_;
};

// A disk image of a checkpoint: immutable, so the kernel keeps its pages.
class ImageHandle : public FileHandle {
 public:
  // A stored disk's manifest stays in memory while a handle holds it.
  explicit ImageHandle(std::shared_ptr<const CheckpointDisk> disk)
      : disk_(std::move(disk)), image_(HoldImage(disk_->image)) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override {
    if (offset >= disk_->size) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), disk_->size - offset);
    Status st = image_->pread(buf.first(n), offset);
    if (!st.ok()) {
      // Whatever went wrong below (export ended, QEMU gone, timeout), a
      // reader of an image sees EIO, never partial or wrong bytes.
      spdlog::debug("{}: read at {}: {}", disk_->target, offset, st.ToString());
      return IoError(st.message());
    }
    return n;
  }
  Result<uint64_t> Seek(uint64_t offset, int whence) override {
    if (!disk_->extents.empty() || disk_->size == 0) {
      return SeekExtents(disk_->extents, disk_->size, offset,
                         whence == SEEK_DATA);
    }
    // Stored disks: the manifest knows its zero chunks.
    return SeekImage(*image_, offset, whence == SEEK_DATA);
  }
  bool keep_cache() const override { return true; }

 private:
  const std::shared_ptr<const CheckpointDisk> disk_;
  const std::shared_ptr<ImageSource> image_;
};

// control/<kind>: each write() is one request; a read() returns the reply
// to the last request made through this open file. A read that continues
// where the write left the file offset (open O_RDWR, write, read) gets the
// reply from its start, as does a pread at offset 0.
class ControlHandle : public FileHandle {
 public:
  ControlHandle(Daemon* daemon, RequestKind kind)
      : daemon_(daemon), kind_(kind) {}
  Result<size_t> Read(std::span<std::byte> buf, uint64_t offset) override {
    std::string reply;
    {
      std::lock_guard lock(mu_);
      reply = reply_;
      if (offset >= reply_offset_) offset -= reply_offset_;
    }
    if (offset >= reply.size()) return size_t{0};
    size_t n = std::min<uint64_t>(buf.size(), reply.size() - offset);
    std::memcpy(buf.data(), reply.data() + offset, n);
    return n;
  }
  Result<size_t> Write(std::span<const std::byte> data,
                       uint64_t offset) override {
    std::string_view line(reinterpret_cast<const char*>(data.data()),
                          data.size());
    Daemon::Reply r = daemon_->Submit(kind_, line);
    {
      std::lock_guard lock(mu_);
      reply_ = r.json;
      // A failed write leaves the file offset where it was.
      reply_offset_ = r.status.ok() ? offset + data.size() : offset;
    }
    if (!r.status.ok()) return r.status;
    return data.size();
  }
  Result<uint64_t> Seek(uint64_t, int) override {
    return Status(Code::kOutOfRange, "control files hold no data");
  }
  bool direct_io() const override { return true; }

 private:
  Daemon* const daemon_;
  const RequestKind kind_;
  std::mutex mu_;
  std::string reply_;          // guarded by mu_
  uint64_t reply_offset_ = 0;  // guarded by mu_
};

bool Writes(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(std::move(options)),
      started_(NowMs()),
      uid_(getuid()),
      gid_(getgid()) {}

Result<std::unique_ptr<Daemon>> Daemon::Start(const DaemonOptions& options) {
  std::unique_ptr<Daemon> d(new Daemon(options));
  BlockCacheOptions co;
  co.capacity_bytes = options.cache_size;
  RETURN_IF_ERROR(BlockCache::ValidateOptions(co));
  d->cache_ = std::make_unique<BlockCache>(co);
  Daemon* self = d.get();
  ASSIGN_OR_RETURN(
      d->libvirt_,
      LibvirtClient::Connect(options.connect_uri, [self](const DomainEvent& e) {
        self->OnEvent(e);
      }));
  ASSIGN_OR_RETURN(d->store_, Store::Open(options.store_dir, true));
  // The catalog is an index of the store: a corrupt one is moved aside and
  // rebuilt by the reconcile below rather than keep the mount down.
  std::string moved_to;
  ASSIGN_OR_RETURN(d->catalog_,
                   d->store_->OpenCatalog(/*replace_corrupt=*/true, &moved_to));
  if (!moved_to.empty()) {
    spdlog::warn("catalog {} was corrupt: moved it aside to {}",
                 d->catalog_->path(), moved_to);
  }
  RETURN_IF_ERROR(d->ReconcileCatalog());
  d->RemoveStaleLocks();
  d->stored_ =
      std::make_unique<StoredCheckpoints>(*d->store_, *d->catalog_, *d->cache_);
  RETURN_IF_ERROR(d->stored_->Refresh());
  d->runner_ =
      std::make_unique<BackupRunner>(*d->store_, *d->catalog_, d->jobs_);
  ExportOptions eo;
  eo.run_dir = options.run_dir;
  d->exports_ = std::make_unique<LiveExports>(
      *d->libvirt_, *d->cache_, d->jobs_, eo, [self] { self->Publish(); });
  d->exports_->SetBaseChooser([self](const DomainInfo& dom,
                                     const std::vector<std::string>& disks,
                                     const std::vector<CheckpointInfo>& cps) {
    return self->ChooseBase(dom, disks, cps);
  });
  d->exports_->EndStale();
  d->ReloadDomains();
  d->refresher_ = std::thread([self] { self->RefreshLoop(); });
  return d;
}

Daemon::~Daemon() { Shutdown(); }

void Daemon::Shutdown() {
  std::call_once(shutdown_once_, [this] {
    {
      std::lock_guard lock(events_mu_);
      stopping_ = true;
    }
    events_cv_.notify_all();
    if (refresher_.joinable()) refresher_.join();
    // A backup still running is cancelled: it leaves no record, so it is
    // never served nor used as a base; the next one starts from the last
    // good backup.
    cancel_backups_ = true;
    std::vector<BackupThread> backups;
    {
      std::lock_guard lock(backups_mu_);
      backups.swap(backups_);
    }
    for (auto& b : backups) b.thread.join();
    if (exports_) exports_->EndAll();
    // Ending the exports fires job-completed events: none may reach this
    // object once its members start being destroyed.
    if (libvirt_) libvirt_->StopEvents();
  });
}

std::shared_ptr<const Tree> Daemon::Snapshot() const {
  std::lock_guard lock(tree_mu_);
  return tree_;
}

void Daemon::Publish() {
  std::lock_guard lock(publish_mu_);
  TreeInput in;
  in.domains = domains_;
  in.checkpoints = exports_->List();
  in.control_files = {"backup", "checkpoint", "release"};
  // A checkpoint being backed up is served live until its backup is
  // complete; then from the store.
  for (const auto& v : stored_->List()) {
    bool live = false;
    for (const auto& l : in.checkpoints) {
      live |= l->domain == v->domain && l->name == v->name;
    }
    if (!live) in.checkpoints.push_back(v);
  }
  in.job_ids = jobs_.Ids();
  in.allow_other = options_.allow_other;
  in.mount_time = started_ / 1000;
  in.readme = ReadmeText();
  auto tree = BuildTree(in, inodes_);
  std::lock_guard tlock(tree_mu_);
  tree_ = std::move(tree);
}

void Daemon::ReloadDomains() {
  auto list = libvirt_->ListDomains();
  if (!list.ok()) {
    spdlog::warn("cannot list domains: {}", list.status().ToString());
  } else {
    std::vector<std::string> names;
    for (const auto& d : *list) {
      if (ValidateDomainName(d.name).ok()) names.push_back(d.name);
    }
    std::lock_guard lock(publish_mu_);
    domains_ = std::move(names);
  }
  Publish();
}

void Daemon::OnEvent(const DomainEvent& event) {
  // On the libvirt event thread: queue only, never call libvirt here.
  {
    std::lock_guard lock(events_mu_);
    events_.push_back(event);
  }
  events_cv_.notify_one();
}

void Daemon::RefreshLoop() {
  // The store poll runs on a clock of its own: libvirt sends events for every
  // domain on the host, and on a busy host they never pause for long.
  constexpr auto kPollInterval = std::chrono::seconds(5);
  auto next_poll = std::chrono::steady_clock::now() + kPollInterval;
  std::unique_lock lock(events_mu_);
  while (!stopping_) {
    events_cv_.wait_until(lock, next_poll,
                          [this] { return stopping_ || !events_.empty(); });
    if (stopping_) break;
    std::deque<DomainEvent> batch;
    batch.swap(events_);
    lock.unlock();
    bool reload = false, resync = false, reconnected = false;
    for (const auto& e : batch) {
      using K = DomainEvent::Kind;
      switch (e.kind) {
        case K::kDefined:
        case K::kStarted:
          reload = true;
          break;
        case K::kUndefined:
        case K::kStopped:
          exports_->Forget(e.domain, e.kind == K::kStopped
                                         ? "the domain stopped"
                                         : "the domain was undefined");
          reload = true;
          break;
        case K::kJobCompleted:
          resync = true;
          break;
        case K::kReconnected:
          reload = resync = reconnected = true;
          break;
        case K::kOther:
          break;
      }
    }
    const auto now = std::chrono::steady_clock::now();
    const bool poll = now >= next_poll;
    if (poll) next_poll = now + kPollInterval;
    if (poll && !libvirt_->alive()) {
      // libvirtd went away: the next call reconnects and queues
      // kReconnected, which resynchronises the tree.
      reload = true;
    }
    if (resync) exports_->Resync();
    // Jobs of exports that ended while libvirt was unreachable.
    exports_->RetryEnds();
    if (poll) {
      // Every few seconds: pick up store changes made by the CLI (prune,
      // reindex) through the shared catalog.
      Status st = stored_->Refresh();
      if (!st.ok()) spdlog::warn("catalog: {}", st.ToString());
      // Every request leaves a job record in the catalog: keep the newest,
      // so a flood of requests cannot grow it without bound.
      st = catalog_->PruneJobs(10 * JobTable::kMaxJobs);
      if (!st.ok()) spdlog::warn("catalog: {}", st.ToString());
      if (!reload) Publish();
    }
    if (reload) ReloadDomains();
    if (reconnected) libvirt_resyncs_.fetch_add(1);
    lock.lock();
  }
}

Attr Daemon::MakeAttr(const Node& n) const {
  Attr a;
  a.ino = n.ino;
  a.mtime = n.mtime;
  a.uid = uid_;
  a.gid = gid_;
  switch (n.type) {
    case NodeType::kDir:
      a.mode = S_IFDIR | n.perm;
      a.nlink = 2;
      a.size = 0;
      break;
    case NodeType::kSymlink:
      a.mode = S_IFLNK | n.perm;
      a.size = n.content.size();
      break;
    case NodeType::kImage:
      a.mode = S_IFREG | n.perm;
      a.size = n.disk->size;
      a.blocks = (n.disk->allocated + 511) / 512;
      break;
    case NodeType::kFile:
      a.mode = S_IFREG | n.perm;
      a.size = n.content.size();
      a.blocks = (a.size + 511) / 512;
      break;
    case NodeType::kJob:
      a.mode = S_IFREG | n.perm;
      a.size = JobJson(n.key).size();
      break;
    case NodeType::kStatus:
      a.mode = S_IFREG | n.perm;
      a.size = StatusJson().size();
      a.mtime = NowMs() / 1000;
      break;
    case NodeType::kControl:
      a.mode = S_IFREG | n.perm;
      break;
  }
  return a;
}

Result<Attr> Daemon::GetAttr(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  return MakeAttr(*n);
}

Result<std::vector<DirEntry>> Daemon::ReadDir(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such directory");
  if (n->type != NodeType::kDir) return InvalidArgument("not a directory");
  std::string prefix(path);
  if (prefix.back() != '/') prefix += '/';
  std::vector<DirEntry> out;
  for (const auto& name : n->children) {
    const Node* c = tree->Find(prefix + name);
    if (c) out.push_back({name, MakeAttr(*c)});
  }
  return out;
}

Result<std::string> Daemon::ReadLink(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such link");
  if (n->type != NodeType::kSymlink) return InvalidArgument("not a link");
  return n->content;
}

Result<std::unique_ptr<FileHandle>> Daemon::Open(std::string_view path,
                                                 int flags) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  auto r = OpenNode(*n, flags);
  if (r.ok()) (*r)->set_attr(MakeAttr(*n));
  return r;
}

Result<std::unique_ptr<FileHandle>> Daemon::OpenNode(const Node& node,
                                                     int flags) {
  const Node* n = &node;
  if (n->type == NodeType::kControl) {
    RequestKind kind = n->key == "release"  ? RequestKind::kRelease
                       : n->key == "backup" ? RequestKind::kBackup
                                            : RequestKind::kCheckpoint;
    return std::unique_ptr<FileHandle>(new ControlHandle(this, kind));
  }
  if (Writes(flags) || (flags & O_TRUNC)) {
    return ReadOnly("read-only: checkpoint images never change");
  }
  switch (n->type) {
    case NodeType::kImage:
      return std::unique_ptr<FileHandle>(new ImageHandle(n->disk));
    case NodeType::kFile:
      return std::unique_ptr<FileHandle>(new StringHandle(n->content, false));
    case NodeType::kJob:
      return std::unique_ptr<FileHandle>(
          new StringHandle(JobJson(n->key), true));
    case NodeType::kStatus:
      return std::unique_ptr<FileHandle>(new StringHandle(StatusJson(), true));
    default:
      return InvalidArgument("not a regular file");
  }
}

Status Daemon::Truncate(std::string_view path, uint64_t) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  // Shells open control files with O_TRUNC; there is nothing to truncate.
  if (n->type == NodeType::kControl) return Status::Ok();
  return ReadOnly("read-only");
}

Daemon::Reply Daemon::Submit(RequestKind kind, std::string_view line) {
  const std::string id =
      jobs_.Create(std::string(KindName(kind)), SanitizeForRecord(line));
  Status st;
  bool async = false;
  auto req = ParseRequest(kind, line);
  if (!req.ok()) {
    st = req.status();
  } else {
    jobs_.Update(id, [&](Job& j) {
      j.domain = req->domain;
      j.checkpoint = req->name.empty() ? req->checkpoint : req->name;
    });
    switch (kind) {
      case RequestKind::kCheckpoint:
        st = exports_->CreateCheckpoint(*req, id).status();
        break;
      case RequestKind::kRelease:
        st = exports_->Release(*req, id);
        break;
      case RequestKind::kBackup:
        st = StartBackup(*req, id, &async);
        break;
    }
  }
  // A request that failed before it acted was rejected; one that failed
  // while acting failed. An accepted backup goes on running.
  auto job = jobs_.Get(id);
  bool acted = job && job->state == "running";
  if (!async) FinishJob(id, st, acted ? "failed" : "rejected");
  if (!st.ok()) {
    spdlog::info("{} request '{}' {}: {}", KindName(kind),
                 SanitizeForRecord(line), acted ? "failed" : "rejected",
                 st.message());
  }
  Publish();
  job = jobs_.Get(id);
  // Ended records are bounded (jobs.h): a flood of concurrent requests may
  // have evicted this one already; the reply is the record it would be.
  if (!job) {
    Job gone;
    gone.id = id;
    gone.state = "running";
    job = async ? gone : FinishedJob(gone, st, acted ? "failed" : "rejected");
  }
  // Error texts may quote bytes that are not UTF-8 (a store path, a libvirt
  // message): a strict dump would throw, and nothing would catch it.
  return {st, JobResponse(*job).dump(-1, ' ', false,
                                     nlohmann::json::error_handler_t::replace) +
                  "\n"};
}

void Daemon::FinishJob(const std::string& id, const Status& st,
                       const std::string& fail_state) {
  jobs_.Finish(id, st, fail_state);
  if (auto job = jobs_.Get(id)) {
    Status ps = catalog_->PutJob(*job);
    if (!ps.ok()) spdlog::warn("job {}: {}", id, ps.ToString());
  }
}

Status Daemon::ReconcileCatalog() {
  return store_->ReconcileCatalog(*catalog_);
}

std::string Daemon::HostName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

void Daemon::RemoveStaleLocks() {
  store_->RemoveStaleLocks(HostName(), [](int64_t pid) {
    return pid <= INT32_MAX && kill(static_cast<pid_t>(pid), 0) == 0;
  });
}

BaseChoice Daemon::ChooseBase(const DomainInfo& domain,
                              const std::vector<std::string>& disks,
                              const std::vector<CheckpointInfo>& cps) {
  // Each probe asks libvirt (and QEMU) once; after a killed QEMU every
  // bitmap of a disk is unusable, so looking further back finds nothing.
  constexpr int kMaxProbes = 8;
  auto backups = catalog_->ListBackups(domain.uuid);
  if (!backups.ok()) return {};
  // Newest first: the first backup whose checkpoint libvirt still has, with
  // a bitmap libvirt can use on every selected disk (not deleted, not left
  // inconsistent by a killed QEMU), and that covers those disks. Failing
  // that, the newest one usable on some disks: the others are copied full.
  std::optional<BaseChoice> partial;
  int probes = 0;
  for (auto it = backups->rbegin(); it != backups->rend(); ++it) {
    auto cp = std::find_if(cps.begin(), cps.end(), [&](const auto& c) {
      return c.name == it->checkpoint;
    });
    if (cp == cps.end()) continue;
    // A checkpoint deleted and created again under the same name has a
    // bitmap that started after the backup's point in time: never a base.
    if (!IsRecordedCheckpoint(*cp, it->created, it->checkpoint_xml)) continue;
    auto in_backup = [&](const std::string& d) {
      return std::any_of(it->disks.begin(), it->disks.end(),
                         [&](const auto& bd) { return bd.name == d; });
    };
    if (std::none_of(disks.begin(), disks.end(), in_backup)) continue;
    if (++probes > kMaxProbes) break;
    const auto unusable = UnusableBitmaps(*libvirt_, domain.name, *cp, disks);
    BaseChoice choice{it->checkpoint, {}};
    for (const auto& d : disks) {
      if (!in_backup(d) ||
          std::find(unusable.begin(), unusable.end(), d) != unusable.end()) {
        choice.full.push_back(d);
      }
    }
    if (choice.full.empty()) return choice;
    if (!partial && choice.full.size() < disks.size()) partial = choice;
  }
  return partial.value_or(BaseChoice{});
}

Status Daemon::ExplainBackupFailure(const std::string& domain,
                                    const Status& st) {
  // Export failures are I/O errors; the store's own (no space, permission)
  // and a cancel explain themselves.
  if (st.code() != Code::kIoError) return st;
  const std::string after =
      ": nothing was stored; the next backup starts from the last complete "
      "one";
  // libvirt learns that QEMU died a moment after the NBD socket closed.
  for (int i = 0; i < 15; ++i) {
    auto dom = libvirt_->GetDomain(domain);
    if (!dom.ok()) {
      if (dom.status().code() != Code::kNotFound) return st;
      return st.Annotate("domain " + domain +
                         " was undefined while the backup ran" + after);
    }
    if (!dom->active) {
      return st.Annotate("domain " + domain +
                         " stopped while the backup ran (QEMU exited)" + after);
    }
    auto job = libvirt_->GetBackupJob(domain);
    if (job.ok() && !job->has_value()) {
      return st.Annotate("the backup job of " + domain +
                         " ended while the backup ran (virsh domjobabort?)" +
                         after);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return st;
}

Status Daemon::StartBackup(const Request& req, const std::string& job_id,
                           bool* async) {
  const std::string& domain = req.domain;
  ASSIGN_OR_RETURN(DomainInfo dom, libvirt_->GetDomain(domain));
  RETURN_IF_ERROR(exports_->Claim(domain));
  bool handed_off = false;
  struct Unclaim {
    LiveExports* e;
    const std::string& d;
    bool* handed_off;
    ~Unclaim() {
      if (!*handed_off) e->Unclaim(d);
    }
  } unclaim{exports_.get(), domain, &handed_off};

  std::shared_ptr<const CheckpointView> view;
  bool created = false;
  if (!req.checkpoint.empty()) {
    view = exports_->Get(domain);
    if (!view || view->name != req.checkpoint) {
      return NotFound("checkpoint " + req.checkpoint + " of " + domain +
                      " is not live; omit checkpoint= to create one");
    }
    auto existing = catalog_->GetBackup(BackupId(dom.uuid, req.checkpoint));
    if (existing.ok() && existing->has_value()) {
      return AlreadyExists("checkpoint " + req.checkpoint + " of " + domain +
                           " is backed up already");
    }
    RETURN_IF_ERROR(store_->CheckNameFree(dom.uuid, req.checkpoint));
  } else {
    // A name the store holds already is refused before the checkpoint is
    // made: a backup never changes (BackupRunner checks again).
    if (!req.name.empty()) {
      RETURN_IF_ERROR(store_->CheckNameFree(dom.uuid, req.name));
    }
    if (req.mode == "incremental") {
      // Bad input changes nothing: refuse before creating the checkpoint.
      std::vector<std::string> targets;
      for (const auto& d : dom.disks) {
        if (CarriesCheckpoints(d)) {
          targets.push_back(d.target);
        }
      }
      ASSIGN_OR_RETURN(auto cps, libvirt_->ListCheckpoints(domain));
      if (ChooseBase(dom, targets, cps).checkpoint.empty()) {
        return InvalidArgument(
            "mode=incremental: domain " + domain +
            " has no complete backup whose checkpoint bitmaps libvirt still "
            "has; take a full backup (mode=full or auto)");
      }
    }
    Request creq;
    creq.kind = RequestKind::kCheckpoint;
    creq.domain = domain;
    creq.name = req.name;
    creq.mode = req.mode;  // mode=full: no base, .changes is the allocation
    ASSIGN_OR_RETURN(view, exports_->CreateCheckpoint(creq, job_id, true));
    created = true;
  }

  // The unchanged chunks come from the backup of exactly the checkpoint the
  // export is incremental from: same name, creation time and nonce (a
  // checkpoint deleted and made again under its old name started its bitmap
  // later; the old backup misses what was written in between).
  std::optional<BackupRecord> base;
  if (req.mode != "full" && view->mode == "incremental" &&
      !view->base.empty()) {
    auto b = catalog_->GetBackup(BackupId(dom.uuid, view->base));
    CheckpointInfo exported;
    exported.creation_time = view->base_created;
    exported.nonce = view->base_nonce;
    if (b.ok() && b->has_value() &&
        IsRecordedCheckpoint(exported, (*b)->created, (*b)->checkpoint_xml)) {
      base = std::move(**b);
    }
  }
  if (req.mode == "incremental" && !base) {
    // Bad input changes nothing: no export is left behind.
    if (created) (void)exports_->End(domain, view->name);
    return InvalidArgument("mode=incremental: the base of checkpoint " +
                           view->name +
                           " has no complete backup; use "
                           "mode=full or mode=auto");
  }
  jobs_.Update(job_id, [&](Job& j) {
    j.state = "running";
    if (!j.started_ms) j.started_ms = NowMs();
    j.checkpoint = view->name;
    j.mode = base ? "incremental" : "full";
    j.base = base ? base->checkpoint : "";
    j.full_disks.clear();
    if (base) {
      for (const auto& d : view->disks) {
        if (d->full) j.full_disks.push_back(d->target);
      }
    }
  });
  exports_->SetState(domain, "backing-up");

  // Announce the running backup to gc before any chunk is reused. The lock
  // names its owner and the backup, so that this host's daemon started
  // after this one was killed removes what it left (RemoveStaleLocks).
  Store::Lock store_lock;
  store_lock.host = HostName();
  store_lock.name =
      store_lock.host + "-" + std::to_string(getpid()) + "-" + job_id;
  store_lock.started = NowMs() / 1000;
  store_lock.pid = getpid();
  store_lock.domain_uuid = dom.uuid;
  store_lock.checkpoint = view->name;
  const std::string lock_name = store_lock.name;
  Status ls = store_->PutLock(store_lock);
  if (!ls.ok()) {
    if (created) (void)exports_->End(domain, view->name);
    return ls.Annotate("cannot lock the store");
  }
  BackupPlan plan{view, base, job_id};
  handed_off = true;
  *async = true;
  std::lock_guard lock(backups_mu_);
  // Join the threads of jobs that have ended (their stacks are freed only
  // then).
  for (auto it = backups_.begin(); it != backups_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = backups_.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, plan, domain, created, lock_name, done] {
    auto record = runner_->Run(plan, cancel_backups_);
    Status us = store_->DeleteLock(lock_name);
    if (!us.ok()) spdlog::warn("{}", us.ToString());
    Status st = ExplainBackupFailure(domain, record.status());
    if (st.ok()) {
      Status rs = stored_->Refresh();
      if (!rs.ok()) spdlog::warn("{}", rs.ToString());
    } else {
      spdlog::error("{}: backup of {} failed: {}", domain, plan.view->name,
                    st.ToString());
    }
    // The export ends once the data is in the store (or the job failed on
    // a checkpoint it made itself); a given live checkpoint stays live
    // after a failure so the backup can be retried.
    if (st.ok() || created) {
      Status es = exports_->End(domain, plan.view->name);
      if (!es.ok()) spdlog::warn("{}: {}", domain, es.ToString());
    } else {
      exports_->SetState(domain, "live");
    }
    FinishJob(plan.job_id, st, "failed");
    exports_->Unclaim(domain);
    Publish();
    done->store(true);
  });
  backups_.push_back({std::move(thread), std::move(done)});
  return Status::Ok();
}

std::string Daemon::JobJson(const std::string& id) const {
  auto job = jobs_.Get(id);
  if (!job) return "{}\n";
  // Not UTF-8 in an error text: see Submit().
  return JobToJson(*job).dump(2, ' ', false,
                              nlohmann::json::error_handler_t::replace) +
         "\n";
}

std::string Daemon::StatusJson() const {
  BlockCacheStats cs = cache_->stats();
  nlohmann::json exports = nlohmann::json::array();
  for (const auto& cp : exports_->List()) {
    nlohmann::json disks = nlohmann::json::array();
    for (const auto& d : cp->disks) disks.push_back(d->target);
    exports.push_back({{"domain", cp->domain},
                       {"checkpoint", cp->name},
                       {"mode", cp->mode},
                       {"base", StrOrNull(cp->base)},
                       {"disks", disks}});
  }
  nlohmann::json j = {
      {"version", CKPTFS_VERSION},
      {"pid", getpid()},
      {"mountpoint", options_.mountpoint},
      {"connect", options_.connect_uri},
      {"libvirt_connected", libvirt_->alive()},
      {"libvirt_reconnects", libvirt_resyncs_.load()},
      {"run_dir", options_.run_dir},
      {"store", options_.store_dir},
      {"started", IsoTime(started_)},
      {"cache",
       {{"hits", cs.hits},
        {"misses", cs.misses},
        {"bytes", cs.resident_bytes},
        {"inflight_bytes", cs.inflight_bytes},
        {"capacity", cs.capacity_bytes},
        {"fills", cs.fills},
        {"readahead_fills", cs.readahead_fills},
        {"readahead_skipped", cs.readahead_skipped},
        {"evictions", cs.evictions},
        {"fill_errors", cs.fill_errors}}},
      {"exports", exports},
      {"jobs_running", jobs_.running()},
  };
  return j.dump(2) + "\n";
}

}  // namespace ckptfs
