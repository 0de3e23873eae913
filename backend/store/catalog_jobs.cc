// The catalog's job records (catalog.h: PutJob, ListJobs, PruneJobs,
// JobFromJson): the one part of the catalog that is not an index of the
// store. A Job is the daemon's record (mountd/jobs.h); the catalog only
// persists it.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <limits>

#include "backend/store/catalog.h"
#include "backend/store/catalog_sql.h"

namespace ckptfs {
namespace {

using catalog_sql::Stmt;

std::string JsonStr(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t JsonU64(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) {
    int64_t v = it->get<int64_t>();
    return v > 0 ? static_cast<uint64_t>(v) : 0;
  }
  return 0;
}

// "2026-11-23T08:15:00Z" -> ms since the epoch; 0 if absent or malformed.
int64_t ParseIsoMs(const std::string& s) {
  int y, mo, d, h, mi, sec;
  char z;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d%c", &y, &mo, &d, &h, &mi, &sec,
                  &z) != 7 ||
      z != 'Z') {
    return 0;
  }
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                     day{static_cast<unsigned>(d)}};
  // No leap second: IsoTime never writes one, and 23:59:60 of the last
  // representable day would read as a time IsoTime renders out of range.
  if (!ymd.ok() || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
      sec > 59) {
    return 0;
  }
  auto tp = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec};
  return duration_cast<milliseconds>(tp.time_since_epoch()).count();
}

}  // namespace

Job JobFromJson(const nlohmann::json& j) {
  Job job;
  if (!j.is_object()) return job;
  job.id = JsonStr(j, "id");
  job.kind = JsonStr(j, "kind");
  job.request = JsonStr(j, "request");
  job.domain = JsonStr(j, "domain");
  job.checkpoint = JsonStr(j, "checkpoint");
  job.mode = JsonStr(j, "mode");
  job.base = JsonStr(j, "base");
  if (auto it = j.find("full_disks"); it != j.end() && it->is_array()) {
    for (const auto& d : *it) {
      if (d.is_string()) job.full_disks.push_back(d.get<std::string>());
    }
  }
  if (auto state = JsonStr(j, "state"); !state.empty()) job.state = state;
  job.error = JsonStr(j, "error");
  job.code = JsonStr(j, "code");
  if (auto it = j.find("progress"); it != j.end() && it->is_object()) {
    job.done = JsonU64(*it, "done");
    job.total = JsonU64(*it, "total");
  }
  job.created_ms = ParseIsoMs(JsonStr(j, "created"));
  job.started_ms = ParseIsoMs(JsonStr(j, "started"));
  job.ended_ms = ParseIsoMs(JsonStr(j, "ended"));
  return job;
}

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
