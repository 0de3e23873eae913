// ServiceNotifier: tells a service manager (systemd's Type=notify, see
// sd_notify(3)) when the mount is serving and when the daemon stops, so
// that a unit ordered after ckptfs.service starts only once the tree
// answers.
//
// Harmless without NOTIFY_SOCKET in the environment (not started by
// systemd, or by a unit of another Type): then nothing is sent and no
// thread started.
//
// Thread safety: all methods from the thread that serves the mount (main).
#pragma once

#include <string>
#include <thread>

namespace ckptfs {

class ServiceNotifier {
 public:
  ServiceNotifier() = default;
  ServiceNotifier(const ServiceNotifier&) = delete;
  ServiceNotifier& operator=(const ServiceNotifier&) = delete;
  ~ServiceNotifier();  // Join()

  // Sends READY=1 once `mountpoint` answers a request, from a thread of its
  // own: the kernel holds every request to a new FUSE mount until FUSE INIT
  // is answered, which happens only once this process serves the mount.
  // REQUIRES: the mount is mounted and about to be served.
  void NotifyWhenServing(const std::string& mountpoint);
  // Sends STOPPING=1: the daemon is ending its exports and unmounting.
  void Stopping();
  // Waits for the thread of NotifyWhenServing. REQUIRES: the FUSE
  // connection is gone (unmounted), else its request may never return.
  void Join();

 private:
  std::thread waiter_;
};

}  // namespace ckptfs
