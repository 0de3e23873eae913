// Fuzz target: object keys and key components (backend/store/object_store.h,
// docs/FORMAT.md section 1). Keys are parsed back into names when the store
// is listed (locks, backups), and their validation is what keeps every key
// inside the store directory.
//
// Checked:
// - ValidateObjectKey accepts only keys that cannot leave the store: no
//   empty, "." or ".." component, no leading '.', only [A-Za-z0-9._:+@-]
//   between the '/'s, at most 1024 bytes. Every valid key is a valid prefix,
//   and a valid prefix extended by a character is a valid key.
// - EncodeKeyComponent of any name is one valid component that
//   DecodeKeyComponent turns back into the name; DecodeKeyComponent accepts
//   only canonical encodings.
// - The record and manifest keys of any names are valid keys that
//   ListBackups recognises (backups/<uuid>/<checkpoint>/backup.json).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <string>

#include "backend/store/object_store.h"
#include "backend/store/store.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

bool KeyChar(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
         (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-' ||
         c == ':' || c == '+' || c == '@';
}

// Independent statement of the key rules.
bool IsSafeKey(std::string_view key) {
  if (key.empty() || key.size() > 1024) return false;
  size_t start = 0;
  for (;;) {
    const size_t end = std::min(key.find('/', start), key.size());
    const std::string_view c = key.substr(start, end - start);
    if (c.empty() || c.front() == '.' ||
        !std::all_of(c.begin(), c.end(), KeyChar)) {
      return false;
    }
    if (end == key.size()) return true;
    start = end + 1;
  }
}

void FuzzKey(std::string_view s) {
  const bool key_ok = ValidateObjectKey(s).ok();
  FUZZ_CHECK(key_ok == IsSafeKey(s));
  if (key_ok) FUZZ_CHECK(ValidateObjectPrefix(s).ok());
  if (ValidateObjectPrefix(s).ok() && s.size() < 1024) {
    FUZZ_CHECK(ValidateObjectKey(std::string(s) + "x").ok());
  }
}

void FuzzComponent(std::string_view s) {
  if (!s.empty()) {
    const std::string enc = EncodeKeyComponent(s);
    FUZZ_CHECK(enc.find('/') == std::string::npos);
    if (enc.size() <= 1024) FUZZ_CHECK(IsSafeKey(enc));
    std::string name;
    FUZZ_CHECK(DecodeKeyComponent(enc, &name));
    FUZZ_CHECK(name == s);
  }
  std::string name;
  if (DecodeKeyComponent(s, &name)) {
    FUZZ_CHECK(!name.empty());
    FUZZ_CHECK(EncodeKeyComponent(name) == s);
  }
}

void FuzzBackupKeys(FuzzedDataProvider& in) {
  std::string uuid = in.ConsumeRandomLengthString(60);
  std::string checkpoint = in.ConsumeRandomLengthString(60);
  std::string disk = in.ConsumeRandomLengthString(30);
  if (uuid.empty() || checkpoint.empty() || disk.empty()) return;
  const std::string record = Store::RecordKey(uuid, checkpoint);
  const std::string manifest = Store::ManifestKey(uuid, checkpoint, disk);
  if (record.size() <= 1024) {
    FUZZ_CHECK(ValidateObjectKey(record).ok());
    FUZZ_CHECK(record.starts_with("backups/") &&
               record.ends_with("/backup.json") &&
               std::count(record.begin(), record.end(), '/') == 3);
  }
  if (manifest.size() <= 1024) {
    FUZZ_CHECK(ValidateObjectKey(manifest).ok());
    FUZZ_CHECK(manifest.starts_with(Store::BackupPrefix(uuid, checkpoint)) &&
               manifest.ends_with(".manifest"));
    // A manifest key is never mistaken for a record key.
    FUZZ_CHECK(!manifest.ends_with("/backup.json"));
  }
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view s = ckptfs::fuzz::AsText(data, size);
  ckptfs::FuzzKey(s);
  ckptfs::FuzzComponent(s);
  FuzzedDataProvider in(data, size);
  ckptfs::FuzzBackupKeys(in);
  return 0;
}
