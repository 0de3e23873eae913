// The mount table of our mount namespace (/proc/self/mountinfo), for finding
// ckptfs mounts (the clients) and watching our own (the FUSE edge).
//
// Thread safety: functions of values.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace ckptfs {

struct MountEntry {
  std::string devno;       // "0:42": major:minor of the mounted filesystem
  std::string mountpoint;  // decoded: the kernel escapes ' ', '\t', '\n', '\'
  std::string fstype;      // "fuse.ckptfs", "ext4", ...
};

// Parses mountinfo text (proc(5)); lines that do not parse are skipped.
std::vector<MountEntry> ParseMountInfo(std::string_view text);

// Reads and parses /proc/self/mountinfo; empty if it cannot be read.
std::vector<MountEntry> ReadMountInfo();

}  // namespace ckptfs
