#include "backend/mounts.h"

#include <gtest/gtest.h>

namespace ckptfs {
namespace {

TEST(MountsTest, ParsesFieldsAndOptionalFields) {
  auto m = ParseMountInfo(
      "22 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"
      "61 22 0:52 / /mnt/ckptfs rw,nosuid,nodev,relatime shared:33 master:2 "
      "- fuse.ckptfs ckptfs rw,user_id=0,group_id=0\n"
      "62 22 0:53 / /mnt/other rw - fuse.nbdfuse nbdfuse rw\n");
  ASSERT_EQ(m.size(), 3u);
  EXPECT_EQ(m[0].mountpoint, "/");
  EXPECT_EQ(m[0].fstype, "ext4");
  EXPECT_EQ(m[1].devno, "0:52");
  EXPECT_EQ(m[1].mountpoint, "/mnt/ckptfs");
  EXPECT_EQ(m[1].fstype, "fuse.ckptfs");
  EXPECT_EQ(m[2].fstype, "fuse.nbdfuse");  // no optional fields
}

TEST(MountsTest, DecodesTheKernelsEscapes) {
  auto m = ParseMountInfo(
      "61 22 0:52 / /mnt/my\\040vm\\011disks\\012x\\134y rw - fuse.ckptfs "
      "ckptfs rw\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].mountpoint, "/mnt/my vm\tdisks\nx\\y");
  // Not an escape: left as it is.
  m = ParseMountInfo("1 2 0:1 / /a\\9\\04 rw - tmpfs t rw\n");
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].mountpoint, "/a\\9\\04");
}

TEST(MountsTest, SkipsLinesThatDoNotParse) {
  auto m = ParseMountInfo(
      "\n"
      "garbage\n"
      "1 2 0:1 / /no-separator rw tmpfs\n"
      "1 2 0:1 / /no-type rw -\n"
      "1 2 0:1 / /ok rw - tmpfs t rw");  // no final newline
  ASSERT_EQ(m.size(), 1u);
  EXPECT_EQ(m[0].mountpoint, "/ok");
}

TEST(MountsTest, ReadsOurNamespace) {
  bool root = false;
  for (const auto& e : ReadMountInfo()) root = root || e.mountpoint == "/";
  EXPECT_TRUE(root);
}

}  // namespace
}  // namespace ckptfs
