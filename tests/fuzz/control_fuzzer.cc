// Fuzz target: the control protocol's request parser (mountd/control.h).
//
// Every input is tried as a checkpoint, backup and release request, since
// the bytes of a write(2) to any control file reach ParseRequest unchanged.
// Checked for each outcome:
// - a rejection is kInvalidArgument with a one-line UTF-8 message;
// - an accepted request obeys the documented rules (domain, names, disks,
//   mode, which keys each kind takes), and its canonical line parses back to
//   the same request;
// - the job record and the reply the daemon builds from the outcome
//   (Daemon::Submit) render as strict JSON, i.e. hold only UTF-8 (found:
//   "vm1\xf8" was accepted, and its reply threw and ended the daemon).
// The name validators are fuzzed on the raw input too.
#include <algorithm>
#include <set>
#include <string>
#include <string_view>

#include "mountd/control.h"
#include "mountd/jobs.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

using fuzz::IsOneLine;
using fuzz::IsUtf8;

bool SameRequest(const Request& a, const Request& b) {
  return a.kind == b.kind && a.domain == b.domain && a.name == b.name &&
         a.checkpoint == b.checkpoint && a.disks == b.disks && a.mode == b.mode;
}

// The shortest line that asks for `r`.
std::string CanonicalLine(const Request& r) {
  std::string line = r.domain;
  if (r.kind == RequestKind::kRelease) return line + " " + r.checkpoint;
  if (!r.name.empty()) line += " name=" + r.name;
  if (!r.checkpoint.empty()) line += " checkpoint=" + r.checkpoint;
  if (!r.disks.empty()) {
    line += " disks=";
    for (size_t i = 0; i < r.disks.size(); ++i) {
      line += (i ? "," : "") + r.disks[i];
    }
  }
  if (r.mode != "auto") line += " mode=" + r.mode;
  return line;
}

void CheckDomainName(std::string_view name) {
  FUZZ_CHECK(!name.empty() && name.size() <= 255);
  FUZZ_CHECK(name != "." && name != "..");
  FUZZ_CHECK(name.find('/') == std::string_view::npos);
  FUZZ_CHECK(std::none_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u < 0x20 || u == 0x7f;
  }));
}

void CheckCheckpointName(std::string_view name) {
  FUZZ_CHECK(!name.empty() && name.size() <= kMaxNameLength);
  FUZZ_CHECK(name.front() != '.');
  FUZZ_CHECK(name != "latest");
  FUZZ_CHECK(std::all_of(name.begin(), name.end(), [](char c) {
    auto u = static_cast<unsigned char>(c);
    return u > 0x20 && u < 0x7f && c != '/' && c != '\\';
  }));
}

void CheckAccepted(RequestKind kind, std::string_view line, const Request& r) {
  FUZZ_CHECK(line.size() <= kMaxRequestBytes);
  FUZZ_CHECK(r.kind == kind);
  CheckDomainName(r.domain);
  // A positional word: no blanks, no '='.
  FUZZ_CHECK(r.domain.find_first_of(" \t=") == std::string::npos);
  if (!r.name.empty()) CheckCheckpointName(r.name);
  if (!r.checkpoint.empty()) CheckCheckpointName(r.checkpoint);
  FUZZ_CHECK(r.name.empty() || r.checkpoint.empty());
  std::set<std::string> disks;
  for (const std::string& d : r.disks) {
    FUZZ_CHECK(!d.empty() && d.size() <= 32);
    FUZZ_CHECK(std::all_of(d.begin(), d.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    }));
    FUZZ_CHECK(disks.insert(d).second);
  }
  FUZZ_CHECK(r.mode == "auto" || r.mode == "full" || r.mode == "incremental");
  switch (kind) {
    case RequestKind::kCheckpoint:
      FUZZ_CHECK(r.checkpoint.empty() && r.mode == "auto");
      break;
    case RequestKind::kBackup:
      FUZZ_CHECK(r.disks.empty());
      break;
    case RequestKind::kRelease:
      FUZZ_CHECK(!r.checkpoint.empty() && r.name.empty() && r.disks.empty() &&
                 r.mode == "auto");
      break;
  }
  // Everything the daemon copies into job records and replies.
  FUZZ_CHECK(IsUtf8(r.domain) && IsUtf8(r.name) && IsUtf8(r.checkpoint));

  const std::string canonical = CanonicalLine(r);
  auto again = ParseRequest(kind, canonical);
  FUZZ_CHECK_MSG(again.ok(), again.status().message());
  FUZZ_CHECK(SameRequest(*again, r));
  // A trailing newline (echo) changes nothing.
  auto echoed = ParseRequest(kind, canonical + "\n");
  FUZZ_CHECK(echoed.ok() && SameRequest(*echoed, r));
}

void FuzzKind(RequestKind kind, std::string_view line) {
  // As Daemon::Submit: the record is created from the sanitised line, then
  // filled from the parse outcome, then rendered.
  Job job;
  job.id = "20261123T081500Z-0001ab";
  job.kind = std::string(KindName(kind));
  job.request = SanitizeForRecord(line);
  FUZZ_CHECK(job.request.size() <= 256 + 3);
  FUZZ_CHECK(std::all_of(job.request.begin(), job.request.end(),
                         [](char c) { return c >= 0x20 && c < 0x7f; }));

  auto req = ParseRequest(kind, line);
  if (req.ok()) {
    CheckAccepted(kind, line, *req);
    job.domain = req->domain;
    job.checkpoint = req->name.empty() ? req->checkpoint : req->name;
    job.state = "succeeded";
  } else {
    FUZZ_CHECK(req.status().code() == Code::kInvalidArgument);
    // Messages quote the request, which must not make them anything but
    // UTF-8.
    FUZZ_CHECK_MSG(
        IsOneLine(req.status().message()) && IsUtf8(req.status().message()),
        req.status().message());
    job.state = "rejected";
    job.error = req.status().message();
    job.code = std::string(CodeName(req.status().code()));
  }
  // A strict dump throws on strings that are not UTF-8. The daemon renders
  // with replacements as a second line of defence; the parser alone must
  // already keep every field and message UTF-8.
  (void)JobResponse(job).dump();
  (void)JobToJson(job).dump(2);
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptfs;
  const std::string_view line = fuzz::AsText(data, size);
  for (RequestKind kind : {RequestKind::kCheckpoint, RequestKind::kBackup,
                           RequestKind::kRelease}) {
    FuzzKind(kind, line);
  }
  if (ValidateCheckpointName(line).ok()) CheckCheckpointName(line);
  if (ValidateDomainName(line).ok()) CheckDomainName(line);
  return 0;
}
