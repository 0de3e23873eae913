#include "mountd/cli.h"

#include <gtest/gtest.h>

namespace ckptfs {
namespace {

TEST(CliTest, ParseSize) {
  EXPECT_EQ(*ParseSize("256M"), 256ull << 20);
  EXPECT_EQ(*ParseSize("1G"), 1ull << 30);
  EXPECT_EQ(*ParseSize("4096"), 4096u);
  EXPECT_EQ(*ParseSize("64K"), 64ull << 10);
  EXPECT_EQ(*ParseSize("2GiB"), 2ull << 30);
  for (const char* bad :
       {"", "M", "12Q", "-1", "1.5G", "99999999999999999999", "99999999999T"}) {
    EXPECT_EQ(ParseSize(bad).status().code(), Code::kInvalidArgument) << bad;
  }
}

TEST(CliTest, FindMountExplicitWins) {
  EXPECT_EQ(*FindMount("/mnt/x"), "/mnt/x");
}

}  // namespace
}  // namespace ckptfs
