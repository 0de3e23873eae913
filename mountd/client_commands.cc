#include "mountd/client_commands.h"

#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "mountd/cli.h"

namespace ckptfs {
namespace {

namespace fsys = std::filesystem;

// Runs a program found in $PATH with `argv`, no shell (a mount point may
// hold any character, quotes and ';' too); its exit status, -1 if it could
// not run or was killed.
int RunProgram(const std::vector<std::string>& argv) {
  std::vector<char*> args;
  for (const std::string& a : argv)
    args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  if (posix_spawnp(&pid, args[0], nullptr, nullptr, args.data(), environ) !=
      0) {
    return -1;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// The daemon's pid, to wait for (and signal), only from a mount root or we
// made: another user's daemon could name any process. 0 if unknown.
pid_t DaemonPid(const std::string& mp) {
  if (!CheckMountTrusted(mp).ok()) return 0;
  std::ifstream in(mp + "/control/status.json");
  try {
    auto j = nlohmann::json::parse(in);
    return j.value("pid", 0);
  } catch (const std::exception&) {
    // Not a live ckptfs mount (or its daemon is dead): just unmount.
    return 0;
  }
}

// The daemon ends its exports after the unmount; waits for it to finish.
int AwaitDaemonExit(pid_t pid) {
  auto wait = [pid](int tenths) {
    for (int i = 0; i < tenths && kill(pid, 0) == 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return kill(pid, 0) != 0;
  };
  // A copy of the mount held in another mount namespace keeps the FUSE
  // connection open after our unmount; then tell the daemon directly.
  if (!wait(100)) kill(pid, SIGTERM);
  if (!wait(1100)) {
    return ReportError(
        Status(Code::kTimedOut, "daemon " + std::to_string(pid) +
                                    " still running after 120 s; see syslog"));
  }
  return 0;
}

int PrintReply(const Result<ControlReply>& r) {
  if (!r.ok()) return ReportError(r.status());
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(r->json);
  } catch (const std::exception&) {
    if (r->err) return ReportError(FromErrno(r->err, "request refused"));
    std::cout << r->json;
    return 0;
  }
  if (r->err) {
    std::cerr << "ckptfs: " << j.value("error", std::string(strerror(r->err)))
              << " (job " << j.value("id", std::string("?")) << ")\n";
    return 1;
  }
  std::cout << j.value("state", std::string("?")) << ": "
            << j.value("domain", std::string()) << " "
            << j.value("checkpoint", std::string()) << " (job "
            << j.value("id", std::string("?")) << ")\n";
  return 0;
}

// Follows a job record until it ends; a progress bar on a terminal.
int WaitJob(const std::string& mount, const std::string& id) {
  const std::string path = mount + "/control/jobs/" + id + ".json";
  const bool tty = isatty(STDERR_FILENO);
  for (;;) {
    nlohmann::json j;
    try {
      std::ifstream in(path);
      j = nlohmann::json::parse(in);
    } catch (const std::exception&) {
      return ReportError(IoError("cannot read " + path));
    }
    const std::string state = j.value("state", "");
    const uint64_t done = j["progress"].value("done", uint64_t{0});
    const uint64_t total = j["progress"].value("total", uint64_t{0});
    if (tty) {
      const int pct = total ? static_cast<int>(100 * done / total) : 0;
      const int bar = pct / 4;
      std::fprintf(stderr, "\r[%-25s] %3d%% %8.1f / %.1f MiB %s   ",
                   std::string(static_cast<size_t>(bar), '#').c_str(), pct,
                   static_cast<double>(done) / (1 << 20),
                   static_cast<double>(total) / (1 << 20), state.c_str());
    }
    if (state != "running" && state != "queued") {
      if (tty) std::fprintf(stderr, "\n");
      if (state == "succeeded") {
        std::cout << "succeeded: " << j.value("domain", "") << " "
                  << j.value("checkpoint", "") << " (" << j.value("mode", "")
                  << ", job " << id << ")\n";
        return 0;
      }
      std::cerr << "ckptfs: job " << id << " " << state << ": "
                << j.value("error", std::string("?")) << "\n";
      return 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// One job record as a row of `ckptfs jobs`.
void PrintJobRow(const nlohmann::json& j) {
  auto str = [&](const char* k) {
    return j.contains(k) && j[k].is_string() ? j[k].get<std::string>()
                                             : std::string("-");
  };
  std::printf("%-24s %-10s %-16s %-24s %-10s %s\n", str("id").c_str(),
              str("kind").c_str(), str("domain").c_str(),
              str("checkpoint").c_str(), str("state").c_str(),
              j.contains("error") ? str("error").c_str() : "");
}

}  // namespace

int CmdUmount(const std::string& mountpoint) {
  char resolved[PATH_MAX];
  std::string mp =
      realpath(mountpoint.c_str(), resolved) ? resolved : mountpoint;
  const pid_t pid = DaemonPid(mp);
  int rc = 0;
  if (getuid() == 0) {
    rc = umount2(mp.c_str(), 0);
    if (rc != 0 && errno == EBUSY) {
      return ReportError(
          Busy(mp + " is busy (files open below it); close them and retry"));
    }
    if (rc != 0 && errno != EINVAL) {
      return ReportError(FromErrno(errno, "cannot unmount " + mp));
    }
  } else {
    // fusermount3 says why it failed on stderr.
    if (RunProgram({"fusermount3", "-u", "--", mp}) != 0) {
      return ReportError(IoError("fusermount3 -u " + mp + " failed"));
    }
  }
  return pid > 0 ? AwaitDaemonExit(pid) : 0;
}

int CmdCheckpoint(const ClientArgs& a) {
  auto mp = FindMount(a.mount);
  if (!mp.ok()) return ReportError(mp.status());
  std::string line = a.domain;
  if (!a.name.empty()) line += " name=" + a.name;
  if (!a.disks.empty()) line += " disks=" + a.disks;
  return PrintReply(SendControl(*mp, "checkpoint", line));
}

int CmdRelease(const ClientArgs& a) {
  auto mp = FindMount(a.mount);
  if (!mp.ok()) return ReportError(mp.status());
  return PrintReply(SendControl(*mp, "release", a.domain + " " + a.checkpoint));
}

int CmdBackup(const ClientArgs& a) {
  auto mp = FindMount(a.mount);
  if (!mp.ok()) return ReportError(mp.status());
  std::string line = a.domain;
  if (!a.name.empty()) line += " name=" + a.name;
  if (!a.backup_checkpoint.empty())
    line += " checkpoint=" + a.backup_checkpoint;
  line += " mode=" + a.mode;
  auto reply = SendControl(*mp, "backup", line);
  if (!reply.ok() || reply->err || !(a.wait || isatty(STDOUT_FILENO))) {
    return PrintReply(reply);
  }
  std::string id;
  try {
    id = nlohmann::json::parse(reply->json).value("id", "");
  } catch (const std::exception&) {
    return PrintReply(reply);
  }
  return WaitJob(*mp, id);
}

int CmdJobs(const ClientArgs& a) {
  auto mp = FindMount(a.mount);
  if (!mp.ok()) return ReportError(mp.status());
  std::vector<fsys::path> files;
  std::error_code ec;
  for (const auto& e : fsys::directory_iterator(*mp + "/control/jobs", ec)) {
    files.push_back(e.path());
  }
  if (ec) return ReportError(IoError("cannot list jobs: " + ec.message()));
  std::sort(files.begin(), files.end());
  if (!a.json) {
    std::printf("%-24s %-10s %-16s %-24s %-10s %s\n", "ID", "KIND", "DOMAIN",
                "CHECKPOINT", "STATE", "ERROR");
  }
  for (const auto& f : files) {
    std::ifstream in(f);
    try {
      auto j = nlohmann::json::parse(in);
      if (a.json) {
        std::cout << j.dump() << "\n";
      } else {
        PrintJobRow(j);
      }
    } catch (const std::exception&) {
      // A record evicted between listing and reading.
    }
  }
  return 0;
}

}  // namespace ckptfs
