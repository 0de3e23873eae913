// Tree: an immutable snapshot of the namespace (fuse-archive's Tree). The
// daemon builds a new one from libvirt's domains, the live checkpoints and the
// job ids whenever one of them changes, and publishes it with a shared_ptr
// swap; FUSE ops read a snapshot and never lock the world.
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

#include "mountd/checkpoint.h"

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

class InodeTable {
 public:
  uint64_t Get(const std::string& path);

 private:
  std::mutex mu_;
  std::unordered_map<std::string, uint64_t> inos_;
  uint64_t next_ = 2;  // 1 is the root
};

struct TreeInput {
  std::vector<std::string> domains;  // defined or running, any order
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
