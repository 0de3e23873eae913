// Fuzz target: the JSON the catalog reads back from its SQLite file
// (backend/store/catalog.h): job records (the jobs.json column, JobFromJson) and a
// manifest row's changes column (ChangesFromJson). Both are tolerant by
// contract: damage reads as defaults, never as an error or a crash.
//
// Checked:
// - JobFromJson of any JSON: times are whole seconds; the record renders
//   (JobToJson) and reads back to itself, and rendering is then a fixed
//   point (a job listed, stored and listed again does not drift).
// - ChangesFromJson of any text: reading back what the catalog writes for
//   the result gives the result.
#include <string>
#include <utility>
#include <vector>

#include "backend/store/catalog.h"
#include "mountd/jobs.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

bool SameJob(const Job& a, const Job& b) {
  return a.id == b.id && a.kind == b.kind && a.request == b.request &&
         a.domain == b.domain && a.checkpoint == b.checkpoint &&
         a.mode == b.mode && a.base == b.base && a.full_disks == b.full_disks &&
         a.state == b.state && a.error == b.error && a.code == b.code &&
         a.done == b.done && a.total == b.total &&
         a.created_ms == b.created_ms && a.started_ms == b.started_ms &&
         a.ended_ms == b.ended_ms;
}

void FuzzJob(std::string_view text) {
  // As Catalog::ListJobs reads the column.
  const auto parsed = nlohmann::json::parse(text, nullptr,
                                            /*allow_exceptions=*/false);
  Job job = JobFromJson(parsed);
  for (int64_t ms : {job.created_ms, job.started_ms, job.ended_ms}) {
    FUZZ_CHECK(ms % 1000 == 0);
  }
  FUZZ_CHECK(!job.state.empty());
  // JobToJson writes "code" only with an "error" (JobTable::Finish sets
  // both), so a code without an error is not part of a record.
  if (job.error.empty()) job.code.clear();
  const std::string text1 = JobToJson(job).dump();
  const Job again = JobFromJson(nlohmann::json::parse(text1));
  FUZZ_CHECK_MSG(SameJob(again, job), text1);
  FUZZ_CHECK(JobToJson(again).dump() == text1);
}

void FuzzChanges(std::string_view text) {
  const std::vector<std::pair<uint64_t, uint64_t>> changes =
      ChangesFromJson(text);
  // What Catalog::InsertBackupLocked writes.
  const std::string written = nlohmann::json(changes).dump();
  FUZZ_CHECK(ChangesFromJson(written) == changes);
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text = ckptfs::fuzz::AsText(data, size);
  ckptfs::FuzzJob(text);
  ckptfs::FuzzChanges(text);
  return 0;
}
