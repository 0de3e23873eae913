#include "backend/store/catalog_follower.h"

#include <spdlog/spdlog.h>

namespace ckptfs {

Status CatalogFollower::Resync() {
  ASSIGN_OR_RETURN(const uint64_t head, store_.changes().Head());
  RETURN_IF_ERROR(store_.ReconcileCatalog(catalog_));
  position_ = head;
  ++resyncs_;
  failures_ = 0;
  return Status::Ok();
}

Status CatalogFollower::Apply(const Change& c) {
  const std::string id = BackupId(c.domain_uuid, c.checkpoint);
  if (c.kind == Change::Kind::kRemoved) {
    Status st = catalog_.RemoveBackup(id);
    return st.code() == Code::kNotFound ? Status::Ok() : st;
  }
  ASSIGN_OR_RETURN(const std::optional<BackupRecord> have,
                   catalog_.GetBackup(id));
  if (have) return Status::Ok();  // this daemon's own, or applied already
  auto record = store_.GetBackup(c.domain_uuid, c.checkpoint);
  // Deleted since: its removal follows in the log.
  if (record.status().code() == Code::kNotFound) return Status::Ok();
  if (!record.ok()) return record.status();
  return catalog_.AddBackup(*record);
}

Status CatalogFollower::Poll() {
  for (;;) {
    ASSIGN_OR_RETURN(ChangeLog::Since since,
                     store_.changes().Read(position_.load()));
    if (since.gap) {
      spdlog::info(
          "store change log: a gap after change {}: listing the "
          "store",
          position_.load());
      return Resync();
    }
    if (since.changes.empty()) return Status::Ok();
    for (const Change& c : since.changes) {
      Status st = Apply(c);
      if (!st.ok()) {
        if (++failures_ < kMaxRetries) return st;
        spdlog::warn(
            "store change {} ({} {}): skipped after {} tries: {}", c.seq,
            c.kind == Change::Kind::kAdded ? "added" : "removed",
            BackupId(c.domain_uuid, c.checkpoint), failures_, st.ToString());
        ++skipped_;
      } else {
        ++applied_;
      }
      failures_ = 0;
      position_ = c.seq;
    }
  }
}

}  // namespace ckptfs
