#include "mountd/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "backend/mounts.h"

namespace ckptfs {

Result<uint64_t> ParseSize(const std::string& text) {
  if (text.empty()) return InvalidArgument("empty size");
  size_t pos = 0;
  while (pos < text.size() &&
         std::isdigit(static_cast<unsigned char>(text[pos])))
    ++pos;
  if (pos == 0) {
    return InvalidArgument("bad size '" + text + "': use e.g. 256M or 1G");
  }
  uint64_t n = 0;
  for (size_t i = 0; i < pos; ++i) {
    uint64_t next = n * 10 + static_cast<uint64_t>(text[i] - '0');
    if (next / 10 != n) return InvalidArgument("size '" + text + "' too large");
    n = next;
  }
  std::string unit = text.substr(pos);
  int shift = 0;
  if (unit.empty() || unit == "B") {
    shift = 0;
  } else if (unit == "K" || unit == "KiB" || unit == "k") {
    shift = 10;
  } else if (unit == "M" || unit == "MiB") {
    shift = 20;
  } else if (unit == "G" || unit == "GiB") {
    shift = 30;
  } else if (unit == "T" || unit == "TiB") {
    shift = 40;
  } else {
    return InvalidArgument("bad size unit in '" + text + "': use K, M, G or T");
  }
  if (shift && (n >> (64 - shift)) != 0) {
    return InvalidArgument("size '" + text + "' too large");
  }
  return n << shift;
}

Result<std::string> FindMount(const std::string& explicit_mount) {
  std::string named = explicit_mount;
  if (const char* env = std::getenv("CKPTFS_MOUNT");
      named.empty() && env && *env) {
    named = env;
  }
  if (!named.empty()) {
    // Say what is wrong with the directory rather than failing later on a
    // control file that is not there.
    struct stat st;
    if (stat((named + "/control/status.json").c_str(), &st) != 0) {
      if (errno != ENOENT && errno != ENOTDIR) {
        return FromErrno(errno,
                         "cannot reach the control directory of " + named);
      }
      return NotFound(named +
                      " is not a ckptfs mount (no control/status.json)");
    }
    return named;
  }
  std::vector<std::string> found;
  for (const MountEntry& e : ReadMountInfo()) {
    if (e.fstype == "fuse.ckptfs") found.push_back(e.mountpoint);
  }
  if (found.empty()) {
    return NotFound(
        "no ckptfs mount found: mount one with 'ckptfs mount DIR' "
        "or name it with --mount");
  }
  if (found.size() > 1) {
    return InvalidArgument("several ckptfs mounts; choose one with --mount");
  }
  return found.front();
}

Result<ControlReply> SendControl(const std::string& mount,
                                 const std::string& file,
                                 const std::string& line) {
  const std::string path = mount + "/control/" + file;
  int fd = open(path.c_str(), O_RDWR);
  if (fd < 0) return FromErrno(errno, "cannot open " + path);
  ControlReply reply;
  std::string data = line + "\n";
  if (write(fd, data.data(), data.size()) < 0) reply.err = errno;
  // The reply is read from where the write left the file offset.
  char buf[8192];
  ssize_t n;
  while ((n = read(fd, buf, sizeof(buf))) > 0) {
    reply.json.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return reply;
}

}  // namespace ckptfs
