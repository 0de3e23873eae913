// Daemon: the core behind the mount. Builds the namespace from libvirt, the
// live exports and the store, serves it through its Namespace (the
// Filesystem the FUSE edge calls, filesystem()), runs control requests, and
// follows libvirt through its events.
//
// Threads: FUSE workers call the Namespace, which calls back into Submit(),
// JobJson(), StatusJson() and HoldImage() (NamespaceHost); the libvirt event
// thread only queues events; one refresher thread applies them (re-lists
// domains, drops exports whose job or domain went away), reconnects to
// libvirt after it restarts and ends the jobs of exports that ended while
// libvirt was unreachable. Publish() gathers the tree's input under
// publish_mu_ and hands it to the Namespace, which swaps in the new tree.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "backend/libvirt_client.h"
#include "backend/store/catalog.h"
#include "backend/store/catalog_follower.h"
#include "backend/store/store.h"
#include "cache/block_cache.h"
#include "fs/namespace.h"
#include "mountd/backup_job.h"
#include "mountd/control.h"
#include "mountd/exports.h"
#include "mountd/jobs.h"
#include "mountd/stored.h"

namespace ckptfs {

struct DaemonOptions {
  std::string mountpoint;  // absolute
  std::string connect_uri = "qemu:///system";
  std::string run_dir = "/var/lib/ckptfs/run";
  std::string store_dir = "/var/lib/ckptfs/store";
  // A rados: store's cluster and catalog place (the run dir).
  StoreOpenOptions store_options;
  uint64_t cache_size = 256ull << 20;
  bool allow_other = false;
  std::string host_id;  // ValidateHostId; store locks carry it
  // A running backup's store lock expires when not renewed for this long
  // (Store::Lock::lease); it is renewed every quarter of it.
  std::chrono::seconds lock_lease{600};
};

class Daemon : public NamespaceHost {
 public:
  // Connects to libvirt, ends exports a killed daemon left under run_dir,
  // and builds the first tree.
  static Result<std::unique_ptr<Daemon>> Start(const DaemonOptions& options);
  ~Daemon() override;

  // What the FUSE edge serves; lives as long as the daemon.
  Filesystem& filesystem() { return namespace_; }

  // Runs one control request; returns its status and the JSON reply.
  Reply Submit(RequestKind kind, std::string_view line);

  // NamespaceHost.
  Reply Submit(std::string_view control, std::string_view line) override;
  std::string StatusJson() const override;
  std::string JobJson(const std::string& id) const override;
  std::shared_ptr<ImageSource> HoldImage(
      const std::shared_ptr<ImageSource>& image) override;

  // Ends every export this daemon made and stops the refresher. Idempotent.
  void Shutdown();

 private:
  explicit Daemon(DaemonOptions options);
  void Publish();
  void ReloadDomains();
  void OnEvent(const DomainEvent& event);
  void RefreshLoop();
  void FinishJob(const std::string& id, const Status& st,
                 const std::string& fail_state);
  void RemoveStaleLocks();

  const DaemonOptions options_;
  const int64_t started_;
  std::unique_ptr<LibvirtClient> libvirt_;
  std::unique_ptr<BlockCache> cache_;
  JobTable jobs_;
  std::unique_ptr<LiveExports> exports_;
  std::unique_ptr<Store> store_;
  std::unique_ptr<Catalog> catalog_;
  std::unique_ptr<CatalogFollower> follower_;
  std::unique_ptr<StoredCheckpoints> stored_;
  std::unique_ptr<BackupJobs> backups_;
  // Reconnects to libvirt after which the tree and exports were resynced.
  std::atomic<uint64_t> libvirt_resyncs_{0};

  Namespace namespace_;
  std::mutex publish_mu_;            // serialises rebuilds
  std::vector<TreeDomain> domains_;  // guarded by publish_mu_

  std::mutex events_mu_;
  std::condition_variable events_cv_;
  std::deque<DomainEvent> events_;  // guarded by events_mu_
  bool stopping_ = false;           // guarded by events_mu_
  std::thread refresher_;
  std::once_flag shutdown_once_;
};

}  // namespace ckptfs
