// Fuzz target: a whole store read from damaged objects (backend/store/
// store.h, docs/FORMAT.md): config.json, backup records, manifests, chunks
// and gc locks in any combination, read the way the daemon and the store
// commands read them.
//
// Input: objects, each a line "=== KEY" followed by its bytes up to the
// next "\n=== " line (keys that ValidateObjectKey refuses are dropped). A
// store without config.json gets the default one with 4 KiB chunks.
//
// Checked:
// - Open fails only with kInvalidArgument (bad config);
// - every record ListBackups returns is complete and valid (rules of
//   docs/FORMAT.md section 5, stored under its own key), reads back equal
//   through GetBackup, and its times convert to the milliseconds the tree
//   and `ckptfs ls` render;
// - a manifest GetManifest accepts belongs to that backup and disk and has
//   the store's chunk size and the record's disk size; errors are kIoError
//   (or kInvalidArgument for names too long for a key) in one line;
// - an image opened from the store has the record's size, reads either the
//   right length or kIoError, and its extents cover it without gaps;
// - ReferencedChunks is sorted and unique; ListLocks and a dry-run gc
//   never fail on a readable store.
#include <algorithm>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "backend/store/object_store.h"
#include "backend/store/store.h"
#include "tests/fakes/memory_object_store.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

using Bytes = std::vector<std::byte>;

void LoadObjects(std::string_view in, ObjectStore* objects) {
  constexpr std::string_view kMark = "=== ";
  if (!in.starts_with(kMark)) return;
  size_t pos = 0;
  while (pos < in.size()) {
    const size_t eol = in.find('\n', pos);
    if (eol == std::string_view::npos) return;
    const std::string key(in.substr(pos + kMark.size(), eol - pos - 4));
    size_t next = in.find("\n=== ", eol);
    const size_t end = next == std::string_view::npos ? in.size() : next;
    const std::string_view body = in.substr(eol + 1, end - eol - 1);
    (void)objects->Put(key, std::as_bytes(std::span(body)));
    if (next == std::string_view::npos) return;
    pos = next + 1;
  }
}

void CheckMessage(const Status& st) {
  FUZZ_CHECK_MSG(fuzz::IsOneLine(st.message()), st.message());
}

void CheckImage(Store& store, const BackupRecord& r, const BackupDisk& disk) {
  auto image = store.OpenImage(r, disk.name);
  if (!image.ok()) {
    FUZZ_CHECK(image.status().code() == Code::kIoError);
    CheckMessage(image.status());
    return;
  }
  ImageSource& src = **image;
  FUZZ_CHECK(src.size() == disk.size);
  if (src.size() > (4u << 20)) return;  // keep iterations fast
  auto extents = src.extents(0, src.size());
  FUZZ_CHECK(extents.ok());
  uint64_t at = 0;
  for (const Extent& e : *extents) {
    FUZZ_CHECK(e.offset == at && e.length > 0);
    at += e.length;
  }
  FUZZ_CHECK(at == src.size());
  Bytes buf(store.chunk_size());
  for (uint64_t off = 0; off < src.size(); off += buf.size()) {
    const size_t n =
        static_cast<size_t>(std::min<uint64_t>(buf.size(), src.size() - off));
    const Status st = src.pread(std::span(buf).first(n), off);
    if (!st.ok()) {
      FUZZ_CHECK(st.code() == Code::kIoError);
      CheckMessage(st);
    }
  }
}

void CheckBackup(Store& store, const BackupRecord& r) {
  FUZZ_CHECK(!r.domain_uuid.empty() && !r.checkpoint.empty());
  FUZZ_CHECK(r.id == BackupId(r.domain_uuid, r.checkpoint));
  FUZZ_CHECK(r.mode == "full" || r.mode == "incremental");
  FUZZ_CHECK(fuzz::MillisecondsFit(r.created) &&
             fuzz::MillisecondsFit(r.completed));
  auto exists =
      store.objects().Exists(Store::RecordKey(r.domain_uuid, r.checkpoint));
  FUZZ_CHECK(exists.ok() && *exists);
  auto again = store.GetBackup(r.domain_uuid, r.checkpoint);
  FUZZ_CHECK_MSG(again.ok(), again.status().message());
  FUZZ_CHECK(SerializeBackupRecord(*again) == SerializeBackupRecord(r));

  for (const BackupDisk& disk : r.disks) {
    auto m = store.GetManifest(r, disk.name);
    if (!m.ok()) {
      FUZZ_CHECK(m.status().code() == Code::kIoError ||
                 m.status().code() == Code::kInvalidArgument);
      CheckMessage(m.status());
      continue;
    }
    FUZZ_CHECK(m->backup_id == r.id && m->disk == disk.name);
    FUZZ_CHECK(m->chunk_size == store.chunk_size());
    FUZZ_CHECK(m->size == disk.size);
    CheckImage(store, r, disk);
  }
  // Names too long for a key component are refused before any read.
  auto problems = store.VerifyBackup(r);
  FUZZ_CHECK(problems.ok() ||
             problems.status().code() == Code::kInvalidArgument);
}

void FuzzStore(std::string_view in) {
  auto objects = std::make_unique<MemoryObjectStore>("/fuzz/store");
  LoadObjects(in, objects.get());
  StoreConfig config;
  config.chunk_size = 4096;
  auto store = Store::Open(std::move(objects), /*create=*/true, config);
  if (!store.ok()) {
    FUZZ_CHECK(store.status().code() == Code::kInvalidArgument);
    CheckMessage(store.status());
    return;
  }
  Store& s = **store;

  std::vector<std::string> problems;
  auto records = s.ListBackups(&problems);
  FUZZ_CHECK(records.ok());
  for (const BackupRecord& r : *records) CheckBackup(s, r);

  auto refs = s.ReferencedChunks();
  if (refs.ok()) {
    FUZZ_CHECK(std::adjacent_find(refs->begin(), refs->end(),
                                  std::greater_equal<>()) == refs->end());
  } else {
    FUZZ_CHECK(refs.status().code() == Code::kIoError);
  }
  FUZZ_CHECK(s.ListLocks().ok());
  auto gc = s.CollectGarbage(/*cutoff=*/1, /*dry_run=*/true);
  FUZZ_CHECK(gc.ok() || gc.status().code() == Code::kIoError);
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptfs::FuzzStore(ckptfs::fuzz::AsText(data, size));
  return 0;
}
