// Namespace: the one Filesystem the FUSE edge serves. It answers every op
// from an immutable Tree snapshot (fs/tree.h) that Publish swaps in, opens
// the file handles (fs/handles.h), and leaves what only the daemon knows to
// its NamespaceHost: running a control request, rendering job records and
// status.json, and holding a disk image open.
//
// Thread safety: the Filesystem methods are called concurrently from FUSE
// worker threads; they copy the tree pointer under tree_mu_ and never hold a
// lock while they call the host or read an image. Publish may be called from
// any thread; builds are serialised (publish_mu_), so trees are published in
// the order they were built.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "backend/image_source.h"
#include "fs/filesystem.h"
#include "fs/tree.h"

namespace ckptfs {

// What the namespace asks of the daemon behind it. Called from FUSE worker
// threads, concurrently: implementations are thread-safe.
class NamespaceHost {
 public:
  // A control request's status and the JSON reply read back from the file.
  struct Reply {
    Status status;
    std::string json;
  };
  virtual ~NamespaceHost() = default;
  // Runs one request written to control/<control> (checkpoint, backup,
  // release).
  virtual Reply Submit(std::string_view control, std::string_view line) = 0;
  // control/jobs/<id>.json ("{}\n" once the record is gone) and
  // control/status.json, rendered when opened or stat'ed.
  virtual std::string JobJson(const std::string& id) const = 0;
  virtual std::string StatusJson() const = 0;
  // What an open file of a disk's `image` reads through, for as long as the
  // file is open (HoldImage in mountd/source_factory.h).
  virtual std::shared_ptr<ImageSource> HoldImage(
      const std::shared_ptr<ImageSource>& image) = 0;
};

class Namespace : public Filesystem {
 public:
  // Files are owned by the calling process's user and group.
  explicit Namespace(NamespaceHost& host);

  // Filesystem. REQUIRES: Publish has been called once.
  Result<Attr> GetAttr(std::string_view path) override;
  Result<std::vector<DirEntry>> ReadDir(std::string_view path) override;
  Result<std::string> ReadLink(std::string_view path) override;
  Result<std::unique_ptr<FileHandle>> Open(std::string_view path,
                                           int flags) override;
  Status Truncate(std::string_view path, uint64_t size) override;

  // Builds a tree from `input` and makes it the one the ops read.
  void Publish(const TreeInput& input);
  std::shared_ptr<const Tree> Snapshot() const;

 private:
  Attr MakeAttr(const Node& node) const;
  Result<std::unique_ptr<FileHandle>> OpenNode(const Node& node, int flags);

  NamespaceHost& host_;
  const uint32_t uid_, gid_;
  InodeTable inodes_;
  std::mutex publish_mu_;  // serialises builds with inodes_
  mutable std::mutex tree_mu_;
  std::shared_ptr<const Tree> tree_;  // guarded by tree_mu_
};

}  // namespace ckptfs
