#include "mountd/stored.h"

#include <spdlog/spdlog.h>

#include "mountd/control.h"
#include "mountd/source_factory.h"

namespace ckptfs {
namespace {

// The names of a record become directory and file names in the tree. A
// record whose names are not safe there ("..", "a/b", "latest", a leading
// '.': a damaged or foreign store) is not served.
Status CheckNames(const BackupRecord& r) {
  RETURN_IF_ERROR(ValidateDomainName(r.domain).Annotate("domain"));
  // The uuid names the domain's directory when two domains share a name.
  RETURN_IF_ERROR(ValidateDomainName(r.domain_uuid).Annotate("domain uuid"));
  RETURN_IF_ERROR(ValidateCheckpointName(r.checkpoint).Annotate("checkpoint"));
  for (const auto& d : r.disks) {
    RETURN_IF_ERROR(ValidateDiskName(d.name).Annotate("disk"));
  }
  return Status::Ok();
}

}  // namespace

std::shared_ptr<const CheckpointView> StoredCheckpoints::MakeView(
    const BackupRecord& r) {
  auto v = std::make_shared<CheckpointView>();
  v->domain = r.domain;
  v->domain_uuid = r.domain_uuid;
  v->name = r.checkpoint;
  v->state = "stored";
  v->mode = r.mode;
  v->base = r.base;
  v->created = r.created;
  v->xml = r.checkpoint_xml;
  for (const auto& d : r.disks) {
    auto disk = std::make_shared<CheckpointDisk>();
    disk->target = d.name;
    disk->source = d.source;
    disk->size = d.size;
    disk->allocated = d.allocated;
    disk->changed = d.changes;
    disk->changes = FormatChanges(d.changes);
    disk->image = OpenStoredDisk(store_, r, d, cache_);
    v->disks.push_back(std::move(disk));
  }
  v->info_json = CheckpointInfoJson(*v);
  return v;
}

Status StoredCheckpoints::Refresh() {
  std::lock_guard refresh(refresh_mu_);
  ASSIGN_OR_RETURN(uint64_t version, catalog_.BackupsVersion());
  if (loaded_version_ == version) return Status::Ok();
  ASSIGN_OR_RETURN(std::vector<BackupRecord> all, catalog_.ListBackups());
  std::vector<BackupRecord> records;
  for (auto& r : all) {
    Status names = CheckNames(r);
    if (names.ok()) {
      records.push_back(std::move(r));
      continue;
    }
    std::lock_guard lock(mu_);
    if (skipped_.insert(r.id).second) {
      spdlog::warn("not serving backup {}: {}", SanitizeForRecord(r.id),
                   names.message());
    }
  }
  std::map<std::string, std::shared_ptr<const CheckpointView>> next;
  {
    std::lock_guard lock(mu_);
    for (const auto& r : records) {
      auto it = views_.find(r.id);
      next[r.id] = it != views_.end() ? it->second : nullptr;
    }
  }
  for (const auto& r : records) {
    if (!next[r.id]) next[r.id] = MakeView(r);
  }
  std::lock_guard lock(mu_);
  views_ = std::move(next);
  ++reloads_;
  loaded_version_ = version;
  return Status::Ok();
}

uint64_t StoredCheckpoints::reloads() const {
  std::lock_guard lock(mu_);
  return reloads_;
}

std::vector<std::shared_ptr<const CheckpointView>> StoredCheckpoints::List()
    const {
  std::lock_guard lock(mu_);
  std::vector<std::shared_ptr<const CheckpointView>> out;
  for (const auto& [id, v] : views_) out.push_back(v);
  return out;
}

}  // namespace ckptfs
