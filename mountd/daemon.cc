#include "mountd/daemon.h"

#include <signal.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <set>

#include "backend/clock.h"
#include "mountd/source_factory.h"
#include "version.h"

namespace ckptfs {
namespace {

// Which request a write to control/<control> makes.
RequestKind ControlKind(std::string_view control) {
  return control == "release"  ? RequestKind::kRelease
         : control == "backup" ? RequestKind::kBackup
                               : RequestKind::kCheckpoint;
}

}  // namespace

namespace {
DaemonOptions WithHostId(DaemonOptions o) {
  if (o.host_id.empty()) o.host_id = HostName();
  return o;
}
}  // namespace

Daemon::Daemon(DaemonOptions options)
    : options_(WithHostId(std::move(options))),
      started_(NowMs()),
      namespace_(*this) {}

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
  ASSIGN_OR_RETURN(d->store_, Store::Open(options.store_dir, true, {},
                                          options.store_options));
  // The catalog is an index of the store: a corrupt one is moved aside and
  // rebuilt by the reconcile below rather than keep the mount down.
  std::string moved_to;
  ASSIGN_OR_RETURN(d->catalog_,
                   d->store_->OpenCatalog(/*replace_corrupt=*/true, &moved_to));
  if (!moved_to.empty()) {
    spdlog::warn("catalog {} was corrupt: moved it aside to {}",
                 d->catalog_->path(), moved_to);
  }
  d->follower_ = std::make_unique<CatalogFollower>(*d->store_, *d->catalog_);
  RETURN_IF_ERROR(d->follower_->Resync());
  d->RemoveStaleLocks();
  d->stored_ =
      std::make_unique<StoredCheckpoints>(*d->store_, *d->catalog_, *d->cache_);
  RETURN_IF_ERROR(d->stored_->Refresh());
  ExportOptions eo;
  eo.run_dir = options.run_dir;
  d->exports_ = std::make_unique<LiveExports>(
      *d->libvirt_, *d->cache_, d->jobs_, eo, [self] { self->Publish(); });
  BackupJobs::Hooks hooks;
  hooks.publish = [self] { self->Publish(); };
  hooks.finish_job = [self](const std::string& id, const Status& st,
                            const std::string& fail_state) {
    self->FinishJob(id, st, fail_state);
  };
  d->backups_ = std::make_unique<BackupJobs>(
      *d->libvirt_, *d->exports_, *d->store_, *d->catalog_, *d->stored_,
      d->jobs_, d->options_.host_id, d->options_.lock_lease, std::move(hooks));
  d->exports_->SetBaseChooser([self](const DomainInfo& dom,
                                     const std::vector<std::string>& disks,
                                     const std::vector<CheckpointInfo>& cps) {
    return self->backups_->ChooseBase(dom, disks, cps);
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
    // A backup still running is cancelled (BackupJobs::CancelAll).
    if (backups_) backups_->CancelAll();
    if (exports_) exports_->EndAll();
    // Ending the exports fires job-completed events: none may reach this
    // object once its members start being destroyed.
    if (libvirt_) libvirt_->StopEvents();
  });
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
      live |= l->domain_uuid == v->domain_uuid && l->name == v->name;
    }
    if (!live) in.checkpoints.push_back(v);
  }
  in.job_ids = jobs_.Ids();
  in.allow_other = options_.allow_other;
  in.mount_time = started_ / 1000;
  in.readme = ReadmeText();
  namespace_.Publish(in);
}

void Daemon::ReloadDomains() {
  auto list = libvirt_->ListDomains();
  if (!list.ok()) {
    spdlog::warn("cannot list domains: {}", list.status().ToString());
  } else {
    std::vector<TreeDomain> domains;
    for (const auto& d : *list) {
      if (ValidateDomainName(d.name).ok()) domains.push_back({d.name, d.uuid});
    }
    std::lock_guard lock(publish_mu_);
    domains_ = std::move(domains);
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
      // Every few seconds: pick up the backups other hosts added or pruned
      // (the store's change log) and the CLI's changes to the catalog.
      Status st = follower_->Poll();
      if (!st.ok()) spdlog::warn("store change log: {}", st.ToString());
      st = stored_->Refresh();
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

NamespaceHost::Reply Daemon::Submit(std::string_view control,
                                    std::string_view line) {
  return Submit(ControlKind(control), line);
}

std::shared_ptr<ImageSource> Daemon::HoldImage(
    const std::shared_ptr<ImageSource>& image) {
  return ckptfs::HoldImage(image);
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
        st = backups_->Start(*req, id, &async);
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

void Daemon::RemoveStaleLocks() {
  store_->RemoveStaleLocks(options_.host_id, [](int64_t pid) {
    return pid <= INT32_MAX && kill(static_cast<pid_t>(pid), 0) == 0;
  });
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
  const CatalogFollower::Stats changes = follower_->stats();
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
      {"host_id", options_.host_id},
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
      {"store_changes",
       {{"position", changes.position},
        {"applied", changes.applied},
        {"resyncs", changes.resyncs},
        {"skipped", changes.skipped}}},
      {"exports", exports},
      {"jobs_running", jobs_.running()},
  };
  return j.dump(2) + "\n";
}

}  // namespace ckptfs
