// The catalog's job records (catalog.h: PutJob, ListJobs, PruneJobs): the
// one part of the catalog that is not an index of the store. A Job is the
// daemon's record (backend/store/job_record.h); the catalog only persists it.
#include <algorithm>
#include <cstdint>
#include <limits>

#include "backend/store/catalog.h"
#include "backend/store/catalog_sql.h"

namespace ckptfs {
namespace {
using catalog_sql::Stmt;
}  // namespace

Status Catalog::PutJob(const Job& job) {
  if (job.id.empty()) return InvalidArgument("job record without an id");
  // Error texts may quote bytes that are not UTF-8; a strict dump throws.
  std::string json = JobToJson(job).dump(
      -1, ' ', false, nlohmann::json::error_handler_t::replace);
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_, R"sql(
INSERT INTO jobs(id, kind, domain, state, created_ms, started_ms, ended_ms,
                 json)
VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
ON CONFLICT(id) DO UPDATE SET kind = excluded.kind, domain = excluded.domain,
  state = excluded.state, created_ms = excluded.created_ms,
  started_ms = excluded.started_ms, ended_ms = excluded.ended_ms,
  json = excluded.json
)sql"));
  s.Bind(1, job.id).Bind(2, job.kind).Bind(3, job.domain).Bind(4, job.state);
  s.Bind(5, job.created_ms).Bind(6, job.started_ms).Bind(7, job.ended_ms);
  // A single statement in autocommit mode: its own write transaction.
  return s.Bind(8, json).Run();
}

Result<std::vector<Job>> Catalog::ListJobs(size_t limit) {
  const auto lim = static_cast<int64_t>(
      std::min<uint64_t>(limit, std::numeric_limits<int64_t>::max()));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(Stmt s, Stmt::Prepare(db_, path_, R"sql(
SELECT id, kind, domain, state, created_ms, started_ms, ended_ms, json
FROM (SELECT rowid AS seq, * FROM jobs
      ORDER BY created_ms DESC, seq DESC LIMIT ?1)
ORDER BY created_ms, seq
)sql"));
  s.Bind(1, lim);
  std::vector<Job> out;
  for (;;) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    auto parsed = nlohmann::json::parse(s.Text(7), nullptr,
                                        /*allow_exceptions=*/false);
    Job job = JobFromJson(parsed);
    // The columns are authoritative and keep exact milliseconds.
    job.id = s.Text(0);
    job.kind = s.Text(1);
    job.domain = s.Text(2);
    job.state = s.Text(3);
    job.created_ms = s.Int(4);
    job.started_ms = s.Int(5);
    job.ended_ms = s.Int(6);
    out.push_back(std::move(job));
  }
  return out;
}

Status Catalog::PruneJobs(size_t keep) {
  const auto lim = static_cast<int64_t>(
      std::min<uint64_t>(keep, std::numeric_limits<int64_t>::max()));
  std::lock_guard lock(mu_);
  ASSIGN_OR_RETURN(
      Stmt s, Stmt::Prepare(db_, path_,
                            "DELETE FROM jobs WHERE rowid NOT IN (SELECT "
                            "rowid FROM jobs ORDER BY created_ms DESC, rowid "
                            "DESC LIMIT ?1)"));
  return s.Bind(1, lim).Run();
}

}  // namespace ckptfs
