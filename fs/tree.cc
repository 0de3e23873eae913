#include "fs/tree.h"

#include <algorithm>
#include <climits>
#include <cstdint>
#include <map>

namespace ckptfs {

size_t InodeTable::size() const {
  std::lock_guard lock(mu_);
  return inos_.size();
}

uint64_t InodeTable::StartBuild() {
  std::lock_guard lock(mu_);
  return ++builds_;
}

uint64_t InodeTable::Get(const std::string& path, uint64_t build) {
  if (path == "/") return 1;
  std::lock_guard lock(mu_);
  auto [it, inserted] = inos_.try_emplace(path, Entry{next_, build});
  if (inserted) ++next_;
  it->second.build = std::max(it->second.build, build);
  return it->second.ino;
}

void InodeTable::EndBuild(uint64_t build) {
  std::lock_guard lock(mu_);
  std::erase_if(inos_, [&](const auto& kv) { return kv.second.build < build; });
}

const Node* Tree::Find(std::string_view path) const {
  if (path.size() > 1 && path.back() == '/') path.remove_suffix(1);
  auto it = nodes_.find(std::string(path));
  return it == nodes_.end() ? nullptr : &it->second;
}

namespace {

using Checkpoints = std::vector<std::shared_ptr<const CheckpointView>>;

// A domain's key: its uuid, or its name when the uuid is unknown.
std::string DomainKey(const std::string& name, const std::string& uuid) {
  return uuid.empty() ? "name:" + name : uuid;
}

// The directories of domains/ and their checkpoints (see TreeInput).
std::map<std::string, Checkpoints> DomainDirs(const TreeInput& in) {
  struct Group {
    std::string name;
    std::string uuid;
    bool here = false;  // libvirt has it on this host
    int64_t newest = INT64_MIN;
    Checkpoints checkpoints;
  };
  std::map<std::string, Group> groups;
  for (const auto& d : in.domains) {
    Group& g = groups[DomainKey(d.name, d.uuid)];
    g.name = d.name;
    g.uuid = d.uuid;
    g.here = true;
  }
  for (const auto& c : in.checkpoints) {
    Group& g = groups[DomainKey(c->domain, c->domain_uuid)];
    g.uuid = c->domain_uuid;
    if (!g.here && c->created >= g.newest) {
      g.name = c->domain;
      g.newest = c->created;
    }
    g.checkpoints.push_back(c);
  }
  std::map<std::string, int> uses;
  for (const auto& [key, g] : groups) ++uses[g.name];
  std::map<std::string, Checkpoints> dirs;
  for (auto& [key, g] : groups) {
    const bool plain = uses[g.name] == 1 || g.here || g.uuid.empty();
    const std::string dir = plain ? g.name : g.name + "@" + g.uuid;
    Checkpoints& out = dirs[dir];
    out.insert(out.end(), g.checkpoints.begin(), g.checkpoints.end());
  }
  return dirs;
}

}  // namespace

class TreeBuilder {
 public:
  TreeBuilder(const TreeInput& in, InodeTable& inodes)
      : in_(in),
        inodes_(inodes),
        build_(inodes.StartBuild()),
        tree_(std::make_shared<Tree>()) {
    file_perm_ = in.allow_other ? 0444 : 0400;
    dir_perm_ = in.allow_other ? 0555 : 0500;
  }

  Node& Add(const std::string& path, NodeType type, mode_t perm,
            int64_t mtime) {
    Node& n = tree_->nodes_[path];
    n.type = type;
    n.ino = inodes_.Get(path, build_);
    n.perm = perm;
    n.mtime = mtime;
    if (path != "/") {
      size_t slash = path.rfind('/');
      std::string parent = slash == 0 ? "/" : path.substr(0, slash);
      tree_->nodes_[parent].children.push_back(path.substr(slash + 1));
    }
    return n;
  }

  std::shared_ptr<const Tree> Build() {
    int64_t t = in_.mount_time;
    Add("/", NodeType::kDir, dir_perm_, t);
    Add("/README", NodeType::kFile, file_perm_, t).content = in_.readme;
    Add("/domains", NodeType::kDir, dir_perm_, t);
    // Control files stay owner-only even with --allow-other: they start
    // jobs on domains.
    Add("/control", NodeType::kDir, 0700, t);
    for (const auto& c : in_.control_files) {
      Add("/control/" + c, NodeType::kControl, 0600, t).key = c;
    }
    Add("/control/status.json", NodeType::kStatus, 0400, t);
    Add("/control/jobs", NodeType::kDir, 0500, t);
    for (const auto& id : in_.job_ids) {
      Add("/control/jobs/" + id + ".json", NodeType::kJob, 0400, t).key = id;
    }

    for (auto& [dir, cps] : DomainDirs(in_)) {
      const std::string dpath = "/domains/" + dir;
      Add(dpath, NodeType::kDir, dir_perm_, t);
      std::stable_sort(
          cps.begin(), cps.end(),
          [](const auto& a, const auto& b) { return a->created < b->created; });
      for (const auto& cp : cps) AddCheckpoint(dpath, cp);
      if (!cps.empty()) {
        Add(dpath + "/latest", NodeType::kSymlink, 0777, cps.back()->created)
            .content = cps.back()->name;
      }
    }
    for (auto& [path, node] : tree_->nodes_) {
      std::sort(node.children.begin(), node.children.end());
    }
    inodes_.EndBuild(build_);
    return tree_;
  }

 private:
  void AddCheckpoint(const std::string& dpath,
                     const std::shared_ptr<const CheckpointView>& cp) {
    const std::string cpath = dpath + "/" + cp->name;
    const int64_t t = cp->created;
    Add(cpath, NodeType::kDir, dir_perm_, t).checkpoint = cp;
    Node& xml = Add(cpath + "/checkpoint.xml", NodeType::kFile, file_perm_, t);
    xml.content = cp->xml;
    xml.checkpoint = cp;
    Node& info = Add(cpath + "/info.json", NodeType::kFile, file_perm_, t);
    info.content = cp->info_json;
    info.checkpoint = cp;
    for (const auto& disk : cp->disks) {
      Node& img = Add(cpath + "/" + disk->target + ".img", NodeType::kImage,
                      file_perm_, t);
      img.disk = disk;
      img.checkpoint = cp;
      Node& ch = Add(cpath + "/" + disk->target + ".changes", NodeType::kFile,
                     file_perm_, t);
      ch.content = disk->changes;
      ch.checkpoint = cp;
    }
  }

  const TreeInput& in_;
  InodeTable& inodes_;
  const uint64_t build_;
  std::shared_ptr<Tree> tree_;
  mode_t file_perm_;
  mode_t dir_perm_;
};

std::shared_ptr<const Tree> BuildTree(const TreeInput& input,
                                      InodeTable& inodes) {
  return TreeBuilder(input, inodes).Build();
}

std::string ReadmeText() {
  return R"(ckptfs: every libvirt domain / checkpoint / disk as a read-only raw image.

domains/<domain>/<checkpoint>/<disk>.img      the disk as of the checkpoint (raw, read-only;
                                              holes are real: cp --sparse, qemu-img convert)
domains/<domain>/<checkpoint>/<disk>.changes  "<offset> <length>" per line: extents changed since
                                              the base checkpoint (info.json names it)
domains/<domain>/<checkpoint>/checkpoint.xml  libvirt's checkpoint XML (with the domain XML)
domains/<domain>/<checkpoint>/info.json       state, base, created, per-disk size/allocated/source
domains/<domain>/latest                       the newest checkpoint that has data

control/checkpoint   write "DOMAIN [name=NAME] [disks=vda,vdb]" to create a live checkpoint
control/release      write "DOMAIN CHECKPOINT" to end its export (the checkpoint stays in libvirt)
control/jobs/        one JSON record per request
control/status.json  daemon version, cache statistics, live exports

A write returns 0 when the request is accepted, else EINVAL (malformed), ENOENT (unknown
domain/checkpoint/disk), EBUSY (a job holds the domain) or EIO (libvirt failure). Open the
control file read-write to read the JSON reply after the write, e.g.:
  exec 3<>control/checkpoint; echo vm1 >&3; cat <&3; exec 3>&-
or use the CLI: ckptfs checkpoint vm1; ckptfs release vm1 NAME; ckptfs jobs.
A live checkpoint keeps a backup job open on its domain (QEMU's scratch file grows with guest
writes): release it when done. `ckptfs umount` ends every live export.
)";
}

}  // namespace ckptfs
