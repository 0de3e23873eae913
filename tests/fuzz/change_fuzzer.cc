// Fuzz target: the change log's entries (changes/<seq>; backend/store/
// change_log.h, docs/FORMAT.md section 9). They come from a pool other hosts
// write to, so a reader must take any bytes.
//
// Checked: the input as the change stored under changes/...07. A change that
// parses has seq 7 (its key's), a known kind and non-empty names that fit a
// key component, and parse(serialize(change)) == change. A rejection is
// kIoError naming the key, in one line.
#include <string>
#include <string_view>

#include "backend/store/change_log.h"
#include "backend/store/object_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

constexpr uint64_t kSeq = 7;

bool FitsComponent(const std::string& name) {
  return !name.empty() && EncodeKeyComponent(name).size() <= 255;
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace ckptfs;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  const std::string key = ChangeLog::Key(kSeq);
  auto change = ParseChange(key, text);
  if (!change.ok()) {
    const std::string msg = change.status().message();
    FUZZ_CHECK(change.status().code() == Code::kIoError);
    FUZZ_CHECK_MSG(msg.find(key) != std::string::npos, msg);
    FUZZ_CHECK_MSG(msg.find('\n') == std::string::npos, msg);
    return 0;
  }
  FUZZ_CHECK(change->seq == kSeq);
  FUZZ_CHECK(change->kind == Change::Kind::kAdded ||
             change->kind == Change::Kind::kRemoved);
  FUZZ_CHECK(FitsComponent(change->domain_uuid));
  FUZZ_CHECK(FitsComponent(change->checkpoint));
  auto again = ParseChange(key, SerializeChange(*change));
  FUZZ_CHECK(again.ok());
  FUZZ_CHECK(*again == *change);
  return 0;
}
