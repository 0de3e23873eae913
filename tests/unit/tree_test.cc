#include "fs/tree.h"

#include <gtest/gtest.h>

#include <set>
#include <string>

namespace ckptfs {
namespace {

std::shared_ptr<const CheckpointView> MakeCheckpoint(const std::string& domain,
                                                     const std::string& name,
                                                     int64_t created) {
  auto v = std::make_shared<CheckpointView>();
  v->domain = domain;
  v->name = name;
  v->created = created;
  v->xml = "<domaincheckpoint/>";
  v->info_json = "{}";
  for (const char* t : {"vda", "vdb"}) {
    auto d = std::make_shared<CheckpointDisk>();
    d->target = t;
    d->size = 1 << 20;
    d->changes = "0 65536\n";
    v->disks.push_back(d);
  }
  return v;
}

TEST(TreeTest, Layout) {
  InodeTable inodes;
  TreeInput in;
  in.domains = {{"vm2"}, {"vm1"}};
  in.checkpoints = {MakeCheckpoint("vm1", "b", 200),
                    MakeCheckpoint("vm1", "a", 100)};
  in.job_ids = {"j1"};
  in.readme = "hello";
  auto t = BuildTree(in, inodes);

  ASSERT_NE(t->Find("/"), nullptr);
  EXPECT_EQ(t->Find("/")->children,
            (std::vector<std::string>{"README", "control", "domains"}));
  EXPECT_EQ(t->Find("/domains")->children,
            (std::vector<std::string>{"vm1", "vm2"}));
  EXPECT_EQ(t->Find("/domains/vm1")->children,
            (std::vector<std::string>{"a", "b", "latest"}));
  EXPECT_TRUE(t->Find("/domains/vm2")->children.empty());
  EXPECT_EQ(t->Find("/domains/vm1/latest")->content, "b");
  EXPECT_EQ(
      t->Find("/domains/vm1/a")->children,
      (std::vector<std::string>{"checkpoint.xml", "info.json", "vda.changes",
                                "vda.img", "vdb.changes", "vdb.img"}));
  const Node* img = t->Find("/domains/vm1/a/vda.img");
  ASSERT_NE(img, nullptr);
  EXPECT_EQ(img->type, NodeType::kImage);
  EXPECT_EQ(img->mtime, 100);
  EXPECT_EQ(t->Find("/domains/vm1/a/vda.changes")->content, "0 65536\n");
  EXPECT_EQ(t->Find("/control/jobs/j1.json")->type, NodeType::kJob);
  EXPECT_EQ(t->Find("/control/checkpoint")->type, NodeType::kControl);
  EXPECT_EQ(t->Find("/README")->content, "hello");
  EXPECT_EQ(t->Find("/domains/vm1/a/"), t->Find("/domains/vm1/a"));
  EXPECT_EQ(t->Find("/domains/vm3"), nullptr);
  EXPECT_EQ(t->Find("/domains/vm1/a/../b"), nullptr);
}

TEST(TreeTest, Permissions) {
  InodeTable inodes;
  TreeInput in;
  in.checkpoints = {MakeCheckpoint("vm1", "a", 1)};
  auto owner = BuildTree(in, inodes);
  EXPECT_EQ(owner->Find("/domains/vm1/a/vda.img")->perm, 0400u);
  EXPECT_EQ(owner->Find("/domains/vm1/a")->perm, 0500u);
  EXPECT_EQ(owner->Find("/control/checkpoint")->perm, 0600u);
  in.allow_other = true;
  auto other = BuildTree(in, inodes);
  EXPECT_EQ(other->Find("/domains/vm1/a/vda.img")->perm, 0444u);
  EXPECT_EQ(other->Find("/domains")->perm, 0555u);
  // Control files never open up to other users.
  EXPECT_EQ(other->Find("/control/checkpoint")->perm, 0600u);
  EXPECT_EQ(other->Find("/control")->perm, 0700u);
}

TEST(TreeTest, InodesStableAcrossSnapshots) {
  InodeTable inodes;
  TreeInput in;
  in.checkpoints = {MakeCheckpoint("vm1", "a", 1)};
  auto t1 = BuildTree(in, inodes);
  in.checkpoints.push_back(MakeCheckpoint("vm1", "b", 2));
  auto t2 = BuildTree(in, inodes);
  EXPECT_EQ(t1->Find("/domains/vm1/a/vda.img")->ino,
            t2->Find("/domains/vm1/a/vda.img")->ino);
  EXPECT_NE(t2->Find("/domains/vm1/b/vda.img")->ino,
            t2->Find("/domains/vm1/a/vda.img")->ino);
  EXPECT_EQ(t2->Find("/")->ino, 1u);
}

// 43d0e95 kept an inode number for every path ever built: one more for each
// job record, released checkpoint and pruned backup, for the daemon's life.
TEST(TreeTest, InodeTableHoldsOnlyTheNewestTree) {
  InodeTable inodes;
  TreeInput in;
  in.checkpoints = {MakeCheckpoint("vm1", "a", 1)};
  for (int i = 0; i < 10; ++i) in.job_ids.push_back("j" + std::to_string(i));
  auto first = BuildTree(in, inodes);
  const uint64_t ino_a = first->Find("/domains/vm1/a/vda.img")->ino;
  const uint64_t ino_jobs = first->Find("/control/jobs")->ino;
  size_t entries = inodes.size();
  // Jobs come and go (the table bounds them), checkpoints are released.
  for (int round = 1; round <= 300; ++round) {
    in.job_ids.clear();
    for (int i = 0; i < 10; ++i) {
      in.job_ids.push_back("j" + std::to_string(round * 10 + i));
    }
    in.checkpoints = {MakeCheckpoint("vm1", "a", 1),
                      MakeCheckpoint("vm1", "c" + std::to_string(round), 2)};
    auto t = BuildTree(in, inodes);
    ASSERT_EQ(t->Find("/domains/vm1/a/vda.img")->ino, ino_a);
    ASSERT_EQ(t->Find("/control/jobs")->ino, ino_jobs);
    EXPECT_EQ(inodes.size() + 1, t->size());  // all but "/"
    if (round == 1) entries = inodes.size();
    EXPECT_EQ(inodes.size(), entries);
  }
  // A path that comes back is a new file: a new number, never an old one.
  in.checkpoints = {MakeCheckpoint("vm1", "a", 1),
                    MakeCheckpoint("vm1", "c1", 2)};
  auto back = BuildTree(in, inodes);
  std::set<uint64_t> seen;
  for (const auto& path : {"/domains/vm1/c1/vda.img", "/domains/vm1/a/vda.img",
                           "/control/jobs/j3000.json"}) {
    ASSERT_NE(back->Find(path), nullptr) << path;
    EXPECT_TRUE(seen.insert(back->Find(path)->ino).second) << path;
  }
  EXPECT_GT(back->Find("/domains/vm1/c1/vda.img")->ino,
            back->Find("/control/jobs/j3000.json")->ino);
}

TEST(TreeTest, CheckpointOfUndefinedDomainStillShown) {
  InodeTable inodes;
  TreeInput in;
  in.checkpoints = {MakeCheckpoint("gone", "a", 1)};
  auto t = BuildTree(in, inodes);
  EXPECT_NE(t->Find("/domains/gone/a/vda.img"), nullptr);
}

std::shared_ptr<const CheckpointView> OfUuid(
    std::shared_ptr<const CheckpointView> v, const std::string& uuid) {
  auto copy = std::make_shared<CheckpointView>(*v);
  copy->domain_uuid = uuid;
  return copy;
}

// Two domains of one name (defined again here, or another host's in a shared
// store): libvirt's keeps the name, the other is "<name>@<uuid>", and
// checkpoints of the same name in both stay apart.
TEST(TreeTest, SameNameDomainsToldApartByUuid) {
  InodeTable inodes;
  TreeInput in;
  in.domains = {{"vm1", "u-new"}};
  in.checkpoints = {OfUuid(MakeCheckpoint("vm1", "a", 1), "u-old"),
                    OfUuid(MakeCheckpoint("vm1", "a", 5), "u-new"),
                    OfUuid(MakeCheckpoint("vm1", "b", 3), "u-old")};
  auto t = BuildTree(in, inodes);
  EXPECT_EQ(t->Find("/domains")->children,
            (std::vector<std::string>{"vm1", "vm1@u-old"}));
  EXPECT_EQ(t->Find("/domains/vm1/a")->mtime, 5);
  EXPECT_EQ(t->Find("/domains/vm1/b"), nullptr);
  EXPECT_EQ(t->Find("/domains/vm1@u-old/a")->mtime, 1);
  EXPECT_EQ(t->Find("/domains/vm1@u-old/latest")->content, "b");

  // Neither is a domain here: both carry their uuid; a name alone is shown
  // plain. A domain renamed here gathers its checkpoints under its new name.
  in.domains = {{"renamed", "u-ren"}};
  in.checkpoints.push_back(OfUuid(MakeCheckpoint("solo", "s", 1), "u-solo"));
  in.checkpoints.push_back(OfUuid(MakeCheckpoint("old", "r", 1), "u-ren"));
  t = BuildTree(in, inodes);
  EXPECT_EQ(
      t->Find("/domains")->children,
      (std::vector<std::string>{"renamed", "solo", "vm1@u-new", "vm1@u-old"}));
  EXPECT_NE(t->Find("/domains/renamed/r/vda.img"), nullptr);

  // A stored-only domain takes the name of its newest checkpoint.
  in.domains = {};
  in.checkpoints = {OfUuid(MakeCheckpoint("before", "a", 1), "u1"),
                    OfUuid(MakeCheckpoint("after", "b", 2), "u1")};
  t = BuildTree(in, inodes);
  EXPECT_EQ(t->Find("/domains")->children, (std::vector<std::string>{"after"}));
  EXPECT_EQ(t->Find("/domains/after")->children,
            (std::vector<std::string>{"a", "b", "latest"}));
}

TEST(SeekTest, DataAndHoles) {
  // [0,64K) data, [64K,1M) hole, [1M,1M+64K) zero, [1M+64K, 2M) data.
  std::vector<Extent> e = {
      {0, 65536, false, false},
      {65536, (1 << 20) - 65536, true, true},
      {1 << 20, 65536, false, true},
      {(1 << 20) + 65536, (1 << 20) - 65536, false, false}};
  const uint64_t size = 2 << 20;
  EXPECT_EQ(*SeekExtents(e, size, 0, true), 0u);
  EXPECT_EQ(*SeekExtents(e, size, 0, false), 65536u);
  EXPECT_EQ(*SeekExtents(e, size, 100, true), 100u);
  EXPECT_EQ(*SeekExtents(e, size, 70000, true), (1u << 20) + 65536);
  EXPECT_EQ(*SeekExtents(e, size, (1 << 20) + 70000, false), size);
  auto past = SeekExtents(e, size, size, true);
  EXPECT_EQ(past.status().code(), Code::kOutOfRange);
  std::vector<Extent> trailing_hole = {{0, 4096, false, false},
                                       {4096, 4096, true, false}};
  EXPECT_EQ(SeekExtents(trailing_hole, 8192, 4096, true).status().code(),
            Code::kOutOfRange);
  EXPECT_EQ(*SeekExtents(trailing_hole, 8192, 0, false), 4096u);
}

}  // namespace
}  // namespace ckptfs
