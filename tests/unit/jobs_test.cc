// JobTable: which records a flood of requests may evict (jobs.h).
#include "mountd/jobs.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <string>

namespace ckptfs {
namespace {

std::string Rejected(JobTable& jobs) {
  std::string id = jobs.Create("checkpoint", "no-such-domain");
  jobs.Finish(id, NotFound("no domain 'no-such-domain'"), "rejected");
  return id;
}

std::string Running(JobTable& jobs) {
  std::string id = jobs.Create("backup", "vm1 name=b1");
  jobs.Update(id, [](Job& j) { j.state = "running"; });
  return id;
}

// 43d0e95 kept the newest 1000 records whatever their state: the running
// backup's record went, `--wait` lost it, and Submit dereferenced the
// missing record of its own request.
TEST(JobTableTest, RunningAndQueuedJobsSurviveAFloodOfRejections) {
  JobTable jobs;
  const std::string backup = Running(jobs);
  // A request being handled: created, not yet finished.
  const std::string queued = jobs.Create("release", "vm2 c1");
  for (size_t i = 0; i < 5 * JobTable::kMaxJobs; ++i) Rejected(jobs);

  auto b = jobs.Get(backup);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->state, "running");
  ASSERT_TRUE(jobs.Get(queued).has_value());
  EXPECT_EQ(jobs.running(), 1u);

  jobs.Update(backup, [](Job& j) { j.done = j.total = 42; });
  jobs.Finish(backup, Status::Ok());
  b = jobs.Get(backup);
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(b->state, "succeeded");
  EXPECT_EQ(b->done, 42u);
  EXPECT_NE(b->ended_ms, 0);
  // Ended last, so evicted last of the rejected ones.
  jobs.Finish(queued, InvalidArgument("no checkpoint 'c1'"), "rejected");
  ASSERT_TRUE(jobs.Get(queued).has_value());
  EXPECT_EQ(jobs.Get(queued)->state, "rejected");
  EXPECT_LE(jobs.size(), JobTable::kMaxRejected + 1);
}

TEST(JobTableTest, RejectionsNeverPushOutAFinishedBackup) {
  JobTable jobs;
  const std::string backup = Running(jobs);
  jobs.Finish(backup, Status::Ok());
  const std::string failed = Running(jobs);
  jobs.Finish(failed, IoError("QEMU went away"));
  std::string last;
  for (size_t i = 0; i < 5 * JobTable::kMaxJobs; ++i) last = Rejected(jobs);

  ASSERT_TRUE(jobs.Get(backup).has_value());
  EXPECT_EQ(jobs.Get(backup)->state, "succeeded");
  ASSERT_TRUE(jobs.Get(failed).has_value());
  EXPECT_EQ(jobs.Get(failed)->code, "io-error");
  ASSERT_TRUE(jobs.Get(last).has_value());
  EXPECT_EQ(jobs.Get(last)->state, "rejected");
  EXPECT_EQ(jobs.size(), JobTable::kMaxRejected + 2);
}

TEST(JobTableTest, EndedRecordsAreBoundedOldestFirst) {
  JobTable jobs;
  std::vector<std::string> ids;
  for (size_t i = 0; i < 2 * JobTable::kMaxJobs; ++i) {
    ids.push_back(Running(jobs));
    jobs.Finish(ids.back(), Status::Ok());
  }
  for (size_t i = 0; i < 3 * JobTable::kMaxRejected; ++i) Rejected(jobs);
  EXPECT_EQ(jobs.size(), JobTable::kMaxJobs);
  // The newest kMaxFinished of the finished ones, in order.
  auto kept = jobs.Ids();
  std::vector<std::string> finished;
  std::copy_if(kept.begin(), kept.end(), std::back_inserter(finished),
               [&](const std::string& id) {
                 return jobs.Get(id)->state == "succeeded";
               });
  EXPECT_EQ(finished, std::vector<std::string>(
                          ids.end() - JobTable::kMaxFinished, ids.end()));
  EXPECT_FALSE(jobs.Get(ids.front()).has_value());
}

// What Submit replies with when its record is gone already.
TEST(JobTableTest, FinishedJobIsWhatFinishWrites) {
  JobTable jobs;
  const std::string id = jobs.Create("checkpoint", "vm1 name=..");
  jobs.Finish(id, InvalidArgument("bad name"), "rejected");
  Job gone;
  gone.id = id;
  Job made = FinishedJob(gone, InvalidArgument("bad name"), "rejected");
  auto kept = jobs.Get(id);
  ASSERT_TRUE(kept.has_value());
  EXPECT_EQ(JobResponse(made), JobResponse(*kept));
}

}  // namespace
}  // namespace ckptfs
