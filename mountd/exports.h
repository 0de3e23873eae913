// LiveExports: the live checkpoints this daemon serves, one per domain at
// most (libvirt runs one backup job per domain). Creating one runs a pull-
// mode backup job with a new checkpoint over all selected disks at once, so
// the images are one consistent point in time; releasing one ends the job.
//
// A per-domain busy mark serialises requests on one domain (a second gets
// EBUSY); no lock is held while libvirt or NBD is called.
//
// Ownership: exports whose NBD socket lies under our run dir are ours. A new
// daemon ends the ones a killed daemon left (EndStale), so no backup job
// stays open on a domain that nobody serves.
//
// Thread safety: all methods are thread-safe.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "backend/libvirt_client.h"
#include "backend/trusted_dir.h"
#include "cache/block_cache.h"
#include "fs/checkpoint_view.h"
#include "mountd/control.h"
#include "mountd/jobs.h"

namespace ckptfs {

// The base of a new checkpoint: a checkpoint ("" = none, every disk full)
// and the selected disks that are exported full all the same, because
// libvirt cannot use their bitmap of it (missing, or inconsistent after QEMU
// was killed). The other disks are incremental from `checkpoint`.
struct BaseChoice {
  std::string checkpoint;
  std::vector<std::string> full;
};

// Of `disks`, those that cannot be incremental from checkpoint `cp`: no
// bitmap in its definition, or one libvirt cannot use now
// (LibvirtClient::UsableBitmaps). When libvirt cannot tell, only the first
// test applies: libvirt checks again when the job begins, and a refused
// incremental export is retried full.
std::vector<std::string> UnusableBitmaps(LibvirtClient& libvirt,
                                         const std::string& domain,
                                         const CheckpointInfo& cp,
                                         const std::vector<std::string>& disks);

struct ExportOptions {
  std::string run_dir;  // absolute
  std::string qemu_user = "libvirt-qemu";
  unsigned nbd_connections = 4;
  unsigned nbd_timeout_ms = 30000;
};

class LiveExports {
 public:
  LiveExports(LibvirtClient& libvirt, BlockCache& cache, JobTable& jobs,
              ExportOptions options, std::function<void()> on_change);
  ~LiveExports();

  // Chooses the base of a new checkpoint: given the domain's checkpoints in
  // libvirt (oldest first) and the selected disks, returns the newest
  // checkpoint with a complete backup whose bitmaps libvirt can use on every
  // disk, else the newest one usable on some disks (the others full), or an
  // empty choice to fall back to the parent rule. Set before use.
  using BaseChooser = std::function<BaseChoice(
      const DomainInfo& domain, const std::vector<std::string>& disks,
      const std::vector<CheckpointInfo>& checkpoints)>;
  void SetBaseChooser(BaseChooser chooser) {
    choose_base_ = std::move(chooser);
  }

  // control/checkpoint. Marks the job running once it starts to act; a
  // failure before that leaves nothing changed. With `claimed`, the caller
  // holds the domain's claim (a backup job creating its checkpoint).
  Result<std::shared_ptr<const CheckpointView>> CreateCheckpoint(
      const Request& req, const std::string& job_id, bool claimed = false);
  // control/release.
  Status Release(const Request& req, const std::string& job_id);

  // One request or job per domain at a time: Claim fails with EBUSY while
  // another holds the domain. A backup job holds it until it ends.
  Status Claim(const std::string& domain);
  void Unclaim(const std::string& domain);
  // The live checkpoint of a domain, or null.
  std::shared_ptr<const CheckpointView> Get(const std::string& domain) const;
  // Republishes the live checkpoint with another state (backing-up).
  void SetState(const std::string& domain, const std::string& state);
  // Ends the export of the domain's live checkpoint `name` (the caller holds
  // the claim). OK if it is gone already. If libvirt cannot end the job now
  // (libvirtd restarting), the checkpoint leaves the tree at once and the
  // job is ended by RetryEnds once libvirt answers again; the error is
  // returned for the log.
  Status End(const std::string& domain, const std::string& name);
  // Ends the jobs End() could not (refresher thread, every few seconds and
  // after a reconnect). A domain that is claimed is left for the next round.
  void RetryEnds();

  std::vector<std::shared_ptr<const CheckpointView>> List() const;
  size_t size() const;

  // The domain stopped or was undefined: its job is gone with QEMU.
  void Forget(const std::string& domain, const std::string& why);
  // Drops exports whose backup job no longer exists (after a job-completed
  // event or a libvirt reconnect).
  void Resync();
  // Ends backup jobs exported under our run dir that we do not serve.
  void EndStale();
  // Ends every export we made (shutdown).
  void EndAll();

 private:
  struct Live {
    std::shared_ptr<const CheckpointView> view;
    std::string socket;
    std::string dir;
  };
  // Marks a domain busy for the life of the claim.
  class DomainClaim {
   public:
    DomainClaim(LiveExports& owner, std::string domain)
        : owner_(owner), domain_(std::move(domain)) {}
    ~DomainClaim() {
      if (held_) owner_.Unclaim(domain_);
    }
    Status Acquire() {
      RETURN_IF_ERROR(owner_.Claim(domain_));
      held_ = true;
      return Status::Ok();
    }

   private:
    LiveExports& owner_;
    std::string domain_;
    bool held_ = false;
  };
  // A checkpoint being created (export_steps.cc), filled in step by step.
  struct NewExport {
    std::string domain;  // as the request names it
    DomainInfo dom;
    std::vector<DiskInfo> selected;  // the disks to export
    std::vector<std::string> targets;
    std::vector<CheckpointInfo> cps;  // libvirt's, oldest first
    std::string name;
    // The base and its full disks; cleared when libvirt refused the
    // incremental and the export fell back to full.
    BaseChoice base;
    std::string dir, socket;
  };

  // The steps of CreateCheckpoint, in order (export_steps.cc).
  Result<NewExport> SelectDisks(const Request& req);
  Result<std::string> NameFor(const Request& req,
                              const std::vector<CheckpointInfo>& cps);
  // Refuses a job ckptfs did not start, marks the job running, then ends
  // the domain's export (ours, or one a previous daemon left).
  Status TakeOver(const std::string& domain, const std::string& job_id,
                  const std::string& name);
  BaseChoice PlanBase(const Request& req, const NewExport& x);
  // Prepares RUN/<uuid> and begins the backup job with the new checkpoint.
  Status Begin(const Request& req, NewExport& x);
  // Connects to the export and reads its allocation and dirty maps.
  // REQUIRES: Begin succeeded; the caller ends the job on failure.
  Result<std::shared_ptr<CheckpointView>> OpenExport(const NewExport& x);
  Result<std::shared_ptr<CheckpointDisk>> OpenDisk(const NewExport& x,
                                                   const DiskInfo& d,
                                                   const BackupJobInfo& job);
  // Ends the job Begin began (a later step failed) and returns `st`.
  Status Undo(const NewExport& x, const Status& st);

  // Ends the domain's backup job if it is the one `live` reads (OK if it
  // is gone already).
  Status AbortJobOf(const std::string& domain, const Live& live);
  Status EndExport(const std::string& domain, const Live& live);
  // RUN/<uuid>, opened without following symlinks (created if `create`).
  Result<UniqueFd> OpenDomainDir(const std::string& dir, bool create) const;
  Status PrepareDomainDir(const std::string& dir);
  void CleanDomainDir(const std::string& dir);
  std::string DomainDir(const std::string& uuid) const;
  bool IsOurSocket(const std::string& socket) const;

  LibvirtClient& libvirt_;
  BlockCache& cache_;
  JobTable& jobs_;
  const ExportOptions options_;
  const std::function<void()> on_change_;
  BaseChooser choose_base_;

  mutable std::mutex mu_;
  std::map<std::string, Live> live_;  // by domain; guarded by mu_
  // Exports out of the tree whose job is still to be ended; guarded by mu_.
  std::map<std::string, Live> ending_;
  std::set<std::string> busy_;  // domains with a request in flight
};

}  // namespace ckptfs
