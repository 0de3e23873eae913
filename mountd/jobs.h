// JobTable: one record per control request, accepted or rejected
// (control/jobs/<id>.json). Records live in memory for the daemon's life;
// the catalog persists them (Catalog::PutJob). The record itself, Job, is
// plain data in backend/store/job_record.h.
//
// Which records are kept: a job still queued or running is never evicted
// (its request handler, its backup thread and `--wait` still read it; one
// job per domain runs at a time, so they are few). Of the ended ones, the
// last kMaxFinished succeeded or failed records to end and, counted apart,
// the last kMaxRejected rejected ones are kept; the one that ended first is
// evicted first (Ids() lists ended records in the order they ended). A
// rejected request changed nothing and its reply carried the whole record,
// so a flood of bad requests only cycles the rejected records and never
// pushes out the record of a backup that a user polls after it ended.
//
// Thread safety: all methods are thread-safe; records are copied out. A
// record may be gone by the next call (evicted): callers handle nullopt.
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "backend/status.h"
#include "backend/store/job_record.h"

namespace ckptfs {

// The reply a client reads back from the control file.
nlohmann::json JobResponse(const Job& job);

class JobTable {
 public:
  // Ended records kept: kMaxJobs in all, kMaxRejected of them rejected.
  static constexpr size_t kMaxJobs = 1000;
  static constexpr size_t kMaxRejected = 100;
  static constexpr size_t kMaxFinished = kMaxJobs - kMaxRejected;

  // Creates a record in state queued and returns its id.
  std::string Create(std::string kind, std::string request);
  std::optional<Job> Get(const std::string& id) const;
  std::vector<std::string> Ids() const;
  size_t size() const;
  // Applies fn to the record (no-op if it was evicted). fn may not end the
  // job (use Finish, which bounds the ended records).
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
  // Evicts the oldest ended records beyond the bounds. REQUIRES: mu_ held.
  void EvictLocked();

  mutable std::mutex mu_;
  std::deque<Job> jobs_;  // oldest first; guarded by mu_
  uint32_t seq_ = 0;      // guarded by mu_
};

// The record as JobTable::Finish leaves it: for a reply whose record was
// already evicted by the time it is read back.
Job FinishedJob(Job job, const Status& st,
                const std::string& fail_state = "failed");

}  // namespace ckptfs
