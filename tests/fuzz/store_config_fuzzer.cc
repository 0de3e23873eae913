// Fuzz target: the store's config.json parser (backend/store/store.h,
// docs/FORMAT.md section 2).
//
// 1. The input as config.json. A config that parses is valid by the
//    documented rules (format 1 or 2, chunk_size a power of two in
//    4 KiB..16 MiB, compression "auto" or "zstd", zstd_level within zstd's
//    levels) and reads back equal from its serialisation; a rejection is
//    kInvalidArgument naming the store, in one line.
// 2. The input as the recipe of a config: its serialisation parses exactly
//    when the config is valid, and then to the same config.
#include <fuzzer/FuzzedDataProvider.h>
#include <zstd.h>

#include <string>

#include "backend/store/store.h"
#include "tests/fuzz/fuzz_check.h"

namespace ckptfs {
namespace {

constexpr char kWhere[] = "/fuzz/store";

bool Valid(const StoreConfig& c) {
  return (c.format == kStoreFormat || c.format == kTreeStoreFormat) &&
         c.chunk_size >= 4096 && c.chunk_size <= 16 * 1024 * 1024 &&
         (c.chunk_size & (c.chunk_size - 1)) == 0 &&
         (c.compression == "zstd" || c.compression == "auto") &&
         c.zstd_level >= ZSTD_minCLevel() && c.zstd_level <= ZSTD_maxCLevel();
}

void FuzzParse(std::string_view text) {
  auto c = ParseStoreConfig(text, kWhere);
  if (!c.ok()) {
    FUZZ_CHECK(c.status().code() == Code::kInvalidArgument);
    const std::string msg = c.status().message();
    FUZZ_CHECK_MSG(msg.starts_with(std::string("store ") + kWhere), msg);
    FUZZ_CHECK_MSG(msg.find('\n') == std::string::npos, msg);
    return;
  }
  FUZZ_CHECK(Valid(*c));
  auto again = ParseStoreConfig(SerializeStoreConfig(*c), kWhere);
  FUZZ_CHECK_MSG(again.ok(), again.status().message());
  FUZZ_CHECK(*again == *c);
}

void FuzzRoundTrip(FuzzedDataProvider& in) {
  StoreConfig c;
  c.format = in.ConsumeBool() ? in.ConsumeIntegralInRange<uint32_t>(1, 2)
                              : in.ConsumeIntegral<uint32_t>();
  c.chunk_size = in.ConsumeBool()
                     ? uint32_t{1} << in.ConsumeIntegralInRange(0, 31)
                     : in.ConsumeIntegral<uint32_t>();
  // Config files are written by ckptfs from a validated config, so their
  // strings are ASCII; other bytes would not be JSON.
  if (in.ConsumeBool()) {
    c.compression = in.ConsumeBool() ? "zstd" : "auto";
  } else {
    for (char ch : in.ConsumeRandomLengthString(8)) {
      c.compression += static_cast<char>(0x20 + (ch & 0x7f) % 0x5f);
    }
  }
  c.zstd_level = in.ConsumeBool() ? in.ConsumeIntegralInRange(-140000, 30)
                                  : in.ConsumeIntegral<int>();
  auto parsed = ParseStoreConfig(SerializeStoreConfig(c), kWhere);
  FUZZ_CHECK(parsed.ok() == Valid(c));
  if (parsed.ok()) FUZZ_CHECK(*parsed == c);
}

}  // namespace
}  // namespace ckptfs

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ckptfs::FuzzParse(ckptfs::fuzz::AsText(data, size));
  FuzzedDataProvider in(data, size);
  ckptfs::FuzzRoundTrip(in);
  return 0;
}
