// LiveExports::CreateCheckpoint and its steps: plan the disks and the base,
// begin the backup job, open the exports, publish the live checkpoint (or
// end the job again).
#include <spdlog/spdlog.h>

#include <algorithm>

#include "backend/clock.h"
#include "backend/xml.h"
#include "mountd/exports.h"
#include "mountd/source_factory.h"

namespace ckptfs {
namespace {

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

// The pull-mode backup job over `targets`: incremental from `incremental`
// ("" = full), with the disks of `full` exported full all the same.
std::string BackupXml(const DomainInfo& dom,
                      const std::vector<std::string>& targets,
                      const std::string& dir, const std::string& socket,
                      const std::string& incremental,
                      const std::vector<std::string>& full) {
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
}

std::string CheckpointXml(const DomainInfo& dom,
                          const std::vector<std::string>& targets,
                          const std::string& name) {
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
  return cw.ToString();
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

Result<std::shared_ptr<const CheckpointView>> LiveExports::CreateCheckpoint(
    const Request& req, const std::string& job_id, bool claimed) {
  const std::string& domain = req.domain;
  ASSIGN_OR_RETURN(NewExport x, SelectDisks(req));
  DomainClaim claim(*this, domain);
  if (!claimed) RETURN_IF_ERROR(claim.Acquire());
  ASSIGN_OR_RETURN(x.cps, libvirt_.ListCheckpoints(domain));
  ASSIGN_OR_RETURN(x.name, NameFor(req, x.cps));
  RETURN_IF_ERROR(TakeOver(domain, job_id, x.name));
  x.base = PlanBase(req, x);
  RETURN_IF_ERROR(Begin(req, x));
  jobs_.Update(job_id, [&](Job& j) {
    j.mode = x.base.checkpoint.empty() ? "full" : "incremental";
    j.base = x.base.checkpoint;
    j.full_disks = x.base.full;
  });
  auto view = OpenExport(x);
  if (!view.ok()) return Undo(x, view.status());
  uint64_t total = 0;
  for (const auto& d : (*view)->disks) total += d->size;
  jobs_.Update(job_id, [&](Job& j) { j.done = j.total = total; });

  {
    std::lock_guard lock(mu_);
    live_[domain] = Live{*view, x.socket, x.dir};
  }
  const std::string& base = x.base.checkpoint;
  spdlog::info("{}: live checkpoint {} ({} disk(s), {}{})", domain, x.name,
               (*view)->disks.size(), (*view)->mode,
               base.empty() ? "" : " from " + base);
  on_change_();
  return std::shared_ptr<const CheckpointView>(*view);
}

Result<LiveExports::NewExport> LiveExports::SelectDisks(const Request& req) {
  const std::string& domain = req.domain;
  NewExport x;
  x.domain = domain;
  ASSIGN_OR_RETURN(x.dom, libvirt_.GetDomain(domain));
  const DomainInfo& dom = x.dom;
  if (!dom.active) {
    return InvalidArgument("domain " + domain +
                           " is not running: a live checkpoint needs a "
                           "running domain");
  }
  if (req.disks.empty()) {
    for (const auto& d : dom.disks) {
      if (CarriesCheckpoints(d)) x.selected.push_back(d);
    }
    if (x.selected.empty()) {
      return InvalidArgument("domain " + domain + " has no qcow2 disk");
    }
  }
  for (const auto& name : req.disks) {
    auto it = std::find_if(dom.disks.begin(), dom.disks.end(),
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
    x.selected.push_back(*it);
  }
  for (const auto& d : x.selected) x.targets.push_back(d.target);
  return x;
}

Result<std::string> LiveExports::NameFor(
    const Request& req, const std::vector<CheckpointInfo>& cps) {
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
    return AlreadyExists("checkpoint " + name + " of " + req.domain +
                         " already exists; choose another name=");
  }
  return name;
}

Status LiveExports::TakeOver(const std::string& domain,
                             const std::string& job_id,
                             const std::string& name) {
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
    return EndExport(domain, old);
  }
  if (running) {
    spdlog::warn("{}: ending a stale export left by a previous daemon", domain);
    return libvirt_.AbortJob(domain);
  }
  return Status::Ok();
}

BaseChoice LiveExports::PlanBase(const Request& req, const NewExport& x) {
  // Base: the newest checkpoint with a complete backup (its bitmap has
  // recorded every write since), else the parent of the new checkpoint
  // (libvirt's newest), when its bitmaps cover every selected disk; else a
  // full export. Disks whose bitmap of the base libvirt cannot use (QEMU was
  // killed, the bitmap was removed) are exported full: never a wrong
  // incremental, and the other disks stay incremental.
  const std::vector<std::string>& targets = x.targets;
  BaseChoice choice;
  if (req.mode != "full") {
    if (choose_base_) choice = choose_base_(x.dom, targets, x.cps);
    if (choice.checkpoint.empty() && !x.cps.empty()) {
      const CheckpointInfo& parent = x.cps.back();
      if (std::all_of(targets.begin(), targets.end(),
                      [&](const std::string& t) {
                        return Contains(parent.disks, t);
                      })) {
        choice.checkpoint = parent.name;
        choice.full = UnusableBitmaps(libvirt_, req.domain, parent, targets);
        if (choice.full.size() == targets.size()) choice = {};
      }
    }
  }
  if (!choice.full.empty()) {
    std::string list;
    for (const auto& t : choice.full) list += (list.empty() ? "" : ",") + t;
    spdlog::warn(
        "{}: bitmap of {} missing or inconsistent on {}: exporting {} full",
        req.domain, choice.checkpoint, list,
        choice.full.size() == 1 ? "that disk" : "those disks");
  }
  return choice;
}

Status LiveExports::Begin(const Request& req, NewExport& x) {
  const std::string& domain = req.domain;
  x.dir = DomainDir(x.dom.uuid);
  RETURN_IF_ERROR(PrepareDomainDir(x.dir));
  x.socket = x.dir + "/nbd.sock";
  const std::string checkpoint_xml = CheckpointXml(x.dom, x.targets, x.name);
  std::string& base = x.base.checkpoint;
  Status begun = libvirt_.BeginBackup(
      domain, BackupXml(x.dom, x.targets, x.dir, x.socket, base, x.base.full),
      checkpoint_xml);
  if (!begun.ok() && !base.empty() && req.mode == "incremental") {
    // Asked for an incremental only: refuse rather than copy in full (the
    // job did not begin, so nothing was created).
    CleanDomainDir(x.dir);
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
    x.base = {};
    begun = libvirt_.BeginBackup(
        domain, BackupXml(x.dom, x.targets, x.dir, x.socket, "", {}),
        checkpoint_xml);
  }
  if (!begun.ok()) {
    CleanDomainDir(x.dir);
    return begun;
  }
  return Status::Ok();
}

Status LiveExports::Undo(const NewExport& x, const Status& st) {
  Status ab = libvirt_.AbortJob(x.domain);
  if (!ab.ok()) spdlog::warn("{}: {}", x.domain, ab.ToString());
  CleanDomainDir(x.dir);
  return st;
}

Result<std::shared_ptr<CheckpointView>> LiveExports::OpenExport(
    const NewExport& x) {
  const std::string& domain = x.domain;
  const std::string& base = x.base.checkpoint;
  ASSIGN_OR_RETURN(std::optional<BackupJobInfo> job,
                   libvirt_.GetBackupJob(domain));
  if (!job) return IoError("backup job of " + domain + " vanished");

  auto view = std::make_shared<CheckpointView>();
  view->domain = domain;
  view->domain_uuid = x.dom.uuid;
  view->name = x.name;
  view->mode = base.empty() ? "full" : "incremental";
  view->base = base;
  // The base is this very checkpoint of libvirt's, not an older one of the
  // same name: a backup takes unchanged chunks only from a backup of it.
  for (const CheckpointInfo& cp : x.cps) {
    if (cp.name != base) continue;
    view->base_created = cp.creation_time;
    view->base_nonce = cp.nonce;
  }
  ASSIGN_OR_RETURN(CheckpointInfo info, libvirt_.GetCheckpoint(domain, x.name));
  view->created = info.creation_time;
  view->xml = info.xml;
  for (const auto& d : x.selected) {
    ASSIGN_OR_RETURN(auto disk, OpenDisk(x, d, *job));
    view->disks.push_back(std::move(disk));
  }
  view->info_json = CheckpointInfoJson(*view);
  return view;
}

Result<std::shared_ptr<CheckpointDisk>> LiveExports::OpenDisk(
    const NewExport& x, const DiskInfo& d, const BackupJobInfo& job) {
  const BackupJobInfo::Disk* jd = nullptr;
  for (const auto& j : job.disks) {
    if (j.name == d.target) jd = &j;
  }
  const bool disk_full = x.base.checkpoint.empty() ||
                         Contains(x.base.full, d.target) ||
                         (jd && jd->backupmode == "full");
  NbdOptions no;
  no.socket = x.socket;
  no.export_name = jd ? jd->export_name : d.target;
  if (!disk_full) {
    no.dirty_bitmap = "qemu:dirty-bitmap:" + (jd && !jd->export_bitmap.empty()
                                                  ? jd->export_bitmap
                                                  : "backup-" + d.target);
  }
  no.connections = options_.nbd_connections;
  no.timeout_ms = options_.nbd_timeout_ms;
  auto src = OpenLiveDisk(no, cache_);
  if (!src.ok()) return src.status().Annotate(d.target);
  auto disk = std::make_shared<CheckpointDisk>();
  disk->target = d.target;
  disk->source = d.source;
  disk->size = src->nbd->size();
  auto extents = src->nbd->extents(0, disk->size);
  if (!extents.ok()) return extents.status().Annotate(d.target);
  disk->extents = std::move(extents).value();
  for (const auto& e : disk->extents) {
    if (!e.hole) disk->allocated += e.length;
  }
  disk->full = disk_full;
  if (disk_full) {
    disk->changed = DataRanges(disk->extents);
  } else {
    auto dirty = src->nbd->dirty_extents();
    if (!dirty.ok()) return dirty.status().Annotate(d.target);
    disk->changed = std::move(dirty).value();
  }
  disk->changes = FormatChanges(disk->changed);
  disk->image = src->image;
  disk->raw = src->nbd;
  return disk;
}

}  // namespace ckptfs
