#include "backend/store/catalog.h"

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace ckptfs {
namespace {

namespace fs = std::filesystem;

class CatalogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl =
        (fs::temp_directory_path() / "catalog_test.XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    path_ = (dir_ / "catalog.db").string();
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::unique_ptr<Catalog> OpenOk() {
    auto cat = Catalog::Open(path_);
    EXPECT_TRUE(cat.ok()) << cat.status().ToString();
    return cat.ok() ? std::move(cat).value() : nullptr;
  }

  fs::path dir_;
  std::string path_;
};

BackupRecord Record(const std::string& uuid, const std::string& cp,
                    int64_t created,
                    std::vector<std::string> disks = {"vda", "vdb"},
                    const std::string& name = "vm1") {
  BackupRecord r;
  r.id = uuid + "/" + cp;
  r.domain = name;
  r.domain_uuid = uuid;
  r.checkpoint = cp;
  r.mode = created % 2 ? "incremental" : "full";
  r.base = r.mode == "full" ? "" : "base-of-" + cp;
  r.created = created;
  r.completed = created + 42;
  r.checkpoint_xml = "<domaincheckpoint><name>" + cp + "</name><domain><uuid>" +
                     uuid + "</uuid></domain></domaincheckpoint>";
  uint64_t n = 1;
  for (const auto& d : disks) {
    BackupDisk disk;
    disk.name = d;
    disk.size = (n << 40) + static_cast<uint64_t>(created);
    disk.allocated = n * 65536;
    disk.source = "/var/lib/libvirt/images/" + name + "-" + d + ".qcow2";
    disk.bytes_read = n * 4096 + 7;
    disk.changes = {{0, 65536}, {n * 1048576, 131072}};
    r.disks.push_back(disk);
    ++n;
  }
  return r;
}

void ExpectSame(const BackupRecord& a, const BackupRecord& b) {
  EXPECT_EQ(a.id, b.id);
  EXPECT_EQ(a.domain, b.domain);
  EXPECT_EQ(a.domain_uuid, b.domain_uuid);
  EXPECT_EQ(a.checkpoint, b.checkpoint);
  EXPECT_EQ(a.base, b.base);
  EXPECT_EQ(a.mode, b.mode);
  EXPECT_EQ(a.created, b.created);
  EXPECT_EQ(a.completed, b.completed);
  EXPECT_EQ(a.checkpoint_xml, b.checkpoint_xml);
  ASSERT_EQ(a.disks.size(), b.disks.size()) << a.id;
  for (size_t i = 0; i < a.disks.size(); ++i) {
    EXPECT_EQ(a.disks[i].name, b.disks[i].name);
    EXPECT_EQ(a.disks[i].size, b.disks[i].size);
    EXPECT_EQ(a.disks[i].allocated, b.disks[i].allocated);
    EXPECT_EQ(a.disks[i].source, b.disks[i].source);
    EXPECT_EQ(a.disks[i].bytes_read, b.disks[i].bytes_read);
    EXPECT_EQ(a.disks[i].changes, b.disks[i].changes);
  }
}

std::vector<std::string> Ids(const std::vector<BackupRecord>& rs) {
  std::vector<std::string> out;
  for (const auto& r : rs) out.push_back(r.id);
  return out;
}

TEST_F(CatalogTest, AddGetRemoveRoundTrip) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  BackupRecord r = Record("u1", "cp1", 1001);
  // Disk order is the record's, not alphabetical; extreme values survive.
  std::swap(r.disks[0], r.disks[1]);
  r.disks[0].size = UINT64_MAX;
  r.checkpoint_xml += "\n'quotes' \"and\" \xc3\xa9";
  ASSERT_TRUE(cat->AddBackup(r).ok());

  auto got = cat->GetBackup(r.id);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  ExpectSame(**got, r);

  auto list = cat->ListBackups();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  ExpectSame(list->front(), r);

  auto missing = cat->GetBackup("u1/nope");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());

  ASSERT_TRUE(cat->RemoveBackup(r.id).ok());
  got = cat->GetBackup(r.id);
  ASSERT_TRUE(got.ok());
  EXPECT_FALSE(got->has_value());
  EXPECT_TRUE(cat->ListBackups()->empty());
  // The orphaned domain goes with its last backup.
  EXPECT_TRUE(cat->ListDomains()->empty());

  Status st = cat->RemoveBackup(r.id);
  EXPECT_EQ(st.code(), Code::kNotFound);
  EXPECT_NE(st.message().find(r.id), std::string::npos);
}

TEST_F(CatalogTest, DuplicateAddIsAlreadyExists) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  BackupRecord r = Record("u1", "cp1", 100);
  ASSERT_TRUE(cat->AddBackup(r).ok());
  Status st = cat->AddBackup(r);
  EXPECT_EQ(st.code(), Code::kAlreadyExists) << st.ToString();
  // A second backup of the same checkpoint under another id.
  BackupRecord other = r;
  other.id = "something-else";
  st = cat->AddBackup(other);
  EXPECT_EQ(st.code(), Code::kAlreadyExists) << st.ToString();
  // Nothing half-added.
  ASSERT_EQ(cat->ListBackups()->size(), 1u);
  ExpectSame(cat->ListBackups()->front(), r);
}

TEST_F(CatalogTest, InvalidRecordsRejected) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  BackupRecord r = Record("u1", "cp1", 100);
  r.mode = "fast";
  EXPECT_EQ(cat->AddBackup(r).code(), Code::kInvalidArgument);
  r = Record("u1", "cp1", 100, {"vda", "vda"});
  EXPECT_EQ(cat->AddBackup(r).code(), Code::kInvalidArgument);
  r = Record("", "cp1", 100);
  EXPECT_EQ(cat->AddBackup(r).code(), Code::kInvalidArgument);
  EXPECT_TRUE(cat->ListBackups()->empty());
  EXPECT_TRUE(cat->ListDomains()->empty());
}

TEST_F(CatalogTest, ListOrderAndDomainFilter) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  // Added out of order; ties on created broken by id.
  ASSERT_TRUE(cat->AddBackup(Record("u1", "c", 300)).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u2", "x", 150, {"sda"}, "vm2")).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "b", 200)).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "a", 200)).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "z", 100)).ok());

  auto all = cat->ListBackups();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(Ids(*all),
            (std::vector<std::string>{"u1/z", "u2/x", "u1/a", "u1/b", "u1/c"}));
  auto u1 = cat->ListBackups("u1");
  ASSERT_TRUE(u1.ok());
  EXPECT_EQ(Ids(*u1),
            (std::vector<std::string>{"u1/z", "u1/a", "u1/b", "u1/c"}));
  ExpectSame((*u1)[3], Record("u1", "c", 300));
  auto u2 = cat->ListBackups("u2");
  ASSERT_EQ(u2->size(), 1u);
  ExpectSame(u2->front(), Record("u2", "x", 150, {"sda"}, "vm2"));
  EXPECT_TRUE(cat->ListBackups("u3")->empty());
}

TEST_F(CatalogTest, LatestBackupHonoursDiskCoverage) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  EXPECT_FALSE(cat->LatestBackup("u1")->has_value());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "both", 100, {"vda", "vdb"})).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "only-vdb", 200, {"vdb"})).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u2", "other", 300, {"vda", "vdb"})).ok());

  auto any = cat->LatestBackup("u1");
  ASSERT_TRUE(any.ok()) << any.status().ToString();
  ASSERT_TRUE(any->has_value());
  EXPECT_EQ((*any)->id, "u1/only-vdb");
  ExpectSame(**any, Record("u1", "only-vdb", 200, {"vdb"}));

  auto both = cat->LatestBackup("u1", {"vda", "vdb"});
  ASSERT_TRUE(both.ok());
  ASSERT_TRUE(both->has_value());
  EXPECT_EQ((*both)->id, "u1/both");
  ExpectSame(**both, Record("u1", "both", 100, {"vda", "vdb"}));

  EXPECT_EQ((*cat->LatestBackup("u1", {"vdb"}))->id, "u1/only-vdb");
  EXPECT_EQ((*cat->LatestBackup("u1", {"vda"}))->id, "u1/both");
  // Repeated names count once.
  EXPECT_EQ((*cat->LatestBackup("u1", {"vda", "vda"}))->id, "u1/both");
  EXPECT_FALSE(cat->LatestBackup("u1", {"vda", "vdc"})->has_value());
  EXPECT_FALSE(cat->LatestBackup("u3", {"vda"})->has_value());

  // Removing the newest makes the older one the base again.
  ASSERT_TRUE(cat->RemoveBackup("u1/only-vdb").ok());
  EXPECT_EQ((*cat->LatestBackup("u1", {"vdb"}))->id, "u1/both");
}

TEST_F(CatalogTest, DomainsTakeTheNewestName) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  ASSERT_TRUE(cat->AddBackup(Record("u1", "a", 100, {"vda"}, "old")).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u2", "a", 100, {"vda"}, "vm2")).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "b", 200, {"vda"}, "renamed")).ok());
  // Added later but older: does not win.
  ASSERT_TRUE(cat->AddBackup(Record("u1", "0", 50, {"vda"}, "ancient")).ok());
  auto doms = cat->ListDomains();
  ASSERT_TRUE(doms.ok());
  EXPECT_EQ(*doms, (std::vector<Catalog::DomainRow>{{"u1", "renamed"},
                                                    {"u2", "vm2"}}));
  // Each backup keeps the name it was taken under.
  EXPECT_EQ((*cat->GetBackup("u1/a"))->domain, "old");
  // Removing the newest backup falls back to the next one's name.
  ASSERT_TRUE(cat->RemoveBackup("u1/b").ok());
  EXPECT_EQ(*cat->ListDomains(),
            (std::vector<Catalog::DomainRow>{{"u1", "old"}, {"u2", "vm2"}}));
}

Job MakeJob(const std::string& id, int64_t created_ms) {
  Job j;
  j.id = id;
  j.kind = "backup";
  j.request = "vm1 mode=full";
  j.domain = "vm1";
  j.created_ms = created_ms;
  return j;
}

TEST_F(CatalogTest, JobsUpsertAndLimit) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(cat->PutJob(MakeJob("j" + std::to_string(i), 1000 + i)).ok());
  }
  Job j2 = MakeJob("j2", 1002);
  j2.state = "failed";
  j2.checkpoint = "cp9";
  j2.mode = "incremental";
  j2.base = "cp8";
  j2.error = "vda: export closed";
  j2.code = "io-error";
  j2.done = 123;
  j2.total = 1ull << 40;
  j2.started_ms = 1700000000123;
  j2.ended_ms = 1700000005999;
  ASSERT_TRUE(cat->PutJob(j2).ok());

  auto all = cat->ListJobs(100);
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  ASSERT_EQ(all->size(), 5u);  // upserted, not duplicated
  for (int i = 0; i < 5; ++i) {
    EXPECT_EQ((*all)[i].id, "j" + std::to_string(i));
  }
  const Job& g = (*all)[2];
  EXPECT_EQ(g.kind, j2.kind);
  EXPECT_EQ(g.request, j2.request);
  EXPECT_EQ(g.domain, j2.domain);
  EXPECT_EQ(g.checkpoint, j2.checkpoint);
  EXPECT_EQ(g.mode, j2.mode);
  EXPECT_EQ(g.base, j2.base);
  EXPECT_EQ(g.state, j2.state);
  EXPECT_EQ(g.error, j2.error);
  EXPECT_EQ(g.code, j2.code);
  EXPECT_EQ(g.done, j2.done);
  EXPECT_EQ(g.total, j2.total);
  EXPECT_EQ(g.created_ms, j2.created_ms);
  EXPECT_EQ(g.started_ms, j2.started_ms);
  EXPECT_EQ(g.ended_ms, j2.ended_ms);

  auto last2 = cat->ListJobs(2);
  ASSERT_TRUE(last2.ok());
  ASSERT_EQ(last2->size(), 2u);
  EXPECT_EQ((*last2)[0].id, "j3");  // newest two, oldest first
  EXPECT_EQ((*last2)[1].id, "j4");
  EXPECT_TRUE(cat->ListJobs(0)->empty());

  ASSERT_TRUE(cat->PruneJobs(3).ok());
  auto kept = cat->ListJobs(100);
  ASSERT_EQ(kept->size(), 3u);
  EXPECT_EQ(kept->front().id, "j2");

  EXPECT_EQ(cat->PutJob(Job{}).code(), Code::kInvalidArgument);
}

TEST(JobFromJsonTest, ToleratesMissingAndMistypedFields) {
  Job j = JobFromJson(nlohmann::json::parse(R"({"id": "x", "state": null,
      "domain": null, "progress": {"done": "many"}, "created": "garbage"})"));
  EXPECT_EQ(j.id, "x");
  EXPECT_EQ(j.state, "queued");
  EXPECT_EQ(j.domain, "");
  EXPECT_EQ(j.done, 0u);
  EXPECT_EQ(j.created_ms, 0);
  EXPECT_EQ(JobFromJson(nlohmann::json::array()).id, "");

  Job full = MakeJob("y", 1700000000000);
  full.ended_ms = 1700000001000;
  full.full_disks = {"vda"};
  Job back = JobFromJson(JobToJson(full));
  EXPECT_EQ(back.full_disks, full.full_disks);
  EXPECT_EQ(back.created_ms, full.created_ms);
  EXPECT_EQ(back.ended_ms, full.ended_ms);
  EXPECT_EQ(back.started_ms, 0);
  EXPECT_EQ(back.request, full.request);
}

TEST_F(CatalogTest, ReplaceBackupsEqualsAddingOneByOne) {
  std::vector<BackupRecord> records = {
      Record("u1", "c", 300, {"vda", "vdb"}, "new"),
      Record("u2", "x", 150, {"sda"}, "vm2"),
      Record("u1", "a", 200, {"vdb"}, "mid"),
      Record("u1", "b", 100, {"vda"}, "old"),
  };
  std::vector<BackupRecord> expect_list;
  std::vector<Catalog::DomainRow> expect_domains;
  {
    auto one = Catalog::Open((dir_ / "one.db").string());
    ASSERT_TRUE(one.ok());
    for (const auto& r : records) ASSERT_TRUE((*one)->AddBackup(r).ok());
    expect_list = *(*one)->ListBackups();
    expect_domains = *(*one)->ListDomains();
  }

  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  // Stale rows that the store no longer has must go, domain included.
  ASSERT_TRUE(cat->AddBackup(Record("u9", "gone", 50, {"vda"}, "dead")).ok());
  ASSERT_TRUE(cat->AddBackup(Record("u1", "gone", 60, {"vda"}, "stale")).ok());
  ASSERT_TRUE(cat->PutJob(MakeJob("j1", 1)).ok());
  std::vector<BackupRecord> reversed(records.rbegin(), records.rend());
  ASSERT_TRUE(cat->ReplaceBackups(reversed).ok());

  auto list = cat->ListBackups();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), expect_list.size());
  for (size_t i = 0; i < list->size(); ++i) {
    ExpectSame((*list)[i], expect_list[i]);
  }
  EXPECT_EQ(*cat->ListDomains(), expect_domains);
  EXPECT_EQ(cat->ListJobs(10)->size(), 1u);  // jobs are kept

  // A duplicate fails the whole call and changes nothing.
  std::vector<BackupRecord> dup = {records[0], records[0]};
  EXPECT_EQ(cat->ReplaceBackups(dup).code(), Code::kAlreadyExists);
  EXPECT_EQ(cat->ListBackups()->size(), records.size());

  ASSERT_TRUE(cat->ReplaceBackups({}).ok());
  EXPECT_TRUE(cat->ListBackups()->empty());
  EXPECT_TRUE(cat->ListDomains()->empty());
}

TEST_F(CatalogTest, ReopenKeepsData) {
  BackupRecord r = Record("u1", "cp1", 100);
  {
    auto cat = OpenOk();
    ASSERT_TRUE(cat);
    ASSERT_TRUE(cat->AddBackup(r).ok());
    ASSERT_TRUE(cat->PutJob(MakeJob("j1", 5)).ok());
  }
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  auto got = cat->GetBackup(r.id);
  ASSERT_TRUE(got.ok() && got->has_value());
  ExpectSame(**got, r);
  EXPECT_EQ(cat->ListJobs(10)->size(), 1u);
  EXPECT_EQ(cat->ListDomains()->size(), 1u);
}

TEST_F(CatalogTest, GarbageFileIsAClearError) {
  {
    std::ofstream f(path_);
    for (int i = 0; i < 1000; ++i) f << "this is not a database\n";
  }
  auto cat = Catalog::Open(path_);
  ASSERT_FALSE(cat.ok());
  EXPECT_EQ(cat.status().code(), Code::kIoError);
  EXPECT_NE(cat.status().message().find(path_), std::string::npos)
      << cat.status().message();
  EXPECT_NE(cat.status().message().find("ckptfs reindex"), std::string::npos)
      << cat.status().message();
}

TEST_F(CatalogTest, CorruptPagesAreAClearError) {
  {
    auto cat = OpenOk();
    ASSERT_TRUE(cat);
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(
          cat->AddBackup(Record("u1", "cp" + std::to_string(i), i)).ok());
    }
  }  // the last close checkpoints the WAL into the file
  auto size = fs::file_size(path_);
  ASSERT_GT(size, 8192u);
  {
    // Keep the header page; scribble over everything after it.
    std::fstream f(path_, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(4096);
    std::string junk(size - 4096, '\xa5');
    f.write(junk.data(), static_cast<std::streamsize>(junk.size()));
  }
  auto cat = Catalog::Open(path_);
  ASSERT_FALSE(cat.ok());
  EXPECT_EQ(cat.status().code(), Code::kIoError);
  EXPECT_NE(cat.status().message().find("ckptfs reindex"), std::string::npos)
      << cat.status().message();
}

TEST_F(CatalogTest, CorruptFileIsMovedAsideAndReplaced) {
  {
    std::ofstream f(path_);
    for (int i = 0; i < 1000; ++i) f << "this is not a database\n";
  }
  std::string moved;
  auto cat = Catalog::OpenOrReplaceCorrupt(path_, &moved);
  ASSERT_TRUE(cat.ok()) << cat.status().ToString();
  ASSERT_FALSE(moved.empty());
  EXPECT_EQ(moved.rfind(path_ + ".corrupt-", 0), 0u) << moved;
  EXPECT_TRUE(fs::exists(moved));  // kept for whoever wants its job history
  EXPECT_TRUE((*cat)->ListBackups()->empty());
  ASSERT_TRUE((*cat)->AddBackup(Record("u1", "cp1", 1)).ok());
  EXPECT_EQ(fs::status(path_).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write);
  // A healthy catalog is opened as it is.
  cat->reset();
  auto again = Catalog::OpenOrReplaceCorrupt(path_, &moved);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_TRUE(moved.empty());
  EXPECT_EQ((*again)->ListBackups()->size(), 1u);
}

TEST_F(CatalogTest, NewerSchemaIsNotReplaced) {
  { ASSERT_TRUE(OpenOk()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  std::string moved;
  auto cat = Catalog::OpenOrReplaceCorrupt(path_, &moved);
  ASSERT_FALSE(cat.ok());
  EXPECT_EQ(cat.status().code(), Code::kUnsupported);
  EXPECT_TRUE(moved.empty());
}

TEST_F(CatalogTest, NewerSchemaRefused) {
  { ASSERT_TRUE(OpenOk()); }
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path_.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(
      sqlite3_exec(db, "PRAGMA user_version=99", nullptr, nullptr, nullptr),
      SQLITE_OK);
  sqlite3_close(db);
  auto cat = Catalog::Open(path_);
  ASSERT_FALSE(cat.ok());
  EXPECT_EQ(cat.status().code(), Code::kUnsupported);
  EXPECT_NE(cat.status().message().find("99"), std::string::npos)
      << cat.status().message();
  EXPECT_NE(cat.status().message().find(path_), std::string::npos);
}

TEST_F(CatalogTest, MissingDirectoryIsAnError) {
  auto cat = Catalog::Open((dir_ / "no" / "such" / "catalog.db").string());
  ASSERT_FALSE(cat.ok());
  EXPECT_EQ(cat.status().code(), Code::kIoError) << cat.status().ToString();
}

TEST_F(CatalogTest, ConcurrentAddAndList) {
  auto cat = OpenOk();
  ASSERT_TRUE(cat);
  constexpr int kThreads = 8, kPerThread = 25;
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::string uuid = "u" + std::to_string(t % 3);
      for (int i = 0; i < kPerThread; ++i) {
        std::string cp = "t" + std::to_string(t) + "-" + std::to_string(i);
        if (!cat->AddBackup(Record(uuid, cp, t * 1000 + i)).ok()) ++errors;
        if (!cat->ListBackups(i % 2 ? uuid : "").ok()) ++errors;
        if (!cat->LatestBackup(uuid, {"vda"}).ok()) ++errors;
        if (!cat->PutJob(MakeJob(cp, i)).ok()) ++errors;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  auto all = cat->ListBackups();
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), static_cast<size_t>(kThreads * kPerThread));
  for (const auto& r : *all) EXPECT_EQ(r.disks.size(), 2u);
  EXPECT_EQ(cat->ListJobs(1000)->size(),
            static_cast<size_t>(kThreads * kPerThread));
}

TEST_F(CatalogTest, TwoCatalogsOnOneFile) {
  auto a = OpenOk();
  auto b = OpenOk();
  ASSERT_TRUE(a && b);
  constexpr int kPerThread = 40;
  std::atomic<int> errors{0};
  auto work = [&](Catalog* cat, const std::string& uuid) {
    for (int i = 0; i < kPerThread; ++i) {
      std::string cp = "cp" + std::to_string(i);
      Status st = cat->AddBackup(Record(uuid, cp, i));
      if (!st.ok()) {
        ADD_FAILURE() << st.ToString();
        ++errors;
      }
      if (!cat->ListBackups().ok()) ++errors;
      if (!cat->PutJob(MakeJob(uuid + cp, i)).ok()) ++errors;
    }
  };
  std::thread ta(work, a.get(), "ua");
  std::thread tb(work, b.get(), "ub");
  std::thread tc(work, a.get(), "uc");
  std::thread td(work, b.get(), "ud");
  ta.join();
  tb.join();
  tc.join();
  td.join();
  EXPECT_EQ(errors.load(), 0);
  // Each sees the other's writes.
  EXPECT_EQ(a->ListBackups()->size(), 4u * kPerThread);
  EXPECT_EQ(b->ListBackups()->size(), 4u * kPerThread);
  EXPECT_EQ(b->ListBackups("ua")->size(), 1u * kPerThread);
  EXPECT_EQ(a->ListDomains()->size(), 4u);
  ASSERT_TRUE(a->RemoveBackup("ub/cp0").ok());
  EXPECT_FALSE(b->GetBackup("ub/cp0")->has_value());
}

// Found with fuzz.catalog_json (tests/fuzz/corpus/catalog_json/
// crash-leap-second-year-32767): a leap second at the end of the last
// representable day read as a time whose record (IsoTime) no longer read
// back. IsoTime never writes second 60, so it is refused like other junk.
TEST(JobFromJsonTest, TimesReadBackFromTheirRecord) {
  Job j = JobFromJson(nlohmann::json::parse(
      R"({"created": "32767-12-31T23:59:60Z",
          "started": "32767-12-31T23:59:59Z",
          "ended": "-32767-01-01T00:00:00Z"})"));
  EXPECT_EQ(j.created_ms, 0);
  EXPECT_NE(j.started_ms, 0);
  EXPECT_NE(j.ended_ms, 0);
  Job back = JobFromJson(JobToJson(j));
  EXPECT_EQ(back.started_ms, j.started_ms);
  EXPECT_EQ(back.ended_ms, j.ended_ms);
}

// Found by fuzz.catalog_json (tests/fuzz/corpus/catalog_json/
// crash-float-changes): a changes column holding a float beyond 2^64 was
// converted with undefined behaviour. Anything but [[uint, uint], ...] now
// reads as no changes, as a damaged value always did.
TEST(ChangesFromJsonTest, OnlyWhatTheCatalogWrites) {
  using Changes = std::vector<std::pair<uint64_t, uint64_t>>;
  EXPECT_EQ(ChangesFromJson("[[0,65536],[1048576,196608]]"),
            (Changes{{0, 65536}, {1048576, 196608}}));
  EXPECT_EQ(ChangesFromJson("[]"), Changes{});
  for (const char* bad :
       {"[[6.51845e+21, 1]]", "[[1.5, 2]]", "[[-1, 2]]", "[[1, 2, 3]]",
        "[[1, 2], 7]", "{}", "", "[[1e400, 1]]", "\xff"}) {
    EXPECT_EQ(ChangesFromJson(bad), Changes{}) << bad;
  }
}

}  // namespace
}  // namespace ckptfs
