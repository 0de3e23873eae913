#include "backend/clock.h"

#include <chrono>
#include <ctime>

namespace ckptfs {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

namespace {
std::string FormatUtc(int64_t ms, const char* fmt) {
  time_t t = static_cast<time_t>(ms / 1000);
  struct tm tm;
  gmtime_r(&t, &tm);
  char buf[64];
  strftime(buf, sizeof(buf), fmt, &tm);
  return buf;
}
}  // namespace

std::string IsoTime(int64_t ms) { return FormatUtc(ms, "%Y-%m-%dT%H:%M:%SZ"); }
std::string CompactTime(int64_t ms) { return FormatUtc(ms, "%Y%m%dT%H%M%SZ"); }

}  // namespace ckptfs
