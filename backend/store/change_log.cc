#include "backend/store/change_log.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "backend/clock.h"
#include "backend/store/store_internal.h"

namespace ckptfs {
namespace {

using nlohmann::json;
using store_internal::AsText;
using store_internal::CheckName;

constexpr char kPrefix[] = "changes/";
constexpr char kFloorKey[] = "changes/trimmed";
constexpr int kSeqDigits = 20;
// Writers racing for the next number each lose at most once per winner;
// this bounds a writer that keeps losing (a log being flooded).
constexpr int kMaxAppendTries = 64;

std::span<const std::byte> Bytes(const std::string& s) {
  return std::as_bytes(std::span(s.data(), s.size()));
}

bool ParseSeq(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > kSeqDigits) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

}  // namespace

std::string ChangeLog::Key(uint64_t seq) {
  char buf[kSeqDigits + 1];
  std::snprintf(buf, sizeof buf, "%020llu",
                static_cast<unsigned long long>(seq));
  return kPrefix + std::string(buf);
}

std::string SerializeChange(const Change& c) {
  json j = {{"seq", c.seq},
            {"change", c.kind == Change::Kind::kAdded ? "added" : "removed"},
            {"domain_uuid", c.domain_uuid},
            {"checkpoint", c.checkpoint},
            {"time", c.time}};
  // Names come from records, which are UTF-8 (PutBackup checks); replace
  // rather than throw all the same.
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<Change> ParseChange(const std::string& key, std::string_view text) {
  auto bad = [&](const std::string& why) {
    return IoError("change " + key + ": corrupt (" + why + ")");
  };
  json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return bad("not a JSON object");
  Change c;
  auto kind = j.find("change");
  auto uuid = j.find("domain_uuid");
  auto cp = j.find("checkpoint");
  auto seq = j.find("seq");
  auto time = j.find("time");
  if (kind == j.end() || !kind->is_string() || uuid == j.end() ||
      !uuid->is_string() || cp == j.end() || !cp->is_string() ||
      seq == j.end() || !seq->is_number_unsigned() || time == j.end() ||
      !time->is_number_integer()) {
    return bad("a field is missing or of the wrong type");
  }
  if (*kind == "added") {
    c.kind = Change::Kind::kAdded;
  } else if (*kind == "removed") {
    c.kind = Change::Kind::kRemoved;
  } else {
    return bad("unknown change");
  }
  c.seq = seq->get<uint64_t>();
  c.domain_uuid = uuid->get<std::string>();
  c.checkpoint = cp->get<std::string>();
  c.time = time->get<int64_t>();
  // Not the names themselves: they are a damaged object's bytes, and the
  // message goes to the log.
  if (!CheckName("domain uuid", c.domain_uuid).ok()) {
    return bad("the domain uuid is empty or too long");
  }
  if (!CheckName("checkpoint name", c.checkpoint).ok()) {
    return bad("the checkpoint name is empty or too long");
  }
  if (ChangeLog::Key(c.seq) != key) return bad("its seq is not its key's");
  return c;
}

Result<bool> ChangeLog::Has(uint64_t seq) {
  if (seq == 0) return true;  // before the first: always "there"
  return objects_->Exists(Key(seq));
}

Result<uint64_t> ChangeLog::Floor() {
  auto text = objects_->Get(kFloorKey);
  if (!text.ok()) {
    if (text.status().code() == Code::kNotFound) return uint64_t{0};
    return text.status();
  }
  std::string s = AsText(*text);
  while (!s.empty() && s.back() == '\n') s.pop_back();
  uint64_t floor = 0;
  if (!ParseSeq(s, &floor))
    return IoError(std::string(kFloorKey) + ": corrupt");
  return floor;
}

void ChangeLog::RaiseHint(uint64_t seq) {
  uint64_t seen = hint_.load();
  while (seen < seq && !hint_.compare_exchange_weak(seen, seq)) {
  }
}

Result<uint64_t> ChangeLog::Head() {
  // Every seq in (floor, head] exists: exponential search upwards from the
  // newest number known to exist, then bisect.
  // Without a hint that still exists, the floor is where the run starts.
  uint64_t lo = hint_.load();
  bool has = false;
  if (lo > 0) {
    ASSIGN_OR_RETURN(has, Has(lo));
  }
  if (!has) {
    ASSIGN_OR_RETURN(lo, Floor());
  }
  uint64_t step = 1, hi = lo + 1;
  for (;;) {
    ASSIGN_OR_RETURN(has, Has(hi));
    if (!has) break;
    lo = hi;
    step *= 2;
    hi = lo + step;
  }
  while (hi - lo > 1) {
    const uint64_t mid = lo + (hi - lo) / 2;
    ASSIGN_OR_RETURN(has, Has(mid));
    (has ? lo : hi) = mid;
  }
  RaiseHint(lo);
  return lo;
}

Result<uint64_t> ChangeLog::Append(Change::Kind kind,
                                   const std::string& domain_uuid,
                                   const std::string& checkpoint) {
  Change c;
  c.kind = kind;
  c.domain_uuid = domain_uuid;
  c.checkpoint = checkpoint;
  c.time = NowMs() / 1000;
  Status last;
  for (int i = 0; i < kMaxAppendTries; ++i) {
    ASSIGN_OR_RETURN(uint64_t head, Head());
    c.seq = head + 1;
    last = objects_->Create(Key(c.seq), Bytes(SerializeChange(c)));
    if (last.ok()) {
      RaiseHint(c.seq);
      return c.seq;
    }
    if (last.code() != Code::kAlreadyExists) return last;
  }
  return last.Annotate("change log: no free number after " +
                       std::to_string(kMaxAppendTries) + " tries");
}

Result<ChangeLog::Since> ChangeLog::Read(uint64_t after, size_t max) {
  Since out;
  bool has = false;
  if (after > 0) {
    ASSIGN_OR_RETURN(has, Has(after));
  } else {
    // From the beginning: only if nothing was trimmed yet.
    ASSIGN_OR_RETURN(const uint64_t floor, Floor());
    has = floor == 0;
  }
  if (!has) {
    out.gap = true;
    return out;
  }
  for (uint64_t seq = after + 1; out.changes.size() < max; ++seq) {
    const std::string key = Key(seq);
    auto text = objects_->Get(key);
    if (!text.ok()) {
      if (text.status().code() == Code::kNotFound) break;
      return text.status();
    }
    auto change = ParseChange(key, AsText(*text));
    if (!change.ok()) {
      // A damaged change says nothing reliable: list the store instead.
      spdlog::warn("store {}: {}", objects_->location(),
                   change.status().message());
      out.gap = true;
      return out;
    }
    out.changes.push_back(std::move(*change));
  }
  return out;
}

Result<uint64_t> ChangeLog::Trim(int64_t cutoff, bool dry_run) {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kPrefix));
  std::vector<uint64_t> seqs;
  for (const std::string& key : keys) {
    uint64_t seq = 0;
    if (ParseSeq(std::string_view(key).substr(sizeof kPrefix - 1), &seq) &&
        Key(seq) == key) {
      seqs.push_back(seq);
    }
  }
  if (seqs.size() < 2) return uint64_t{0};
  std::sort(seqs.begin(), seqs.end());
  // The oldest run appended before the cutoff, never the newest.
  uint64_t floor = 0;
  for (size_t i = 0; i + 1 < seqs.size(); ++i) {
    ASSIGN_OR_RETURN(const int64_t mtime, objects_->ModifiedTime(Key(seqs[i])));
    if (mtime >= cutoff) break;
    floor = seqs[i];
  }
  if (floor == 0) return uint64_t{0};
  const uint64_t n = static_cast<uint64_t>(
      std::upper_bound(seqs.begin(), seqs.end(), floor) - seqs.begin());
  if (dry_run) return n;
  // The floor first: a trim cut short leaves changes below the floor, still
  // one run up to the head, so Head() and Read() stay right; the next trim
  // removes them.
  ASSIGN_OR_RETURN(const uint64_t old_floor, Floor());
  if (floor > old_floor) {
    RETURN_IF_ERROR(
        objects_->Put(kFloorKey, Bytes(std::to_string(floor) + "\n")));
  }
  for (size_t i = 0; i < n; ++i) {
    Status st = objects_->Delete(Key(seqs[i]));
    if (!st.ok() && st.code() != Code::kNotFound) return st;
  }
  return n;
}

}  // namespace ckptfs
