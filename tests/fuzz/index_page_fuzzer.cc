// Fuzz target: the format 2 index page parser (backend/store/index_page.h,
// docs/FORMAT.md).
//
// 1. The input as a page. The format is canonical, so a page that parses
//    must serialise back to exactly the input bytes and obey the rules
//    (entries ascending below slots, a full flag per interior entry, at least
//    one entry). A rejection is kIoError "corrupt (...)", one line.
// 2. The input as a format 2 manifest (serialize.h): one that parses
//    serialises back to exactly the input.
// 3. The input as the recipe of a page (FuzzedDataProvider): its
//    serialisation parses back to it; a truncation or an appended byte never
//    parses. (A changed hash byte still parses: the page's integrity check is
//    its key, the SHA-256 TreeIndex::ReadPage compares.)
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <span>
#include <vector>

#include "backend/store/index_page.h"
#include "backend/store/serialize.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

using Bytes = std::vector<std::byte>;

void CheckRejected(const Result<IndexPage>& p) {
  FUZZ_CHECK(!p.ok());
  FUZZ_CHECK(p.status().code() == Code::kIoError);
  const std::string msg = p.status().message();
  FUZZ_CHECK_MSG(msg.starts_with("corrupt ("), msg);
  FUZZ_CHECK_MSG(fuzz::IsOneLine(msg), msg);
}

void FuzzParse(std::span<const std::byte> data) {
  auto p = ParseIndexPage(data);
  if (!p.ok()) {
    CheckRejected(p);
    return;
  }
  FUZZ_CHECK(!p->entries.empty());
  FUZZ_CHECK(p->full.size() == (p->level == 0 ? 0 : p->entries.size()));
  for (size_t k = 0; k < p->entries.size(); ++k) {
    FUZZ_CHECK(p->entries[k].first < p->slots);
    FUZZ_CHECK(k == 0 || p->entries[k - 1].first < p->entries[k].first);
  }
  FUZZ_CHECK(p->entries.size() * 32 <= data.size());
  const Bytes again = SerializeIndexPage(*p);
  FUZZ_CHECK(again.size() == data.size() &&
             std::equal(again.begin(), again.end(), data.begin()));
}

void FuzzTreeManifest(std::span<const std::byte> data) {
  auto m = ParseTreeManifest(data);
  if (!m.ok()) {
    FUZZ_CHECK(m.status().code() == Code::kIoError);
    FUZZ_CHECK_MSG(fuzz::IsOneLine(m.status().message()), m.status().message());
    return;
  }
  FUZZ_CHECK(!m->disk.empty() && m->chunk_size > 0);
  FUZZ_CHECK(m->has_root || (!m->full && m->root == ChunkHash{}));
  const Bytes again = SerializeTreeManifest(*m);
  FUZZ_CHECK(again.size() == data.size() &&
             std::equal(again.begin(), again.end(), data.begin()));
}

void FuzzRoundTrip(FuzzedDataProvider& in) {
  IndexPage page;
  page.level = in.ConsumeIntegralInRange<uint8_t>(0, kMaxIndexLevel);
  page.first = in.ConsumeIntegral<uint64_t>();
  page.slots = in.ConsumeIntegralInRange<uint32_t>(1, 300);
  for (uint32_t s = 0; s < page.slots; ++s) {
    if (!in.ConsumeBool() && !(s + 1 == page.slots && page.entries.empty())) {
      continue;
    }
    ChunkHash h{};
    for (auto& b : h) b = in.ConsumeIntegral<uint8_t>();
    page.entries.emplace_back(s, h);
    if (page.level != 0) page.full.push_back(in.ConsumeBool());
  }
  const Bytes data = SerializeIndexPage(page);
  auto parsed = ParseIndexPage(data);
  FUZZ_CHECK_MSG(parsed.ok(), parsed.status().message());
  FUZZ_CHECK(parsed->level == page.level && parsed->first == page.first &&
             parsed->slots == page.slots && parsed->entries == page.entries &&
             parsed->full == page.full);
  const size_t cut = in.ConsumeIntegralInRange<size_t>(0, data.size() - 1);
  CheckRejected(ParseIndexPage(std::span(data).first(cut)));
  Bytes bad = data;
  bad.push_back(static_cast<std::byte>(in.ConsumeIntegral<uint8_t>()));
  CheckRejected(ParseIndexPage(bad));
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto bytes = std::as_bytes(std::span(data, size));
  ckptfs::FuzzParse(bytes);
  ckptfs::FuzzTreeManifest(bytes);
  FuzzedDataProvider in(data, size);
  ckptfs::FuzzRoundTrip(in);
  return 0;
}
