// Tree: an immutable snapshot of the namespace (fuse-archive's Tree). The
// daemon gathers libvirt's domains, the live and stored checkpoints and the
// job ids whenever one of them changes; Namespace::Publish builds a new tree
// from them and publishes it with a shared_ptr swap; FUSE ops read a
// snapshot and never lock the world.
//
// Inode numbers stay stable for a path across snapshots (InodeTable).
//
// Thread safety: a Tree is immutable; InodeTable is thread-safe.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "fs/checkpoint_view.h"

namespace ckptfs {

enum class NodeType {
  kDir,
  kFile,     // static content (README, info.json, checkpoint.xml, .changes)
  kImage,    // <disk>.img
  kSymlink,  // latest
  kControl,  // control/checkpoint, control/release
  kJob,      // control/jobs/<id>.json, rendered when opened
  kStatus,   // control/status.json, rendered when opened
};

struct Node {
  NodeType type = NodeType::kDir;
  uint64_t ino = 0;
  mode_t perm = 0;
  int64_t mtime = 0;
  std::vector<std::string> children;  // kDir, sorted
  std::string content;                // kFile content, kSymlink target
  std::string key;                    // kControl: request kind; kJob: job id
  std::shared_ptr<const CheckpointDisk> disk;        // kImage
  std::shared_ptr<const CheckpointView> checkpoint;  // under a checkpoint
};

// Inode numbers by path, kept across the trees BuildTree makes with it. A
// path keeps its number for as long as every tree built contains it; each
// build drops the paths it does not contain, so the table holds what the
// newest tree holds (jobs, released checkpoints and pruned backups do not
// pile up). A path that comes back gets a new number; numbers are never
// reused. Open files do not need their entries: attributes are always
// looked up by path in the current tree.
//
// REQUIRES: trees built with one table are published in the order they
// were built (Namespace::Publish builds and publishes under one mutex).
class InodeTable {
 public:
  size_t size() const;

 private:
  friend class TreeBuilder;
  struct Entry {
    uint64_t ino = 0;
    uint64_t build = 0;  // the newest build that contains the path
  };

  uint64_t StartBuild();
  uint64_t Get(const std::string& path, uint64_t build);
  // Drops the paths no build since `build` contains.
  void EndBuild(uint64_t build);

  mutable std::mutex mu_;
  std::unordered_map<std::string, Entry> inos_;  // guarded by mu_
  uint64_t next_ = 2;    // 1 is the root; guarded by mu_
  uint64_t builds_ = 0;  // guarded by mu_
};

// A domain libvirt has on this host.
struct TreeDomain {
  std::string name;
  std::string uuid;  // "" when unknown (tests): told apart by name alone
};

// domains/ holds one directory per domain, told apart by uuid: a domain's
// checkpoints (live or stored) sit under the directory of their
// domain_uuid, named by the domain's libvirt name here, or else by the name
// its newest checkpoint recorded. When several uuids share a name (a
// domain undefined and defined again; same-named domains of two hosts
// sharing a store), the one libvirt has here keeps the plain name and every
// other is "<name>@<uuid>", so no path ever means two domains, and a path
// does not change when a backup arrives.
struct TreeInput {
  std::vector<TreeDomain> domains;  // defined or running, any order
  std::vector<std::shared_ptr<const CheckpointView>> checkpoints;
  std::vector<std::string> job_ids;
  std::vector<std::string> control_files = {"checkpoint", "release"};
  bool allow_other = false;
  int64_t mount_time = 0;
  std::string readme;
};

class Tree {
 public:
  // "/" and "/a/b" style paths, as FUSE passes them.
  const Node* Find(std::string_view path) const;
  size_t size() const { return nodes_.size(); }

 private:
  friend class TreeBuilder;
  std::unordered_map<std::string, Node> nodes_;
};

std::shared_ptr<const Tree> BuildTree(const TreeInput& input,
                                      InodeTable& inodes);

// The mount's README text.
std::string ReadmeText();

}  // namespace ckptfs
