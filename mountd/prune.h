// Retention policy: which backups of one group (one domain) to keep and which
// to prune, grandfather-father-son style (the `--keep-*` options of restic's
// and proxmox-backup-client's forget/prune).
//
// DecidePrune is a pure function over (id, time) pairs; it reads no store or
// catalog, so the daemon, the CLI's dry run and tests all ask the same
// question. It implements proxmox-backup's compute_prune_info/mark_selections
// (pbs-datastore/src/prune.rs) exactly, with periods taken in UTC:
//
//  - Items are sorted newest first: by time descending, ties (same second) by
//    id descending, so the result does not depend on the input order.
//  - Rules run one after another in the order last, hourly, daily, weekly,
//    monthly, yearly. The period of an item is, per rule: the item itself
//    (last), "%Y-%m-%d/%H" (hourly), "%Y-%m-%d" (daily), the ISO week
//    "%G/%V" (weekly), "%Y-%m" (monthly), "%Y" (yearly).
//  - A rule first collects the periods of every item an earlier rule kept:
//    those periods are "covered" and do not count against the rule's N.
//    It then walks the items newest to oldest, skipping every item an earlier
//    rule already decided (kept or removed) and every item in a covered
//    period. The first item of a new period is kept (until N periods have
//    been kept; the walk stops at the next new period); later items of a
//    period this rule kept are marked removed. Items no rule decided are
//    removed.
//  So each kept item has exactly one reason, the rule that selected it, and
//  a later rule "only considers older backups" (proxmox's documentation):
//  keep-last 1 + keep-daily 1 keeps the newest backup and the newest one of
//  the day before. This differs from restic, where one backup may satisfy
//  several rules at once (and keeps fewer).
//
//  One consequence worth knowing (proxmox behaves the same, and its tests pin
//  it): an item marked removed by an earlier rule is never selected by a
//  later one. An ISO week can span two months or two years, so with
//  keep-weekly 1 + keep-monthly 1, when the newest backup of a month is
//  removed by the weekly rule (a newer backup of the same week is in the next
//  month), the monthly rule keeps the next older backup of that month.
//
// Differences from proxmox-backup, all at the edges: a count of 0 turns a rule
// off (proxmox's explicit `keep-last 0` keeps nothing), and a policy with no
// rule keeps everything (reason "no-rule") rather than pruning the group
// away; the caller should refuse such a prune ("no keep rule given").
// Unfinished and protected backups are the caller's business: pass only the
// backups that may be pruned.
//
// Thread safety: pure functions over values; call from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "backend/status.h"

namespace ckptfs {

// How many periods each rule keeps; 0 (or less) turns the rule off.
struct RetentionPolicy {
  int keep_last = 0;
  int keep_hourly = 0;
  int keep_daily = 0;
  int keep_weekly = 0;
  int keep_monthly = 0;
  int keep_yearly = 0;

  // True when no rule is set: DecidePrune then keeps everything.
  bool empty() const;
};

// Builds a policy from options already split by the caller, such as
// {{"keep-last", "3"}, {"keep-daily", "7"}}. Keys are keep-last, keep-hourly,
// keep-daily, keep-weekly, keep-monthly, keep-yearly, each at most once;
// values are non-negative decimal counts. Anything else is kInvalidArgument
// with a one-line message naming the offending option.
Result<RetentionPolicy> ParseRetention(
    const std::vector<std::pair<std::string, std::string>>& options);

struct PruneItem {
  std::string id;
  int64_t time = 0;  // epoch seconds, UTC
};

struct PruneDecision {
  std::string id;
  int64_t time = 0;
  bool keep = false;
  // Why it is kept: the one rule that selected it ("last", "hourly", "daily",
  // "weekly", "monthly", "yearly"), or "no-rule" for an empty policy. Empty
  // for removed items.
  std::vector<std::string> reasons;
};

// Decides, for every item, whether to keep it; one decision per item, newest
// first (see the ordering above). REQUIRES: ids are unique within `items`
// (they are only used for tie-breaking and reporting).
std::vector<PruneDecision> DecidePrune(std::vector<PruneItem> items,
                                       const RetentionPolicy& policy);

}  // namespace ckptfs
