// Catalog: the SQLite index of the backup store (domains, checkpoints,
// backups, per-disk manifest rows) plus the persisted job records.
//
// The store is the source of truth. Every backup row mirrors one BackupRecord
// the store holds, and the whole backup part of the catalog can be rebuilt
// from those records (ReplaceBackups, what `ckptfs reindex` does). Jobs are
// the only data that lives in the catalog alone; losing them loses history,
// never backups.
//
// Durability contract (the order of writes is the caller's part):
//  - AddBackup: call it only after the store holds the record and every
//    manifest it names durably (fsynced + renamed). The commit itself runs
//    with synchronous=NORMAL in WAL mode: it may be lost on power loss, which
//    only makes the catalog lag the store; the start-up reconcile or
//    `ckptfs reindex` re-adds it. So a catalog row never names store objects
//    that are not durable.
//  - RemoveBackup and ReplaceBackups commit with synchronous=FULL: when they
//    return, the row is gone for good, and only then may the caller delete
//    the backup's manifests/record from the store. (A lost removal would
//    resurrect a row that names deleted objects.)
//  - PutJob: synchronous=NORMAL; the newest job updates may be lost.
//  The database file is never corrupted by a crash (WAL); a file that is not
//  an SQLite database or fails its integrity check is reported as kIoError
//  with a hint to run `ckptfs reindex`.
//
// A backup is identified by its id ("<domain-uuid>/<checkpoint>"); a domain
// has at most one backup per checkpoint. A domain row exists while one of
// its backups is catalogued; its name is the name recorded by its newest
// backup (by checkpoint creation time, ties by id), so the result does not
// depend on the order backups were added in.
//
// Thread safety: all methods are thread-safe. One SQLite connection per
// Catalog, guarded by a mutex: calls are serialised (each is a few indexed
// statements on a local file; nothing on the FUSE read path calls it).
// Several Catalog objects or processes may open the same file: writers take
// the database write lock up front (BEGIN IMMEDIATE) and wait up to
// kBusyTimeoutMs for each other before failing with kBusy.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "backend/status.h"
#include "backend/store/job_record.h"
#include "backend/store/types.h"

struct sqlite3;

namespace ckptfs {

class Catalog {
 public:
  // Schema version written to PRAGMA user_version.
  static constexpr int kSchemaVersion = 1;
  // How long a writer waits for another connection's write lock.
  static constexpr int kBusyTimeoutMs = 10000;

  // Opens or creates the database at `path` and migrates its schema to
  // kSchemaVersion. REQUIRES: the parent directory exists.
  // Errors: a newer schema -> kUnsupported; not an SQLite database or
  // corrupt -> kIoError naming the path and suggesting `ckptfs reindex`;
  // cannot create/open -> kIoError or kPermission.
  static Result<std::unique_ptr<Catalog>> Open(const std::string& path);
  // Open, except that a file that is not an SQLite database or is corrupt is
  // moved aside (with its -wal and -shm) to "<path>.corrupt-<UTC time>" and
  // a new, empty catalog takes its place; *moved_to names the moved file (""
  // if none was). The store is the source of truth, so the caller rebuilds
  // the backup rows from it (ReplaceBackups); the job history stays in the
  // moved file.
  static Result<std::unique_ptr<Catalog>> OpenOrReplaceCorrupt(
      const std::string& path, std::string* moved_to);

  ~Catalog();
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  const std::string& path() const { return path_; }

  // Adds a complete backup in one transaction: the domain row (upserted by
  // uuid), the checkpoint row, the backup row and one row per disk.
  // Errors: the id, or another backup of the same checkpoint, already
  // catalogued -> kAlreadyExists; empty id/uuid/checkpoint, a mode other
  // than full|incremental, empty or repeated disk names -> kInvalidArgument.
  Status AddBackup(const BackupRecord& record);

  // Removes a backup, its disk rows, and its checkpoint/domain rows when no
  // other backup names them. Durable when it returns (see above).
  // kNotFound if absent.
  Status RemoveBackup(const std::string& id);

  // The record exactly as added (disks in their original order), or nullopt.
  Result<std::optional<BackupRecord>> GetBackup(const std::string& id);

  // Backups of a domain (by uuid; "" = all), oldest first by `created`
  // (checkpoint creation time), ties by id. checkpoint_xml included.
  Result<std::vector<BackupRecord>> ListBackups(
      const std::string& domain_uuid = "");

  // The newest backup of the domain (same order as ListBackups) whose disks
  // include every disk in `disks` (empty = any), or nullopt: the base of the
  // next incremental. Every catalogued backup is complete (rows are added
  // only for complete backups).
  Result<std::optional<BackupRecord>> LatestBackup(
      const std::string& domain_uuid,
      const std::vector<std::string>& disks = {});

  // Domains with catalogued backups, including undefined ones, by uuid.
  struct DomainRow {
    std::string uuid;
    std::string name;  // as recorded by the domain's newest backup
    bool operator==(const DomainRow&) const = default;
  };
  Result<std::vector<DomainRow>> ListDomains();

  // Inserts or replaces the job record with job.id (stored as JobToJson
  // plus exact millisecond times).
  Status PutJob(const Job& job);
  // The newest `limit` jobs (by created time, then insertion order),
  // returned oldest first.
  Result<std::vector<Job>> ListJobs(size_t limit);
  // Deletes all but the newest `keep` jobs.
  Status PruneJobs(size_t keep);

  // A number that changes whenever the backup rows may have changed since
  // the last call: a commit by another connection (PRAGMA data_version;
  // `ckptfs prune` and `reindex` run in other processes) or a backup write
  // through this object (AddBackup, RemoveBackup, ReplaceBackups, whether
  // they succeeded or not). This object's job writes leave it alone, so a
  // daemon taking requests does not re-read its backups for them; another
  // connection's job writes change it (an extra reload, never a missed one).
  // Read it before the rows it stands for.
  Result<uint64_t> BackupsVersion();

  // Replaces every backup row, and with them every domain and checkpoint
  // row, by `records`, in one durable transaction: what `ckptfs reindex`
  // does after reading the store. Jobs are kept. Same validation as
  // AddBackup; any invalid or duplicate record fails the whole call and
  // changes nothing.
  Status ReplaceBackups(const std::vector<BackupRecord>& records);

 private:
  Catalog(std::string path, sqlite3* db);

  // REQUIRES: mu_ held, inside a write transaction.
  // Validates and inserts the rows of one record; a new domain row gets the
  // record's name until RefreshDomainLocked recomputes it.
  Status InsertBackupLocked(const BackupRecord& record);
  // Deletes the domain row if no checkpoint names it, else sets its name to
  // the one its newest backup recorded.
  Status RefreshDomainLocked(const std::string& domain_uuid);
  // REQUIRES: mu_ held. `where` binds ?1.. to `args`.
  Result<std::vector<BackupRecord>> QueryBackupsLocked(
      const std::string& where, const std::vector<std::string>& args);

  const std::string path_;
  std::mutex mu_;
  sqlite3* const db_;  // guarded by mu_
  // BackupsVersion: the last data_version seen, and the number it returns.
  int64_t data_version_ = -1;  // guarded by mu_
  uint64_t version_ = 0;       // guarded by mu_
};

// Parses a manifest row's changes column, JSON [[offset, length], ...] as
// the catalog writes it. Tolerant: the store's record holds the
// authoritative list and the catalog only mirrors it, so a damaged value
// reads as no changes.
std::vector<std::pair<uint64_t, uint64_t>> ChangesFromJson(
    std::string_view text);

}  // namespace ckptfs
