#include "mountd/exports.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "backend/clock.h"
#include "backend/trusted_dir.h"
#include "backend/xml.h"
#include "mountd/source_factory.h"

namespace ckptfs {

namespace fsys = std::filesystem;

// Marks a domain busy for the life of the claim.
class LiveExports::DomainClaim {
 public:
  DomainClaim(LiveExports& owner, std::string domain)
      : owner_(owner), domain_(std::move(domain)) {}
  ~DomainClaim() {
    if (held_) owner_.Unclaim(domain_);
  }
  Status Acquire() {
    RETURN_IF_ERROR(owner_.Claim(domain_));
    held_ = true;
    return Status::Ok();
  }

 private:
  LiveExports& owner_;
  std::string domain_;
  bool held_ = false;
};

namespace {

std::vector<std::pair<uint64_t, uint64_t>> DataRanges(
    const std::vector<Extent>& extents) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const auto& e : extents) {
    if (e.hole) continue;
    if (!out.empty() && out.back().first + out.back().second == e.offset) {
      out.back().second += e.length;
    } else {
      out.emplace_back(e.offset, e.length);
    }
  }
  return out;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

}  // namespace

std::vector<std::string> UnusableBitmaps(
    LibvirtClient& libvirt, const std::string& domain, const CheckpointInfo& cp,
    const std::vector<std::string>& disks) {
  auto usable = libvirt.UsableBitmaps(domain, cp.name);
  if (!usable.ok()) {
    spdlog::warn("{}: cannot check the bitmaps of checkpoint {}: {}", domain,
                 cp.name, usable.status().ToString());
  }
  std::vector<std::string> out;
  for (const auto& d : disks) {
    if (!Contains(cp.disks, d) || (usable.ok() && !Contains(*usable, d))) {
      out.push_back(d);
    }
  }
  return out;
}

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
    auto job = libvirt_.GetBackupJob(domain);
    Status st;
    if (job.ok() && job->has_value() && (*job)->socket == live.socket) {
      st = libvirt_.AbortJob(domain);
    } else if (!job.ok() && job.status().code() != Code::kNotFound) {
      st = job.status();
    }
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

Result<std::shared_ptr<const CheckpointView>> LiveExports::CreateCheckpoint(
    const Request& req, const std::string& job_id, bool claimed) {
  const std::string& domain = req.domain;
  ASSIGN_OR_RETURN(DomainInfo dom, libvirt_.GetDomain(domain));
  if (!dom.active) {
    return InvalidArgument("domain " + domain +
                           " is not running: a live checkpoint needs a "
                           "running domain");
  }
  std::vector<DiskInfo> selected;
  if (req.disks.empty()) {
    for (const auto& d : dom.disks) {
      if (CarriesCheckpoints(d)) selected.push_back(d);
    }
    if (selected.empty()) {
      return InvalidArgument("domain " + domain + " has no qcow2 disk");
    }
  } else {
    for (const auto& name : req.disks) {
      auto it =
          std::find_if(dom.disks.begin(), dom.disks.end(),
                       [&](const DiskInfo& d) { return d.target == name; });
      if (it == dom.disks.end()) {
        std::string list;
        for (const auto& d : dom.disks)
          list += (list.empty() ? "" : ",") + d.target;
        return NotFound("domain " + domain + " has no disk " + name +
                        " (disks: " + list + ")");
      }
      if (!CarriesCheckpoints(*it)) {
        return InvalidArgument("disk " + name + " of " + domain +
                               " is not a writable qcow2 disk; only those "
                               "carry checkpoints");
      }
      selected.push_back(*it);
    }
  }
  std::vector<std::string> targets;
  for (const auto& d : selected) targets.push_back(d.target);

  DomainClaim claim(*this, domain);
  if (!claimed) RETURN_IF_ERROR(claim.Acquire());

  ASSIGN_OR_RETURN(std::vector<CheckpointInfo> cps,
                   libvirt_.ListCheckpoints(domain));
  auto exists = [&](const std::string& n) {
    return std::any_of(cps.begin(), cps.end(),
                       [&](const CheckpointInfo& c) { return c.name == n; });
  };
  std::string name = req.name;
  if (name.empty()) {
    const std::string stem = CompactTime(NowMs());
    name = stem;
    for (int i = 2; exists(name); ++i) name = stem + "-" + std::to_string(i);
  } else if (exists(name)) {
    return AlreadyExists("checkpoint " + name + " of " + domain +
                         " already exists; choose another name=");
  }

  ASSIGN_OR_RETURN(std::optional<BackupJobInfo> running,
                   libvirt_.GetBackupJob(domain));
  Live old;
  {
    std::lock_guard lock(mu_);
    auto it = live_.find(domain);
    if (it != live_.end()) old = it->second;
    // An export whose end was deferred is ended below as a stale one; the
    // retry must not end the new job (same socket path).
    ending_.erase(domain);
  }
  if (running && !IsOurSocket(running->socket)) {
    return Busy("domain " + domain +
                " has a backup job that ckptfs did not start; end it with "
                "'virsh domjobabort " +
                domain + "' first");
  }

  // From here on the request acts on libvirt.
  jobs_.Update(job_id, [&](Job& j) {
    j.state = "running";
    j.started_ms = NowMs();
    j.checkpoint = name;
  });

  if (old.view) {
    spdlog::info("{}: ending export of {} before creating {}", domain,
                 old.view->name, name);
    RETURN_IF_ERROR(EndExport(domain, old));
  } else if (running) {
    spdlog::warn("{}: ending a stale export left by a previous daemon", domain);
    RETURN_IF_ERROR(libvirt_.AbortJob(domain));
  }

  // Base: the newest checkpoint with a complete backup (its bitmap has
  // recorded every write since), else the parent of the new checkpoint
  // (libvirt's newest), when its bitmaps cover every selected disk; else a
  // full export. Disks whose bitmap of the base libvirt cannot use (QEMU was
  // killed, the bitmap was removed) are exported full: never a wrong
  // incremental, and the other disks stay incremental.
  BaseChoice choice;
  if (req.mode != "full") {
    if (choose_base_) choice = choose_base_(dom, targets, cps);
    if (choice.checkpoint.empty() && !cps.empty()) {
      const CheckpointInfo& parent = cps.back();
      if (std::all_of(targets.begin(), targets.end(),
                      [&](const std::string& t) {
                        return Contains(parent.disks, t);
                      })) {
        choice.checkpoint = parent.name;
        choice.full = UnusableBitmaps(libvirt_, domain, parent, targets);
        if (choice.full.size() == targets.size()) choice = {};
      }
    }
  }
  std::string base = choice.checkpoint;
  std::vector<std::string> full = choice.full;
  if (!full.empty()) {
    std::string list;
    for (const auto& t : full) list += (list.empty() ? "" : ",") + t;
    spdlog::warn(
        "{}: bitmap of {} missing or inconsistent on {}: exporting {} full",
        domain, base, list, full.size() == 1 ? "that disk" : "those disks");
  }

  const std::string dir = DomainDir(dom.uuid);
  RETURN_IF_ERROR(PrepareDomainDir(dir));
  const std::string socket = dir + "/nbd.sock";

  auto backup_xml = [&](const std::string& incremental) {
    XmlWriter w("domainbackup");
    w.RootAttr("mode", "pull");
    if (!incremental.empty()) w.Leaf("incremental", {}, incremental);
    w.Leaf("server", {{"transport", "unix"}, {"socket", socket}});
    w.Open("disks");
    for (const auto& d : dom.disks) {
      if (d.device != "disk") continue;
      if (Contains(targets, d.target)) {
        std::vector<std::pair<std::string, std::string>> attrs = {
            {"name", d.target}, {"backup", "yes"}, {"type", "file"}};
        if (!incremental.empty() && Contains(full, d.target)) {
          attrs.emplace_back("backupmode", "full");
        }
        w.Open("disk", attrs);
        w.Leaf("driver", {{"type", "qcow2"}});
        w.Leaf("scratch", {{"file", dir + "/" + d.target + ".scratch"}});
        w.Close();
      } else {
        w.Leaf("disk", {{"name", d.target}, {"backup", "no"}});
      }
    }
    w.Close();
    return w.ToString();
  };
  XmlWriter cw("domaincheckpoint");
  cw.Leaf("name", {}, name);
  cw.Leaf("description", {}, CheckpointDescription());
  cw.Open("disks");
  for (const auto& d : dom.disks) {
    if (d.device != "disk") continue;
    cw.Leaf("disk",
            {{"name", d.target},
             {"checkpoint", Contains(targets, d.target) ? "bitmap" : "no"}});
  }
  cw.Close();

  Status begun = libvirt_.BeginBackup(domain, backup_xml(base), cw.ToString());
  if (!begun.ok() && !base.empty() && req.mode == "incremental") {
    // Asked for an incremental only: refuse rather than copy in full (the
    // job did not begin, so nothing was created).
    CleanDomainDir(dir);
    return InvalidArgument(
        "mode=incremental: libvirt refused an incremental "
        "export from " +
        base + " (" + begun.message() +
        "); take a full backup (mode=full or auto)");
  }
  if (!begun.ok() && !base.empty()) {
    // A base whose bitmap is missing or inconsistent must never give a wrong
    // .changes: fall back to a full export and say so.
    spdlog::warn("{}: incremental from {} refused ({}); exporting full", domain,
                 base, begun.message());
    base.clear();
    full.clear();
    begun = libvirt_.BeginBackup(domain, backup_xml(""), cw.ToString());
  }
  if (!begun.ok()) {
    CleanDomainDir(dir);
    return begun;
  }
  jobs_.Update(job_id, [&](Job& j) {
    j.mode = base.empty() ? "full" : "incremental";
    j.base = base;
    j.full_disks = full;
  });

  // Everything below must end the job again on failure.
  auto fail = [&](const Status& st) {
    Status ab = libvirt_.AbortJob(domain);
    if (!ab.ok()) spdlog::warn("{}: {}", domain, ab.ToString());
    CleanDomainDir(dir);
    return st;
  };
  auto job = libvirt_.GetBackupJob(domain);
  if (!job.ok()) return fail(job.status());
  if (!job->has_value())
    return fail(IoError("backup job of " + domain + " vanished"));

  auto view = std::make_shared<CheckpointView>();
  view->domain = domain;
  view->domain_uuid = dom.uuid;
  view->name = name;
  view->mode = base.empty() ? "full" : "incremental";
  view->base = base;
  // The base is this very checkpoint of libvirt's, not an older one of the
  // same name: a backup takes unchanged chunks only from a backup of it.
  for (const CheckpointInfo& cp : cps) {
    if (cp.name != base) continue;
    view->base_created = cp.creation_time;
    view->base_nonce = cp.nonce;
  }
  auto info = libvirt_.GetCheckpoint(domain, name);
  if (!info.ok()) return fail(info.status());
  view->created = info->creation_time;
  view->xml = info->xml;

  uint64_t total = 0;
  for (const auto& d : selected) {
    const BackupJobInfo::Disk* jd = nullptr;
    for (const auto& x : (*job)->disks) {
      if (x.name == d.target) jd = &x;
    }
    const bool disk_full = base.empty() || Contains(full, d.target) ||
                           (jd && jd->backupmode == "full");
    NbdOptions no;
    no.socket = socket;
    no.export_name = jd ? jd->export_name : d.target;
    if (!disk_full) {
      no.dirty_bitmap = "qemu:dirty-bitmap:" + (jd && !jd->export_bitmap.empty()
                                                    ? jd->export_bitmap
                                                    : "backup-" + d.target);
    }
    no.connections = options_.nbd_connections;
    no.timeout_ms = options_.nbd_timeout_ms;
    auto src = OpenLiveDisk(no, cache_);
    if (!src.ok()) return fail(src.status().Annotate(d.target));
    auto disk = std::make_shared<CheckpointDisk>();
    disk->target = d.target;
    disk->source = d.source;
    disk->size = src->nbd->size();
    auto extents = src->nbd->extents(0, disk->size);
    if (!extents.ok()) return fail(extents.status().Annotate(d.target));
    disk->extents = std::move(extents).value();
    for (const auto& e : disk->extents) {
      if (!e.hole) disk->allocated += e.length;
    }
    disk->full = disk_full;
    if (disk_full) {
      disk->changed = DataRanges(disk->extents);
    } else {
      auto dirty = src->nbd->dirty_extents();
      if (!dirty.ok()) return fail(dirty.status().Annotate(d.target));
      disk->changed = std::move(dirty).value();
    }
    disk->changes = FormatChanges(disk->changed);
    disk->image = src->image;
    disk->raw = src->nbd;
    total += disk->size;
    view->disks.push_back(std::move(disk));
  }
  view->info_json = CheckpointInfoJson(*view);
  jobs_.Update(job_id, [&](Job& j) { j.done = j.total = total; });

  {
    std::lock_guard lock(mu_);
    live_[domain] = Live{view, socket, dir};
  }
  spdlog::info("{}: live checkpoint {} ({} disk(s), {}{})", domain, name,
               view->disks.size(), view->mode,
               base.empty() ? "" : " from " + base);
  on_change_();
  return std::shared_ptr<const CheckpointView>(view);
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

Status LiveExports::EndExport(const std::string& domain, const Live& live) {
  auto job = libvirt_.GetBackupJob(domain);
  Status st;
  if (job.ok() && job->has_value() && (*job)->socket == live.socket) {
    st = libvirt_.AbortJob(domain);
  } else if (!job.ok() && job.status().code() != Code::kNotFound) {
    st = job.status();
  }
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
