// Store: the deduplicating backup store (DESIGN.md section 6; the on-disk
// layout is docs/FORMAT.md).
//
// Objects (through an ObjectStore: a local directory, later RADOS):
//   config.json                                      the store's StoreConfig
//   chunks/<2 hex>/<64 hex>                          a chunk (zstd or plain)
//   backups/<uuid>/<checkpoint>/<disk>.manifest      every chunk of one disk
//   backups/<uuid>/<checkpoint>/backup.json          the backup record
// (<uuid>, <checkpoint> and <disk> pass through EncodeKeyComponent.)
//
// Write order, kept by the backup job: chunks, then every manifest, then the
// backup record (PutBackup checks that each disk's manifest exists), then the
// catalog row. Each write is durable when it returns. A backup is complete
// exactly when its backup.json exists and parses: ListBackups and GetBackup
// see only complete backups; leftovers of a crashed backup (manifests without
// a record) are invisible and DeleteBackup removes them.
//
// Corrupt data is never served: chunks are verified on every read, manifests
// and records carry checksums or are validated, and each failure is a
// kIoError naming the object.
//
// ListBackups skips a backup.json that cannot be read or parsed: it logs a
// warning and reports it through `problems` (so one damaged record does not
// hide every other backup); GetBackup of it fails with kIoError.
//
// Thread safety: all methods may be called concurrently from any thread;
// several processes may share one store. Hashing and compression run in the
// caller's thread (the backup job runs PutChunk on its worker pool). Sources
// from OpenImage share the chunk layer with the Store and stay valid after
// the Store is destroyed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "backend/image_source.h"
#include "backend/status.h"
#include "backend/store/change_log.h"
#include "backend/store/chunk_index.h"
#include "backend/store/chunk_store.h"
#include "backend/store/object_store.h"
#include "backend/store/rados_object_store.h"
#include "backend/store/serialize.h"
#include "backend/store/tree_index.h"
#include "backend/store/types.h"

namespace ckptfs {

// config.json. Fixed when the store is created.
struct StoreConfig {
  // Layout version: 1 (dense manifests) or 2 (index trees, docs/FORMAT.md
  // section 8). A store keeps the format it was made with: a format 1 store
  // is read and written as format 1. New stores are format 2.
  uint32_t format = 2;
  uint32_t chunk_size = 256 * 1024;  // power of two, 4 KiB .. 16 MiB
  // "auto": a chunk is a zstd frame, or its plain bytes when zstd does not
  // make it smaller (docs/FORMAT.md); "zstd": always a zstd frame (stores
  // made before "auto" existed).
  std::string compression = "auto";
  int zstd_level = 3;  // ZSTD_minCLevel() .. ZSTD_maxCLevel()
  bool operator==(const StoreConfig&) const = default;
};

// The formats this code reads and writes: 1 (dense manifests, stores made
// before format 2) and 2 (index trees), which new stores get.
inline constexpr uint32_t kStoreFormat = 1;      // the oldest
inline constexpr uint32_t kTreeStoreFormat = 2;  // the newest, for new stores
// The byte budget of a Store's index page cache: the pages near the roots of
// many open images, within the daemon's fixed 64 MiB beside its block cache.
inline constexpr size_t kPageCacheBytes = 16u << 20;

// config.json text of a config (no validation).
std::string SerializeStoreConfig(const StoreConfig& config);
// Parses and validates config.json; `location` names the store in messages.
// Errors are kInvalidArgument ("store DIR has format 7; this ckptfs reads
// format 1 or 2").
Result<StoreConfig> ParseStoreConfig(std::string_view json,
                                     const std::string& location);

// "<domain_uuid>/<checkpoint>": BackupRecord::id and Manifest::backup_id.
std::string BackupId(const std::string& domain_uuid,
                     const std::string& checkpoint);

class Catalog;  // backend/store/catalog.h

// True for a "rados:..." store URI (Store::Open).
inline bool IsRadosStore(std::string_view uri) {
  return uri.starts_with("rados:");
}

// How Store::Open reaches a store that is not a local directory.
struct StoreOpenOptions {
  // A rados: store's cluster (--ceph-conf, --ceph-id).
  CephOptions ceph;
  // Where a rados: store's catalog lives: catalog_dir/POOL[+NAMESPACE].db.
  // The catalog is this host's cache of the store, never in the pool
  // (docs/ARCHITECTURE.md): the daemon passes its run dir.
  std::string catalog_dir = "/var/lib/ckptfs/run";
};

class Store {
 public:
  // Opens the store at `uri`: a directory path or a file:// URI (OpenLocal),
  // or "rados:POOL[/NAMESPACE]", a Ceph pool (RadosObjectStore, reached as
  // `options` say). Another "scheme://" is kInvalidArgument naming it.
  // `create` and config_if_new as for OpenLocal.
  static Result<std::unique_ptr<Store>> Open(
      const std::string& uri, bool create, StoreConfig config_if_new = {},
      const StoreOpenOptions& options = {});
  // Opens the store in directory `dir`. With `create`, a missing directory
  // or config.json is created with config_if_new; an existing config always
  // wins. kNotFound if there is no store and !create; kInvalidArgument for
  // an unknown format or invalid config.
  static Result<std::unique_ptr<Store>> OpenLocal(
      const std::string& dir, bool create, StoreConfig config_if_new = {});
  // The same over any ObjectStore.
  static Result<std::unique_ptr<Store>> Open(
      std::unique_ptr<ObjectStore> objects, bool create,
      StoreConfig config_if_new = {});

  // Opens this store's catalog (catalog.h), its SQLite index: DIR/catalog.db
  // of a local store, StoreOpenOptions::catalog_dir/POOL[+NS].db of a
  // rados: one; kUnsupported for a store opened over a bare
  // ObjectStore. With `replace_corrupt`, Catalog::OpenOrReplaceCorrupt
  // (*moved_to, if given, names the file moved aside), else Catalog::Open.
  Result<std::unique_ptr<Catalog>> OpenCatalog(bool replace_corrupt = false,
                                               std::string* moved_to = nullptr);

  const StoreConfig& config() const { return config_; }
  const PageCache& page_cache() const { return *page_cache_; }
  uint32_t chunk_size() const { return config_.chunk_size; }
  ObjectStore& objects() { return *objects_; }

  // Object keys (see the layout above).
  static std::string ChunkKey(const ChunkHash& hash);
  static std::string BackupPrefix(const std::string& domain_uuid,
                                  const std::string& checkpoint);  // ends '/'
  static std::string RecordKey(const std::string& domain_uuid,
                               const std::string& checkpoint);
  static std::string ManifestKey(const std::string& domain_uuid,
                                 const std::string& checkpoint,
                                 const std::string& disk);

  // ---- chunks
  using PutStats = ChunkPutStats;
  // Stores one chunk (see ChunkStore::Put). The hash is computed first; the
  // compression and the write are skipped if the chunk exists. Zero chunks
  // return {hash = {}, zero = true} and store nothing.
  // REQUIRES (else kInvalidArgument): 0 < data.size() <= chunk_size().
  // With a `batch` (NewBatch), a new chunk is written into it and must not
  // be referenced before batch->Commit() succeeded.
  Result<ChunkRef> PutChunk(std::span<const std::byte> data,
                            PutStats* stats = nullptr,
                            ObjectStore::Batch* batch = nullptr);
  // One writer's deferred chunk writes (see ObjectStore::Batch).
  std::unique_ptr<ObjectStore::Batch> NewBatch();
  // Reads and verifies a chunk into out (out.size() = its plain length).
  // Missing, undecodable or mismatching data: kIoError
  // "chunk <hex>: hash mismatch (store corrupt)".
  Status GetChunk(const ChunkRef& ref, std::span<std::byte> out);
  // GetChunk, and a chunk whose object is damaged (read whole, but it does
  // not decode or verify, twice in a row) is moved aside
  // (ObjectStore::Quarantine): it is then missing, so the next backup that
  // holds the same bytes stores it again, and every backup naming it reads
  // right again. The status says so. Used by verify and by a backup that
  // finds its base's chunk bad.
  Status CheckChunk(const ChunkRef& ref, std::span<std::byte> out);
  // A backup reuses a stored chunk (from its base): restarts its age for gc
  // (CollectGarbage). False if it is missing: the backup stores it again.
  Result<bool> TouchChunk(const ChunkHash& hash);

  // ---- manifests and backup records (durable on return)
  //
  // A backup's objects never change once written: PutManifest and PutBackup
  // fail with kAlreadyExists rather than replace anything, and a job undoes
  // a failure with DeleteWritten (only what it wrote itself).

  // kAlreadyExists if anything of a backup of that checkpoint is stored
  // (its record, or manifests of an attempt that did not complete): a new
  // backup of it must not start. Checked before a job writes anything.
  Status CheckNameFree(const std::string& domain_uuid,
                       const std::string& checkpoint);
  // REQUIRES (else kInvalidArgument): backup.id ==
  // BackupId(backup.domain_uuid, backup.checkpoint), manifest.backup_id ==
  // backup.id, manifest.chunk_size == chunk_size(), ChunkCount(size)
  // entries, a non-empty disk name; each name's key component (after
  // EncodeKeyComponent, plus ".manifest") at most 255 bytes.
  Status PutManifest(const BackupRecord& backup, const Manifest& manifest);
  // kNotFound if the disk is neither stored nor listed in backup.disks;
  // kIoError "manifest <key>: ..." if it is listed but missing, corrupt,
  // truncated, or belongs to another backup or disk.
  Result<Manifest> GetManifest(const BackupRecord& backup,
                               const std::string& disk);
  // The disk's index (GetManifest's checks and errors), whatever its format
  // (store_index.cc): what every reader of a backup's chunks uses. A format
  // 2 index reads its pages on demand.
  Result<std::shared_ptr<const ChunkIndex>> OpenIndex(
      const BackupRecord& backup, const std::string& disk);
  // The writer side of a new backup's index of one disk, in the store's
  // format: from `base` (the base backup's index of that disk, or null) when
  // it can start from it (ChunkIndexBuilder::from_base).
  std::unique_ptr<ChunkIndexBuilder> NewIndexBuilder(
      const BackupRecord& backup, const std::string& disk, uint64_t size,
      std::shared_ptr<const ChunkIndex> base);
  // A backup that will reuse `base` keeps it from gc until it commits: a
  // format 2 index's root page is touched, and gc keeps the whole subtree of
  // every page touched since the oldest running backup began. False if the
  // root is gone (gc after a prune): the backup must not use that base.
  Result<bool> KeepIndex(const ChunkIndex& base);
  // Finishes the builder: the new pages go into `batch` (those already
  // stored are touched instead); returns the manifest's bytes, for PutIndex
  // once the batch is committed. PutManifest's checks and errors.
  Result<std::vector<std::byte>> StageIndex(const BackupRecord& backup,
                                            ChunkIndexBuilder& builder,
                                            ObjectStore::Batch* batch);
  // Creates the manifest StageIndex made (durable on return).
  Status PutIndex(const BackupRecord& backup, const std::string& disk,
                  std::span<const std::byte> manifest);
  // Writes backup.json: the backup is complete. REQUIRES (else
  // kInvalidArgument): a valid record (id, mode full|incremental, at least
  // one disk, unique disk names) whose every disk's manifest is stored.
  Status PutBackup(const BackupRecord& record);
  // kNotFound if there is no complete backup of that checkpoint; kIoError if
  // its record is corrupt.
  Result<BackupRecord> GetBackup(const std::string& domain_uuid,
                                 const std::string& checkpoint);
  // Complete backups sorted by (domain_uuid, created, checkpoint). Records
  // that cannot be read or parsed are skipped, logged, and described in
  // *problems if given.
  Result<std::vector<BackupRecord>> ListBackups(
      std::vector<std::string>* problems = nullptr);
  // Marks the backup as being deleted, deletes the record (so the backup is
  // never served half-deleted), then every manifest under its prefix, then
  // the mark: an interrupted delete is finished by gc, and verify does not
  // take it for damage. Every manifest under its prefix goes, also of disks the
  // record does not list (leftovers of a crashed attempt). Only domain_uuid and
  // checkpoint are used, so it also cleans up an incomplete backup. Chunks stay
  // for gc. kNotFound if there was nothing to delete.
  Status DeleteBackup(const BackupRecord& record);

  // Backups with objects under their prefix but no record: a lost record,
  // a backup that was interrupted (or is running: its manifests come before
  // its record), or an interrupted DeleteBackup (`deleting`).
  struct Incomplete {
    std::string domain_uuid, checkpoint;
    std::vector<std::string> keys;  // its objects
    bool deleting = false;
  };
  Result<std::vector<Incomplete>> ListIncomplete();

  // Takes back what one failed job wrote: its record if `record`, then the
  // manifests of `disks`. Absent objects are fine.
  Status DeleteWritten(const BackupRecord& backup,
                       const std::vector<std::string>& disks, bool record);

  // One disk of a backup as a StoreSource (see store_source.h): size from
  // the manifest, verified chunk reads, zero chunks as holes, max_request
  // 32 MiB, preferred_block_size = chunk_size().
  Result<std::shared_ptr<ImageSource>> OpenImage(const BackupRecord& backup,
                                                 const std::string& disk);

  // Every chunk hash (zero chunks excluded) referenced by any manifest in
  // the store, complete backups or not, sorted and unique. Fails (kIoError)
  // if any manifest cannot be read: gc must not run on a partial answer.
  Result<std::vector<ChunkHash>> ReferencedChunks();

  // Reads every manifest of the backup and re-hashes every chunk it names
  // (each distinct chunk once). Returns one line per problem; empty means
  // healthy.
  Result<std::vector<std::string>> VerifyBackup(const BackupRecord& backup);

  // Running backups announce themselves with a lock object (locks/<name>)
  // holding their start time and owner; gc keeps every chunk touched since
  // the oldest start. A lock left by a killed process only makes gc keep
  // more; its host's next daemon removes it (owners are matched by the
  // fields, never by parsing names: host "node" is not "node-2"). A lock
  // with a lease is renewed by its writer (RenewLock) and expires when it
  // was not renewed for `lease` seconds: a host that died mid-backup, or
  // never comes back, does not hold gc back for good (ExpireLocks).
  struct Lock {
    std::string name;  // unique; the key component
    int64_t started = 0;
    std::string host;  // empty if unknown (an unreadable or older lock)
    int64_t pid = 0;
    std::string domain_uuid, checkpoint;  // the backup it writes, if known
    int64_t lease = 0;    // seconds; 0: never expires (older locks)
    int64_t renewed = 0;  // ListLocks: the object's last Put or renewal
    bool operator==(const Lock&) const = default;
  };
  Status PutLock(const Lock& lock);
  Status DeleteLock(const std::string& name);
  // Restarts the lease of a lock this process holds; false if the lock is
  // gone (it expired and gc removed it: the backup must not complete).
  Result<bool> RenewLock(const std::string& name);
  // An unreadable lock is listed with started = 0 (it still protects).
  Result<std::vector<Lock>> ListLocks();
  // Removes the locks whose lease ran out before `now` (epoch seconds), and
  // the incomplete backup each names. The delete is atomic against
  // RenewLock (ObjectStore::DeleteIfUnusedSince): a writer that renews in
  // time keeps its lock, one that does not learns at its next renewal that
  // the lock is gone, before it writes its record. So gc, which calls this
  // before GcCutoff, never deletes what a backup that will complete needs.
  // Returns the locks removed.
  Result<std::vector<Lock>> ExpireLocks(int64_t now);

  struct GcStats {
    uint64_t chunks = 0;         // chunk objects seen
    uint64_t referenced = 0;     // of them, named by a manifest
    uint64_t recent = 0;         // unreferenced but touched after the cutoff
    uint64_t deleted = 0;        // removed (or, dry run, to remove)
    uint64_t leftovers = 0;      // objects of deletes cut short, removed
    uint64_t temporaries = 0;    // of crashed writers, removed
    uint64_t pages = 0;          // format 2 index pages seen
    uint64_t pages_deleted = 0;  // of them, removed (or, dry run, to remove)
  };
  // The cutoff gc uses at time `now`: a minute before the start of the
  // oldest running backup (ListLocks), or before now.
  Result<int64_t> GcCutoff(int64_t now);
  // Removes what nothing needs and nobody wrote or touched since `cutoff`
  // (epoch seconds; GcCutoff): the rest of deletes cut short (a killed
  // prune), then chunk objects no manifest references, then temporaries of
  // crashed writers. Safe while backups run when `cutoff` is
  // before the start of each: every object a running backup writes or
  // reuses is written or touched after its start, and a chunk is deleted
  // with ObjectStore::DeleteIfUnusedSince, so a Touch racing the delete
  // either keeps it or reports it gone (the backup then writes it again).
  Result<GcStats> CollectGarbage(int64_t cutoff, bool dry_run);

  // ---- maintenance at a daemon's start (store_locks.cc,
  // store_maintenance.cc)

  // Removes the locks of backups started on `host` (this machine's name)
  // whose process is gone (`alive(pid)` false, or no pid recorded), and the
  // incomplete backup such a lock names (no record: it never completed, and
  // its manifests would pin chunks and look like damage to verify). Locks of
  // other hosts stay. Best effort: failures are logged and skipped.
  void RemoveStaleLocks(const std::string& host,
                        const std::function<bool(int64_t pid)>& alive);
  // Makes `catalog` list exactly the store's complete backups: when the ids
  // differ, it replaces every backup row (Catalog::ReplaceBackups).
  Status ReconcileCatalog(Catalog& catalog);

  // The log of backups added and removed (change_log.h): PutBackup,
  // DeleteBackup and DeleteWritten append to it; CatalogFollower reads it.
  ChangeLog& changes() { return changes_; }

 private:
  Store(std::shared_ptr<ObjectStore> objects, StoreConfig config);
  // The incomplete backup (manifests, no record) a dead writer's lock names.
  void RemovePartialBackupOf(const Lock& lock);
  // Appends to the change log, logging a failure.
  void Announce(Change::Kind kind, const std::string& domain_uuid,
                const std::string& checkpoint);
  // CollectGarbage's first step; returns the objects removed.
  Result<uint64_t> RemoveLeftovers(bool dry_run);
  // PutManifest's checks (StageIndex's too).
  Status CheckManifest(const BackupRecord& backup, const Manifest& manifest);
  // GetManifest's steps, shared with OpenIndex.
  Result<std::vector<std::byte>> ReadManifestObject(const BackupRecord& backup,
                                                    const std::string& disk,
                                                    std::string* key);
  Status CheckManifestIdentity(const std::string& key,
                               const BackupRecord& backup,
                               const std::string& disk,
                               const std::string& names_backup,
                               const std::string& names_disk,
                               uint32_t chunk_size_of, uint64_t size);
  // Format 2: index pages by hash (store_index.cc).
  static std::string PageKey(const ChunkHash& hash);
  PageSource Pages() const;
  // Marks what the manifests reference (chunks, and format 2 pages) and,
  // if cutoff is set, the subtrees of pages touched at or after it.
  Status Mark(std::optional<int64_t> cutoff, std::vector<ChunkHash>* chunks,
              std::set<ChunkHash>* pages);
  Status SweepPages(const std::set<ChunkHash>& keep, int64_t cutoff,
                    bool dry_run, GcStats* stats);

  const std::shared_ptr<ObjectStore> objects_;
  const StoreConfig config_;
  const std::shared_ptr<ChunkStore> chunks_;
  // Format 2 index pages of every image this Store opened (docs/FORMAT.md
  // section 8): one budget, however many images are open.
  const std::shared_ptr<PageCache> page_cache_ =
      std::make_shared<PageCache>(kPageCacheBytes);
  std::string catalog_path_;  // "" if the store has no local directory
  ChangeLog changes_{objects_};
};

}  // namespace ckptfs
