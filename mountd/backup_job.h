// BackupJobs: the control/backup requests of a daemon, each a job that reads
// top to bottom: fix the point in time (a live checkpoint given, or one made
// for the job), find the base it is incremental from, mark the job running,
// lock the store against gc, then copy on a thread of its own
// (BackupRunner) and end: refresh the stored checkpoints, end the export,
// finish the record, release the domain.
//
// A request that fails before the copy starts changes nothing (no export is
// left behind, no lock). A copy that fails or is cancelled leaves no record:
// it is never served nor a base.
//
// Thread safety: Start() and ChooseBase() from any thread (FUSE workers; the
// base chooser of LiveExports); CancelAll() once, at shutdown, after which
// Start() must not be called.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "backend/libvirt_client.h"
#include "backend/store/catalog.h"
#include "backend/store/store.h"
#include "mountd/backup.h"
#include "mountd/control.h"
#include "mountd/exports.h"
#include "mountd/jobs.h"
#include "mountd/stored.h"

namespace ckptfs {

// This host's name: the default host id (DaemonOptions::host_id).
std::string HostName();

class BackupJobs {
 public:
  // What a job tells the daemon: the namespace changed (publish), and a job
  // ended (record it, as the daemon does for every request).
  struct Hooks {
    std::function<void()> publish;
    std::function<void(const std::string& id, const Status& st,
                       const std::string& fail_state)>
        finish_job;
  };

  BackupJobs(LibvirtClient& libvirt, LiveExports& exports, Store& store,
             Catalog& catalog, StoredCheckpoints& stored, JobTable& jobs,
             std::string host_id, std::chrono::seconds lock_lease, Hooks hooks);
  ~BackupJobs();  // CancelAll()

  // control/backup: fixes the point in time, starts the job's thread and
  // returns; `async` is set when the job goes on after the reply (it then
  // finishes the record itself).
  Status Start(const Request& req, const std::string& job_id, bool* async);

  // The base of a new checkpoint of `domain` over `disks`
  // (LiveExports::BaseChooser): the newest complete backup whose checkpoint
  // libvirt still has with bitmaps usable on every disk, else the newest
  // usable on some (the others full), else none.
  BaseChoice ChooseBase(const DomainInfo& domain,
                        const std::vector<std::string>& disks,
                        const std::vector<CheckpointInfo>& checkpoints);

  // Cancels the running copies and waits for their threads. Idempotent.
  void CancelAll();

 private:
  struct Launched {
    BackupPlan plan;
    std::string domain;
    bool created = false;  // the job made its checkpoint (ends it on failure)
    std::string lock_name;
  };
  struct Thread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };

  // The live checkpoint to back up: the one `req` names, or a new one made
  // for this job (`created`).
  Result<std::shared_ptr<const CheckpointView>> PointInTime(
      const Request& req, const DomainInfo& dom, const std::string& job_id,
      bool* created);
  Result<std::shared_ptr<const CheckpointView>> GivenCheckpoint(
      const Request& req, const DomainInfo& dom);
  Result<std::shared_ptr<const CheckpointView>> NewCheckpoint(
      const Request& req, const DomainInfo& dom, const std::string& job_id);
  // The complete backup of exactly the checkpoint `view` is incremental
  // from, if any.
  std::optional<BackupRecord> BaseOf(const Request& req, const DomainInfo& dom,
                                     const CheckpointView& view);
  void MarkRunning(const std::string& job_id, const CheckpointView& view,
                   const std::optional<BackupRecord>& base);
  // Announces the backup to gc; returns the lock's name.
  Result<std::string> LockStore(const DomainInfo& dom,
                                const CheckpointView& view,
                                const std::string& job_id);
  void Launch(Launched job);
  // The job's thread: copies, then ends the export and the job.
  void Copy(const Launched& job);
  // Why a backup's export failed, when libvirt can tell (QEMU gone, job
  // ended behind our back); `st` otherwise.
  Status ExplainFailure(const std::string& domain, const Status& st);

  LibvirtClient& libvirt_;
  LiveExports& exports_;
  Store& store_;
  Catalog& catalog_;
  StoredCheckpoints& stored_;
  JobTable& jobs_;
  const std::string host_id_;  // store locks carry it
  const std::chrono::seconds lock_lease_;
  const Hooks hooks_;
  BackupRunner runner_;
  std::atomic<bool> cancel_{false};
  std::mutex mu_;
  std::vector<Thread> threads_;  // guarded by mu_
};

}  // namespace ckptfs
