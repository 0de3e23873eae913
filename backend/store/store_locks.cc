// Store: the locks of running backups (locks/<name>), gc's cutoff, and
// the removal of the locks of backups whose process is gone.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <utility>

#include "backend/store/store.h"
#include "backend/store/store_internal.h"

namespace ckptfs {
namespace {

using namespace store_internal;  // NOLINT: the layout's names
using nlohmann::json;

}  // namespace

Status Store::PutLock(const Lock& lock) {
  RETURN_IF_ERROR(CheckName("lock name", lock.name));
  const std::string body =
      json{{"started", lock.started},
           {"host", lock.host},
           {"pid", lock.pid},
           {"domain_uuid", lock.domain_uuid},
           {"checkpoint", lock.checkpoint},
           {"lease", lock.lease}}
          .dump(-1, ' ', false, json::error_handler_t::replace) +
      "\n";
  return objects_->Put(kLocksPrefix + EncodeKeyComponent(lock.name),
                       std::as_bytes(std::span(body.data(), body.size())));
}

Result<bool> Store::RenewLock(const std::string& name) {
  return objects_->Touch(kLocksPrefix + EncodeKeyComponent(name));
}

Status Store::DeleteLock(const std::string& name) {
  Status st = objects_->Delete(kLocksPrefix + EncodeKeyComponent(name));
  return st.code() == Code::kNotFound ? Status::Ok() : st;
}

namespace {

// Fills the fields of a lock from its body; leaves what is missing or of
// the wrong type at its default. Integers only: get<int64_t>() of a float
// beyond int64 (1e300) is undefined behaviour.
void ParseLockBody(std::string_view body, Store::Lock* lock) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) return;
  auto integer = [&](const char* key, int64_t* out) {
    const auto it = j.find(key);
    if (it != j.end() && it->is_number_integer() &&
        !(it->is_number_unsigned() &&
          it->get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))) {
      *out = it->get<int64_t>();
    }
  };
  auto text = [&](const char* key, std::string* out) {
    const auto it = j.find(key);
    if (it != j.end() && it->is_string()) *out = it->get<std::string>();
  };
  integer("started", &lock->started);
  integer("pid", &lock->pid);
  integer("lease", &lock->lease);
  text("host", &lock->host);
  text("domain_uuid", &lock->domain_uuid);
  text("checkpoint", &lock->checkpoint);
}

}  // namespace

Result<std::vector<Store::Lock>> Store::ListLocks() {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kLocksPrefix));
  std::vector<Lock> out;
  for (const std::string& key : keys) {
    auto data = objects_->Get(key);
    if (!data.ok()) continue;  // released meanwhile
    Lock lock;
    const std::string component = key.substr(key.find('/') + 1);
    if (!DecodeKeyComponent(component, &lock.name)) lock.name = component;
    // An unreadable lock still protects: started stays 0, so gc keeps
    // every chunk until someone removes it.
    ParseLockBody(AsText(*data), &lock);
    auto renewed = objects_->ModifiedTime(key);
    if (renewed.ok()) lock.renewed = *renewed;
    out.push_back(std::move(lock));
  }
  return out;
}

Result<int64_t> Store::GcCutoff(int64_t now) {
  ASSIGN_OR_RETURN(const auto locks, ListLocks());
  int64_t cutoff = now;
  for (const Lock& lock : locks) cutoff = std::min(cutoff, lock.started);
  // A minute of margin for clocks and writes in flight.
  return cutoff - 60;
}

void Store::RemovePartialBackupOf(const Lock& lock) {
  // The backup it names never completed if it has no record: its
  // manifests would pin chunks against gc and look like damage to verify.
  if (lock.domain_uuid.empty() || lock.checkpoint.empty()) return;
  BackupRecord partial;
  partial.domain_uuid = lock.domain_uuid;
  partial.checkpoint = lock.checkpoint;
  auto record = GetBackup(partial.domain_uuid, partial.checkpoint);
  if (!record.ok() && record.status().code() == Code::kNotFound &&
      DeleteBackup(partial).ok()) {
    spdlog::warn("removed the incomplete backup {} of a stopped backup",
                 BackupId(lock.domain_uuid, lock.checkpoint));
  }
}

void Store::RemoveStaleLocks(const std::string& host,
                             const std::function<bool(int64_t pid)>& alive) {
  // Locks of backups by dead daemons of this host would only make gc keep
  // more; remove them. The owner is matched by the lock's fields: host
  // "node" must never take "node-2"'s lock for its own.
  auto locks = ListLocks();
  if (!locks.ok()) return;
  for (const Lock& lock : *locks) {
    if (lock.host.empty() || lock.host != host) continue;
    if (lock.pid > 0 && alive(lock.pid)) continue;
    RemovePartialBackupOf(lock);
    spdlog::info("removing the store lock of a stopped backup: {}", lock.name);
    (void)DeleteLock(lock.name);
  }
}

Result<std::vector<Store::Lock>> Store::ExpireLocks(int64_t now) {
  ASSIGN_OR_RETURN(const auto locks, ListLocks());
  std::vector<Lock> expired;
  for (const Lock& lock : locks) {
    if (lock.lease <= 0 || lock.renewed + lock.lease >= now) continue;
    // Deleted only if nobody renewed it since the lease began: atomic
    // against RenewLock, so a writer renewing now keeps its lock.
    ASSIGN_OR_RETURN(
        const bool deleted,
        objects_->DeleteIfUnusedSince(
            kLocksPrefix + EncodeKeyComponent(lock.name), now - lock.lease));
    if (!deleted) continue;
    spdlog::warn("store lock {} of host {} expired (not renewed for {} s)",
                 lock.name, lock.host, now - lock.renewed);
    RemovePartialBackupOf(lock);
    expired.push_back(lock);
  }
  return expired;
}

}  // namespace ckptfs
