#include "mountd/cli.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <filesystem>
#include <fstream>

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

TEST(CliTest, FindMountExplicitWinsAndMustBeAMount) {
  // A directory that looks like a mount (control/status.json) is taken as
  // named; anything else is refused with a message naming it.
  char tmpl[] = "/tmp/cli_test.XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::filesystem::path dir(tmpl);
  std::filesystem::create_directories(dir / "control");
  std::ofstream(dir / "control/status.json") << "{}";
  setenv("CKPTFS_MOUNT", "/elsewhere", 1);
  auto found = FindMount(dir.string());
  ASSERT_TRUE(found.ok()) << found.status().ToString();
  EXPECT_EQ(*found, dir.string());

  auto missing = FindMount((dir / "control").string());
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_NE(missing.status().message().find("is not a ckptfs mount"),
            std::string::npos)
      << missing.status().ToString();
  // CKPTFS_MOUNT is checked the same way.
  EXPECT_EQ(FindMount("").status().code(), Code::kNotFound);
  setenv("CKPTFS_MOUNT", dir.c_str(), 1);
  EXPECT_EQ(*FindMount(""), dir.string());
  unsetenv("CKPTFS_MOUNT");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace ckptfs
