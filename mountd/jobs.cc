#include "mountd/jobs.h"

#include <algorithm>
#include <random>

#include "backend/clock.h"

namespace ckptfs {

namespace {
bool Ended(const Job& j) {
  return j.state == "succeeded" || j.state == "failed" || j.state == "rejected";
}
}  // namespace

nlohmann::json JobResponse(const Job& j) {
  nlohmann::json out = {{"id", j.id}, {"state", j.state}};
  if (!j.domain.empty()) out["domain"] = j.domain;
  if (!j.checkpoint.empty()) out["checkpoint"] = j.checkpoint;
  if (!j.error.empty()) {
    out["error"] = j.error;
    out["code"] = j.code;
  }
  return out;
}

std::string JobTable::Create(std::string kind, std::string request) {
  static thread_local std::mt19937 rng{std::random_device{}()};
  Job j;
  j.created_ms = NowMs();
  j.kind = std::move(kind);
  j.request = std::move(request);
  std::lock_guard lock(mu_);
  char suffix[16];
  // Sequence plus a random tag: unique within a daemon and, in practice,
  // across restarts within the same second.
  snprintf(suffix, sizeof(suffix), "-%04u%02x", ++seq_ % 10000,
           static_cast<unsigned>(rng() & 0xff));
  j.id = CompactTime(j.created_ms) + suffix;
  jobs_.push_back(j);
  return j.id;
}

std::optional<Job> JobTable::Get(const std::string& id) const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_) {
    if (j.id == id) return j;
  }
  return std::nullopt;
}

std::vector<std::string> JobTable::Ids() const {
  std::lock_guard lock(mu_);
  std::vector<std::string> ids;
  for (const auto& j : jobs_) ids.push_back(j.id);
  return ids;
}

Job FinishedJob(Job j, const Status& st, const std::string& fail_state) {
  j.ended_ms = NowMs();
  if (st.ok()) {
    j.state = "succeeded";
  } else {
    j.state = fail_state;
    j.error = st.message();
    j.code = std::string(CodeName(st.code()));
  }
  return j;
}

void JobTable::Finish(const std::string& id, const Status& st,
                      const std::string& fail_state) {
  std::lock_guard lock(mu_);
  // Ended records are kept in the order they ended (to the back), so the one
  // that just ended is the last of its kind to go.
  auto it = std::find_if(jobs_.begin(), jobs_.end(),
                         [&](const Job& j) { return j.id == id; });
  if (it == jobs_.end()) return;
  Job j = FinishedJob(std::move(*it), st, fail_state);
  jobs_.erase(it);
  jobs_.push_back(std::move(j));
  EvictLocked();
}

void JobTable::EvictLocked() {
  size_t finished = 0, rejected = 0;
  for (const auto& j : jobs_) {
    if (j.state == "rejected") {
      ++rejected;
    } else if (Ended(j)) {
      ++finished;
    }
  }
  // Oldest first; queued and running records are skipped, never evicted.
  for (auto it = jobs_.begin();
       it != jobs_.end() &&
       (finished > kMaxFinished || rejected > kMaxRejected);) {
    if (it->state == "rejected" && rejected > kMaxRejected) {
      --rejected;
      it = jobs_.erase(it);
    } else if (it->state != "rejected" && Ended(*it) &&
               finished > kMaxFinished) {
      --finished;
      it = jobs_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t JobTable::size() const {
  std::lock_guard lock(mu_);
  return jobs_.size();
}

size_t JobTable::running() const {
  std::lock_guard lock(mu_);
  size_t n = 0;
  for (const auto& j : jobs_) n += j.state == "running";
  return n;
}

}  // namespace ckptfs
