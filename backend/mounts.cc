#include "backend/mounts.h"

#include <fstream>
#include <sstream>

namespace ckptfs {
namespace {

// The kernel writes ' ', '\t', '\n' and '\' of a path as \ooo (octal).
std::string Unescape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && s[i + 1] >= '0' &&
        s[i + 1] <= '3' && s[i + 2] >= '0' && s[i + 2] <= '7' &&
        s[i + 3] >= '0' && s[i + 3] <= '7') {
      out += static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 +
                               (s[i + 3] - '0'));
      i += 3;
    } else {
      out += s[i];
    }
  }
  return out;
}

}  // namespace

std::vector<MountEntry> ParseMountInfo(std::string_view text) {
  // "36 35 98:0 /root /mnt/point rw,noatime master:1 - ext4 /dev/vda rw":
  // id, parent, devno, root, mountpoint, options, optional fields up to
  // "-", then the filesystem type.
  std::vector<MountEntry> out;
  std::istringstream lines{std::string(text)};
  std::string line;
  while (std::getline(lines, line)) {
    std::istringstream ss(line);
    std::string id, parent, root, mp, word;
    MountEntry e;
    if (!(ss >> id >> parent >> e.devno >> root >> mp)) continue;
    while (ss >> word && word != "-") {
    }
    if (word != "-" || !(ss >> e.fstype)) continue;
    e.mountpoint = Unescape(mp);
    out.push_back(std::move(e));
  }
  return out;
}

std::vector<MountEntry> ReadMountInfo() {
  std::ifstream in("/proc/self/mountinfo");
  std::stringstream text;
  text << in.rdbuf();
  return ParseMountInfo(text.str());
}

}  // namespace ckptfs
