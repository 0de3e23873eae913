// Helpers shared by the fuzz targets.
//
// FUZZ_CHECK states an invariant of a parser. A failed check prints which one
// and aborts; libFuzzer turns the abort into a crash report and saves the
// input, exactly like a sanitizer finding, so a broken invariant fails the
// fuzz.<target> CTest test.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#define FUZZ_CHECK(cond)                                              \
  do {                                                                \
    if (!(cond)) {                                                    \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, \
                   __LINE__, #cond);                                  \
      std::abort();                                                   \
    }                                                                 \
  } while (0)

// As FUZZ_CHECK, printing `detail` (a std::string) too.
#define FUZZ_CHECK_MSG(cond, detail)                                      \
  do {                                                                    \
    if (!(cond)) {                                                        \
      std::fprintf(stderr, "%s:%d: invariant failed: %s: %s\n", __FILE__, \
                   __LINE__, #cond, std::string(detail).c_str());         \
      std::abort();                                                       \
    }                                                                     \
  } while (0)

namespace ckptfs::fuzz {

// Strict UTF-8 (no overlong forms, no surrogates, at most U+10FFFF): what
// nlohmann::json accepts when it parses and demands when it dumps. Every
// string that can reach a JSON reply or record must pass.
inline bool IsUtf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xc2 && c <= 0xdf) {
      n = 1;
      cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
      n = 2;
      cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= n) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = cp << 6 | (cc & 0x3f);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
      return false;
    }
    i += n + 1;
  }
  return true;
}

// A message a user reads is one line. (It may quote input bytes that are
// not UTF-8: the daemon renders job records with replacements.)
inline bool IsOneLine(std::string_view s) {
  return !s.empty() && s.find('\n') == std::string_view::npos;
}

// Epoch seconds that the tree and the store commands can render: they
// format IsoTime(seconds * 1000).
inline bool MillisecondsFit(int64_t seconds) {
  int64_t ms;
  return !__builtin_mul_overflow(seconds, 1000, &ms);
}

inline std::string_view AsText(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

}  // namespace ckptfs::fuzz
