#include "backend/store/catalog.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <string_view>
#include <utility>

#include "backend/clock.h"
#include "backend/store/catalog_sql.h"

namespace ckptfs {
namespace {

using catalog_sql::Exec;
using catalog_sql::Migrate;
using catalog_sql::ReindexHint;
using catalog_sql::SqlError;
using catalog_sql::Stmt;
using catalog_sql::WriteTxn;

Status Validate(const BackupRecord& r) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("backup '" + r.id + "': " + why);
  };
  if (r.id.empty()) return InvalidArgument("backup record without an id");
  if (r.domain_uuid.empty()) return bad("no domain uuid");
  if (r.checkpoint.empty()) return bad("no checkpoint");
  if (r.mode != "full" && r.mode != "incremental") {
    return bad("mode '" + r.mode + "' is neither full nor incremental");
  }
  std::set<std::string> names;
  for (const auto& d : r.disks) {
    if (d.name.empty()) return bad("a disk without a name");
    if (!names.insert(d.name).second) return bad("disk " + d.name + " twice");
  }
  return Status::Ok();
}

// Columns shared by every backup query; manifests are LEFT JOINed so a row
// per disk comes back, grouped by backup in ListBackups order.
constexpr std::string_view kSelectBackups = R"sql(
SELECT b.id, b.domain_name, b.domain_uuid, b.checkpoint, b.base, b.mode,
       c.created, b.completed, c.xml,
       m.disk, m.size, m.allocated, m.source, m.bytes_read, m.changes
FROM backups b
JOIN checkpoints c ON c.domain_uuid = b.domain_uuid AND c.name = b.checkpoint
LEFT JOIN manifests m ON m.backup_id = b.id
)sql";
constexpr std::string_view kOrderBackups = " ORDER BY c.created, b.id, m.idx";

}  // namespace

std::vector<std::pair<uint64_t, uint64_t>> ChangesFromJson(
    std::string_view text) {
  const auto j = nlohmann::json::parse(text, nullptr,
                                       /*allow_exceptions=*/false);
  if (!j.is_array()) return {};
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& e : j) {
    // Only what the catalog writes: get<uint64_t>() would convert a
    // negative or fractional number, and one beyond 2^64 is undefined
    // behaviour.
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned()) {
      return {};
    }
    out.emplace_back(e[0].get<uint64_t>(), e[1].get<uint64_t>());
  }
  return out;
}

Catalog::Catalog(std::string path, sqlite3* db)
    : path_(std::move(path)), db_(db) {}

Catalog::~Catalog() { sqlite3_close_v2(db_); }

Result<std::unique_ptr<Catalog>> Catalog::OpenOrReplaceCorrupt(
    const std::string& path, std::string* moved_to) {
  moved_to->clear();
  auto catalog = Open(path);
  if (catalog.ok() ||
      catalog.status().message().rfind(ReindexHint(path), 0) != 0) {
    return catalog;
  }
  std::string aside = path + ".corrupt-" + CompactTime(NowMs());
  for (int i = 2; access(aside.c_str(), F_OK) == 0; ++i) {
    aside = path + ".corrupt-" + CompactTime(NowMs()) + "-" + std::to_string(i);
  }
  for (const char* suffix : {"", "-wal", "-shm"}) {
    if (std::rename((path + suffix).c_str(), (aside + suffix).c_str()) != 0 &&
        errno != ENOENT) {
      return FromErrno(errno, "cannot move the corrupt catalog " + path +
                                  " aside to " + aside);
    }
  }
  *moved_to = aside;
  return Open(path);
}

Result<std::unique_ptr<Catalog>> Catalog::Open(const std::string& path) {
  sqlite3* db = nullptr;
  const bool created = access(path.c_str(), F_OK) != 0 && errno == ENOENT;
  // NOMUTEX: the Catalog's own mutex serialises use of the connection.
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE,
                           nullptr);
  if (rc != SQLITE_OK) {
    Status st = SqlError(db, rc, path, "open");
    sqlite3_close_v2(db);
    return st;
  }
  // It holds domain XML and job records: owner-only, like the store's
  // objects (SQLite gives its -wal and -shm files the same mode).
  if (created && chmod(path.c_str(), 0600) != 0) {
    spdlog::warn("catalog {}: cannot make it owner-only: {}", path,
                 std::strerror(errno));
  }
  std::unique_ptr<Catalog> cat(new Catalog(path, db));
  sqlite3_busy_timeout(db, kBusyTimeoutMs);

  // The first read of the header: fails with NOTADB on a foreign file.
  int version = 0;
  {
    ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, path, "PRAGMA user_version"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (row) version = static_cast<int>(s.Int(0));
  }
  if (version > kSchemaVersion) {
    return Status(Code::kUnsupported,
                  "catalog " + path + " has schema version " +
                      std::to_string(version) + ", newer than this ckptfs (" +
                      std::to_string(kSchemaVersion) +
                      "); upgrade ckptfs, or move the file away and run "
                      "'ckptfs reindex' to rebuild it");
  }
  if (version > 0) {
    // Cheap at catalog sizes (thousands of rows); turns silent corruption
    // into one clear error at start-up instead of odd failures later.
    ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db, path, "PRAGMA quick_check"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "ok") {
      return IoError(ReindexHint(path) + " (" +
                     (row ? s.Text(0) : "no result") + ")");
    }
  }

  // WAL: readers never block the writer, and a crash never corrupts the
  // file. synchronous=NORMAL: a commit may be lost on power loss but never
  // half-applied; RemoveBackup/ReplaceBackups raise it to FULL for their
  // commit (see catalog.h).
  {
    ASSIGN_OR_RETURN(Stmt s,
                     Stmt::Prepare(db, path, "PRAGMA journal_mode=WAL"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row || s.Text(0) != "wal") {
      spdlog::warn(
          "catalog {}: WAL journal not available (mode {}); writers "
          "will block readers",
          path, row ? s.Text(0) : "unknown");
    }
  }
  RETURN_IF_ERROR(Exec(db, path, "PRAGMA synchronous=NORMAL", "pragma"));
  RETURN_IF_ERROR(Exec(db, path, "PRAGMA foreign_keys=ON", "pragma"));

  if (version < kSchemaVersion) RETURN_IF_ERROR(Migrate(db, path));
  return cat;
}

Status Catalog::InsertBackupLocked(const BackupRecord& r) {
  RETURN_IF_ERROR(Validate(r));
  {
    ASSIGN_OR_RETURN(Stmt s,
                     Stmt::Prepare(db_, path_,
                                   "SELECT id FROM backups WHERE id = ?1 OR "
                                   "(domain_uuid = ?2 AND checkpoint = ?3)"));
    s.Bind(1, r.id).Bind(2, r.domain_uuid).Bind(3, r.checkpoint);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (row) {
      std::string other = s.Text(0);
      if (other == r.id) {
        return AlreadyExists("backup " + r.id + " is already catalogued");
      }
      return AlreadyExists("checkpoint " + r.checkpoint + " of domain " +
                           r.domain_uuid + " already has backup " + other);
    }
  }
  {
    // The name is set from the newest backup by RefreshDomainLocked.
    ASSIGN_OR_RETURN(Stmt s,
                     Stmt::Prepare(db_, path_,
                                   "INSERT INTO domains(uuid, name) "
                                   "VALUES(?1, ?2) ON CONFLICT DO NOTHING"));
    RETURN_IF_ERROR(s.Bind(1, r.domain_uuid).Bind(2, r.domain).Run());
  }
  {
    ASSIGN_OR_RETURN(Stmt s,
                     Stmt::Prepare(db_, path_,
                                   "INSERT INTO checkpoints(domain_uuid, name, "
                                   "created, xml) VALUES(?1, ?2, ?3, ?4)"));
    s.Bind(1, r.domain_uuid).Bind(2, r.checkpoint).Bind(3, r.created);
    RETURN_IF_ERROR(s.Bind(4, r.checkpoint_xml).Run());
  }
  {
    ASSIGN_OR_RETURN(
        Stmt s,
        Stmt::Prepare(db_, path_,
                      "INSERT INTO backups(id, domain_uuid, checkpoint, "
                      "domain_name, base, mode, completed) "
                      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
    s.Bind(1, r.id).Bind(2, r.domain_uuid).Bind(3, r.checkpoint);
    s.Bind(4, r.domain).Bind(5, r.base).Bind(6, r.mode).Bind(7, r.completed);
    RETURN_IF_ERROR(s.Run());
  }
  {
    ASSIGN_OR_RETURN(
        Stmt s,
        Stmt::Prepare(db_, path_,
                      "INSERT INTO manifests(backup_id, idx, disk, size, "
                      "allocated, source, bytes_read, changes) "
                      "VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"));
    for (size_t i = 0; i < r.disks.size(); ++i) {
      const BackupDisk& d = r.disks[i];
      s.Bind(1, r.id).Bind(2, static_cast<int64_t>(i)).Bind(3, d.name);
      s.BindU(4, d.size).BindU(5, d.allocated).Bind(6, d.source);
      s.BindU(7, d.bytes_read);
      RETURN_IF_ERROR(s.Bind(8, nlohmann::json(d.changes).dump()).Run());
      s.Reset();
    }
  }
  return Status::Ok();
}

Status Catalog::RefreshDomainLocked(const std::string& domain_uuid) {
  {
    ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db_, path_,
                              "DELETE FROM domains WHERE uuid = ?1 AND NOT "
                              "EXISTS (SELECT 1 FROM checkpoints WHERE "
                              "domain_uuid = ?1)"));
    RETURN_IF_ERROR(s.Bind(1, domain_uuid).Run());
  }
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_, R"sql(
UPDATE domains SET name = (
  SELECT b.domain_name FROM backups b
  JOIN checkpoints c ON c.domain_uuid = b.domain_uuid AND c.name = b.checkpoint
  WHERE b.domain_uuid = ?1 ORDER BY c.created DESC, b.id DESC LIMIT 1)
WHERE uuid = ?1 AND EXISTS (SELECT 1 FROM backups WHERE domain_uuid = ?1)
)sql"));
  return s.Bind(1, domain_uuid).Run();
}

Status Catalog::AddBackup(const BackupRecord& record) {
  std::lock_guard lock(mu_);
  ++version_;  // mu_ is held to the end: no reader sees it before the rows
  WriteTxn txn(db_, path_);
  RETURN_IF_ERROR(txn.Begin(/*durable=*/false));
  RETURN_IF_ERROR(InsertBackupLocked(record));
  RETURN_IF_ERROR(RefreshDomainLocked(record.domain_uuid));
  return txn.Commit();
}

Status Catalog::RemoveBackup(const std::string& id) {
  std::lock_guard lock(mu_);
  ++version_;  // mu_ is held to the end: no reader sees it before the rows
  WriteTxn txn(db_, path_);
  RETURN_IF_ERROR(txn.Begin(/*durable=*/true));
  std::string uuid, checkpoint;
  {
    ASSIGN_OR_RETURN(Stmt s,
                     Stmt::Prepare(db_, path_,
                                   "DELETE FROM backups WHERE id = ?1 "
                                   "RETURNING domain_uuid, checkpoint"));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return NotFound("backup " + id + " is not in the catalog");
    uuid = s.Text(0);
    checkpoint = s.Text(1);
    ASSIGN_OR_RETURN(bool more, s.Step());
    (void)more;
  }
  {
    ASSIGN_OR_RETURN(
        Stmt s, Stmt::Prepare(db_, path_,
                              "DELETE FROM checkpoints WHERE domain_uuid = ?1 "
                              "AND name = ?2 AND NOT EXISTS (SELECT 1 FROM "
                              "backups WHERE domain_uuid = ?1 AND "
                              "checkpoint = ?2)"));
    RETURN_IF_ERROR(s.Bind(1, uuid).Bind(2, checkpoint).Run());
  }
  RETURN_IF_ERROR(RefreshDomainLocked(uuid));
  return txn.Commit();
}

Result<std::vector<BackupRecord>> Catalog::QueryBackupsLocked(
    const std::string& where, const std::vector<std::string>& args) {
  std::string sql(kSelectBackups);
  sql += where;
  sql += kOrderBackups;
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_, sql));
  for (size_t i = 0; i < args.size(); ++i) {
    s.Bind(static_cast<int>(i + 1), args[i]);
  }
  std::vector<BackupRecord> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    std::string id = s.Text(0);
    if (out.empty() || out.back().id != id) {
      BackupRecord r;
      r.id = std::move(id);
      r.domain = s.Text(1);
      r.domain_uuid = s.Text(2);
      r.checkpoint = s.Text(3);
      r.base = s.Text(4);
      r.mode = s.Text(5);
      r.created = s.Int(6);
      r.completed = s.Int(7);
      r.checkpoint_xml = s.Text(8);
      out.push_back(std::move(r));
    }
    if (s.IsNull(9)) continue;  // a backup without disks
    BackupDisk d;
    d.name = s.Text(9);
    d.size = s.UInt(10);
    d.allocated = s.UInt(11);
    d.source = s.Text(12);
    d.bytes_read = s.UInt(13);
    d.changes = ChangesFromJson(s.Text(14));
    out.back().disks.push_back(std::move(d));
  }
  return out;
}

Result<std::optional<BackupRecord>> Catalog::GetBackup(const std::string& id) {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(auto rows, QueryBackupsLocked("WHERE b.id = ?1", {id}));
  if (rows.empty()) return std::optional<BackupRecord>();
  return std::optional<BackupRecord>(std::move(rows.front()));
}

Result<std::vector<BackupRecord>> Catalog::ListBackups(
    const std::string& domain_uuid) {
  std::lock_guard lock(mu_);
  if (domain_uuid.empty()) return QueryBackupsLocked("", {});
  return QueryBackupsLocked("WHERE b.domain_uuid = ?1", {domain_uuid});
}

Result<std::optional<BackupRecord>> Catalog::LatestBackup(
    const std::string& domain_uuid, const std::vector<std::string>& disks) {
  std::set<std::string> wanted(disks.begin(), disks.end());
  std::vector<std::string> args = {domain_uuid};
  std::string in;
  for (const auto& d : wanted) {
    args.push_back(d);
    in += (in.empty() ? "?" : ", ?") + std::to_string(args.size());
  }
  // One statement, so the choice and the record come from one snapshot.
  std::string where = R"sql(
WHERE b.id = (
  SELECT b2.id FROM backups b2
  JOIN checkpoints c2
    ON c2.domain_uuid = b2.domain_uuid AND c2.name = b2.checkpoint
  WHERE b2.domain_uuid = ?1)sql";
  if (!wanted.empty()) {
    where +=
        " AND (SELECT count(*) FROM manifests m2 WHERE m2.backup_id = "
        "b2.id AND m2.disk IN (" +
        in + ")) = " + std::to_string(wanted.size());
  }
  where += " ORDER BY c2.created DESC, b2.id DESC LIMIT 1)";
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(auto rows, QueryBackupsLocked(where, args));
  if (rows.empty()) return std::optional<BackupRecord>();
  return std::optional<BackupRecord>(std::move(rows.front()));
}

Result<std::vector<Catalog::DomainRow>> Catalog::ListDomains() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_,
                                         "SELECT uuid, name FROM domains "
                                         "ORDER BY uuid"));
  std::vector<DomainRow> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    out.push_back({s.Text(0), s.Text(1)});
  }
  return out;
}

Result<uint64_t> Catalog::BackupsVersion() {
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_, "PRAGMA data_version"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return IoError("catalog " + path_ + ": no data_version");
  const int64_t data_version = s.Int(0);
  if (data_version != data_version_) {
    data_version_ = data_version;
    ++version_;
  }
  return version_;
}

Status Catalog::ReplaceBackups(const std::vector<BackupRecord>& records) {
  std::lock_guard lock(mu_);
  ++version_;  // mu_ is held to the end: no reader sees it before the rows
  WriteTxn txn(db_, path_);
  RETURN_IF_ERROR(txn.Begin(/*durable=*/true));
  // Children first: foreign keys are enforced immediately.
  RETURN_IF_ERROR(Exec(db_, path_,
                       "DELETE FROM manifests; DELETE FROM backups; "
                       "DELETE FROM checkpoints; DELETE FROM domains;",
                       "reindex"));
  std::set<std::string> domains;
  for (const auto& r : records) {
    RETURN_IF_ERROR(InsertBackupLocked(r));
    domains.insert(r.domain_uuid);
  }
  // Names once per domain, not once per record: same result, linear cost.
  for (const auto& uuid : domains) {
    RETURN_IF_ERROR(RefreshDomainLocked(uuid));
  }
  return txn.Commit();
}

}  // namespace ckptfs
