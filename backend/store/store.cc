#include "backend/store/store.h"

#include <spdlog/spdlog.h>
#include <zstd.h>

#include <algorithm>
#include <ctime>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <tuple>
#include <utility>

#include "backend/store/store_internal.h"
#include "backend/store/store_source.h"

namespace ckptfs {
namespace store_internal {

Status CheckName(const char* what, const std::string& name,
                 size_t suffix_length) {
  if (name.empty()) return InvalidArgument(std::string(what) + " is empty");
  if (EncodeKeyComponent(name).size() + suffix_length > kMaxComponent) {
    return InvalidArgument(std::string(what) + " '" + name + "' is too long");
  }
  return Status::Ok();
}

Status CheckBackupIdentity(const BackupRecord& r) {
  RETURN_IF_ERROR(CheckName("domain uuid", r.domain_uuid));
  RETURN_IF_ERROR(CheckName("checkpoint name", r.checkpoint));
  if (r.id != BackupId(r.domain_uuid, r.checkpoint)) {
    return InvalidArgument("backup id '" + r.id + "' is not '" +
                           BackupId(r.domain_uuid, r.checkpoint) + "'");
  }
  return Status::Ok();
}

std::string AsText(const std::vector<std::byte>& data) {
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

}  // namespace store_internal

namespace {

using namespace store_internal;  // NOLINT: the layout's names
using nlohmann::json;

bool ListsDisk(const BackupRecord& r, const std::string& disk) {
  return std::any_of(r.disks.begin(), r.disks.end(),
                     [&](const BackupDisk& d) { return d.name == disk; });
}

}  // namespace

// -------------------------------------------------------------------- keys

std::string Store::ChunkKey(const ChunkHash& hash) {
  return ChunkStore::KeyOf(hash);
}

std::string Store::BackupPrefix(const std::string& domain_uuid,
                                const std::string& checkpoint) {
  return std::string(kBackupsPrefix) + EncodeKeyComponent(domain_uuid) + "/" +
         EncodeKeyComponent(checkpoint) + "/";
}

std::string Store::RecordKey(const std::string& domain_uuid,
                             const std::string& checkpoint) {
  return BackupPrefix(domain_uuid, checkpoint) + kRecordName;
}

std::string Store::ManifestKey(const std::string& domain_uuid,
                               const std::string& checkpoint,
                               const std::string& disk) {
  return BackupPrefix(domain_uuid, checkpoint) + EncodeKeyComponent(disk) +
         kManifestSuffix;
}

// ------------------------------------------------------------------ chunks

Result<ChunkRef> Store::PutChunk(std::span<const std::byte> data,
                                 PutStats* stats, ObjectStore::Batch* batch) {
  return chunks_->Put(data, stats, batch);
}

std::unique_ptr<ObjectStore::Batch> Store::NewBatch() {
  return objects_->NewBatch();
}

Status Store::GetChunk(const ChunkRef& ref, std::span<std::byte> out) {
  return chunks_->Get(ref, out);
}

Status Store::CheckChunk(const ChunkRef& ref, std::span<std::byte> out) {
  bool damaged = false;
  Status st = chunks_->Get(ref, out, &damaged);
  if (st.ok() || !damaged) return st;
  // Once more: a fault on the way (memory, a flaky cable) must not move a
  // good chunk aside, which would take it from every backup naming it.
  Status again = chunks_->Get(ref, out, &damaged);
  if (again.ok() || !damaged) return again;
  Status qs = objects_->Quarantine(ChunkKey(ref.hash));
  if (!qs.ok() && qs.code() != Code::kNotFound) {
    return st.Annotate("cannot move it aside: " + qs.message());
  }
  spdlog::warn(
      "store {}: {}: moved aside; the next backup holding its data "
      "stores it again",
      objects_->location(), st.message());
  return Status(st.code(), st.message() +
                               "; moved aside, the next backup holding this "
                               "data stores it again");
}

Result<bool> Store::TouchChunk(const ChunkHash& hash) {
  return objects_->Touch(ChunkKey(hash));
}

// --------------------------------------------------------------- manifests

Status Store::PutManifest(const BackupRecord& backup,
                          const Manifest& manifest) {
  RETURN_IF_ERROR(CheckManifest(backup, manifest));
  const std::vector<std::byte> data = SerializeManifest(manifest);
  return objects_->Create(
      ManifestKey(backup.domain_uuid, backup.checkpoint, manifest.disk), data);
}

Status Store::CheckManifest(const BackupRecord& backup,
                            const Manifest& manifest) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  RETURN_IF_ERROR(
      CheckName("disk name", manifest.disk, sizeof kManifestSuffix - 1));
  const std::string what =
      "manifest of " + backup.id + " disk " + manifest.disk;
  if (manifest.backup_id != backup.id) {
    return InvalidArgument(what + ": names backup '" + manifest.backup_id +
                           "'");
  }
  if (manifest.chunk_size != chunk_size()) {
    return InvalidArgument(what + ": chunk size " +
                           std::to_string(manifest.chunk_size) +
                           ", the store's is " + std::to_string(chunk_size()));
  }
  const uint64_t want = ChunkCount(manifest.size, manifest.chunk_size);
  if (manifest.chunks.size() != want) {
    return InvalidArgument(what + ": " +
                           std::to_string(manifest.chunks.size()) +
                           " chunks for " + std::to_string(manifest.size) +
                           " bytes, expected " + std::to_string(want));
  }
  return Status::Ok();
}

Result<std::vector<std::byte>> Store::ReadManifestObject(
    const BackupRecord& backup, const std::string& disk, std::string* key) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  RETURN_IF_ERROR(CheckName("disk name", disk, sizeof kManifestSuffix - 1));
  *key = ManifestKey(backup.domain_uuid, backup.checkpoint, disk);
  auto data = objects_->Get(*key);
  if (!data.ok()) {
    if (data.status().code() != Code::kNotFound) {
      return IoError("manifest " + *key + ": " + data.status().ToString());
    }
    if (ListsDisk(backup, disk)) {
      return IoError("manifest " + *key + ": missing (store corrupt)");
    }
    return NotFound("backup " + backup.id + " has no disk '" + disk + "'");
  }
  return data;
}

Status Store::CheckManifestIdentity(const std::string& key,
                                    const BackupRecord& backup,
                                    const std::string& disk,
                                    const std::string& names_backup,
                                    const std::string& names_disk,
                                    uint32_t chunk_size_of, uint64_t size) {
  if (names_backup != backup.id || names_disk != disk) {
    return IoError("manifest " + key + ": corrupt (names backup '" +
                   names_backup + "' disk '" + names_disk + "')");
  }
  if (chunk_size_of != chunk_size()) {
    return IoError("manifest " + key + ": corrupt (chunk size " +
                   std::to_string(chunk_size_of) + ", the store's is " +
                   std::to_string(chunk_size()) + ")");
  }
  for (const BackupDisk& d : backup.disks) {
    if (d.name == disk && d.size != size) {
      return IoError("manifest " + key + ": corrupt (size " +
                     std::to_string(size) + ", the record says " +
                     std::to_string(d.size) + ")");
    }
  }
  return Status::Ok();
}

Result<Manifest> Store::GetManifest(const BackupRecord& backup,
                                    const std::string& disk) {
  std::string key;
  ASSIGN_OR_RETURN(const std::vector<std::byte> data,
                   ReadManifestObject(backup, disk, &key));
  auto manifest = ParseManifest(data);
  if (!manifest.ok()) return manifest.status().Annotate("manifest " + key);
  RETURN_IF_ERROR(CheckManifestIdentity(key, backup, disk, manifest->backup_id,
                                        manifest->disk, manifest->chunk_size,
                                        manifest->size));
  return manifest;
}

// ----------------------------------------------------------------- records

Status Store::PutBackup(const BackupRecord& record) {
  RETURN_IF_ERROR(CheckBackupIdentity(record));
  if (record.mode != "full" && record.mode != "incremental") {
    return InvalidArgument("backup " + record.id + ": mode '" + record.mode +
                           "' is neither full nor incremental");
  }
  if (record.disks.empty()) {
    return InvalidArgument("backup " + record.id + " lists no disks");
  }
  std::set<std::string> names;
  for (const BackupDisk& d : record.disks) {
    RETURN_IF_ERROR(CheckName("disk name", d.name, sizeof kManifestSuffix - 1));
    if (!names.insert(d.name).second) {
      return InvalidArgument("backup " + record.id + " lists disk '" + d.name +
                             "' twice");
    }
    const std::string key =
        ManifestKey(record.domain_uuid, record.checkpoint, d.name);
    ASSIGN_OR_RETURN(const bool exists, objects_->Exists(key));
    if (!exists) {
      return InvalidArgument("backup " + record.id + ": disk '" + d.name +
                             "' has no manifest (" + key +
                             "); write every manifest before the record");
    }
  }
  const std::string body = SerializeBackupRecord(record);
  // What is written must read back, or the backup would silently vanish
  // from ListBackups later (e.g. "changes" out of order, names that are not
  // UTF-8).
  auto readback = ParseBackupRecord(body);
  if (!readback.ok()) {
    return InvalidArgument("backup " + record.id + ": record would not read " +
                           "back: " + readback.status().message());
  }
  if (readback->domain_uuid != record.domain_uuid ||
      readback->checkpoint != record.checkpoint) {
    return InvalidArgument("backup " + record.id +
                           ": domain uuid or checkpoint name is not UTF-8");
  }
  RETURN_IF_ERROR(
      objects_->Create(RecordKey(record.domain_uuid, record.checkpoint),
                       std::as_bytes(std::span(body.data(), body.size()))));
  Announce(Change::Kind::kAdded, record.domain_uuid, record.checkpoint);
  return Status::Ok();
}

Status Store::CheckNameFree(const std::string& domain_uuid,
                            const std::string& checkpoint) {
  RETURN_IF_ERROR(CheckName("domain uuid", domain_uuid));
  RETURN_IF_ERROR(CheckName("checkpoint name", checkpoint));
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(BackupPrefix(domain_uuid, checkpoint)));
  if (keys.empty()) return Status::Ok();
  auto has = [&](const char* name) {
    return std::any_of(keys.begin(), keys.end(), [&](const std::string& k) {
      return k.ends_with(std::string("/") + name);
    });
  };
  const std::string what =
      "checkpoint '" + checkpoint + "' of domain " + domain_uuid;
  if (has(kRecordName)) {
    return AlreadyExists("the store holds a backup of " + what +
                         "; a backup never changes: choose another name");
  }
  if (has(kDeletingName)) {
    return AlreadyExists("a backup of " + what +
                         " is being removed; 'ckptfs gc' finishes that");
  }
  return AlreadyExists("the store holds an incomplete backup of " + what +
                       " (running, or without its record: see 'ckptfs "
                       "verify'); choose another name");
}

void Store::Announce(Change::Kind kind, const std::string& domain_uuid,
                     const std::string& checkpoint) {
  // Best effort (change_log.h): what it announces is done either way.
  auto seq = changes_.Append(kind, domain_uuid, checkpoint);
  if (!seq.ok()) {
    spdlog::warn(
        "store {}: backup {} is {}, but other hosts learn of it only "
        "when they list the store: {}",
        objects_->location(), BackupId(domain_uuid, checkpoint),
        kind == Change::Kind::kAdded ? "complete" : "deleted",
        seq.status().ToString());
  }
}

Status Store::DeleteWritten(const BackupRecord& backup,
                            const std::vector<std::string>& disks,
                            bool record) {
  RETURN_IF_ERROR(CheckName("domain uuid", backup.domain_uuid));
  RETURN_IF_ERROR(CheckName("checkpoint name", backup.checkpoint));
  if (disks.empty() && !record) return Status::Ok();
  const std::string prefix =
      BackupPrefix(backup.domain_uuid, backup.checkpoint);
  auto drop = [&](const std::string& key) {
    Status st = objects_->Delete(key);
    return st.code() == Code::kNotFound ? Status::Ok() : st;
  };
  // Marked like a DeleteBackup, so that gc finishes it if this fails.
  RETURN_IF_ERROR(objects_->Put(prefix + kDeletingName, {}));
  // The record first: from there on the backup is incomplete, never served.
  if (record) {
    Status st = objects_->Delete(prefix + kRecordName);
    if (st.ok()) {
      Announce(Change::Kind::kRemoved, backup.domain_uuid, backup.checkpoint);
    } else if (st.code() != Code::kNotFound) {
      return st;
    }
  }
  for (const std::string& disk : disks) {
    RETURN_IF_ERROR(
        drop(ManifestKey(backup.domain_uuid, backup.checkpoint, disk)));
  }
  return drop(prefix + kDeletingName);
}

Result<BackupRecord> Store::GetBackup(const std::string& domain_uuid,
                                      const std::string& checkpoint) {
  RETURN_IF_ERROR(CheckName("domain uuid", domain_uuid));
  RETURN_IF_ERROR(CheckName("checkpoint name", checkpoint));
  const std::string key = RecordKey(domain_uuid, checkpoint);
  auto data = objects_->Get(key);
  if (!data.ok()) {
    if (data.status().code() == Code::kNotFound) {
      return NotFound("no complete backup of checkpoint '" + checkpoint +
                      "' of domain " + domain_uuid);
    }
    return IoError("backup record " + key + ": " + data.status().ToString());
  }
  auto record = ParseBackupRecord(AsText(*data));
  if (!record.ok()) return record.status().Annotate("backup record " + key);
  if (record->domain_uuid != domain_uuid || record->checkpoint != checkpoint) {
    return IoError("backup record " + key + ": corrupt (names backup '" +
                   record->id + "')");
  }
  return record;
}

Result<std::vector<BackupRecord>> Store::ListBackups(
    std::vector<std::string>* problems) {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kBackupsPrefix));
  std::vector<BackupRecord> records;
  auto skip = [&](const std::string& problem) {
    spdlog::warn("store {}: skipping {}", objects_->location(), problem);
    if (problems != nullptr) problems->push_back(problem);
  };
  for (const std::string& key : keys) {
    // backups/<uuid>/<checkpoint>/backup.json
    if (!key.ends_with(std::string("/") + kRecordName) ||
        std::count(key.begin(), key.end(), '/') != 3) {
      continue;
    }
    auto data = objects_->Get(key);
    if (!data.ok()) {
      if (data.status().code() == Code::kNotFound) continue;  // just deleted
      skip("backup record " + key + ": " + data.status().ToString());
      continue;
    }
    auto record = ParseBackupRecord(AsText(*data));
    if (!record.ok()) {
      skip("backup record " + key + ": " + record.status().message());
      continue;
    }
    if (RecordKey(record->domain_uuid, record->checkpoint) != key) {
      skip("backup record " + key + ": corrupt (names backup '" + record->id +
           "')");
      continue;
    }
    records.push_back(std::move(*record));
  }
  std::sort(records.begin(), records.end(),
            [](const BackupRecord& a, const BackupRecord& b) {
              return std::tie(a.domain_uuid, a.created, a.checkpoint) <
                     std::tie(b.domain_uuid, b.created, b.checkpoint);
            });
  return records;
}

Status Store::DeleteBackup(const BackupRecord& record) {
  RETURN_IF_ERROR(CheckName("domain uuid", record.domain_uuid));
  RETURN_IF_ERROR(CheckName("checkpoint name", record.checkpoint));
  const std::string prefix =
      BackupPrefix(record.domain_uuid, record.checkpoint);
  ASSIGN_OR_RETURN(std::vector<std::string> keys, objects_->List(prefix));
  if (keys.empty()) {
    return NotFound("no backup of checkpoint '" + record.checkpoint +
                    "' of domain " + record.domain_uuid);
  }
  const std::string mark = prefix + kDeletingName;
  RETURN_IF_ERROR(objects_->Put(mark, {}));
  auto drop = [&](const std::string& key) {
    Status st = objects_->Delete(key);
    return st.code() == Code::kNotFound ? Status::Ok() : st;
  };
  // The record first: from here on the backup is incomplete, never served.
  const std::string record_key = prefix + kRecordName;
  if (std::find(keys.begin(), keys.end(), record_key) != keys.end()) {
    RETURN_IF_ERROR(drop(record_key));
    Announce(Change::Kind::kRemoved, record.domain_uuid, record.checkpoint);
  }
  for (const std::string& key : keys) {
    if (key != record_key && key != mark) RETURN_IF_ERROR(drop(key));
  }
  return drop(mark);
}

Result<std::vector<Store::Incomplete>> Store::ListIncomplete() {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kBackupsPrefix));
  // backups/<uuid>/<checkpoint>/<name>, sorted: one run of keys per backup.
  std::vector<Incomplete> out;
  std::string prefix;
  bool complete = false;
  auto flush = [&] {
    if (!prefix.empty() && complete) out.pop_back();
  };
  for (const std::string& key : keys) {
    if (std::count(key.begin(), key.end(), '/') != 3) continue;
    const size_t cut = key.rfind('/') + 1;
    if (key.compare(0, cut, prefix) != 0) {
      flush();
      prefix = key.substr(0, cut);
      complete = false;
      const size_t a = key.find('/', sizeof kBackupsPrefix - 1);
      const std::string uuid_part =
          key.substr(sizeof kBackupsPrefix - 1, a - sizeof kBackupsPrefix + 1);
      const std::string cp_part = key.substr(a + 1, cut - a - 2);
      Incomplete inc;
      if (!DecodeKeyComponent(uuid_part, &inc.domain_uuid)) {
        inc.domain_uuid = uuid_part;
      }
      if (!DecodeKeyComponent(cp_part, &inc.checkpoint)) {
        inc.checkpoint = cp_part;
      }
      out.push_back(std::move(inc));
    }
    const std::string_view name = std::string_view(key).substr(cut);
    if (name == kRecordName) complete = true;
    if (name == kDeletingName) out.back().deleting = true;
    out.back().keys.push_back(key);
  }
  flush();
  return out;
}

// ------------------------------------------------------------------ images

Result<std::shared_ptr<ImageSource>> Store::OpenImage(
    const BackupRecord& backup, const std::string& disk) {
  ASSIGN_OR_RETURN(std::shared_ptr<const ChunkIndex> index,
                   OpenIndex(backup, disk));
  return std::shared_ptr<ImageSource>(
      std::make_shared<StoreSource>(chunks_, std::move(index)));
}

}  // namespace ckptfs
