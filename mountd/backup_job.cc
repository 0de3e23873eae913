#include "mountd/backup_job.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "backend/clock.h"
#include "mountd/lock_lease.h"

namespace ckptfs {

std::string HostName() {
  char host[256] = {};
  gethostname(host, sizeof(host) - 1);
  return host;
}

BackupJobs::BackupJobs(LibvirtClient& libvirt, LiveExports& exports,
                       Store& store, Catalog& catalog,
                       StoredCheckpoints& stored, JobTable& jobs,
                       std::string host_id, std::chrono::seconds lock_lease,
                       Hooks hooks)
    : libvirt_(libvirt),
      exports_(exports),
      store_(store),
      catalog_(catalog),
      stored_(stored),
      jobs_(jobs),
      host_id_(std::move(host_id)),
      lock_lease_(lock_lease),
      hooks_(std::move(hooks)),
      runner_(store, catalog, jobs) {}

BackupJobs::~BackupJobs() { CancelAll(); }

void BackupJobs::CancelAll() {
  // A backup still running is cancelled: it leaves no record, so it is
  // never served nor used as a base; the next one starts from the last
  // good backup.
  cancel_ = true;
  std::vector<Thread> threads;
  {
    std::lock_guard lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.thread.join();
}

Status BackupJobs::Start(const Request& req, const std::string& job_id,
                         bool* async) {
  const std::string& domain = req.domain;
  ASSIGN_OR_RETURN(DomainInfo dom, libvirt_.GetDomain(domain));
  RETURN_IF_ERROR(exports_.Claim(domain));
  bool handed_off = false;
  struct Unclaim {
    LiveExports& e;
    const std::string& d;
    bool* handed_off;
    ~Unclaim() {
      if (!*handed_off) e.Unclaim(d);
    }
  } unclaim{exports_, domain, &handed_off};

  bool created = false;
  ASSIGN_OR_RETURN(std::shared_ptr<const CheckpointView> view,
                   PointInTime(req, dom, job_id, &created));
  std::optional<BackupRecord> base = BaseOf(req, dom, *view);
  if (req.mode == "incremental" && !base) {
    // Bad input changes nothing: no export is left behind.
    if (created) (void)exports_.End(domain, view->name);
    return InvalidArgument("mode=incremental: the base of checkpoint " +
                           view->name +
                           " has no complete backup; use "
                           "mode=full or mode=auto");
  }
  MarkRunning(job_id, *view, base);
  auto lock_name = LockStore(dom, *view, job_id);
  if (!lock_name.ok()) {
    if (created) (void)exports_.End(domain, view->name);
    return lock_name.status();
  }
  handed_off = true;
  *async = true;
  Launch({BackupPlan{view, base, job_id}, domain, created, *lock_name});
  return Status::Ok();
}

Result<std::shared_ptr<const CheckpointView>> BackupJobs::PointInTime(
    const Request& req, const DomainInfo& dom, const std::string& job_id,
    bool* created) {
  if (!req.checkpoint.empty()) return GivenCheckpoint(req, dom);
  ASSIGN_OR_RETURN(auto view, NewCheckpoint(req, dom, job_id));
  *created = true;
  return view;
}

Result<std::shared_ptr<const CheckpointView>> BackupJobs::GivenCheckpoint(
    const Request& req, const DomainInfo& dom) {
  const std::string& domain = req.domain;
  auto view = exports_.Get(domain);
  if (!view || view->name != req.checkpoint) {
    return NotFound("checkpoint " + req.checkpoint + " of " + domain +
                    " is not live; omit checkpoint= to create one");
  }
  auto existing = catalog_.GetBackup(BackupId(dom.uuid, req.checkpoint));
  if (existing.ok() && existing->has_value()) {
    return AlreadyExists("checkpoint " + req.checkpoint + " of " + domain +
                         " is backed up already");
  }
  RETURN_IF_ERROR(store_.CheckNameFree(dom.uuid, req.checkpoint));
  return view;
}

Result<std::shared_ptr<const CheckpointView>> BackupJobs::NewCheckpoint(
    const Request& req, const DomainInfo& dom, const std::string& job_id) {
  const std::string& domain = req.domain;
  // A name the store holds already is refused before the checkpoint is
  // made: a backup never changes (BackupRunner checks again).
  if (!req.name.empty()) {
    RETURN_IF_ERROR(store_.CheckNameFree(dom.uuid, req.name));
  }
  if (req.mode == "incremental") {
    // Bad input changes nothing: refuse before creating the checkpoint.
    std::vector<std::string> targets;
    for (const auto& d : dom.disks) {
      if (CarriesCheckpoints(d)) {
        targets.push_back(d.target);
      }
    }
    ASSIGN_OR_RETURN(auto cps, libvirt_.ListCheckpoints(domain));
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
  return exports_.CreateCheckpoint(creq, job_id, true);
}

std::optional<BackupRecord> BackupJobs::BaseOf(const Request& req,
                                               const DomainInfo& dom,
                                               const CheckpointView& view) {
  // The unchanged chunks come from the backup of exactly the checkpoint the
  // export is incremental from: same name, creation time and nonce (a
  // checkpoint deleted and made again under its old name started its bitmap
  // later; the old backup misses what was written in between).
  if (req.mode == "full" || view.mode != "incremental" || view.base.empty()) {
    return std::nullopt;
  }
  auto b = catalog_.GetBackup(BackupId(dom.uuid, view.base));
  CheckpointInfo exported;
  exported.creation_time = view.base_created;
  exported.nonce = view.base_nonce;
  if (b.ok() && b->has_value() &&
      IsRecordedCheckpoint(exported, (*b)->created, (*b)->checkpoint_xml)) {
    return std::move(**b);
  }
  return std::nullopt;
}

void BackupJobs::MarkRunning(const std::string& job_id,
                             const CheckpointView& view,
                             const std::optional<BackupRecord>& base) {
  jobs_.Update(job_id, [&](Job& j) {
    j.state = "running";
    if (!j.started_ms) j.started_ms = NowMs();
    j.checkpoint = view.name;
    j.mode = base ? "incremental" : "full";
    j.base = base ? base->checkpoint : "";
    j.full_disks.clear();
    if (base) {
      for (const auto& d : view.disks) {
        if (d->full) j.full_disks.push_back(d->target);
      }
    }
  });
  exports_.SetState(view.domain, "backing-up");
}

Result<std::string> BackupJobs::LockStore(const DomainInfo& dom,
                                          const CheckpointView& view,
                                          const std::string& job_id) {
  // Announce the running backup to gc before any chunk is reused. The lock
  // names its owner and the backup, so that this host's daemon started
  // after this one was killed removes what it left (RemoveStaleLocks).
  Store::Lock store_lock;
  store_lock.host = host_id_;
  store_lock.name =
      store_lock.host + "-" + std::to_string(getpid()) + "-" + job_id;
  store_lock.started = NowMs() / 1000;
  store_lock.pid = getpid();
  store_lock.domain_uuid = dom.uuid;
  store_lock.checkpoint = view.name;
  store_lock.lease = lock_lease_.count();
  Status ls = store_.PutLock(store_lock);
  if (!ls.ok()) return ls.Annotate("cannot lock the store");
  return store_lock.name;
}

void BackupJobs::Launch(Launched job) {
  std::lock_guard lock(mu_);
  // Join the threads of jobs that have ended (their stacks are freed only
  // then).
  for (auto it = threads_.begin(); it != threads_.end();) {
    if (it->done->load()) {
      it->thread.join();
      it = threads_.erase(it);
    } else {
      ++it;
    }
  }
  auto done = std::make_shared<std::atomic<bool>>(false);
  std::thread thread([this, job = std::move(job), done] {
    Copy(job);
    done->store(true);
  });
  threads_.push_back({std::move(thread), std::move(done)});
}

void BackupJobs::Copy(const Launched& job) {
  const std::string& domain = job.domain;
  const BackupPlan& plan = job.plan;
  // The lease renews the store lock while the backup runs (gc on another
  // host expires locks that are not renewed).
  auto record = [&] {
    LockLease lease(store_, job.lock_name, lock_lease_);
    BackupPlan leased = plan;
    leased.before_record = [&lease] { return lease.Hold(); };
    return runner_.Run(leased, cancel_);
  }();
  Status us = store_.DeleteLock(job.lock_name);
  if (!us.ok()) spdlog::warn("{}", us.ToString());
  Status st = ExplainFailure(domain, record.status());
  if (st.ok()) {
    Status rs = stored_.Refresh();
    if (!rs.ok()) spdlog::warn("{}", rs.ToString());
  } else {
    spdlog::error("{}: backup of {} failed: {}", domain, plan.view->name,
                  st.ToString());
  }
  // The export ends once the data is in the store (or the job failed on
  // a checkpoint it made itself); a given live checkpoint stays live
  // after a failure so the backup can be retried.
  if (st.ok() || job.created) {
    Status es = exports_.End(domain, plan.view->name);
    if (!es.ok()) spdlog::warn("{}: {}", domain, es.ToString());
  } else {
    exports_.SetState(domain, "live");
  }
  hooks_.finish_job(plan.job_id, st, "failed");
  exports_.Unclaim(domain);
  hooks_.publish();
}

BaseChoice BackupJobs::ChooseBase(const DomainInfo& domain,
                                  const std::vector<std::string>& disks,
                                  const std::vector<CheckpointInfo>& cps) {
  // Each probe asks libvirt (and QEMU) once; after a killed QEMU every
  // bitmap of a disk is unusable, so looking further back finds nothing.
  constexpr int kMaxProbes = 8;
  auto backups = catalog_.ListBackups(domain.uuid);
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
    // This catalog may not have followed a prune on another host yet (the
    // change log, every few seconds): a base must still be in the store.
    if (store_.GetBackup(it->domain_uuid, it->checkpoint).status().code() ==
        Code::kNotFound) {
      continue;
    }
    const auto unusable = UnusableBitmaps(libvirt_, domain.name, *cp, disks);
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

Status BackupJobs::ExplainFailure(const std::string& domain, const Status& st) {
  // Export failures are I/O errors; the store's own (no space, permission)
  // and a cancel explain themselves.
  if (st.code() != Code::kIoError) return st;
  const std::string after =
      ": nothing was stored; the next backup starts from the last complete "
      "one";
  // libvirt learns that QEMU died a moment after the NBD socket closed, and
  // a virsh destroy ends the backup job (and its export) first, then waits
  // up to 10 s for QEMU to exit on SIGTERM before SIGKILL: the domain stays
  // active 12 s after the job is gone when QEMU is stopped (test_faults_
  // qemu). So a vanished job counts as aborted only once it has been gone
  // for 15 s with the domain still running.
  constexpr int kPolls = 100, kJobGonePolls = 75;  // 200 ms each
  int job_gone = 0;
  for (int i = 0; i < kPolls; ++i) {
    auto dom = libvirt_.GetDomain(domain);
    if (!dom.ok()) {
      if (dom.status().code() != Code::kNotFound) return st;
      return st.Annotate("domain " + domain +
                         " was undefined while the backup ran" + after);
    }
    if (!dom->active) {
      return st.Annotate("domain " + domain +
                         " stopped while the backup ran (QEMU exited)" + after);
    }
    auto job = libvirt_.GetBackupJob(domain);
    job_gone = job.ok() && !job->has_value() ? job_gone + 1 : 0;
    if (job_gone >= kJobGonePolls) {
      return st.Annotate("the backup job of " + domain +
                         " ended while the backup ran (virsh domjobabort?)" +
                         after);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  return st;
}

}  // namespace ckptfs
