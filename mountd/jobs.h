// JobTable: one record per control request, accepted or rejected
// (control/jobs/<id>.json). Records live in memory for the daemon's life,
// newest kMaxJobs kept; the catalog will persist them.
//
// Thread safety: all methods are thread-safe; records are copied out.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

struct Job {
  std::string id;
  std::string kind;     // checkpoint | backup | release
  std::string request;  // the request line, sanitised
  std::string domain;
  std::string checkpoint;
  std::string mode;  // full | incremental, once known
  std::string base;
  // Incremental jobs: the disks copied in full all the same, because their
  // bitmap of the base was missing or inconsistent.
  std::vector<std::string> full_disks;
  std::string state = "queued";  // queued|running|succeeded|failed|rejected
  std::string error;
  std::string code;              // CodeName of the error
  uint64_t done = 0, total = 0;  // progress, bytes
  int64_t created_ms = 0, started_ms = 0, ended_ms = 0;
};

nlohmann::json JobToJson(const Job& job);
// The reply a client reads back from the control file.
nlohmann::json JobResponse(const Job& job);

// "" becomes null in JSON records.
nlohmann::json StrOrNull(const std::string& s);

// Current time, milliseconds since the epoch.
int64_t NowMs();
// "2026-11-23T08:15:00Z" (ms dropped) and "20261123T081500Z".
std::string IsoTime(int64_t ms);
std::string CompactTime(int64_t ms);

class JobTable {
 public:
  static constexpr size_t kMaxJobs = 1000;

  // Creates a record in state queued and returns its id.
  std::string Create(std::string kind, std::string request);
  std::optional<Job> Get(const std::string& id) const;
  std::vector<std::string> Ids() const;
  // Applies fn to the record (no-op if it was evicted).
  template <typename Fn>
  void Update(const std::string& id, Fn&& fn) {
    std::lock_guard lock(mu_);
    for (auto& j : jobs_) {
      if (j.id == id) {
        fn(j);
        return;
      }
    }
  }
  // Ends a job: succeeded on OK, else `fail_state` with the error text.
  void Finish(const std::string& id, const Status& st,
              const std::string& fail_state = "failed");
  size_t running() const;

 private:
  mutable std::mutex mu_;
  std::deque<Job> jobs_;  // oldest first
  uint32_t seq_ = 0;
};

}  // namespace ckptfs
