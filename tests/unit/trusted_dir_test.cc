// Trusted directories (backend/trusted_dir.h): creation with exact modes,
// and refusal, with nothing changed, of foreign owners, writable
// directories and symlinks anywhere an untrusted user could have put them.
// The cases that need another owner chown as root and skip otherwise.
#include "backend/trusted_dir.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

namespace ckptfs {
namespace {

namespace fsys = std::filesystem;

constexpr uid_t kNobody = 65534;

class TrustedDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = fsys::temp_directory_path() / "trusted_dir_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    ASSERT_EQ(chmod(root_.c_str(), 0711), 0);  // mkdtemp made it 0700
    old_umask_ = umask(077);  // created modes must not depend on it
  }
  void TearDown() override {
    umask(old_umask_);
    std::error_code ec;
    fsys::remove_all(root_, ec);
  }

  std::string P(const std::string& rel) const { return root_ + "/" + rel; }
  static mode_t Mode(const std::string& path) {
    struct stat st;
    EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
    return st.st_mode & 07777;
  }
  static void MkDir(const std::string& path, mode_t mode) {
    ASSERT_EQ(mkdir(path.c_str(), 0700), 0) << path;
    ASSERT_EQ(chmod(path.c_str(), mode), 0) << path;
  }
  static void Touch(const std::string& path, const std::string& text = "") {
    std::ofstream(path) << text;
  }
  static std::string Read(const std::string& path) {
    std::ifstream in(path);
    return std::string(std::istreambuf_iterator<char>(in), {});
  }
  static TrustOptions Create(mode_t mode, mode_t parent_mode) {
    TrustOptions o;
    o.what = "run dir";
    o.create = true;
    o.mode = mode;
    o.parent_mode = parent_mode;
    return o;
  }

  std::string root_;
  mode_t old_umask_ = 0;
};

TEST_F(TrustedDirTest, CreatesMissingParentsWithExactModes) {
  auto fd = OpenTrustedDir(P("a/b/run"), Create(0711, 0711));
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  EXPECT_GE(fd->get(), 0);
  EXPECT_EQ(Mode(P("a")), 0711u);
  EXPECT_EQ(Mode(P("a/b")), 0711u);
  EXPECT_EQ(Mode(P("a/b/run")), 0711u);
  // The fd is the directory: files made through it land there.
  auto f = OpenFileAt(fd->get(), ".lock", O_RDWR | O_CREAT, 0600,
                      P("a/b/run/.lock"));
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_TRUE(fsys::is_regular_file(P("a/b/run/.lock")));

  auto store = OpenTrustedDir(P("a/store"), Create(0700, 0711));
  ASSERT_TRUE(store.ok()) << store.status().ToString();
  EXPECT_EQ(Mode(P("a/store")), 0700u);
}

TEST_F(TrustedDirTest, ExistingDirIsOpenedAndKeepsItsMode) {
  MkDir(P("d"), 0755);
  TrustOptions o;
  auto fd = OpenTrustedDir(P("d/"), o);
  ASSERT_TRUE(fd.ok()) << fd.status().ToString();
  EXPECT_EQ(Mode(P("d")), 0755u);
  auto missing = OpenTrustedDir(P("nope"), o);
  EXPECT_EQ(missing.status().code(), Code::kNotFound);
  EXPECT_FALSE(fsys::exists(P("nope")));
}

TEST_F(TrustedDirTest, WritableTargetIsRefusedAndLeftAsItWas) {
  for (mode_t mode : {0777, 0775, 0757, 01777}) {
    MkDir(P("w"), mode);
    auto fd = OpenTrustedDir(P("w"), Create(0711, 0711));
    ASSERT_FALSE(fd.ok()) << std::oct << mode;
    EXPECT_EQ(fd.status().code(), Code::kPermission);
    const std::string m = fd.status().message();
    EXPECT_NE(m.find("run dir " + P("w") + " is owned by"), std::string::npos)
        << m;
    char octal[8];
    snprintf(octal, sizeof(octal), "%04o", static_cast<unsigned>(mode));
    EXPECT_NE(m.find(std::string("mode ") + octal), std::string::npos) << m;
    EXPECT_NE(m.find("not be writable by group or others"), std::string::npos);
    EXPECT_EQ(m.find('\n'), std::string::npos);
    EXPECT_EQ(Mode(P("w")), mode);
    EXPECT_TRUE(fsys::is_empty(P("w")));
    ASSERT_EQ(rmdir(P("w").c_str()), 0);
  }
}

TEST_F(TrustedDirTest, WritableParentIsRefusedUnlessSticky) {
  MkDir(P("open"), 0777);
  auto fd = OpenTrustedDir(P("open/run"), Create(0711, 0711));
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().message().find(P("open") + " is owned by"),
            std::string::npos);
  EXPECT_NE(
      fd.status().message().find("on the way to the run dir " + P("open/run")),
      std::string::npos)
      << fd.status().message();
  EXPECT_FALSE(fsys::exists(P("open/run")));

  // Sticky (like /tmp): others cannot remove or rename what is ours.
  MkDir(P("sticky"), 01777);
  auto ok = OpenTrustedDir(P("sticky/run"), Create(0711, 0711));
  ASSERT_TRUE(ok.ok()) << ok.status().ToString();
  EXPECT_EQ(Mode(P("sticky/run")), 0711u);

  // But a name still to be created by path there could be planted first.
  TrustOptions check;
  check.what = "store";
  Status st = CheckTrustedPath(P("sticky/store"), check);
  EXPECT_EQ(st.code(), Code::kPermission);
  EXPECT_NE(st.message().find("mkdir -m 0700 " + P("sticky/store")),
            std::string::npos)
      << st.message();
  EXPECT_TRUE(CheckTrustedPath(P("sticky/run"), check).ok());
}

TEST_F(TrustedDirTest, ForeignOwnerIsRefusedAsTargetAndAsParent) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  MkDir(P("theirs"), 0755);
  ASSERT_EQ(chown(P("theirs").c_str(), kNobody, kNobody), 0);
  auto fd = OpenTrustedDir(P("theirs"), Create(0711, 0711));
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().message().find("uid 65534"), std::string::npos)
      << fd.status().message();
  EXPECT_NE(fd.status().message().find("it must be owned by root"),
            std::string::npos);
  EXPECT_EQ(Mode(P("theirs")), 0755u);  // no chmod 0711 happened

  auto below = OpenTrustedDir(P("theirs/run"), Create(0711, 0711));
  ASSERT_FALSE(below.ok());
  EXPECT_FALSE(fsys::exists(P("theirs/run")));
  TrustOptions check;
  check.what = "store";
  EXPECT_EQ(CheckTrustedPath(P("theirs/store"), check).code(),
            Code::kPermission);
  EXPECT_EQ(CheckTrustedPath(P("theirs"), check).code(), Code::kPermission);
}

TEST_F(TrustedDirTest, SymlinkAsTargetIsRefusedAndNeverFollowed) {
  MkDir(P("victim"), 0755);
  Touch(P("victim/keep"), "data");
  ASSERT_EQ(symlink(P("victim").c_str(), P("run").c_str()), 0);
  auto fd = OpenTrustedDir(P("run"), Create(0711, 0711));
  ASSERT_FALSE(fd.ok());
  EXPECT_EQ(fd.status().code(), Code::kPermission);
  EXPECT_NE(fd.status().message().find("run dir " + P("run") +
                                       " is a symlink (to " + P("victim")),
            std::string::npos)
      << fd.status().message();
  EXPECT_EQ(Mode(P("victim")), 0755u);
  EXPECT_EQ(Read(P("victim/keep")), "data");
  EXPECT_FALSE(fsys::exists(P("victim/.lock")));
  TrustOptions check;
  EXPECT_EQ(CheckTrustedPath(P("run"), check).code(), Code::kPermission);
  // A dangling one is no better.
  ASSERT_EQ(symlink(P("nowhere").c_str(), P("dangling").c_str()), 0);
  EXPECT_FALSE(OpenTrustedDir(P("dangling"), Create(0711, 0711)).ok());
  EXPECT_FALSE(fsys::exists(P("nowhere")));
}

TEST_F(TrustedDirTest, TrustedSymlinksOnTheWayAreFollowed) {
  MkDir(P("real"), 0755);
  ASSERT_EQ(symlink(P("real").c_str(), P("abs").c_str()), 0);
  ASSERT_EQ(symlink("real", P("rel").c_str()), 0);
  MkDir(P("real/sub"), 0755);
  ASSERT_EQ(symlink("..", P("real/sub/up").c_str()), 0);  // = real
  for (const char* via : {"abs/run1", "rel/run2", "real/sub/up/run3"}) {
    auto fd = OpenTrustedDir(P(via), Create(0711, 0711));
    ASSERT_TRUE(fd.ok()) << via << ": " << fd.status().ToString();
  }
  EXPECT_TRUE(fsys::is_directory(P("real/run1")));
  EXPECT_TRUE(fsys::is_directory(P("real/run2")));
  EXPECT_TRUE(fsys::is_directory(P("real/run3")));

  ASSERT_EQ(symlink("loop2", P("loop1").c_str()), 0);
  ASSERT_EQ(symlink("loop1", P("loop2").c_str()), 0);
  auto loop = OpenTrustedDir(P("loop1/run"), Create(0711, 0711));
  EXPECT_FALSE(loop.ok());
  EXPECT_NE(loop.status().message().find("too many symlinks"),
            std::string::npos)
      << loop.status().message();
}

TEST_F(TrustedDirTest, ForeignSymlinkOnTheWayIsRefused) {
  if (geteuid() != 0) GTEST_SKIP() << "needs root to chown";
  MkDir(P("real"), 0755);
  ASSERT_EQ(symlink(P("real").c_str(), P("theirs").c_str()), 0);
  ASSERT_EQ(lchown(P("theirs").c_str(), kNobody, kNobody), 0);
  auto fd = OpenTrustedDir(P("theirs/run"), Create(0711, 0711));
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().message().find("is a symlink owned by"),
            std::string::npos)
      << fd.status().message();
  EXPECT_FALSE(fsys::exists(P("real/run")));
}

TEST_F(TrustedDirTest, NotADirectoryIsNamed) {
  Touch(P("afile"));
  TrustOptions check;
  check.what = "store";
  Status st = CheckTrustedPath(P("afile"), check);
  EXPECT_EQ(st.message(), "store path " + P("afile") + " is not a directory");
  auto below = OpenTrustedDir(P("afile/run"), Create(0711, 0711));
  ASSERT_FALSE(below.ok());
  EXPECT_NE(below.status().message().find(P("afile") + " (on the way to"),
            std::string::npos);
}

TEST_F(TrustedDirTest, ParentsMustBeSearchableByTheGivenUser) {
  MkDir(P("closed"), 0700);
  TrustOptions o = Create(0711, 0711);
  o.searchable_by = Searcher{"qemu-test", kNobody, {kNobody}};
  auto fd = OpenTrustedDir(P("closed/run"), o);
  ASSERT_FALSE(fd.ok());
  EXPECT_NE(fd.status().message().find("user qemu-test must be able to search "
                                       "it to reach the run dir: chmod o+x " +
                                       P("closed")),
            std::string::npos)
      << fd.status().message();
  EXPECT_FALSE(fsys::exists(P("closed/run")));
  // Group search is enough for a member of the directory's group.
  ASSERT_EQ(chmod(P("closed").c_str(), 0710), 0);
  struct stat st;
  ASSERT_EQ(stat(P("closed").c_str(), &st), 0);
  o.searchable_by->gids = {st.st_gid};
  EXPECT_TRUE(OpenTrustedDir(P("closed/run"), o).ok());
  // The parents created on the way (0711) pass too.
  EXPECT_TRUE(OpenTrustedDir(P("closed/x/y/run"), o).ok());
}

TEST_F(TrustedDirTest, CheckTrustedPathCreatesNothing) {
  TrustOptions check;
  check.what = "store";
  EXPECT_TRUE(CheckTrustedPath(P("x/y/store"), check).ok());
  EXPECT_FALSE(fsys::exists(P("x")));
}

TEST_F(TrustedDirTest, OpenFileAtRefusesSymlinksAndOddFiles) {
  auto dir = OpenTrustedDir(root_, TrustOptions{});
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  // A symlink to a file that does not exist yet: O_CREAT must not make it.
  ASSERT_EQ(symlink(P("victim").c_str(), P(".lock").c_str()), 0);
  auto f = OpenFileAt(dir->get(), ".lock", O_RDWR | O_CREAT, 0600, P(".lock"));
  ASSERT_FALSE(f.ok());
  EXPECT_NE(f.status().message().find(P(".lock") + " is a symlink (to " +
                                      P("victim") + ")"),
            std::string::npos)
      << f.status().message();
  EXPECT_FALSE(fsys::exists(P("victim")));
  // To one that exists: left alone.
  Touch(P("victim"), "secret");
  EXPECT_FALSE(
      OpenFileAt(dir->get(), ".lock", O_RDWR | O_CREAT, 0600, P(".lock")).ok());
  EXPECT_EQ(Read(P("victim")), "secret");
  EXPECT_EQ(Mode(P("victim")), 0600u);

  ASSERT_EQ(mkfifo(P("fifo").c_str(), 0600), 0);
  EXPECT_FALSE(OpenFileAt(dir->get(), "fifo", O_RDWR, 0, P("fifo")).ok());
  MkDir(P("adir"), 0700);
  EXPECT_FALSE(OpenFileAt(dir->get(), "adir", O_RDONLY, 0, P("adir")).ok());

  auto made = OpenFileAt(dir->get(), "new", O_RDWR | O_CREAT, 0600, P("new"));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(Mode(P("new")), 0600u);
}

TEST_F(TrustedDirTest, OpenSubdirAtRefusesSymlinksAndFiles) {
  auto dir = OpenTrustedDir(root_, TrustOptions{});
  ASSERT_TRUE(dir.ok());
  MkDir(P("victim"), 0755);
  ASSERT_EQ(symlink(P("victim").c_str(), P("link").c_str()), 0);
  auto l = OpenSubdirAt(dir->get(), "link", 0700, P("link"));
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.status().message().find("is a symlink (to " + P("victim")),
            std::string::npos);
  EXPECT_EQ(Mode(P("victim")), 0755u);
  Touch(P("afile"));
  EXPECT_FALSE(OpenSubdirAt(dir->get(), "afile", 0700, P("afile")).ok());
  EXPECT_EQ(
      OpenSubdirAt(dir->get(), "new", std::nullopt, P("new")).status().code(),
      Code::kNotFound);
  EXPECT_FALSE(fsys::exists(P("new")));
  auto made = OpenSubdirAt(dir->get(), "new", 0700, P("new"));
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  EXPECT_EQ(Mode(P("new")), 0700u);
}

TEST_F(TrustedDirTest, EmptyDirAtRemovesLinksNeverWhatTheyNameNorItself) {
  MkDir(P("victim"), 0755);
  Touch(P("victim/keep"), "data");
  Touch(P("victim-file"), "file");
  MkDir(P("d"), 0700);
  Touch(P("d/nbd.sock"));
  Touch(P("d/vda.scratch"), "x");
  MkDir(P("d/sub"), 0700);
  Touch(P("d/sub/f"));
  ASSERT_EQ(symlink(P("victim").c_str(), P("d/dirlink").c_str()), 0);
  ASSERT_EQ(symlink(P("victim-file").c_str(), P("d/filelink").c_str()), 0);
  ASSERT_EQ(symlink(P("victim").c_str(), P("d/sub/deeplink").c_str()), 0);
  auto dir = OpenTrustedDir(P("d"), TrustOptions{});
  ASSERT_TRUE(dir.ok());
  Status st = EmptyDirAt(dir->get(), P("d"));
  EXPECT_TRUE(st.ok()) << st.ToString();
  EXPECT_TRUE(fsys::is_directory(P("d")));
  EXPECT_TRUE(fsys::is_empty(P("d")));
  EXPECT_EQ(Read(P("victim/keep")), "data");
  EXPECT_EQ(Read(P("victim-file")), "file");
  EXPECT_EQ(Mode(P("victim")), 0755u);
}

TEST_F(TrustedDirTest, LookUpSearcher) {
  auto root = LookUpSearcher("root");
  ASSERT_TRUE(root.ok()) << root.status().ToString();
  EXPECT_EQ(root->uid, 0u);
  EXPECT_NE(std::find(root->gids.begin(), root->gids.end(), 0u),
            root->gids.end());
  EXPECT_EQ(LookUpSearcher("no-such-user-ckptfs").status().code(),
            Code::kNotFound);
}

}  // namespace
}  // namespace ckptfs
