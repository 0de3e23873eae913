// Fuzz target: the backup record parser (backup.json; backend/store/
// serialize.h, docs/FORMAT.md section 5).
//
// 1. The input as backup.json. A record that parses obeys every documented
//    rule (format 1, id = domain_uuid/checkpoint, mode, times in range,
//    unique non-empty disk names, changes sorted, disjoint and within the
//    disk, UTF-8 strings), and parse(serialize(record)) == record. A rejection
//    is kIoError "corrupt (...)" or "unsupported (...)", in one line.
// 2. The input as the recipe of a record (FuzzedDataProvider): a record that
//    obeys the rules and holds only UTF-8 must read back equal from its
//    serialisation (what Store::PutBackup relies on); one that breaks a rule
//    must not read back at all.
#include <fuzzer/FuzzedDataProvider.h>

#include <set>
#include <string>

#include "backend/store/serialize.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

using fuzz::IsUtf8;

bool SameRecord(const BackupRecord& a, const BackupRecord& b) {
  if (a.id != b.id || a.domain != b.domain || a.domain_uuid != b.domain_uuid ||
      a.checkpoint != b.checkpoint || a.base != b.base || a.mode != b.mode ||
      a.created != b.created || a.completed != b.completed ||
      a.checkpoint_xml != b.checkpoint_xml ||
      a.disks.size() != b.disks.size()) {
    return false;
  }
  for (size_t i = 0; i < a.disks.size(); ++i) {
    const BackupDisk& x = a.disks[i];
    const BackupDisk& y = b.disks[i];
    if (x.name != y.name || x.size != y.size || x.allocated != y.allocated ||
        x.source != y.source || x.bytes_read != y.bytes_read ||
        x.changes != y.changes) {
      return false;
    }
  }
  return true;
}

bool AllUtf8(const BackupRecord& r) {
  for (const std::string* s : {&r.id, &r.domain, &r.domain_uuid, &r.checkpoint,
                               &r.base, &r.mode, &r.checkpoint_xml}) {
    if (!IsUtf8(*s)) return false;
  }
  for (const BackupDisk& d : r.disks) {
    if (!IsUtf8(d.name) || !IsUtf8(d.source)) return false;
  }
  return true;
}

// The rules of docs/FORMAT.md section 5, written independently of the
// parser.
bool FollowsRules(const BackupRecord& r) {
  if (r.domain_uuid.empty() || r.checkpoint.empty()) return false;
  if (r.id != r.domain_uuid + "/" + r.checkpoint) return false;
  if (r.mode != "full" && r.mode != "incremental") return false;
  if (!fuzz::MillisecondsFit(r.created) ||
      !fuzz::MillisecondsFit(r.completed)) {
    return false;
  }
  std::set<std::string> names;
  for (const BackupDisk& d : r.disks) {
    if (d.name.empty() || !names.insert(d.name).second) return false;
    uint64_t end = 0;
    for (const auto& [offset, length] : d.changes) {
      if (offset < end || length > d.size || offset > d.size - length) {
        return false;
      }
      end = offset + length;
    }
  }
  return true;
}

void FuzzParse(std::string_view text) {
  auto r = ParseBackupRecord(text);
  if (!r.ok()) {
    FUZZ_CHECK(r.status().code() == Code::kIoError);
    const std::string msg = r.status().message();
    FUZZ_CHECK_MSG(
        msg.starts_with("corrupt (") || msg.starts_with("unsupported ("), msg);
    FUZZ_CHECK_MSG(fuzz::IsOneLine(msg), msg);
    return;
  }
  FUZZ_CHECK(FollowsRules(*r));
  FUZZ_CHECK(AllUtf8(*r));
  const std::string text2 = SerializeBackupRecord(*r);
  auto again = ParseBackupRecord(text2);
  FUZZ_CHECK_MSG(again.ok(), again.status().message());
  FUZZ_CHECK(SameRecord(*again, *r));
  // The serialisation is a fixed point.
  FUZZ_CHECK(SerializeBackupRecord(*again) == text2);
}

std::string SomeString(FuzzedDataProvider& in, size_t max) {
  return in.ConsumeRandomLengthString(max);
}

void FuzzRoundTrip(FuzzedDataProvider& in) {
  BackupRecord r;
  r.domain_uuid = SomeString(in, 40);
  r.checkpoint = SomeString(in, 40);
  r.id = in.ConsumeBool() ? r.domain_uuid + "/" + r.checkpoint
                          : SomeString(in, 80);
  r.domain = SomeString(in, 40);
  r.base = SomeString(in, 40);
  switch (in.ConsumeIntegralInRange(0, 2)) {
    case 0:
      r.mode = "full";
      break;
    case 1:
      r.mode = "incremental";
      break;
    default:
      r.mode = SomeString(in, 12);
  }
  r.created = in.ConsumeIntegral<int64_t>();
  r.completed = in.ConsumeIntegral<int64_t>();
  r.checkpoint_xml = SomeString(in, 200);
  const int disks = in.ConsumeIntegralInRange(0, 4);
  for (int i = 0; i < disks; ++i) {
    BackupDisk d;
    d.name = SomeString(in, 8);
    d.size = in.ConsumeIntegral<uint64_t>();
    d.allocated = in.ConsumeIntegral<uint64_t>();
    d.source = SomeString(in, 40);
    d.bytes_read = in.ConsumeIntegral<uint64_t>();
    const int changes = in.ConsumeIntegralInRange(0, 6);
    uint64_t at = 0;
    for (int k = 0; k < changes; ++k) {
      // Mostly well-formed (sorted, disjoint, inside), sometimes anything.
      uint64_t offset, length;
      if (in.ConsumeBool() && at <= d.size) {
        offset = in.ConsumeIntegralInRange<uint64_t>(at, d.size);
        length = in.ConsumeIntegralInRange<uint64_t>(0, d.size - offset);
      } else {
        offset = in.ConsumeIntegral<uint64_t>();
        length = in.ConsumeIntegral<uint64_t>();
      }
      d.changes.emplace_back(offset, length);
      at = offset + length;  // may wrap: then the next one is "anything"
    }
    r.disks.push_back(std::move(d));
  }

  const std::string text = SerializeBackupRecord(r);
  auto parsed = ParseBackupRecord(text);
  if (!AllUtf8(r)) {
    // Written with U+FFFD replacements: what reads back is another record,
    // which must still follow the rules.
    if (parsed.ok()) FUZZ_CHECK(FollowsRules(*parsed));
    return;
  }
  if (FollowsRules(r)) {
    FUZZ_CHECK_MSG(parsed.ok(), parsed.status().message());
    FUZZ_CHECK(SameRecord(*parsed, r));
  } else {
    FUZZ_CHECK(!parsed.ok());
  }
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptfs::FuzzParse(ckptfs::fuzz::AsText(data, size));
  FuzzedDataProvider in(data, size);
  ckptfs::FuzzRoundTrip(in);
  return 0;
}
