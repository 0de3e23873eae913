#include "fs/namespace.h"

#include <fcntl.h>
#include <unistd.h>

#include "backend/clock.h"
#include "fs/handles.h"

namespace ckptfs {
namespace {

bool Writes(int flags) { return (flags & O_ACCMODE) != O_RDONLY; }

}  // namespace

Namespace::Namespace(NamespaceHost& host)
    : host_(host), uid_(getuid()), gid_(getgid()) {}

std::shared_ptr<const Tree> Namespace::Snapshot() const {
  std::lock_guard lock(tree_mu_);
  return tree_;
}

void Namespace::Publish(const TreeInput& input) {
  std::lock_guard lock(publish_mu_);
  auto tree = BuildTree(input, inodes_);
  std::lock_guard tlock(tree_mu_);
  tree_ = std::move(tree);
}

Attr Namespace::MakeAttr(const Node& n) const {
  Attr a;
  a.ino = n.ino;
  a.mtime = n.mtime;
  a.uid = uid_;
  a.gid = gid_;
  switch (n.type) {
    case NodeType::kDir:
      a.mode = S_IFDIR | n.perm;
      a.nlink = 2;
      a.size = 0;
      break;
    case NodeType::kSymlink:
      a.mode = S_IFLNK | n.perm;
      a.size = n.content.size();
      break;
    case NodeType::kImage:
      a.mode = S_IFREG | n.perm;
      a.size = n.disk->size;
      a.blocks = (n.disk->allocated + 511) / 512;
      break;
    case NodeType::kFile:
      a.mode = S_IFREG | n.perm;
      a.size = n.content.size();
      a.blocks = (a.size + 511) / 512;
      break;
    case NodeType::kJob:
      a.mode = S_IFREG | n.perm;
      a.size = host_.JobJson(n.key).size();
      break;
    case NodeType::kStatus:
      a.mode = S_IFREG | n.perm;
      a.size = host_.StatusJson().size();
      a.mtime = NowMs() / 1000;
      break;
    case NodeType::kControl:
      a.mode = S_IFREG | n.perm;
      break;
  }
  return a;
}

Result<Attr> Namespace::GetAttr(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  return MakeAttr(*n);
}

Result<std::vector<DirEntry>> Namespace::ReadDir(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such directory");
  if (n->type != NodeType::kDir) return InvalidArgument("not a directory");
  std::string prefix(path);
  if (prefix.back() != '/') prefix += '/';
  std::vector<DirEntry> out;
  for (const auto& name : n->children) {
    const Node* c = tree->Find(prefix + name);
    if (c) out.push_back({name, MakeAttr(*c)});
  }
  return out;
}

Result<std::string> Namespace::ReadLink(std::string_view path) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such link");
  if (n->type != NodeType::kSymlink) return InvalidArgument("not a link");
  return n->content;
}

Result<std::unique_ptr<FileHandle>> Namespace::Open(std::string_view path,
                                                    int flags) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  auto r = OpenNode(*n, flags);
  if (r.ok()) (*r)->set_attr(MakeAttr(*n));
  return r;
}

Result<std::unique_ptr<FileHandle>> Namespace::OpenNode(const Node& node,
                                                        int flags) {
  const Node* n = &node;
  if (n->type == NodeType::kControl) {
    return std::unique_ptr<FileHandle>(new ControlHandle(host_, n->key));
  }
  if (Writes(flags) || (flags & O_TRUNC)) {
    return ReadOnly("read-only: checkpoint images never change");
  }
  switch (n->type) {
    case NodeType::kImage:
      return std::unique_ptr<FileHandle>(
          new ImageHandle(n->disk, host_.HoldImage(n->disk->image)));
    case NodeType::kFile:
      return std::unique_ptr<FileHandle>(new StringHandle(n->content, false));
    case NodeType::kJob:
      return std::unique_ptr<FileHandle>(
          new StringHandle(host_.JobJson(n->key), true));
    case NodeType::kStatus:
      return std::unique_ptr<FileHandle>(
          new StringHandle(host_.StatusJson(), true));
    default:
      return InvalidArgument("not a regular file");
  }
}

Status Namespace::Truncate(std::string_view path, uint64_t) {
  auto tree = Snapshot();
  const Node* n = tree->Find(path);
  if (!n) return NotFound("no such file");
  // Shells open control files with O_TRUNC; there is nothing to truncate.
  if (n->type == NodeType::kControl) return Status::Ok();
  return ReadOnly("read-only");
}

}  // namespace ckptfs
