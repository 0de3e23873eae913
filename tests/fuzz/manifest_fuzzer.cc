// Fuzz target: the manifest parser (backend/store/serialize.h,
// docs/FORMAT.md section 4).
//
// 1. The input as a manifest. The format is canonical, so a manifest that
//    parses must serialise back to exactly the input bytes, and it must obey
//    the documented rules (chunk_size > 0, ceil(size / chunk_size) entries,
//    a disk name, zero entries without a hash). A rejection is kIoError
//    "corrupt (...)" or "unsupported (...)".
// 2. The input as the recipe of a manifest (FuzzedDataProvider): its
//    serialisation must parse back to it, and no single changed byte,
//    truncation or appended byte of that serialisation may parse (every byte
//    is covered by the header checks or the trailing SHA-256).
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "backend/store/serialize.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

using Bytes = std::vector<std::byte>;

bool SameManifest(const Manifest& a, const Manifest& b) {
  return a.backup_id == b.backup_id && a.disk == b.disk && a.size == b.size &&
         a.chunk_size == b.chunk_size && a.chunks == b.chunks;
}

void CheckRejected(const Result<Manifest>& m) {
  FUZZ_CHECK(!m.ok());
  FUZZ_CHECK(m.status().code() == Code::kIoError);
  const std::string msg = m.status().message();
  FUZZ_CHECK_MSG(
      msg.starts_with("corrupt (") || msg.starts_with("unsupported ("), msg);
  FUZZ_CHECK_MSG(fuzz::IsOneLine(msg), msg);
}

void FuzzParse(std::span<const std::byte> data) {
  auto m = ParseManifest(data);
  if (!m.ok()) {
    CheckRejected(m);
    return;
  }
  FUZZ_CHECK(m->chunk_size > 0);
  FUZZ_CHECK(m->chunks.size() == ChunkCount(m->size, m->chunk_size));
  FUZZ_CHECK(!m->disk.empty());
  for (const ChunkRef& ref : m->chunks) {
    FUZZ_CHECK(!ref.zero || ref.hash == ChunkHash{});
  }
  // Never more memory than the input justifies.
  FUZZ_CHECK(m->chunks.size() * kManifestEntrySize <= data.size());
  const Bytes again = SerializeManifest(*m);
  FUZZ_CHECK(again.size() == data.size() &&
             std::equal(again.begin(), again.end(), data.begin()));
}

void FuzzRoundTrip(FuzzedDataProvider& in) {
  Manifest m;
  m.backup_id = in.ConsumeRandomLengthString(80);
  m.disk = in.ConsumeRandomLengthString(40);
  if (m.disk.empty()) m.disk = "vda";
  m.chunk_size = in.ConsumeIntegralInRange<uint32_t>(1, UINT32_MAX);
  const auto count = in.ConsumeIntegralInRange<uint64_t>(0, 40);
  // Any size with exactly `count` chunks.
  m.size = count == 0
               ? 0
               : (count - 1) * m.chunk_size +
                     in.ConsumeIntegralInRange<uint64_t>(1, m.chunk_size);
  for (uint64_t i = 0; i < count; ++i) {
    ChunkRef ref;
    ref.zero = in.ConsumeBool();
    if (!ref.zero) {
      for (auto& b : ref.hash) b = in.ConsumeIntegral<uint8_t>();
    }
    m.chunks.push_back(ref);
  }
  const Bytes data = SerializeManifest(m);
  auto parsed = ParseManifest(data);
  FUZZ_CHECK_MSG(parsed.ok(), parsed.status().message());
  FUZZ_CHECK(SameManifest(*parsed, m));

  Bytes bad = data;
  const size_t at = in.ConsumeIntegralInRange<size_t>(0, bad.size() - 1);
  bad[at] ^= static_cast<std::byte>(in.ConsumeIntegralInRange<uint8_t>(1, 255));
  CheckRejected(ParseManifest(bad));
  const size_t cut = in.ConsumeIntegralInRange<size_t>(0, data.size() - 1);
  CheckRejected(ParseManifest(std::span(data).first(cut)));
  bad = data;
  bad.push_back(static_cast<std::byte>(in.ConsumeIntegral<uint8_t>()));
  CheckRejected(ParseManifest(bad));
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  ckptfs::FuzzParse(bytes);
  FuzzedDataProvider in(data, size);
  ckptfs::FuzzRoundTrip(in);
  return 0;
}
