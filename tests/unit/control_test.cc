#include "mountd/control.h"

#include <gtest/gtest.h>

#include <string>

#include "mountd/jobs.h"

namespace ckptfs {
namespace {

Result<Request> Ckpt(std::string_view line) {
  return ParseRequest(RequestKind::kCheckpoint, line);
}

TEST(ControlTest, CheckpointMinimal) {
  auto r = Ckpt("vm1\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->domain, "vm1");
  EXPECT_TRUE(r->name.empty());
  EXPECT_TRUE(r->disks.empty());
}

TEST(ControlTest, CheckpointWithKeys) {
  auto r = Ckpt("  vm1\tname=nightly-1  disks=vda,vdb\r\n");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->name, "nightly-1");
  EXPECT_EQ(r->disks, (std::vector<std::string>{"vda", "vdb"}));
}

TEST(ControlTest, Release) {
  auto r = ParseRequest(RequestKind::kRelease, "vm1 cp1");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->domain, "vm1");
  EXPECT_EQ(r->checkpoint, "cp1");
  EXPECT_FALSE(ParseRequest(RequestKind::kRelease, "vm1").ok());
  EXPECT_FALSE(ParseRequest(RequestKind::kRelease, "vm1 cp1 cp2").ok());
  EXPECT_FALSE(ParseRequest(RequestKind::kRelease, "vm1 cp1 name=x").ok());
}

TEST(ControlTest, Backup) {
  auto r = ParseRequest(RequestKind::kBackup, "vm1 checkpoint=cp1 mode=full");
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->checkpoint, "cp1");
  EXPECT_EQ(r->mode, "full");
  EXPECT_FALSE(ParseRequest(RequestKind::kBackup, "vm1 mode=fast").ok());
  EXPECT_FALSE(
      ParseRequest(RequestKind::kBackup, "vm1 name=a checkpoint=b").ok());
}

struct BadCase {
  const char* line;
  const char* why;
};

class ControlBadInputTest : public ::testing::TestWithParam<BadCase> {};

TEST_P(ControlBadInputTest, RejectedAsInvalid) {
  auto r = Ckpt(GetParam().line);
  ASSERT_FALSE(r.ok()) << GetParam().why;
  EXPECT_EQ(r.status().code(), Code::kInvalidArgument) << GetParam().why;
  EXPECT_FALSE(r.status().message().empty());
}

INSTANTIATE_TEST_SUITE_P(
    All, ControlBadInputTest,
    ::testing::Values(BadCase{"", "empty"}, BadCase{"\n", "empty line"},
                      BadCase{"   \t ", "blank"},
                      BadCase{"vm1 name=../x", "slash in name"},
                      BadCase{"vm1 name=.hidden", "leading dot"},
                      BadCase{"vm1 name=latest", "reserved name"},
                      BadCase{"vm1 name=a\\b", "backslash"},
                      BadCase{"vm1 name=a:b@c+d", "libvirt refuses it"},
                      BadCase{"vm1 foo=bar", "unknown key"},
                      BadCase{"vm1 name=a name=b", "duplicate key"},
                      BadCase{"vm1 name=", "empty value"},
                      BadCase{"vm1 disks=vda,,vdb", "empty disk"},
                      BadCase{"vm1 disks=vda,vda", "duplicate disk"},
                      BadCase{"vm1 disks=VDA", "bad disk name"},
                      BadCase{"vm1 vm2", "extra positional"},
                      BadCase{"name=x", "missing domain"},
                      BadCase{"name=x vm1", "positional after keys"},
                      BadCase{"vm1\nvm2\n", "two lines"},
                      BadCase{"vm1\x01", "control character"},
                      BadCase{"vm1 name=caf\xc3\xa9", "non-ASCII name"},
                      BadCase{"..", "dot-dot domain"},
                      BadCase{"a/b", "slash in domain"},
                      BadCase{"vm1 mode=full", "mode is for backup"}));

TEST(ControlTest, NameLengthBound) {
  std::string ok(kMaxNameLength, 'a');
  EXPECT_TRUE(Ckpt("vm1 name=" + ok).ok());
  EXPECT_FALSE(Ckpt("vm1 name=" + ok + "a").ok());
}

TEST(ControlTest, HugeAndBinaryInput) {
  EXPECT_FALSE(Ckpt(std::string(kMaxRequestBytes + 1, 'a')).ok());
  std::string binary;
  for (int i = 0; i < 256; ++i) binary += static_cast<char>(i);
  EXPECT_FALSE(Ckpt(binary).ok());
  EXPECT_FALSE(Ckpt(std::string("vm1\0name=x", 10)).ok());
}

// Found by fuzz.control (tests/fuzz/corpus/control/crash-non-utf8-domain):
// "vm1\xf8" was accepted, and a request or error message that is not UTF-8
// made the JSON reply throw (nlohmann::json refuses such strings), which
// ended the daemon. UTF-8 domain names stay valid.
TEST(ControlTest, NonUtf8IsRejectedAndTheReplyRenders) {
  for (const char* line : {"vm1\xf8", "vm1 disks=vd\xff", "a/\xc3",
                           "\xed\xa0\x80 name=x", "\xc0\xaf"}) {
    SCOPED_TRACE(SanitizeForRecord(line));
    auto r = Ckpt(line);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), Code::kInvalidArgument);
    Job job;
    job.request = SanitizeForRecord(line);
    job.state = "rejected";
    job.error = r.status().message();
    EXPECT_NO_THROW((void)JobResponse(job).dump());
  }
  auto r = Ckpt("caf\xc3\xa9 name=x");
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(r->domain, "caf\xc3\xa9");
}

TEST(ControlTest, SanitizeForRecord) {
  EXPECT_EQ(SanitizeForRecord("vm1\x01\n"), "vm1?");
  EXPECT_EQ(SanitizeForRecord("vm1 mode=full\n"), "vm1 mode=full");
  EXPECT_EQ(SanitizeForRecord(std::string(300, 'a')).size(), 259u);
}

TEST(ControlTest, MessagesSayWhatToDo) {
  auto r = Ckpt("vm1 colour=red");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("known: disks, name"), std::string::npos)
      << r.status().message();
}

TEST(ControlTest, HostIds) {
  for (const char* ok : {"a", "node-2", "Host_1.example.org", "0"}) {
    EXPECT_TRUE(ValidateHostId(ok).ok()) << ok;
  }
  const std::string too_long(65, 'x');
  for (std::string_view bad :
       {std::string_view(""), std::string_view("-a"), std::string_view(".a"),
        std::string_view("a/b"), std::string_view("a b"),
        std::string_view("a@b"), std::string_view("a\0b", 3),
        std::string_view(too_long)}) {
    Status st = ValidateHostId(bad);
    EXPECT_EQ(st.code(), Code::kInvalidArgument) << bad;
  }
  EXPECT_TRUE(ValidateHostId(std::string(64, 'x')).ok());
}

}  // namespace
}  // namespace ckptfs
