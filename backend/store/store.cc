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

#include "backend/store/local_object_store.h"
#include "backend/store/store_source.h"

namespace ckptfs {

namespace {

using nlohmann::json;

constexpr char kConfigKey[] = "config.json";
constexpr char kBackupsPrefix[] = "backups/";
constexpr char kRecordName[] = "backup.json";
constexpr char kManifestSuffix[] = ".manifest";
// Marks a backup whose DeleteBackup is under way (never a disk's name: those
// end in kManifestSuffix).
constexpr char kDeletingName[] = "deleting";
constexpr uint32_t kMinChunkSize = 4096;
constexpr uint32_t kMaxChunkSize = 16u << 20;
constexpr size_t kMaxComponent = 255;  // NAME_MAX of local filesystems

Status CheckConfig(const StoreConfig& c, const std::string& where) {
  if (c.format != kStoreFormat) {
    return InvalidArgument(where + " has format " + std::to_string(c.format) +
                           "; this ckptfs reads format " +
                           std::to_string(kStoreFormat));
  }
  if (c.chunk_size < kMinChunkSize || c.chunk_size > kMaxChunkSize ||
      (c.chunk_size & (c.chunk_size - 1)) != 0) {
    return InvalidArgument(where + ": chunk_size " +
                           std::to_string(c.chunk_size) +
                           " is not a power of two from 4096 to 16777216");
  }
  if (c.compression != "zstd" && c.compression != "auto") {
    return InvalidArgument(where + ": compression \"" + c.compression +
                           "\" is unknown; this ckptfs knows \"auto\" and "
                           "\"zstd\"");
  }
  if (c.zstd_level < ZSTD_minCLevel() || c.zstd_level > ZSTD_maxCLevel()) {
    return InvalidArgument(where + ": zstd_level " +
                           std::to_string(c.zstd_level) + " is outside " +
                           std::to_string(ZSTD_minCLevel()) + ".." +
                           std::to_string(ZSTD_maxCLevel()));
  }
  return Status::Ok();
}

// Checks a name used as a key component (uuid, checkpoint, disk).
Status CheckName(const char* what, const std::string& name,
                 size_t suffix_length = 0) {
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

bool ListsDisk(const BackupRecord& r, const std::string& disk) {
  return std::any_of(r.disks.begin(), r.disks.end(),
                     [&](const BackupDisk& d) { return d.name == disk; });
}

std::string AsText(const std::vector<std::byte>& data) {
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

}  // namespace

// ------------------------------------------------------------------ config

std::string SerializeStoreConfig(const StoreConfig& c) {
  const json j = {{"format", c.format},
                  {"chunk_size", c.chunk_size},
                  {"compression", c.compression},
                  {"zstd_level", c.zstd_level}};
  return j.dump(2) + "\n";
}

Result<StoreConfig> ParseStoreConfig(std::string_view text,
                                     const std::string& location) {
  const std::string where = "store " + location;
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, or out_of_range for a number beyond a double ("1e400").
    return InvalidArgument(where + ": config.json is not JSON (" + e.what() +
                           ")");
  }
  if (!j.is_object()) {
    return InvalidArgument(where + ": config.json is not a JSON object");
  }
  auto integer = [&](const char* name, int64_t lo, int64_t hi,
                     int64_t* out) -> Status {
    const auto it = j.find(name);
    if (it == j.end()) {
      return InvalidArgument(where + ": config.json has no \"" + name + "\"");
    }
    if (!it->is_number_integer() ||
        (it->is_number_unsigned() &&
         it->get<uint64_t>() > static_cast<uint64_t>(hi)) ||
        it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return InvalidArgument(where + ": config.json field \"" + name +
                             "\" is not an integer in range");
    }
    *out = it->get<int64_t>();
    return Status::Ok();
  };
  StoreConfig c;
  int64_t v = 0;
  RETURN_IF_ERROR(integer("format", 0, UINT32_MAX, &v));
  c.format = static_cast<uint32_t>(v);
  if (c.format != kStoreFormat) return CheckConfig(c, where);
  RETURN_IF_ERROR(integer("chunk_size", 0, UINT32_MAX, &v));
  c.chunk_size = static_cast<uint32_t>(v);
  RETURN_IF_ERROR(integer("zstd_level", INT32_MIN, INT32_MAX, &v));
  c.zstd_level = static_cast<int>(v);
  const auto it = j.find("compression");
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument(where +
                           ": config.json has no string \"compression\"");
  }
  c.compression = it->get<std::string>();
  RETURN_IF_ERROR(CheckConfig(c, where));
  return c;
}

std::string BackupId(const std::string& domain_uuid,
                     const std::string& checkpoint) {
  return domain_uuid + "/" + checkpoint;
}

// ------------------------------------------------------------------- open

Result<std::unique_ptr<Store>> Store::OpenLocal(const std::string& dir,
                                                bool create,
                                                StoreConfig config_if_new) {
  if (create) RETURN_IF_ERROR(CheckConfig(config_if_new, "new store " + dir));
  ASSIGN_OR_RETURN(auto objects, LocalObjectStore::Open(dir, create));
  return Open(std::move(objects), create, std::move(config_if_new));
}

Result<std::unique_ptr<Store>> Store::Open(std::unique_ptr<ObjectStore> objects,
                                           bool create,
                                           StoreConfig config_if_new) {
  const std::string location = objects->location();
  auto text = objects->Get(kConfigKey);
  StoreConfig config;
  if (text.ok()) {
    ASSIGN_OR_RETURN(config, ParseStoreConfig(AsText(*text), location));
  } else if (text.status().code() != Code::kNotFound) {
    return text.status().Annotate("store " + location);
  } else if (!create) {
    return NotFound("no ckptfs store at " + location +
                    " (config.json is missing); create it first");
  } else {
    RETURN_IF_ERROR(CheckConfig(config_if_new, "new store " + location));
    const std::string body = SerializeStoreConfig(config_if_new);
    RETURN_IF_ERROR(objects->Put(
        kConfigKey, std::as_bytes(std::span(body.data(), body.size()))));
    config = std::move(config_if_new);
  }
  return std::unique_ptr<Store>(
      new Store(std::shared_ptr<ObjectStore>(std::move(objects)), config));
}

Store::Store(std::shared_ptr<ObjectStore> objects, StoreConfig config)
    : objects_(std::move(objects)),
      config_(std::move(config)),
      chunks_(std::make_shared<ChunkStore>(
          objects_, config_.chunk_size, config_.zstd_level,
          /*plain_if_incompressible=*/config_.compression == "auto")) {}

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
  const std::vector<std::byte> data = SerializeManifest(manifest);
  return objects_->Create(
      ManifestKey(backup.domain_uuid, backup.checkpoint, manifest.disk), data);
}

Result<Manifest> Store::GetManifest(const BackupRecord& backup,
                                    const std::string& disk) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  RETURN_IF_ERROR(CheckName("disk name", disk, sizeof kManifestSuffix - 1));
  const std::string key =
      ManifestKey(backup.domain_uuid, backup.checkpoint, disk);
  auto data = objects_->Get(key);
  if (!data.ok()) {
    if (data.status().code() != Code::kNotFound) {
      return IoError("manifest " + key + ": " + data.status().ToString());
    }
    if (ListsDisk(backup, disk)) {
      return IoError("manifest " + key + ": missing (store corrupt)");
    }
    return NotFound("backup " + backup.id + " has no disk '" + disk + "'");
  }
  auto manifest = ParseManifest(*data);
  if (!manifest.ok()) return manifest.status().Annotate("manifest " + key);
  if (manifest->backup_id != backup.id || manifest->disk != disk) {
    return IoError("manifest " + key + ": corrupt (names backup '" +
                   manifest->backup_id + "' disk '" + manifest->disk + "')");
  }
  if (manifest->chunk_size != chunk_size()) {
    return IoError("manifest " + key + ": corrupt (chunk size " +
                   std::to_string(manifest->chunk_size) + ", the store's is " +
                   std::to_string(chunk_size()) + ")");
  }
  for (const BackupDisk& d : backup.disks) {
    if (d.name == disk && d.size != manifest->size) {
      return IoError("manifest " + key + ": corrupt (size " +
                     std::to_string(manifest->size) + ", the record says " +
                     std::to_string(d.size) + ")");
    }
  }
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
  return objects_->Create(RecordKey(record.domain_uuid, record.checkpoint),
                          std::as_bytes(std::span(body.data(), body.size())));
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
  if (record) RETURN_IF_ERROR(drop(prefix + kRecordName));
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
  RETURN_IF_ERROR(drop(record_key));
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
  ASSIGN_OR_RETURN(Manifest manifest, GetManifest(backup, disk));
  return std::shared_ptr<ImageSource>(
      std::make_shared<StoreSource>(chunks_, std::move(manifest)));
}

// ------------------------------------------------------------ verification

Result<std::vector<ChunkHash>> Store::ReferencedChunks() {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List(kBackupsPrefix));
  std::vector<ChunkHash> hashes;
  size_t compacted = 0;
  for (const std::string& key : keys) {
    if (!key.ends_with(kManifestSuffix)) continue;
    auto data = objects_->Get(key);
    if (!data.ok()) {
      if (data.status().code() == Code::kNotFound) continue;  // just deleted
      return IoError("manifest " + key + ": " + data.status().ToString());
    }
    auto manifest = ParseManifest(*data);
    if (!manifest.ok()) return manifest.status().Annotate("manifest " + key);
    for (const ChunkRef& ref : manifest->chunks) {
      if (!ref.zero) hashes.push_back(ref.hash);
    }
    // Successive backups share most chunks: deduplicate as we go so memory
    // follows the unique count.
    if (hashes.size() > 2 * compacted + (1u << 20)) {
      std::sort(hashes.begin(), hashes.end());
      hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
      compacted = hashes.size();
    }
  }
  std::sort(hashes.begin(), hashes.end());
  hashes.erase(std::unique(hashes.begin(), hashes.end()), hashes.end());
  return hashes;
}

Result<std::vector<std::string>> Store::VerifyBackup(
    const BackupRecord& backup) {
  RETURN_IF_ERROR(CheckBackupIdentity(backup));
  std::vector<std::string> problems;
  if (backup.disks.empty()) problems.push_back(backup.id + ": lists no disks");
  std::set<ChunkHash> verified;
  std::vector<std::byte> buf(chunk_size());
  for (const BackupDisk& disk : backup.disks) {
    auto manifest = GetManifest(backup, disk.name);
    if (!manifest.ok()) {
      problems.push_back(backup.id + " disk " + disk.name + ": " +
                         manifest.status().message());
      continue;
    }
    const uint64_t cs = manifest->chunk_size;
    for (uint64_t i = 0; i < manifest->chunks.size(); ++i) {
      const ChunkRef& ref = manifest->chunks[i];
      if (ref.zero || verified.contains(ref.hash)) continue;
      const size_t length =
          static_cast<size_t>(std::min(cs, manifest->size - i * cs));
      const Status status = CheckChunk(ref, std::span(buf).first(length));
      if (!status.ok()) {
        problems.push_back(backup.id + " disk " + disk.name + " offset " +
                           std::to_string(i * cs) + ": " + status.message());
        continue;
      }
      verified.insert(ref.hash);
    }
  }
  return problems;
}

Status Store::PutLock(const Lock& lock) {
  RETURN_IF_ERROR(CheckName("lock name", lock.name));
  const std::string body =
      json{{"started", lock.started},
           {"host", lock.host},
           {"pid", lock.pid},
           {"domain_uuid", lock.domain_uuid},
           {"checkpoint", lock.checkpoint}}
          .dump(-1, ' ', false, json::error_handler_t::replace) +
      "\n";
  return objects_->Put("locks/" + EncodeKeyComponent(lock.name),
                       std::as_bytes(std::span(body.data(), body.size())));
}

Status Store::DeleteLock(const std::string& name) {
  Status st = objects_->Delete("locks/" + EncodeKeyComponent(name));
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
  text("host", &lock->host);
  text("domain_uuid", &lock->domain_uuid);
  text("checkpoint", &lock->checkpoint);
}

}  // namespace

Result<std::vector<Store::Lock>> Store::ListLocks() {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List("locks/"));
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

Result<uint64_t> Store::RemoveLeftovers(bool dry_run) {
  ASSIGN_OR_RETURN(const std::vector<Incomplete> incomplete, ListIncomplete());
  uint64_t removed = 0;
  for (const Incomplete& inc : incomplete) {
    // Only a delete cut short (a killed prune, a failed job's undo) is
    // garbage for sure. Manifests without a record or a mark are a running
    // backup, one whose daemon died (its host's next daemon removes it with
    // its lock), or a lost record: verify reports them, gc keeps them.
    if (!inc.deleting) continue;
    if (!dry_run) {
      BackupRecord r;
      r.domain_uuid = inc.domain_uuid;
      r.checkpoint = inc.checkpoint;
      Status st = DeleteBackup(r);
      if (!st.ok() && st.code() != Code::kNotFound) return st;
    }
    removed += inc.keys.size();
    spdlog::info("store {}: {} the rest of the deleted backup {}/{}",
                 objects_->location(), dry_run ? "would remove" : "removed",
                 inc.domain_uuid, inc.checkpoint);
  }
  return removed;
}

Result<Store::GcStats> Store::CollectGarbage(int64_t cutoff, bool dry_run) {
  GcStats stats;
  // Leftovers first, so that they no longer pin their chunks.
  ASSIGN_OR_RETURN(stats.leftovers, RemoveLeftovers(dry_run));
  ASSIGN_OR_RETURN(const std::vector<ChunkHash> referenced, ReferencedChunks());
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List("chunks/"));
  for (const std::string& key : keys) {
    ++stats.chunks;
    ChunkHash hash;
    const size_t slash = key.rfind('/');
    if (!HexToHash(key.substr(slash + 1), &hash)) continue;  // not a chunk
    if (std::binary_search(referenced.begin(), referenced.end(), hash)) {
      ++stats.referenced;
      continue;
    }
    if (dry_run) {
      auto mtime = objects_->ModifiedTime(key);
      if (!mtime.ok()) continue;  // gone meanwhile
      ++(*mtime >= cutoff ? stats.recent : stats.deleted);
      continue;
    }
    ASSIGN_OR_RETURN(const bool deleted,
                     objects_->DeleteIfUnusedSince(key, cutoff));
    ++(deleted ? stats.deleted : stats.recent);
  }
  if (!dry_run) {
    // Temporaries also wait an hour: a plain Put runs without a lock.
    const int64_t temp_cutoff =
        std::min(cutoff, static_cast<int64_t>(std::time(nullptr)) - 3600);
    ASSIGN_OR_RETURN(stats.temporaries,
                     objects_->RemoveStaleTemporaries(temp_cutoff));
  }
  return stats;
}

}  // namespace ckptfs
