// Namespace: the Filesystem the FUSE edge serves, driven directly (no mount)
// over a fake NamespaceHost.
#include "fs/namespace.h"

#include <fcntl.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <string>
#include <vector>

#include "tests/fakes/memory_image_source.h"

namespace ckptfs {
namespace {

class FakeHost : public NamespaceHost {
 public:
  Reply Submit(std::string_view control, std::string_view line) override {
    std::lock_guard lock(mu_);
    requests.push_back(std::string(control) + ":" + std::string(line));
    if (line == "bad") return {InvalidArgument("bad request"), "{\"e\":1}\n"};
    return {Status::Ok(), "{\"ok\":true}\n"};
  }
  std::string JobJson(const std::string& id) const override {
    return "{\"id\":\"" + id + "\"}\n";
  }
  std::string StatusJson() const override { return "{\"status\":1}\n"; }
  std::shared_ptr<ImageSource> HoldImage(
      const std::shared_ptr<ImageSource>& image) override {
    ++holds;
    return image;
  }

  std::mutex mu_;
  std::vector<std::string> requests;  // guarded by mu_
  std::atomic<int> holds{0};
};

std::vector<std::byte> Bytes(size_t n) {
  std::vector<std::byte> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = std::byte(i % 251);
  return out;
}

TreeInput Input() {
  TreeInput in;
  in.domains = {{"vm1"}};
  in.control_files = {"backup", "checkpoint", "release"};
  in.job_ids = {"j1"};
  in.readme = "hello\n";
  in.mount_time = 1000;
  auto v = std::make_shared<CheckpointView>();
  v->domain = "vm1";
  v->name = "c1";
  v->created = 2000;
  v->info_json = "{}\n";
  auto d = std::make_shared<CheckpointDisk>();
  d->target = "vda";
  d->size = 8192;
  d->allocated = 4096;
  d->extents = {{0, 4096, false, false}, {4096, 4096, true, true}};
  d->image = std::make_shared<MemoryImageSource>(Bytes(8192));
  v->disks.push_back(d);
  in.checkpoints.push_back(v);
  return in;
}

std::string ReadAll(FileHandle& h) {
  std::string out(4096, '\0');
  auto n = h.Read(std::as_writable_bytes(std::span(out)), 0);
  EXPECT_TRUE(n.ok());
  out.resize(n.ok() ? *n : 0);
  return out;
}

TEST(NamespaceTest, ServesTheTreeItWasGiven) {
  FakeHost host;
  Namespace ns(host);
  ns.Publish(Input());
  auto root = ns.GetAttr("/");
  ASSERT_TRUE(root.ok());
  EXPECT_TRUE(S_ISDIR(root->mode));
  EXPECT_EQ(root->ino, 1u);
  auto entries = ns.ReadDir("/");
  ASSERT_TRUE(entries.ok());
  std::vector<std::string> names;
  for (const auto& e : *entries) names.push_back(e.name);
  EXPECT_EQ(names, (std::vector<std::string>{"README", "control", "domains"}));
  EXPECT_EQ(*ns.ReadLink("/domains/vm1/latest"), "c1");
  auto img = ns.GetAttr("/domains/vm1/c1/vda.img");
  ASSERT_TRUE(img.ok());
  EXPECT_EQ(img->size, 8192u);
  EXPECT_EQ(img->blocks, 8u);
  EXPECT_EQ(ns.GetAttr("/nope").status().code(), Code::kNotFound);
  // A job record's size is what the host renders.
  EXPECT_EQ(ns.GetAttr("/control/jobs/j1.json")->size,
            host.JobJson("j1").size());
}

TEST(NamespaceTest, ImagesReadThroughTheHostsHold) {
  FakeHost host;
  Namespace ns(host);
  ns.Publish(Input());
  auto h = ns.Open("/domains/vm1/c1/vda.img", O_RDONLY);
  ASSERT_TRUE(h.ok());
  EXPECT_EQ(host.holds.load(), 1);
  EXPECT_TRUE((*h)->keep_cache());
  std::vector<std::byte> buf(100);
  ASSERT_EQ(*(*h)->Read(buf, 300), 100u);
  EXPECT_EQ(buf[0], std::byte(300 % 251));
  EXPECT_EQ(*(*h)->Seek(0, SEEK_HOLE), 4096u);
  EXPECT_EQ((*h)->attr().size, 8192u);
  // Images never change.
  EXPECT_EQ(ns.Open("/domains/vm1/c1/vda.img", O_RDWR).status().code(),
            Code::kReadOnly);
  EXPECT_EQ(ns.Truncate("/domains/vm1/c1/vda.img", 0).code(), Code::kReadOnly);
}

TEST(NamespaceTest, ControlWritesAreRequestsToTheHost) {
  FakeHost host;
  Namespace ns(host);
  ns.Publish(Input());
  // Shells open control files with O_TRUNC.
  EXPECT_TRUE(ns.Truncate("/control/backup", 0).ok());
  auto h = ns.Open("/control/backup", O_RDWR | O_TRUNC);
  ASSERT_TRUE(h.ok());
  const std::string line = "vm1 mode=full\n";
  auto w = (*h)->Write(std::as_bytes(std::span(line)), 0);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(*w, line.size());
  EXPECT_EQ(ReadAll(**h), "{\"ok\":true}\n");
  const std::string bad = "bad";
  EXPECT_EQ((*h)->Write(std::as_bytes(std::span(bad)), 0).status().code(),
            Code::kInvalidArgument);
  EXPECT_EQ(ReadAll(**h), "{\"e\":1}\n");
  EXPECT_EQ(host.requests,
            (std::vector<std::string>{"backup:" + line, "backup:bad"}));
}

TEST(NamespaceTest, RenderedFilesComeFromTheHost) {
  FakeHost host;
  Namespace ns(host);
  ns.Publish(Input());
  auto status = ns.Open("/control/status.json", O_RDONLY);
  ASSERT_TRUE(status.ok());
  EXPECT_TRUE((*status)->direct_io());
  EXPECT_EQ(ReadAll(**status), host.StatusJson());
  auto job = ns.Open("/control/jobs/j1.json", O_RDONLY);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(ReadAll(**job), host.JobJson("j1"));
  auto readme = ns.Open("/README", O_RDONLY);
  ASSERT_TRUE(readme.ok());
  EXPECT_EQ(ReadAll(**readme), "hello\n");
}

TEST(NamespaceTest, APublishedTreeReplacesTheOldOne) {
  FakeHost host;
  Namespace ns(host);
  TreeInput in = Input();
  ns.Publish(in);
  const uint64_t ino = ns.GetAttr("/domains/vm1")->ino;
  // An open file keeps its checkpoint after the tree drops it.
  auto h = ns.Open("/domains/vm1/c1/vda.img", O_RDONLY);
  ASSERT_TRUE(h.ok());
  in.checkpoints.clear();
  ns.Publish(in);
  EXPECT_EQ(ns.GetAttr("/domains/vm1/c1").status().code(), Code::kNotFound);
  EXPECT_EQ(ns.GetAttr("/domains/vm1")->ino, ino);
  std::vector<std::byte> buf(10);
  EXPECT_EQ(*(*h)->Read(buf, 0), 10u);
}

}  // namespace
}  // namespace ckptfs
