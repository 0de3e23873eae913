#include "backend/store/store.h"

#include <spdlog/spdlog.h>
#include <zstd.h>

#include <algorithm>
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
                                 PutStats* stats, bool deferred) {
  return chunks_->Put(data, stats, deferred);
}

Status Store::CommitChunks() { return objects_->Commit(); }

Status Store::GetChunk(const ChunkRef& ref, std::span<std::byte> out) {
  return chunks_->Get(ref, out);
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
  return objects_->Put(
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
  return objects_->Put(RecordKey(record.domain_uuid, record.checkpoint),
                       std::as_bytes(std::span(body.data(), body.size())));
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
  bool deleted = false;
  // The record first: from here on the backup is incomplete, never served.
  Status status =
      objects_->Delete(RecordKey(record.domain_uuid, record.checkpoint));
  if (status.ok()) {
    deleted = true;
  } else if (status.code() != Code::kNotFound) {
    return status;
  }
  ASSIGN_OR_RETURN(
      const std::vector<std::string> keys,
      objects_->List(BackupPrefix(record.domain_uuid, record.checkpoint)));
  for (const std::string& key : keys) {
    status = objects_->Delete(key);
    if (status.ok()) {
      deleted = true;
    } else if (status.code() != Code::kNotFound) {
      return status;
    }
  }
  if (!deleted) {
    return NotFound("no backup of checkpoint '" + record.checkpoint +
                    "' of domain " + record.domain_uuid);
  }
  return Status::Ok();
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
      const Status status = GetChunk(ref, std::span(buf).first(length));
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

Status Store::PutLock(const std::string& name, int64_t started) {
  const std::string body = nlohmann::json{{"started", started}}.dump() + "\n";
  return objects_->Put("locks/" + EncodeKeyComponent(name),
                       std::as_bytes(std::span(body.data(), body.size())));
}

Status Store::DeleteLock(const std::string& name) {
  Status st = objects_->Delete("locks/" + EncodeKeyComponent(name));
  return st.code() == Code::kNotFound ? Status::Ok() : st;
}

Result<std::vector<std::pair<std::string, int64_t>>> Store::ListLocks() {
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List("locks/"));
  std::vector<std::pair<std::string, int64_t>> out;
  for (const std::string& key : keys) {
    auto data = objects_->Get(key);
    if (!data.ok()) continue;  // released meanwhile
    int64_t started = 0;
    try {
      auto j = nlohmann::json::parse(std::string_view(
          reinterpret_cast<const char*>(data->data()), data->size()));
      // Integers only: get<int64_t>() of a float beyond int64 (1e300) is
      // undefined behaviour.
      if (const auto& v = j.at("started"); v.is_number_integer()) {
        started = v.get<int64_t>();
      }
    } catch (const std::exception&) {
      // An unreadable lock still protects: treat it as started at 0, so
      // gc keeps every chunk until someone removes it.
    }
    std::string name;
    DecodeKeyComponent(key.substr(6), &name);
    out.emplace_back(name, started);
  }
  return out;
}

Result<Store::GcStats> Store::CollectGarbage(int64_t cutoff, bool dry_run) {
  ASSIGN_OR_RETURN(const std::vector<ChunkHash> referenced, ReferencedChunks());
  ASSIGN_OR_RETURN(const std::vector<std::string> keys,
                   objects_->List("chunks/"));
  GcStats stats;
  for (const std::string& key : keys) {
    ++stats.chunks;
    ChunkHash hash;
    const size_t slash = key.rfind('/');
    if (!HexToHash(key.substr(slash + 1), &hash)) continue;  // not a chunk
    if (std::binary_search(referenced.begin(), referenced.end(), hash)) {
      ++stats.referenced;
      continue;
    }
    auto mtime = objects_->ModifiedTime(key);
    if (!mtime.ok()) continue;  // gone meanwhile
    if (*mtime >= cutoff) {
      ++stats.recent;
      continue;
    }
    ++stats.deleted;
    if (!dry_run) {
      Status st = objects_->Delete(key);
      if (!st.ok() && st.code() != Code::kNotFound) return st;
    }
  }
  return stats;
}

}  // namespace ckptfs
