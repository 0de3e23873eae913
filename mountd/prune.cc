#include "mountd/prune.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <ctime>
#include <string_view>
#include <unordered_set>

namespace ckptfs {
namespace {

struct RuleSpec {
  std::string_view option;  // "keep-daily"
  std::string_view reason;  // "daily"
  int RetentionPolicy::*count;
  const char* period_format;  // strftime format; nullptr: each item its own
};

// In evaluation order: the order is part of the semantics.
constexpr std::array<RuleSpec, 6> kRules = {{
    {"keep-last", "last", &RetentionPolicy::keep_last, nullptr},
    {"keep-hourly", "hourly", &RetentionPolicy::keep_hourly, "%Y-%m-%d/%H"},
    {"keep-daily", "daily", &RetentionPolicy::keep_daily, "%Y-%m-%d"},
    // ISO week-numbering year: 2021-01-03 is in 2020/53.
    {"keep-weekly", "weekly", &RetentionPolicy::keep_weekly, "%G/%V"},
    {"keep-monthly", "monthly", &RetentionPolicy::keep_monthly, "%Y-%m"},
    {"keep-yearly", "yearly", &RetentionPolicy::keep_yearly, "%Y"},
}};

enum class Mark { kUndecided, kKeep, kRemove };

struct Entry {
  PruneItem item;
  bool has_tm = false;
  std::tm tm{};
  Mark mark = Mark::kUndecided;
  std::string reason;
};

// The period `entry` falls in for `rule`; `index` is its position in the
// newest-first list, which is its identity for keep-last.
std::string PeriodOf(const RuleSpec& rule, const Entry& entry, size_t index) {
  if (rule.period_format == nullptr) return "#" + std::to_string(index);
  if (!entry.has_tm) {
    // Out of the range gmtime can represent: a period of its own.
    return "?" + std::to_string(entry.item.time);
  }
  char buf[64];
  size_t n = std::strftime(buf, sizeof buf, rule.period_format, &entry.tm);
  return std::string(buf, n);
}

// One rule's walk; proxmox-backup's mark_selections.
void MarkSelections(const RuleSpec& rule, int keep,
                    std::vector<Entry>& entries) {
  std::vector<std::string> periods(entries.size());
  for (size_t i = 0; i < entries.size(); ++i) {
    periods[i] = PeriodOf(rule, entries[i], i);
  }

  // Periods an earlier rule already keeps a backup in: covered for free.
  std::unordered_set<std::string> covered;
  for (size_t i = 0; i < entries.size(); ++i) {
    if (entries[i].mark == Mark::kKeep) covered.insert(periods[i]);
  }

  std::unordered_set<std::string> kept;
  for (size_t i = 0; i < entries.size(); ++i) {
    Entry& entry = entries[i];
    if (entry.mark != Mark::kUndecided) continue;
    if (covered.contains(periods[i])) continue;
    if (kept.contains(periods[i])) {
      entry.mark = Mark::kRemove;
      continue;
    }
    if (kept.size() >= static_cast<size_t>(keep)) break;
    kept.insert(periods[i]);
    entry.mark = Mark::kKeep;
    entry.reason = rule.reason;
  }
}

}  // namespace

bool RetentionPolicy::empty() const {
  return std::all_of(kRules.begin(), kRules.end(),
                     [this](const RuleSpec& r) { return this->*r.count <= 0; });
}

Result<RetentionPolicy> ParseRetention(
    const std::vector<std::pair<std::string, std::string>>& options) {
  RetentionPolicy policy;
  std::unordered_set<std::string_view> seen;
  for (const auto& option : options) {
    const std::string& key = option.first;
    const std::string& value = option.second;
    const auto rule =
        std::find_if(kRules.begin(), kRules.end(),
                     [&key](const RuleSpec& r) { return r.option == key; });
    if (rule == kRules.end()) {
      return InvalidArgument(
          "unknown retention option '" + key +
          "'; use keep-last, keep-hourly, keep-daily, keep-weekly, "
          "keep-monthly or keep-yearly");
    }
    if (!seen.insert(rule->option).second) {
      return InvalidArgument(key + " given twice; give each keep option once");
    }
    // Digits only: from_chars alone would accept a leading '-'.
    const bool digits_only =
        !value.empty() && std::all_of(value.begin(), value.end(), [](char c) {
          return c >= '0' && c <= '9';
        });
    if (!digits_only) {
      return InvalidArgument(key + " needs a non-negative count, not '" +
                             value + "' (e.g. " + key + " 7; 0 turns it off)");
    }
    int count = 0;
    const auto [ptr, ec] =
        std::from_chars(value.data(), value.data() + value.size(), count);
    if (ec != std::errc() || ptr != value.data() + value.size()) {
      return InvalidArgument(key + " " + value +
                             " is too large; give the number of backups or "
                             "periods to keep");
    }
    policy.*(rule->count) = count;
  }
  return policy;
}

std::vector<PruneDecision> DecidePrune(std::vector<PruneItem> items,
                                       const RetentionPolicy& policy) {
  std::vector<Entry> entries;
  entries.reserve(items.size());
  for (PruneItem& item : items) {
    Entry entry;
    entry.item = std::move(item);
    const std::time_t t = static_cast<std::time_t>(entry.item.time);
    entry.has_tm = gmtime_r(&t, &entry.tm) != nullptr;
    entries.push_back(std::move(entry));
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    if (a.item.time != b.item.time) return a.item.time > b.item.time;
    return a.item.id > b.item.id;
  });

  if (policy.empty()) {
    for (Entry& entry : entries) {
      entry.mark = Mark::kKeep;
      entry.reason = "no-rule";
    }
  } else {
    for (const RuleSpec& rule : kRules) {
      const int keep = policy.*rule.count;
      if (keep > 0) MarkSelections(rule, keep, entries);
    }
  }

  std::vector<PruneDecision> decisions;
  decisions.reserve(entries.size());
  for (Entry& entry : entries) {
    PruneDecision d;
    d.id = std::move(entry.item.id);
    d.time = entry.item.time;
    d.keep = entry.mark == Mark::kKeep;
    if (d.keep) d.reasons.push_back(std::move(entry.reason));
    decisions.push_back(std::move(d));
  }
  return decisions;
}

}  // namespace ckptfs
