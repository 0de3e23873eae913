#include "mountd/service_notify.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>

#include <cstdlib>
#include <cstring>

namespace ckptfs {
namespace {

bool Supervised() {
  const char* socket = std::getenv("NOTIFY_SOCKET");
  return socket != nullptr && *socket != '\0';
}

void Notify(const char* state) {
  // unset_environment=0: other threads may read the environment, and
  // STOPPING=1 goes to the same socket later.
  if (int rc = sd_notify(0, state); rc < 0) {
    spdlog::warn("cannot notify the service manager ({}): {}", state,
                 std::strerror(-rc));
  }
}

}  // namespace

ServiceNotifier::~ServiceNotifier() { Join(); }

void ServiceNotifier::NotifyWhenServing(const std::string& mountpoint) {
  if (!Supervised() || waiter_.joinable()) return;
  // A file only ckptfs serves: found, the FUSE loop has answered INIT and
  // this LOOKUP. Failing (the mount went away first), there is nothing to
  // announce.
  waiter_ = std::thread([path = mountpoint + "/control/status.json"] {
    struct stat st;
    if (stat(path.c_str(), &st) == 0) Notify("READY=1");
  });
}

void ServiceNotifier::Stopping() {
  if (Supervised()) Notify("STOPPING=1");
}

void ServiceNotifier::Join() {
  if (waiter_.joinable()) waiter_.join();
}

}  // namespace ckptfs
