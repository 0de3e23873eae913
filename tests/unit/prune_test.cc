#include "mountd/prune.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <string>
#include <vector>

namespace ckptfs {
namespace {

// "2026-11-23T08:15:00Z" -> epoch seconds.
int64_t At(const std::string& iso) {
  std::tm tm{};
  char z = 0;
  if (std::sscanf(iso.c_str(), "%d-%d-%dT%d:%d:%d%c", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &z) != 7 ||
      z != 'Z') {
    ADD_FAILURE() << "bad test time " << iso;
    return 0;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  return static_cast<int64_t>(timegm(&tm));
}

// Items whose id is their time string (as proxmox names snapshots).
std::vector<PruneItem> Items(const std::vector<std::string>& times) {
  std::vector<PruneItem> items;
  for (const std::string& t : times) items.push_back({t, At(t)});
  return items;
}

// Ids of the kept items, newest first.
std::vector<std::string> Kept(const std::vector<PruneDecision>& decisions) {
  std::vector<std::string> kept;
  for (const PruneDecision& d : decisions) {
    if (d.keep) kept.push_back(d.id);
  }
  return kept;
}

RetentionPolicy Policy(int last, int hourly, int daily, int weekly, int monthly,
                       int yearly) {
  RetentionPolicy p;
  p.keep_last = last;
  p.keep_hourly = hourly;
  p.keep_daily = daily;
  p.keep_weekly = weekly;
  p.keep_monthly = monthly;
  p.keep_yearly = yearly;
  return p;
}

struct Case {
  std::string name;
  RetentionPolicy policy;
  std::vector<std::string> kept;  // newest first
};

// Runs every case over `times` (given in any order) and checks the exact
// kept set, that every item gets one decision, newest first, and that each
// kept item has exactly one reason and each removed item none.
void RunTable(const std::vector<std::string>& times,
              const std::vector<Case>& cases) {
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::vector<PruneDecision> decisions =
        DecidePrune(Items(times), c.policy);
    ASSERT_EQ(decisions.size(), times.size());
    for (size_t i = 1; i < decisions.size(); ++i) {
      EXPECT_GE(decisions[i - 1].time, decisions[i].time);
    }
    for (const PruneDecision& d : decisions) {
      EXPECT_EQ(d.time, At(d.id));
      EXPECT_EQ(d.reasons.size(), d.keep ? 1u : 0u) << d.id;
    }
    EXPECT_EQ(Kept(decisions), c.kept);
  }
}

// --- Tables reproduced from proxmox-backup's tests/prune.rs (UTC). ---------

TEST(PruneTest, ProxmoxSimple) {
  const std::vector<std::string> times = {
      "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z",
      "2019-12-04T12:59:15Z"};
  const std::vector<std::string> all = {
      "2019-12-04T12:59:15Z", "2019-12-04T11:59:15Z", "2019-12-03T11:59:15Z",
      "2019-12-02T11:59:15Z"};
  RunTable(
      times,
      {
          {"last 4", Policy(4, 0, 0, 0, 0, 0), all},
          {"last 3",
           Policy(3, 0, 0, 0, 0, 0),
           {"2019-12-04T12:59:15Z", "2019-12-04T11:59:15Z",
            "2019-12-03T11:59:15Z"}},
          {"last 2",
           Policy(2, 0, 0, 0, 0, 0),
           {"2019-12-04T12:59:15Z", "2019-12-04T11:59:15Z"}},
          {"last 1", Policy(1, 0, 0, 0, 0, 0), {"2019-12-04T12:59:15Z"}},
          // proxmox's explicit keep-last 0 removes everything; here 0 is
          // "rule off", so the policy is empty and keeps everything.
          {"last 0 = empty policy", Policy(0, 0, 0, 0, 0, 0), all},
          {"last 2 + daily 2", Policy(2, 0, 2, 0, 0, 0), all},
          {"daily 3",
           Policy(0, 0, 3, 0, 0, 0),
           {"2019-12-04T12:59:15Z", "2019-12-03T11:59:15Z",
            "2019-12-02T11:59:15Z"}},
          {"daily 2",
           Policy(0, 0, 2, 0, 0, 0),
           {"2019-12-04T12:59:15Z", "2019-12-03T11:59:15Z"}},
          // All four are in ISO week 2019-W49 and in one month and year.
          {"weekly 5", Policy(0, 0, 0, 5, 0, 0), {"2019-12-04T12:59:15Z"}},
          {"daily 1 + weekly 5",
           Policy(0, 0, 1, 5, 0, 0),
           {"2019-12-04T12:59:15Z"}},
          {"monthly 6", Policy(0, 0, 0, 0, 6, 0), {"2019-12-04T12:59:15Z"}},
          {"yearly 7", Policy(0, 0, 0, 0, 0, 7), {"2019-12-04T12:59:15Z"}},
          {"weekly 5 + monthly 6 + yearly 7",
           Policy(0, 0, 0, 5, 6, 7),
           {"2019-12-04T12:59:15Z"}},
      });
}

TEST(PruneTest, ProxmoxSimple2) {
  const std::vector<std::string> times = {
      "2018-11-15T11:59:15Z", "2019-11-15T11:59:15Z", "2019-11-21T11:59:15Z",
      "2019-11-22T11:59:15Z", "2019-11-29T11:59:15Z", "2019-12-01T11:59:15Z",
      "2019-12-02T11:59:15Z", "2019-12-03T11:59:15Z", "2019-12-04T11:59:15Z"};
  RunTable(times,
           {
               {"daily 1", Policy(0, 0, 1, 0, 0, 0), {"2019-12-04T11:59:15Z"}},
               // keep-daily only considers days older than the one keep-last
               // already covers.
               {"last 1 + daily 1",
                Policy(1, 0, 1, 0, 0, 0),
                {"2019-12-04T11:59:15Z", "2019-12-03T11:59:15Z"}},
               // 2019-12-01 is a Sunday: ISO week 2019-W48, before 12-04's W49.
               {"daily 1 + weekly 1",
                Policy(0, 0, 1, 1, 0, 0),
                {"2019-12-04T11:59:15Z", "2019-12-01T11:59:15Z"}},
               // 11-29 is in 12-01's week, so the weekly rule marks it removed
               // and the monthly rule takes the next November backup, 11-22.
               {"daily 1 + weekly 1 + monthly 1",
                Policy(0, 0, 1, 1, 1, 0),
                {"2019-12-04T11:59:15Z", "2019-12-01T11:59:15Z",
                 "2019-11-22T11:59:15Z"}},
               {"monthly 1 + yearly 1",
                Policy(0, 0, 0, 0, 1, 1),
                {"2019-12-04T11:59:15Z", "2018-11-15T11:59:15Z"}},
           });
}

TEST(PruneTest, ProxmoxHourly) {
  const std::vector<std::string> times = {
      "2019-11-15T09:39:15Z", "2019-11-15T10:49:15Z", "2019-11-15T10:59:15Z",
      "2019-11-15T11:39:15Z", "2019-11-15T11:49:15Z", "2019-11-15T11:59:15Z"};
  RunTable(times, {
                      {"hourly 3",
                       Policy(0, 3, 0, 0, 0, 0),
                       {"2019-11-15T11:59:15Z", "2019-11-15T10:59:15Z",
                        "2019-11-15T09:39:15Z"}},
                      {"hourly 2",
                       Policy(0, 2, 0, 0, 0, 0),
                       {"2019-11-15T11:59:15Z", "2019-11-15T10:59:15Z"}},
                  });
}

// --- Own tables. -------------------------------------------------------------

TEST(PruneTest, KeepLast) {
  // Given out of order on purpose.
  const std::vector<std::string> times = {
      "2026-11-21T08:15:00Z", "2026-11-23T08:15:00Z", "2026-11-22T08:15:00Z",
      "2026-11-23T08:15:01Z", "2026-10-01T00:00:00Z"};
  RunTable(times,
           {
               {"last 1", Policy(1, 0, 0, 0, 0, 0), {"2026-11-23T08:15:01Z"}},
               {"last 3",
                Policy(3, 0, 0, 0, 0, 0),
                {"2026-11-23T08:15:01Z", "2026-11-23T08:15:00Z",
                 "2026-11-22T08:15:00Z"}},
               {"last 99",
                Policy(99, 0, 0, 0, 0, 0),
                {"2026-11-23T08:15:01Z", "2026-11-23T08:15:00Z",
                 "2026-11-22T08:15:00Z", "2026-11-21T08:15:00Z",
                 "2026-10-01T00:00:00Z"}},
           });
}

TEST(PruneTest, KeepDailyKeepsNewestOfEachDay) {
  // Ten days, 2026-11-14 .. 2026-11-23, three backups a day, including both
  // edges of the UTC day.
  std::vector<std::string> times;
  for (int day = 14; day <= 23; ++day) {
    for (const char* clock : {"00:00:00", "08:15:00", "23:59:59"}) {
      times.push_back("2026-11-" + std::to_string(day) + "T" + clock + "Z");
    }
  }
  RunTable(times,
           {
               {"daily 1", Policy(0, 0, 1, 0, 0, 0), {"2026-11-23T23:59:59Z"}},
               {"daily 7",
                Policy(0, 0, 7, 0, 0, 0),
                {"2026-11-23T23:59:59Z", "2026-11-22T23:59:59Z",
                 "2026-11-21T23:59:59Z", "2026-11-20T23:59:59Z",
                 "2026-11-19T23:59:59Z", "2026-11-18T23:59:59Z",
                 "2026-11-17T23:59:59Z"}},
               {"daily 30 (more days than backups)",
                Policy(0, 0, 30, 0, 0, 0),
                {"2026-11-23T23:59:59Z", "2026-11-22T23:59:59Z",
                 "2026-11-21T23:59:59Z", "2026-11-20T23:59:59Z",
                 "2026-11-19T23:59:59Z", "2026-11-18T23:59:59Z",
                 "2026-11-17T23:59:59Z", "2026-11-16T23:59:59Z",
                 "2026-11-15T23:59:59Z", "2026-11-14T23:59:59Z"}},
               // keep-last 2 covers 11-23; the daily rule starts at 11-22.
               {"last 2 + daily 2",
                Policy(2, 0, 2, 0, 0, 0),
                {"2026-11-23T23:59:59Z", "2026-11-23T08:15:00Z",
                 "2026-11-22T23:59:59Z", "2026-11-21T23:59:59Z"}},
               {"hourly 2 + daily 2",
                Policy(0, 2, 2, 0, 0, 0),
                {"2026-11-23T23:59:59Z", "2026-11-23T08:15:00Z",
                 "2026-11-22T23:59:59Z", "2026-11-21T23:59:59Z"}},
           });
}

TEST(PruneTest, KeepWeeklyUsesIsoWeeks) {
  const std::vector<std::string> times = {
      "2019-12-29T12:00:00Z",  // Sunday, 2019-W52
      "2019-12-30T12:00:00Z",  // Monday, 2020-W01
      "2020-01-05T12:00:00Z",  // Sunday, 2020-W01
      "2020-12-27T12:00:00Z",  // Sunday, 2020-W52
      "2020-12-28T12:00:00Z",  // Monday, 2020-W53
      "2020-12-31T12:00:00Z",  // Thursday, 2020-W53
      "2021-01-03T12:00:00Z",  // Sunday, 2020-W53
      "2021-01-04T00:00:00Z",  // Monday, 2021-W01
      "2021-01-10T23:59:59Z",  // Sunday, 2021-W01
      "2021-01-11T00:00:00Z",  // Monday, 2021-W02
  };
  RunTable(times,
           {
               {"weekly 1", Policy(0, 0, 0, 1, 0, 0), {"2021-01-11T00:00:00Z"}},
               {"weekly 3",
                Policy(0, 0, 0, 3, 0, 0),
                {"2021-01-11T00:00:00Z", "2021-01-10T23:59:59Z",
                 "2021-01-03T12:00:00Z"}},
               {"weekly 100",
                Policy(0, 0, 0, 100, 0, 0),
                {"2021-01-11T00:00:00Z", "2021-01-10T23:59:59Z",
                 "2021-01-03T12:00:00Z", "2020-12-27T12:00:00Z",
                 "2020-01-05T12:00:00Z", "2019-12-29T12:00:00Z"}},
           });
}

TEST(PruneTest, KeepMonthly) {
  const std::vector<std::string> times = {
      "2025-12-31T23:59:59Z", "2026-01-31T23:59:59Z", "2026-02-01T00:00:00Z",
      "2026-02-28T12:00:00Z", "2026-03-15T12:00:00Z", "2026-03-31T23:59:59Z",
      "2026-04-01T00:00:00Z"};
  RunTable(times, {
                      {"monthly 3",
                       Policy(0, 0, 0, 0, 3, 0),
                       {"2026-04-01T00:00:00Z", "2026-03-31T23:59:59Z",
                        "2026-02-28T12:00:00Z"}},
                      {"monthly 12",
                       Policy(0, 0, 0, 0, 12, 0),
                       {"2026-04-01T00:00:00Z", "2026-03-31T23:59:59Z",
                        "2026-02-28T12:00:00Z", "2026-01-31T23:59:59Z",
                        "2025-12-31T23:59:59Z"}},
                  });
}

TEST(PruneTest, KeepYearly) {
  const std::vector<std::string> times = {
      "2023-06-01T12:00:00Z", "2024-12-31T23:59:59Z", "2025-01-01T00:00:00Z",
      "2025-07-01T12:00:00Z", "2026-03-01T12:00:00Z"};
  RunTable(times, {
                      {"yearly 2",
                       Policy(0, 0, 0, 0, 0, 2),
                       {"2026-03-01T12:00:00Z", "2025-07-01T12:00:00Z"}},
                      {"yearly 10",
                       Policy(0, 0, 0, 0, 0, 10),
                       {"2026-03-01T12:00:00Z", "2025-07-01T12:00:00Z",
                        "2024-12-31T23:59:59Z", "2023-06-01T12:00:00Z"}},
                  });
}

// A week spanning New Year: the weekly rule keeps 2021-01-03 (2020-W53) and
// marks the older backups of that week removed, so the yearly rule finds no
// selectable 2020 backup and moves on to 2019 (proxmox-backup does the same).
TEST(PruneTest, RemovedByEarlierRuleIsNotReselected) {
  const std::vector<std::string> times = {
      "2019-06-01T12:00:00Z", "2020-12-30T12:00:00Z", "2020-12-31T12:00:00Z",
      "2021-01-03T12:00:00Z"};
  RunTable(times, {
                      {"weekly 1 + yearly 2",
                       Policy(0, 0, 0, 1, 0, 2),
                       {"2021-01-03T12:00:00Z", "2019-06-01T12:00:00Z"}},
                      {"yearly 3 alone",
                       Policy(0, 0, 0, 0, 0, 3),
                       {"2021-01-03T12:00:00Z", "2020-12-31T12:00:00Z",
                        "2019-06-01T12:00:00Z"}},
                  });
}

// A daily 02:00 schedule from 2026-09-01 to 2026-11-23 (a Monday), plus extra
// backups on the last two days, under a typical GFS policy.
TEST(PruneTest, CombinedGrandfatherFatherSon) {
  std::vector<std::string> times = {
      "2026-11-23T08:15:00Z", "2026-11-23T14:00:00Z", "2026-11-22T20:00:00Z"};
  const int64_t first = At("2026-09-01T02:00:00Z");
  const int64_t last = At("2026-11-23T02:00:00Z");
  for (int64_t t = first; t <= last; t += 86400) {
    const std::time_t tt = static_cast<std::time_t>(t);
    std::tm tm{};
    gmtime_r(&tt, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
    times.push_back(buf);
  }
  ASSERT_EQ(times.size(), 3u + 84u);

  const RetentionPolicy policy = Policy(3, 0, 7, 4, 3, 1);
  RunTable(times, {{"last 3 + daily 7 + weekly 4 + monthly 3 + yearly 1",
                    policy,
                    {
                        "2026-11-23T14:00:00Z",  // last
                        "2026-11-23T08:15:00Z",  // last
                        "2026-11-23T02:00:00Z",  // last
                        "2026-11-22T20:00:00Z",  // daily
                        "2026-11-21T02:00:00Z",  // daily
                        "2026-11-20T02:00:00Z",  // daily
                        "2026-11-19T02:00:00Z",  // daily
                        "2026-11-18T02:00:00Z",  // daily
                        "2026-11-17T02:00:00Z",  // daily
                        "2026-11-16T02:00:00Z",  // daily
                        "2026-11-15T02:00:00Z",  // weekly, 2026-W46
                        "2026-11-08T02:00:00Z",  // weekly, W45
                        "2026-11-01T02:00:00Z",  // weekly, W44
                        "2026-10-25T02:00:00Z",  // weekly, W43
                        "2026-09-30T02:00:00Z",  // monthly (Nov, Oct covered)
                        // yearly: 2026 is covered, no older year exists.
                    }}});

  // Each kept backup names the one rule that selected it.
  std::vector<std::string> reasons;
  for (const PruneDecision& d : DecidePrune(Items(times), policy)) {
    if (d.keep) reasons.push_back(d.reasons.at(0));
  }
  EXPECT_EQ(reasons, (std::vector<std::string>{
                         "last", "last", "last", "daily", "daily", "daily",
                         "daily", "daily", "daily", "daily", "weekly", "weekly",
                         "weekly", "weekly", "monthly"}));
}

TEST(PruneTest, EmptyPolicyKeepsEverything) {
  const RetentionPolicy policy;
  EXPECT_TRUE(policy.empty());
  const std::vector<PruneDecision> decisions = DecidePrune(
      Items({"2026-11-22T08:15:00Z", "2026-11-23T08:15:00Z"}), policy);
  ASSERT_EQ(decisions.size(), 2u);
  for (const PruneDecision& d : decisions) {
    EXPECT_TRUE(d.keep) << d.id;
    EXPECT_EQ(d.reasons, std::vector<std::string>{"no-rule"});
  }
  EXPECT_EQ(decisions[0].id, "2026-11-23T08:15:00Z");

  EXPECT_FALSE(Policy(0, 0, 0, 0, 0, 1).empty());
  EXPECT_TRUE(DecidePrune({}, Policy(1, 0, 0, 0, 0, 0)).empty());
}

TEST(PruneTest, SameSecondTiesAreOrderedById) {
  const int64_t t = At("2026-11-23T08:15:00Z");
  const int64_t hour_before = At("2026-11-23T07:15:00Z");
  struct TieCase {
    std::string name;
    RetentionPolicy policy;
    std::vector<std::string> kept;
  };
  const std::vector<TieCase> cases = {
      {"last 1", Policy(1, 0, 0, 0, 0, 0), {"b"}},
      {"last 2", Policy(2, 0, 0, 0, 0, 0), {"b", "a"}},
      {"hourly 2", Policy(0, 2, 0, 0, 0, 0), {"b", "c"}},
      {"daily 1", Policy(0, 0, 1, 0, 0, 0), {"b"}},
  };
  std::vector<PruneItem> items = {{"a", t}, {"b", t}, {"c", hour_before}};
  std::sort(items.begin(), items.end(),
            [](const PruneItem& x, const PruneItem& y) { return x.id < y.id; });
  do {  // every input order gives the same answer
    for (const TieCase& c : cases) {
      SCOPED_TRACE(c.name);
      const std::vector<PruneDecision> decisions = DecidePrune(items, c.policy);
      ASSERT_EQ(decisions.size(), 3u);
      EXPECT_EQ(decisions[0].id, "b");
      EXPECT_EQ(decisions[1].id, "a");
      EXPECT_EQ(decisions[2].id, "c");
      EXPECT_EQ(Kept(decisions), c.kept);
    }
  } while (std::next_permutation(
      items.begin(), items.end(),
      [](const PruneItem& x, const PruneItem& y) { return x.id < y.id; }));
}

TEST(PruneTest, ParseRetention) {
  auto policy = ParseRetention({{"keep-last", "3"},
                                {"keep-hourly", "24"},
                                {"keep-daily", "7"},
                                {"keep-weekly", "4"},
                                {"keep-monthly", "12"},
                                {"keep-yearly", "0"}});
  ASSERT_TRUE(policy.ok()) << policy.status().ToString();
  EXPECT_EQ(policy->keep_last, 3);
  EXPECT_EQ(policy->keep_hourly, 24);
  EXPECT_EQ(policy->keep_daily, 7);
  EXPECT_EQ(policy->keep_weekly, 4);
  EXPECT_EQ(policy->keep_monthly, 12);
  EXPECT_EQ(policy->keep_yearly, 0);
  EXPECT_FALSE(policy->empty());

  auto none = ParseRetention({});
  ASSERT_TRUE(none.ok());
  EXPECT_TRUE(none->empty());
  auto zeros = ParseRetention({{"keep-daily", "0"}});
  ASSERT_TRUE(zeros.ok());
  EXPECT_TRUE(zeros->empty());
}

TEST(PruneTest, ParseRetentionErrors) {
  struct ErrorCase {
    std::string key, value;
    std::string mentions;  // the message names the culprit
  };
  const std::vector<ErrorCase> cases = {
      {"keep-last", "-1", "'-1'"},
      {"keep-daily", "abc", "'abc'"},
      {"keep-daily", "", "keep-daily"},
      {"keep-daily", "3x", "'3x'"},
      {"keep-daily", " 3", "' 3'"},
      {"keep-daily", "+3", "'+3'"},
      {"keep-daily", "1.5", "'1.5'"},
      {"keep-weekly", "99999999999", "too large"},
      {"keep-dayly", "3", "'keep-dayly'"},
      {"keep_daily", "3", "'keep_daily'"},
      {"--keep-daily", "3", "'--keep-daily'"},
  };
  for (const ErrorCase& c : cases) {
    SCOPED_TRACE(c.key + "=" + c.value);
    auto r = ParseRetention({{"keep-yearly", "1"}, {c.key, c.value}});
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    EXPECT_NE(r.status().message().find(c.mentions), std::string::npos)
        << r.status().message();
    EXPECT_EQ(r.status().message().find('\n'), std::string::npos);
  }

  auto twice = ParseRetention({{"keep-daily", "3"}, {"keep-daily", "4"}});
  ASSERT_FALSE(twice.ok());
  EXPECT_EQ(twice.status().code(), Code::kInvalidArgument);
  EXPECT_NE(twice.status().message().find("twice"), std::string::npos);
}

}  // namespace
}  // namespace ckptfs
