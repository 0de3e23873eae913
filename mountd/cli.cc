#include "mountd/cli.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <sstream>
#include <vector>

#include "backend/mounts.h"
#include "backend/trusted_dir.h"

namespace ckptfs {

int ReportError(const Status& st) {
  std::cerr << "ckptfs: " << st.message() << "\n";
  return 1;
}

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

namespace {

// One line of the mount table, with its super options ("rw,user_id=0,..."),
// where FUSE records who mounted it.
struct TableEntry {
  MountEntry mount;
  std::string super_options;
};

std::vector<TableEntry> ReadMountTable() {
  std::vector<TableEntry> out;
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // ParseMountInfo decodes the fields; after " - " come the filesystem
    // type, the source and the super options, none with a literal blank.
    std::vector<MountEntry> e = ParseMountInfo(line);
    const size_t dash = line.find(" - ");
    if (e.size() != 1 || dash == std::string::npos) continue;
    std::istringstream rest(line.substr(dash + 3));
    std::string fstype, source, options;
    rest >> fstype >> source >> options;
    out.push_back({std::move(e.front()), std::move(options)});
  }
  return out;
}

// Who mounted a FUSE file system: its user_id= super option. The kernel
// sets it from the mounting process, so the file system's daemon cannot
// forge it (the owners it reports for its files, it can).
std::optional<uid_t> Mounter(const TableEntry& e) {
  std::istringstream options(e.super_options);
  std::string option;
  while (std::getline(options, option, ',')) {
    if (option.rfind("user_id=", 0) == 0) {
      return static_cast<uid_t>(std::strtoul(option.c_str() + 8, nullptr, 10));
    }
  }
  return std::nullopt;
}

bool TrustedUid(std::optional<uid_t> uid) {
  return uid && (*uid == 0 || *uid == getuid());
}

std::string ForeignMount(const std::string& mount, std::optional<uid_t> uid) {
  return "ckptfs mount " + mount + " was mounted by " +
         (uid ? DescribeUser(*uid) : std::string("an unknown user")) +
         ", not by root or you: not using it";
}

}  // namespace

Status CheckMountTrusted(const std::string& mount) {
  const std::string status_json = mount + "/control/status.json";
  struct stat st;
  if (stat(status_json.c_str(), &st) != 0) {
    return FromErrno(errno, "cannot reach " + status_json);
  }
  // The file system that serves the control files, found by device number
  // (st_dev comes from the kernel, not from a FUSE daemon).
  const std::string devno =
      std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  for (const TableEntry& e : ReadMountTable()) {
    if (e.mount.devno != devno || e.mount.fstype.rfind("fuse", 0) != 0) {
      continue;
    }
    if (e.mount.fstype != "fuse.ckptfs") {
      return InvalidArgument(mount + " is not a ckptfs mount (it is " +
                             e.mount.fstype + " on " + e.mount.mountpoint +
                             ")");
    }
    if (!TrustedUid(Mounter(e)))
      return Status(Code::kPermission, ForeignMount(mount, Mounter(e)));
  }
  // A ckptfs daemon of another user reports its own uid for its files.
  for (const std::string& path : {mount + "/control", status_json}) {
    if (stat(path.c_str(), &st) != 0) {
      return FromErrno(errno, "cannot reach " + path);
    }
    if (!TrustedUid(st.st_uid)) {
      return Status(Code::kPermission, path + " is owned by " +
                                           DescribeUser(st.st_uid) +
                                           ", not by root or you: not using " +
                                           mount + " as a ckptfs mount");
    }
  }
  return Status::Ok();
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
    RETURN_IF_ERROR(CheckMountTrusted(named));
    return named;
  }
  // Mounts of other users are left out without touching them (their daemon
  // could make a stat hang), so they can neither be used nor make the
  // choice ambiguous.
  std::vector<std::string> found;
  std::string foreign;
  for (const TableEntry& e : ReadMountTable()) {
    if (e.mount.fstype != "fuse.ckptfs") continue;
    if (TrustedUid(Mounter(e))) {
      found.push_back(e.mount.mountpoint);
    } else if (foreign.empty()) {
      foreign = ForeignMount(e.mount.mountpoint, Mounter(e));
    }
  }
  if (found.empty() && !foreign.empty()) {
    return Status(Code::kPermission,
                  foreign + "; mount your own or name one with --mount");
  }
  if (found.empty()) {
    return NotFound(
        "no ckptfs mount found: mount one with 'ckptfs mount DIR' "
        "or name it with --mount");
  }
  if (found.size() > 1) {
    return InvalidArgument("several ckptfs mounts; choose one with --mount");
  }
  RETURN_IF_ERROR(CheckMountTrusted(found.front()));
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
