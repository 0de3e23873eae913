// SQLite helpers of the catalog (catalog.h): the one place SQLite result
// codes become Status values, prepared statements, and write transactions.
// Internal to backend/store/catalog*.cc.
//
// Thread safety: none of their own; the Catalog's mutex serialises every
// use of its connection.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "backend/status.h"

namespace ckptfs::catalog_sql {

// The message of a file that is not an SQLite database or is corrupt:
// names the path and suggests `ckptfs reindex`.
std::string ReindexHint(const std::string& path);

// The one place SQLite result codes become Status values.
Status SqlError(sqlite3* db, int rc, const std::string& path,
                std::string_view what);

// A prepared statement; finalized on destruction.
class Stmt {
 public:
  static Result<Stmt> Prepare(sqlite3* db, const std::string& path,
                              std::string_view sql) {
    sqlite3_stmt* s = nullptr;
    int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()),
                                &s, nullptr);
    if (rc != SQLITE_OK) return SqlError(db, rc, path, "prepare");
    return Stmt(db, &path, s);
  }
  Stmt(Stmt&& o) noexcept
      : db_(o.db_), path_(o.path_), s_(std::exchange(o.s_, nullptr)) {}
  Stmt& operator=(Stmt&&) = delete;
  ~Stmt() { sqlite3_finalize(s_); }

  // Binds parameter i (1-based). Text is copied by SQLite.
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                      SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(s_, i, v);
    return *this;
  }
  // Unsigned values round-trip through int64 bit-exactly.
  Stmt& BindU(int i, uint64_t v) { return Bind(i, static_cast<int64_t>(v)); }

  // true: a row is ready; false: done.
  Result<bool> Step() {
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(db_, rc, *path_, "query");
  }
  Status Run() {
    ASSIGN_OR_RETURN(bool row, Step());
    (void)row;
    return Status::Ok();
  }
  // Makes the statement ready to run again with new bindings.
  void Reset() {
    sqlite3_reset(s_);
    sqlite3_clear_bindings(s_);
  }

  std::string Text(int col) const {
    const auto* p = sqlite3_column_text(s_, col);
    int n = sqlite3_column_bytes(s_, col);
    return p ? std::string(reinterpret_cast<const char*>(p), n) : "";
  }
  int64_t Int(int col) const { return sqlite3_column_int64(s_, col); }
  uint64_t UInt(int col) const { return static_cast<uint64_t>(Int(col)); }
  bool IsNull(int col) const {
    return sqlite3_column_type(s_, col) == SQLITE_NULL;
  }

 private:
  Stmt(sqlite3* db, const std::string* path, sqlite3_stmt* s)
      : db_(db), path_(path), s_(s) {}
  sqlite3* db_;
  const std::string* path_;
  sqlite3_stmt* s_;
};

// Runs `sql` (no results) on db.
Status Exec(sqlite3* db, const std::string& path, const char* sql,
            std::string_view what);

// A write transaction. BEGIN IMMEDIATE takes the write lock up front, so a
// second connection waits in the busy handler instead of failing on a
// read-to-write upgrade. Rolls back unless committed. With `durable`, the
// commit is fsynced (synchronous=FULL) before Commit returns.
class WriteTxn {
 public:
  WriteTxn(sqlite3* db, const std::string& path) : db_(db), path_(path) {}
  ~WriteTxn() {
    if (open_) sqlite3_exec(db_, "ROLLBACK", nullptr, nullptr, nullptr);
    if (durable_) {
      sqlite3_exec(db_, "PRAGMA synchronous=NORMAL", nullptr, nullptr, nullptr);
    }
  }
  WriteTxn(const WriteTxn&) = delete;
  WriteTxn& operator=(const WriteTxn&) = delete;

  Status Begin(bool durable) {
    if (durable) {
      RETURN_IF_ERROR(Exec(db_, path_, "PRAGMA synchronous=FULL", "pragma"));
      durable_ = true;
    }
    RETURN_IF_ERROR(Exec(db_, path_, "BEGIN IMMEDIATE", "begin"));
    open_ = true;
    return Status::Ok();
  }
  Status Commit() {
    RETURN_IF_ERROR(Exec(db_, path_, "COMMIT", "commit"));
    open_ = false;
    return Status::Ok();
  }

 private:
  sqlite3* db_;
  const std::string& path_;
  bool open_ = false;
  bool durable_ = false;
};

// Takes the schema of db to Catalog::kSchemaVersion in one durable
// transaction (catalog_schema.cc); kUnsupported if a newer ckptfs upgraded
// it past that.
Status Migrate(sqlite3* db, const std::string& path);

}  // namespace ckptfs::catalog_sql
