// The wall clock and the two ways ckptfs writes a time: ISO 8601 in records
// and JSON, compact in names (checkpoints, job ids, moved-aside files). All
// times are UTC; a record never depends on the host's time zone.
//
// Thread safety: pure functions (gmtime_r).
#pragma once

#include <cstdint>
#include <string>

namespace ckptfs {

// Current time, milliseconds since the epoch.
int64_t NowMs();
// "2026-11-23T08:15:00Z" (ms dropped) and "20261123T081500Z".
std::string IsoTime(int64_t ms);
std::string CompactTime(int64_t ms);

}  // namespace ckptfs
