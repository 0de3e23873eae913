// Daemon: the core behind the mount. Builds the namespace from libvirt and
// the live exports, serves it through the Filesystem interface, runs control
// requests, and follows libvirt through its events.
//
// Threads: FUSE workers call the Filesystem methods and Submit(); the
// libvirt event thread only queues events; one refresher thread applies them
// (re-lists domains, drops exports whose job or domain went away),
// reconnects to libvirt after it restarts and ends the jobs of exports that
// ended while libvirt was unreachable. The tree is an immutable snapshot
// swapped under tree_mu_ (held only for the pointer copy).
#pragma once

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/libvirt_client.h"
#include "cache/block_cache.h"
#include "fs/filesystem.h"
#include "mountd/backup.h"
#include "backend/store/catalog.h"
#include "mountd/control.h"
#include "mountd/exports.h"
#include "mountd/jobs.h"
#include "mountd/stored.h"
#include "mountd/tree.h"

namespace ckptfs {

struct DaemonOptions {
  std::string mountpoint;  // absolute
  std::string connect_uri = "qemu:///system";
  std::string run_dir = "/var/lib/ckptfs/run";
  std::string store_dir = "/var/lib/ckptfs/store";
  uint64_t cache_size = 256ull << 20;
  bool allow_other = false;
};

class Daemon : public Filesystem {
 public:
  // Connects to libvirt, ends exports a killed daemon left under run_dir,
  // and builds the first tree.
  static Result<std::unique_ptr<Daemon>> Start(const DaemonOptions& options);
  ~Daemon() override;

  // Filesystem.
  Result<Attr> GetAttr(std::string_view path) override;
  Result<std::vector<DirEntry>> ReadDir(std::string_view path) override;
  Result<std::string> ReadLink(std::string_view path) override;
  Result<std::unique_ptr<FileHandle>> Open(std::string_view path,
                                           int flags) override;
  Status Truncate(std::string_view path, uint64_t size) override;

  // Runs one control request; returns its status and the JSON reply.
  struct Reply {
    Status status;
    std::string json;
  };
  Reply Submit(RequestKind kind, std::string_view line);

  std::string StatusJson() const;
  std::string JobJson(const std::string& id) const;

  // Ends every export this daemon made and stops the refresher. Idempotent.
  void Shutdown();

 private:
  explicit Daemon(DaemonOptions options);
  std::shared_ptr<const Tree> Snapshot() const;
  void Publish();
  void ReloadDomains();
  void OnEvent(const DomainEvent& event);
  void RefreshLoop();
  Attr MakeAttr(const Node& node) const;
  // control/backup: fixes the point in time, starts the job thread and
  // returns; `async` is set when the job goes on after the reply.
  Status StartBackup(const Request& req, const std::string& job_id,
                     bool* async);
  BaseChoice ChooseBase(const DomainInfo& domain,
                        const std::vector<std::string>& disks,
                        const std::vector<CheckpointInfo>& checkpoints);
  // Why a backup's export failed, when libvirt can tell (QEMU gone, job
  // ended behind our back); `st` otherwise.
  Status ExplainBackupFailure(const std::string& domain, const Status& st);
  void FinishJob(const std::string& id, const Status& st,
                 const std::string& fail_state);
  Status ReconcileCatalog();
  static std::string HostName();
  void RemoveStaleLocks();
  Result<std::unique_ptr<FileHandle>> OpenNode(const Node& node, int flags);

  const DaemonOptions options_;
  const int64_t started_;
  const uint32_t uid_, gid_;
  std::unique_ptr<LibvirtClient> libvirt_;
  std::unique_ptr<BlockCache> cache_;
  JobTable jobs_;
  std::unique_ptr<LiveExports> exports_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<StoredCheckpoints> stored_;
  std::unique_ptr<BackupRunner> runner_;
  std::atomic<bool> cancel_backups_{false};
  // Reconnects to libvirt after which the tree and exports were resynced.
  std::atomic<uint64_t> libvirt_resyncs_{0};
  std::mutex backups_mu_;
  struct BackupThread {
    std::thread thread;
    std::shared_ptr<std::atomic<bool>> done;
  };
  std::vector<BackupThread> backups_;  // guarded by backups_mu_
  InodeTable inodes_;

  mutable std::mutex tree_mu_;
  std::shared_ptr<const Tree> tree_;  // guarded by tree_mu_
  std::mutex publish_mu_;             // serialises rebuilds
  std::vector<std::string> domains_;  // guarded by publish_mu_

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<DomainEvent> events_;  // guarded by events_mu_
  bool stopping_ = false;           // guarded by events_mu_
  std::thread refresher_;
  std::once_flag shutdown_once_;
};

}  // namespace ckptfs
