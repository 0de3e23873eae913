#include "backend/store/catalog_sql.h"

#include "backend/store/catalog.h"

namespace ckptfs::catalog_sql {

std::string ReindexHint(const std::string& path) {
  return "catalog " + path +
         " is not a valid SQLite database or is corrupt; run 'ckptfs "
         "reindex' to rebuild it from the store";
}

Status SqlError(sqlite3* db, int rc, const std::string& path,
                std::string_view what) {
  std::string detail = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
  std::string where = "catalog " + path + ": " + std::string(what) + ": ";
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return Busy(where + detail + " (another process held the catalog for " +
                  std::to_string(Catalog::kBusyTimeoutMs / 1000) +
                  " s); retry later");
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
      return IoError(ReindexHint(path) + " (" + detail + ")");
    case SQLITE_FULL:
      return Status(Code::kNoSpace, where + detail + "; free disk space");
    case SQLITE_READONLY:
    case SQLITE_PERM:
    case SQLITE_AUTH:
      return Status(Code::kPermission,
                    where + detail + "; check the file's permissions");
    case SQLITE_CANTOPEN:
      return IoError(where + detail +
                     "; check that its directory exists and is writable");
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE ||
          rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return AlreadyExists(where + detail);
      }
      return Internal(where + detail);
    default:
      return IoError(where + detail);
  }
}

Status Exec(sqlite3* db, const std::string& path, const char* sql,
            std::string_view what) {
  int rc = sqlite3_exec(db, sql, nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqlError(db, rc, path, what);
  return Status::Ok();
}

}  // namespace ckptfs::catalog_sql
