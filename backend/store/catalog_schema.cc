// The catalog's schema and its migrations (catalog.h): the one place the
// tables are defined, and Migrate, which Catalog::Open runs.
#include <sqlite3.h>

#include <iterator>
#include <string>

#include "backend/store/catalog.h"
#include "backend/store/catalog_sql.h"

namespace ckptfs::catalog_sql {
namespace {

// Schema migrations: kMigrations[v] takes user_version v to v + 1. Append
// only; never edit a step that has shipped.
//
// v1:
//  domains     one row per domain uuid with catalogued backups; name is the
//              one its newest backup recorded.
//  checkpoints one row per backed-up checkpoint: creation time and XML.
//  backups     one row per complete backup; at most one per checkpoint.
//  manifests   one row per (backup, disk): the store's per-disk manifest,
//              with the BackupDisk fields; idx keeps the record's order.
//  jobs        control-request records: JobToJson text plus the columns
//              queries need, times in exact milliseconds.
constexpr const char* kMigrations[] = {
    R"sql(
CREATE TABLE domains (
  uuid TEXT PRIMARY KEY NOT NULL,
  name TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE checkpoints (
  domain_uuid TEXT NOT NULL REFERENCES domains(uuid),
  name TEXT NOT NULL,
  created INTEGER NOT NULL,
  xml TEXT NOT NULL,
  PRIMARY KEY (domain_uuid, name)
) WITHOUT ROWID;
CREATE TABLE backups (
  id TEXT PRIMARY KEY NOT NULL,
  domain_uuid TEXT NOT NULL,
  checkpoint TEXT NOT NULL,
  domain_name TEXT NOT NULL,
  base TEXT NOT NULL,
  mode TEXT NOT NULL CHECK (mode IN ('full', 'incremental')),
  completed INTEGER NOT NULL,
  UNIQUE (domain_uuid, checkpoint),
  FOREIGN KEY (domain_uuid, checkpoint)
    REFERENCES checkpoints(domain_uuid, name)
) WITHOUT ROWID;
CREATE TABLE manifests (
  backup_id TEXT NOT NULL REFERENCES backups(id) ON DELETE CASCADE,
  idx INTEGER NOT NULL,
  disk TEXT NOT NULL,
  size INTEGER NOT NULL,
  allocated INTEGER NOT NULL,
  source TEXT NOT NULL,
  bytes_read INTEGER NOT NULL,
  changes TEXT NOT NULL,  -- JSON [[offset, length], ...]: <disk>.changes
  PRIMARY KEY (backup_id, idx),
  UNIQUE (backup_id, disk)
) WITHOUT ROWID;
CREATE TABLE jobs (
  id TEXT PRIMARY KEY NOT NULL,
  kind TEXT NOT NULL,
  domain TEXT NOT NULL,
  state TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  started_ms INTEGER NOT NULL,
  ended_ms INTEGER NOT NULL,
  json TEXT NOT NULL
);
CREATE INDEX jobs_by_created ON jobs(created_ms);
)sql",
};
static_assert(std::size(kMigrations) == Catalog::kSchemaVersion);

}  // namespace

// Takes the schema to Catalog::kSchemaVersion in one durable transaction.
Status Migrate(sqlite3* db, const std::string& path) {
  int version = 0;
  WriteTxn txn(db, path);
  RETURN_IF_ERROR(txn.Begin(/*durable=*/true));
  // Another process may have migrated while we waited for the lock.
  {
    ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, path, "PRAGMA user_version"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    version = row ? static_cast<int>(s.Int(0)) : 0;
  }
  if (version > Catalog::kSchemaVersion) {
    return Status(Code::kUnsupported, "catalog " + path +
                                          " was upgraded to schema version " +
                                          std::to_string(version) +
                                          " by a newer ckptfs; upgrade ckptfs");
  }
  for (int v = version; v < Catalog::kSchemaVersion; ++v) {
    RETURN_IF_ERROR(Exec(db, path, kMigrations[v], "schema migration"));
  }
  std::string set_version =
      "PRAGMA user_version=" + std::to_string(Catalog::kSchemaVersion);
  RETURN_IF_ERROR(Exec(db, path, set_version.c_str(), "schema migration"));
  return txn.Commit();
}

}  // namespace ckptfs::catalog_sql
