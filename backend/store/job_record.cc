#include "backend/store/job_record.h"

#include <chrono>
#include <cstdint>
#include <cstdio>

#include "backend/clock.h"

namespace ckptfs {
namespace {

nlohmann::json TimeOrNull(int64_t ms) {
  return ms ? nlohmann::json(IsoTime(ms)) : nlohmann::json(nullptr);
}

std::string JsonStr(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

uint64_t JsonU64(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) return 0;
  if (it->is_number_unsigned()) return it->get<uint64_t>();
  if (it->is_number_integer()) {
    int64_t v = it->get<int64_t>();
    return v > 0 ? static_cast<uint64_t>(v) : 0;
  }
  return 0;
}

// "2026-11-23T08:15:00Z" -> ms since the epoch; 0 if absent or malformed.
int64_t ParseIsoMs(const std::string& s) {
  int y, mo, d, h, mi, sec;
  char z;
  if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d%c", &y, &mo, &d, &h, &mi, &sec,
                  &z) != 7 ||
      z != 'Z') {
    return 0;
  }
  using namespace std::chrono;
  year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                     day{static_cast<unsigned>(d)}};
  // No leap second: IsoTime never writes one, and 23:59:60 of the last
  // representable day would read as a time IsoTime renders out of range.
  if (!ymd.ok() || h < 0 || h > 23 || mi < 0 || mi > 59 || sec < 0 ||
      sec > 59) {
    return 0;
  }
  auto tp = sys_days{ymd} + hours{h} + minutes{mi} + seconds{sec};
  return duration_cast<milliseconds>(tp.time_since_epoch()).count();
}

}  // namespace

nlohmann::json StrOrNull(const std::string& s) {
  return s.empty() ? nlohmann::json(nullptr) : nlohmann::json(s);
}

nlohmann::json JobToJson(const Job& j) {
  nlohmann::json out = {
      {"id", j.id},
      {"kind", j.kind},
      {"request", j.request},
      {"domain", StrOrNull(j.domain)},
      {"checkpoint", StrOrNull(j.checkpoint)},
      {"mode", StrOrNull(j.mode)},
      {"base", StrOrNull(j.base)},
      {"full_disks", j.full_disks},
      {"state", j.state},
      {"progress", {{"done", j.done}, {"total", j.total}}},
      {"created", TimeOrNull(j.created_ms)},
      {"started", TimeOrNull(j.started_ms)},
      {"ended", TimeOrNull(j.ended_ms)},
  };
  if (!j.error.empty()) {
    out["error"] = j.error;
    out["code"] = j.code;
  }
  return out;
}

Job JobFromJson(const nlohmann::json& j) {
  Job job;
  if (!j.is_object()) return job;
  job.id = JsonStr(j, "id");
  job.kind = JsonStr(j, "kind");
  job.request = JsonStr(j, "request");
  job.domain = JsonStr(j, "domain");
  job.checkpoint = JsonStr(j, "checkpoint");
  job.mode = JsonStr(j, "mode");
  job.base = JsonStr(j, "base");
  if (auto it = j.find("full_disks"); it != j.end() && it->is_array()) {
    for (const auto& d : *it) {
      if (d.is_string()) job.full_disks.push_back(d.get<std::string>());
    }
  }
  if (auto state = JsonStr(j, "state"); !state.empty()) job.state = state;
  job.error = JsonStr(j, "error");
  job.code = JsonStr(j, "code");
  if (auto it = j.find("progress"); it != j.end() && it->is_object()) {
    job.done = JsonU64(*it, "done");
    job.total = JsonU64(*it, "total");
  }
  job.created_ms = ParseIsoMs(JsonStr(j, "created"));
  job.started_ms = ParseIsoMs(JsonStr(j, "started"));
  job.ended_ms = ParseIsoMs(JsonStr(j, "ended"));
  return job;
}

}  // namespace ckptfs
