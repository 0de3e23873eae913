#include "mountd/exports.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "backend/clock.h"
#include "backend/trusted_dir.h"

namespace ckptfs {

namespace fsys = std::filesystem;

LiveExports::LiveExports(LibvirtClient& libvirt, BlockCache& cache,
                         JobTable& jobs, ExportOptions options,
                         std::function<void()> on_change)
    : libvirt_(libvirt),
      cache_(cache),
      jobs_(jobs),
      options_(std::move(options)),
      on_change_(std::move(on_change)) {}

LiveExports::~LiveExports() = default;

std::string LiveExports::DomainDir(const std::string& uuid) const {
  return options_.run_dir + "/" + uuid;
}

bool LiveExports::IsOurSocket(const std::string& socket) const {
  return socket.rfind(options_.run_dir + "/", 0) == 0;
}

Result<UniqueFd> LiveExports::OpenDomainDir(const std::string& dir,
                                            bool create) const {
  // The run dir again as a trusted directory (the lock's check was at
  // start), then RUN/<uuid> relative to it: never a symlink, so nothing
  // outside is emptied or chowned whatever was put there.
  TrustOptions o;
  o.what = "run dir";
  ASSIGN_OR_RETURN(UniqueFd run, OpenTrustedDir(options_.run_dir, o));
  const std::string name = fsys::path(dir).filename();
  return OpenSubdirAt(run.get(), name,
                      create ? std::optional<mode_t>(0700) : std::nullopt, dir);
}

Status LiveExports::PrepareDomainDir(const std::string& dir) {
  // QEMU (running as the QEMU user) creates the NBD socket and writes the
  // scratch files here; nobody else may enter: root owns the run dir, the
  // QEMU user owns the domain's directory, mode 0700.
  ASSIGN_OR_RETURN(UniqueFd fd, OpenDomainDir(dir, /*create=*/true));
  RETURN_IF_ERROR(EmptyDirAt(fd.get(), dir));
  uid_t uid = 0;
  gid_t gid = 0;
  if (struct passwd* pw = getpwnam(options_.qemu_user.c_str())) {
    uid = pw->pw_uid;
    gid = pw->pw_gid;
  }
  if (fchown(fd.get(), uid, gid) != 0 || fchmod(fd.get(), 0700) != 0) {
    return FromErrno(errno, "cannot set owner/mode of " + dir);
  }
  return Status::Ok();
}

void LiveExports::CleanDomainDir(const std::string& dir) {
  // QEMU's user owns the directory and may have left anything in it,
  // symlinks too: removed without following them.
  auto fd = OpenDomainDir(dir, /*create=*/false);
  Status st = fd.ok() ? EmptyDirAt(fd->get(), dir) : fd.status();
  if (!st.ok() && st.code() != Code::kNotFound) {
    spdlog::warn("cannot empty {}: {}", dir, st.message());
  }
}

Status LiveExports::Claim(const std::string& domain) {
  std::lock_guard lock(mu_);
  if (!busy_.insert(domain).second) {
    return Busy("another request or job is working on domain " + domain +
                "; retry when it has finished (see control/jobs/)");
  }
  return Status::Ok();
}

void LiveExports::Unclaim(const std::string& domain) {
  std::lock_guard lock(mu_);
  busy_.erase(domain);
}

std::shared_ptr<const CheckpointView> LiveExports::Get(
    const std::string& domain) const {
  std::lock_guard lock(mu_);
  auto it = live_.find(domain);
  return it == live_.end() ? nullptr : it->second.view;
}

void LiveExports::SetState(const std::string& domain,
                           const std::string& state) {
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it == live_.end()) return;
    auto view = std::make_shared<CheckpointView>(*it->second.view);
    view->state = state;
    view->info_json = CheckpointInfoJson(*view);
    it->second.view = std::move(view);
  }
  on_change_();
}

Status LiveExports::End(const std::string& domain, const std::string& name) {
  Live live;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it == live_.end() || it->second.view->name != name) {
      return Status::Ok();
    }
    live = it->second;
  }
  Status st = EndExport(domain, live);
  if (!st.ok()) {
    // libvirt is unreachable (or refused): the data is elsewhere now (the
    // store) or the export is not wanted any more, so the checkpoint leaves
    // the tree; the job is ended as soon as libvirt answers.
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it != live_.end() && it->second.view == live.view) live_.erase(it);
    ending_[domain] = live;
  }
  if (!st.ok()) on_change_();
  return st;
}

void LiveExports::RetryEnds() {
  std::map<std::string, Live> pending;
  {
    std::lock_guard lock(mu_);
    pending = ending_;
  }
  for (const auto& [domain, live] : pending) {
    DomainClaim claim(*this, domain);
    if (!claim.Acquire().ok()) continue;  // a request works on it: later
    {
      std::lock_guard lock(mu_);
      auto it = ending_.find(domain);
      if (it == ending_.end() || it->second.view != live.view) continue;
    }
    Status st = AbortJobOf(domain, live);
    if (!st.ok()) {
      spdlog::debug("{}: export of {} not ended yet: {}", domain,
                    live.view->name, st.ToString());
      continue;
    }
    {
      std::lock_guard lock(mu_);
      auto it = ending_.find(domain);
      if (it != ending_.end() && it->second.view == live.view)
        ending_.erase(it);
    }
    CleanDomainDir(live.dir);
    spdlog::info("{}: export of {} ended (deferred)", domain, live.view->name);
  }
}

Status LiveExports::Release(const Request& req, const std::string& job_id) {
  const std::string& domain = req.domain;
  Live live;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it == live_.end() || it->second.view->name != req.checkpoint) {
      return NotFound("checkpoint " + req.checkpoint + " of " + domain +
                      " is not live");
    }
    live = it->second;
  }
  DomainClaim claim(*this, domain);
  RETURN_IF_ERROR(claim.Acquire());
  jobs_.Update(job_id, [&](Job& j) {
    j.state = "running";
    j.started_ms = NowMs();
  });
  return EndExport(domain, live);
}

Status LiveExports::AbortJobOf(const std::string& domain, const Live& live) {
  auto job = libvirt_.GetBackupJob(domain);
  if (job.ok() && job->has_value() && (*job)->socket == live.socket) {
    return libvirt_.AbortJob(domain);
  }
  if (!job.ok() && job.status().code() != Code::kNotFound) {
    return job.status();
  }
  return Status::Ok();
}

Status LiveExports::EndExport(const std::string& domain, const Live& live) {
  Status st = AbortJobOf(domain, live);
  if (!st.ok()) {
    spdlog::error("{}: cannot end export of {}: {}", domain, live.view->name,
                  st.ToString());
    return st;
  }
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it != live_.end() && it->second.view == live.view) live_.erase(it);
  }
  CleanDomainDir(live.dir);
  spdlog::info("{}: export of {} ended", domain, live.view->name);
  on_change_();
  return Status::Ok();
}

std::vector<std::shared_ptr<const CheckpointView>> LiveExports::List() const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<const CheckpointView>> out;
  for (const auto& [d, l] : live_) out.push_back(l.view);
  return out;
}

size_t LiveExports::size() const {
  std::lock_guard lock(mu_);
  return live_.size();
}

void LiveExports::Forget(const std::string& domain, const std::string& why) {
  Live live;
  {
    std::lock_guard lock(mu_);
    ending_.erase(domain);  // its job is gone too
    auto it = live_.find(domain);
    if (it == live_.end()) return;
    live = it->second;
    live_.erase(it);
  }
  spdlog::warn("{}: export of {} is gone ({})", domain, live.view->name, why);
  CleanDomainDir(live.dir);
  on_change_();
}

void LiveExports::Resync() {
  std::map<std::string, Live> snapshot;
  {
    std::lock_guard lock(mu_);
    snapshot = live_;
  }
  for (const auto& [domain, live] : snapshot) {
    auto job = libvirt_.GetBackupJob(domain);
    if (!job.ok()) {
      if (job.status().code() == Code::kNotFound)
        Forget(domain, "domain undefined");
      continue;  // libvirt unreachable: keep serving, try later
    }
    if (!job->has_value() || (*job)->socket != live.socket) {
      Forget(domain, "its backup job ended");
    }
  }
}

void LiveExports::EndStale() {
  auto domains = libvirt_.ListDomains();
  if (!domains.ok()) {
    spdlog::warn("cannot look for stale exports: {}",
                 domains.status().ToString());
    return;
  }
  for (const auto& d : *domains) {
    if (!d.active) continue;
    {
      std::lock_guard lock(mu_);
      if (live_.count(d.name)) continue;
    }
    auto job = libvirt_.GetBackupJob(d.name);
    if (!job.ok() || !job->has_value() || !IsOurSocket((*job)->socket))
      continue;
    spdlog::warn("{}: ending export left behind by a previous ckptfs ({})",
                 d.name, (*job)->socket);
    Status st = libvirt_.AbortJob(d.name);
    if (!st.ok()) spdlog::error("{}: {}", d.name, st.ToString());
    CleanDomainDir(DomainDir(d.uuid));
  }
}

void LiveExports::EndAll() {
  std::map<std::string, Live> snapshot;
  {
    std::lock_guard lock(mu_);
    snapshot = live_;
  }
  for (const auto& [domain, live] : snapshot) {
    Status st = EndExport(domain, live);
    if (!st.ok()) spdlog::error("{}: {}", domain, st.ToString());
  }
}

}  // namespace ckptfs
