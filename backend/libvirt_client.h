// LibvirtClient: the part of libvirt ckptfs uses — domains and their disks,
// checkpoints, pull-mode backup jobs, and domain events.
//
// One client owns one virConnect. libvirt connections are thread-safe, so any
// thread may call any method; calls block on libvirtd and must never be made
// while holding a lock that FUSE reads need. Events are delivered on the
// libvirt event-loop thread (started once per process); handlers must be
// quick and must not call back into libvirt synchronously.
//
// When libvirtd goes away (keepalive or a closed socket), the next call
// reconnects and re-registers the event callbacks, then reports a
// kReconnected event so the owner can resynchronise its view.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

struct DiskInfo {
  std::string target;  // "vda"
  std::string device;  // "disk", "cdrom", ...
  std::string format;  // driver type: "qcow2", "raw", ...
  std::string source;  // file or block device path ("" for network/empty)
  bool readonly = false;
};

// Only writable qcow2 disks carry the persistent bitmaps of checkpoints, so
// only they can take part in a checkpoint or backup.
inline bool CarriesCheckpoints(const DiskInfo& d) {
  return d.device == "disk" && d.format == "qcow2" && !d.readonly;
}

struct DomainInfo {
  std::string name;
  std::string uuid;
  bool active = false;
  bool persistent = false;
  std::vector<DiskInfo> disks;
};

struct CheckpointInfo {
  std::string name;
  std::string parent;         // "" for a root checkpoint
  int64_t creation_time = 0;  // seconds since the epoch
  // ckptfs's mark in <description> (CheckpointDescription), "" for a
  // checkpoint someone else made. With the name and creation time it tells
  // a checkpoint from one deleted and made again under its name within the
  // same second (creationTime has whole seconds).
  std::string nonce;
  std::vector<std::string> disks;  // targets that carry a bitmap
  // Only in XML asked for with sizes (UsableBitmaps): the targets for which
  // libvirt reported a size, i.e. whose bitmap it would use right now.
  std::vector<std::string> sized;
  std::string xml;  // full XML including the domain
};

struct BackupJobInfo {
  struct Disk {
    std::string name;
    bool backup = false;
    std::string export_name;
    std::string export_bitmap;  // "" for a full backup
    std::string backupmode;     // "full" | "incremental" ("" = the job's)
    std::string scratch;
  };
  std::string mode;         // "pull" or "push"
  std::string transport;    // "unix" or "tcp"
  std::string socket;       // for transport unix
  std::string incremental;  // base checkpoint, "" for full
  std::vector<Disk> disks;
};

// Where a client's events go: shared with the event registrations of every
// connection, so a callback never sees freed memory. Defined in the .cc.
struct LibvirtEvents;

struct DomainEvent {
  enum class Kind {
    kDefined,
    kUndefined,
    kStarted,
    kStopped,  // shut off, destroyed or crashed: QEMU is gone
    kOther,    // other lifecycle changes (suspend, resume, ...)
    kJobCompleted,
    kReconnected,
  };
  Kind kind = Kind::kOther;
  std::string domain;  // empty for kReconnected
};

class LibvirtClient {
 public:
  using EventHandler = std::function<void(const DomainEvent&)>;

  // Connects to `uri` (e.g. qemu:///system) and subscribes to domain
  // lifecycle and job-completed events, delivered to `on_event`.
  static Result<std::unique_ptr<LibvirtClient>> Connect(const std::string& uri,
                                                        EventHandler on_event);
  ~LibvirtClient();
  LibvirtClient(const LibvirtClient&) = delete;
  LibvirtClient& operator=(const LibvirtClient&) = delete;

  const std::string& uri() const { return uri_; }
  bool alive();
  // No event handler call starts after this returns, and none is running:
  // call it before the handler's owner goes away. Idempotent.
  void StopEvents();

  Result<std::vector<DomainInfo>> ListDomains();
  Result<DomainInfo> GetDomain(const std::string& name);
  // Checkpoints of a domain, oldest first (by creation time).
  Result<std::vector<CheckpointInfo>> ListCheckpoints(
      const std::string& domain);
  Result<CheckpointInfo> GetCheckpoint(const std::string& domain,
                                       const std::string& name);
  // The disks of checkpoint `name` whose bitmap libvirt would accept as the
  // base of an incremental backup now: present on the top image, persistent,
  // recording and not inconsistent. QEMU flags a persistent bitmap "in use"
  // in the qcow2 while it has the image open read-write; one still flagged
  // when the image is opened again (QEMU was killed, not stopped) loads as
  // inconsistent, and libvirt refuses it ("missing or broken bitmap"). Asks
  // for the checkpoint XML with sizes (VIR_DOMAIN_CHECKPOINT_XML_SIZE),
  // which libvirt fills in exactly for those disks. REQUIRES: the domain
  // runs (kInvalidArgument otherwise).
  Result<std::vector<std::string>> UsableBitmaps(const std::string& domain,
                                                 const std::string& name);
  // The domain's running backup job, or nullopt when it has none.
  Result<std::optional<BackupJobInfo>> GetBackupJob(const std::string& domain);
  Status BeginBackup(const std::string& domain, const std::string& backup_xml,
                     const std::string& checkpoint_xml);
  // Ends the domain's active job (for a pull backup: the NBD export).
  Status AbortJob(const std::string& domain);

 private:
  struct Conn;
  LibvirtClient(std::string uri, EventHandler on_event);
  // The live connection, reconnecting if libvirtd went away.
  Result<std::shared_ptr<Conn>> Get();
  Status Open();

  const std::string uri_;
  const std::shared_ptr<LibvirtEvents> events_;
  std::mutex mu_;  // guards conn_ and serialises reconnects
  std::shared_ptr<Conn> conn_;
  bool reconnected_once_ = false;
};

// Parses the parts of a domain / checkpoint / backup XML that ckptfs uses.
// Exposed for unit tests.
Result<DomainInfo> ParseDomainXml(const std::string& xml);
Result<CheckpointInfo> ParseCheckpointXml(const std::string& xml);
Result<BackupJobInfo> ParseBackupXml(const std::string& xml);

// The <description> ckptfs gives the checkpoints it makes: "created by
// ckptfs (id NONCE)" with a fresh random NONCE each time.
std::string CheckpointDescription();

// Whether libvirt's checkpoint `cp` is the very one a backup recorded (its
// creation time and checkpoint XML): same creation time and same nonce
// ("" on both sides for checkpoints ckptfs did not make). A checkpoint
// deleted and made again under the same name differs in one or the other,
// and its bitmap misses what was written in between.
bool IsRecordedCheckpoint(const CheckpointInfo& cp, int64_t recorded_created,
                          const std::string& recorded_xml);

}  // namespace ckptfs
