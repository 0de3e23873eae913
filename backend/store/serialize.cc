#include "backend/store/serialize.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <utility>

#include "backend/store/sha256.h"

namespace ckptfs {

uint64_t ChunkCount(uint64_t size, uint32_t chunk_size) {
  return size / chunk_size + (size % chunk_size != 0 ? 1 : 0);
}

// ---------------------------------------------------------------- manifest

namespace {

class Writer {
 public:
  explicit Writer(size_t reserve) { out_.reserve(reserve); }
  void Bytes(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void U8(uint8_t v) { out_.push_back(static_cast<std::byte>(v)); }
  void U16(uint16_t v) { Le(v, 2); }
  void U32(uint32_t v) { Le(v, 4); }
  void U64(uint64_t v) { Le(v, 8); }
  void String(const std::string& s) {
    const size_t n = std::min<size_t>(s.size(), 0xffff);
    U16(static_cast<uint16_t>(n));
    Bytes(s.data(), n);
  }
  std::vector<std::byte>& out() { return out_; }

 private:
  void Le(uint64_t v, int n) {
    for (int i = 0; i < n; ++i)
      out_.push_back(static_cast<std::byte>(v >> (8 * i)));
  }
  std::vector<std::byte> out_;
};

// Bounds-checked little-endian reader: every read reports whether the bytes
// were there.
class Reader {
 public:
  explicit Reader(std::span<const std::byte> data) : data_(data) {}
  size_t pos() const { return pos_; }
  size_t left() const { return data_.size() - pos_; }
  bool Skip(size_t n) {
    if (left() < n) return false;
    pos_ += n;
    return true;
  }
  bool Le(uint64_t* v, int n) {
    if (left() < static_cast<size_t>(n)) return false;
    uint64_t x = 0;
    for (int i = 0; i < n; ++i) {
      x |= uint64_t{std::to_integer<uint8_t>(data_[pos_ + i])} << (8 * i);
    }
    pos_ += n;
    *v = x;
    return true;
  }
  bool String(std::string* s) {
    uint64_t n = 0;
    if (!Le(&n, 2) || left() < n) return false;
    s->assign(reinterpret_cast<const char*>(data_.data() + pos_), n);
    pos_ += n;
    return true;
  }

 private:
  std::span<const std::byte> data_;
  size_t pos_ = 0;
};

Status CorruptManifest(const std::string& reason) {
  return IoError("corrupt (" + reason + ")");
}

}  // namespace

std::vector<std::byte> SerializeManifest(const Manifest& m) {
  Writer w(8 + 4 + 4 + 8 + 8 + 4 + m.backup_id.size() + m.disk.size() +
           m.chunks.size() * kManifestEntrySize + 32);
  w.Bytes(kManifestMagic, sizeof kManifestMagic);
  w.U32(kManifestVersion);
  w.U32(m.chunk_size);
  w.U64(m.size);
  w.U64(m.chunks.size());
  w.String(m.backup_id);
  w.String(m.disk);
  static constexpr ChunkHash kNoHash{};
  for (const ChunkRef& ref : m.chunks) {
    w.U8(ref.zero ? kManifestEntryZero : 0);
    const ChunkHash& hash = ref.zero ? kNoHash : ref.hash;
    w.Bytes(hash.data(), hash.size());
  }
  const ChunkHash sum = Sha256(w.out());
  w.Bytes(sum.data(), sum.size());
  return std::move(w.out());
}

Result<Manifest> ParseManifest(std::span<const std::byte> data) {
  ASSIGN_OR_RETURN(const uint32_t version, ManifestVersion(data));
  Reader r(data);
  (void)r.Skip(sizeof kManifestMagic + 4);  // magic and version, read above
  uint64_t chunk_size = 0, size = 0, count = 0;
  if (version != kManifestVersion) {
    return IoError("unsupported (manifest version " + std::to_string(version) +
                   "; this ckptfs reads version " +
                   std::to_string(kManifestVersion) + ")");
  }
  Manifest m;
  if (!r.Le(&chunk_size, 4) || !r.Le(&size, 8) || !r.Le(&count, 8) ||
      !r.String(&m.backup_id) || !r.String(&m.disk)) {
    return CorruptManifest("truncated header");
  }
  // Exact length check before the checksum, without overflow.
  constexpr size_t kSum = 32;
  if (r.left() < kSum || (r.left() - kSum) / kManifestEntrySize < count) {
    return CorruptManifest("truncated: " + std::to_string(data.size()) +
                           " bytes, the header " + "announces " +
                           std::to_string(count) + " entries");
  }
  const uint64_t expected = r.pos() + count * kManifestEntrySize + kSum;
  if (data.size() != expected) {
    return CorruptManifest(std::to_string(data.size() - expected) +
                           " trailing bytes");
  }
  const ChunkHash sum = Sha256(data.first(data.size() - kSum));
  if (std::memcmp(sum.data(), data.data() + data.size() - kSum, kSum) != 0) {
    return CorruptManifest("checksum mismatch");
  }
  if (chunk_size == 0) return CorruptManifest("chunk size 0");
  const uint64_t want = ChunkCount(size, static_cast<uint32_t>(chunk_size));
  if (count != want) {
    return CorruptManifest("entry count " + std::to_string(count) +
                           " != ceil(size " + std::to_string(size) +
                           " / chunk size " + std::to_string(chunk_size) +
                           ") = " + std::to_string(want));
  }
  if (m.disk.empty()) return CorruptManifest("empty disk name");
  m.size = size;
  m.chunk_size = static_cast<uint32_t>(chunk_size);
  m.chunks.resize(count);
  const std::byte* p = data.data() + r.pos();
  for (uint64_t i = 0; i < count; ++i, p += kManifestEntrySize) {
    const auto flags = std::to_integer<uint8_t>(p[0]);
    ChunkRef& ref = m.chunks[i];
    if ((flags & ~kManifestEntryZero) != 0) {
      return CorruptManifest("entry " + std::to_string(i) + ": unknown flags " +
                             std::to_string(flags));
    }
    ref.zero = (flags & kManifestEntryZero) != 0;
    std::memcpy(ref.hash.data(), p + 1, ref.hash.size());
    if (ref.zero && ref.hash != ChunkHash{}) {
      return CorruptManifest("entry " + std::to_string(i) +
                             ": zero chunk with a hash");
    }
  }
  return m;
}

// -------------------------------------------------- format 2 manifest

Result<uint32_t> ManifestVersion(std::span<const std::byte> data) {
  Reader r(data);
  uint64_t version = 0;
  if (data.size() < sizeof kManifestMagic) {
    return CorruptManifest("truncated: " + std::to_string(data.size()) +
                           " bytes");
  }
  if (std::memcmp(data.data(), kManifestMagic, sizeof kManifestMagic) != 0) {
    return CorruptManifest("bad magic");
  }
  (void)r.Skip(sizeof kManifestMagic);
  if (!r.Le(&version, 4)) return CorruptManifest("truncated header");
  return static_cast<uint32_t>(version);
}

namespace {

constexpr uint8_t kTreeHasRoot = 0x01;
constexpr uint8_t kTreeFull = 0x02;

// The least depth whose root covers `chunks`, or -1 if the spans are out of
// range (every page has 2 to 65536 slots).
int TreeDepth(uint64_t chunks, uint64_t leaf_span, uint64_t fan_out) {
  if (leaf_span < 2 || fan_out < 2 || leaf_span > 65536 || fan_out > 65536) {
    return -1;
  }
  int depth = 0;
  for (uint64_t span = leaf_span; span < chunks; span *= fan_out) {
    ++depth;
    if (span > UINT64_MAX / fan_out) break;  // the next level covers all
  }
  return depth;
}

}  // namespace

std::vector<std::byte> SerializeTreeManifest(const TreeManifest& m) {
  Writer w(8 + 4 + 4 + 8 + 4 + 4 + 2 + 4 + m.backup_id.size() + m.disk.size() +
           64);
  w.Bytes(kManifestMagic, sizeof kManifestMagic);
  w.U32(kTreeManifestVersion);
  w.U32(m.chunk_size);
  w.U64(m.size);
  w.U32(m.leaf_span);
  w.U32(m.fan_out);
  w.U8(m.depth);
  w.U8((m.has_root ? kTreeHasRoot : 0) | (m.full ? kTreeFull : 0));
  w.String(m.backup_id);
  w.String(m.disk);
  static constexpr ChunkHash kNoHash{};
  const ChunkHash& root = m.has_root ? m.root : kNoHash;
  w.Bytes(root.data(), root.size());
  const ChunkHash sum = Sha256(w.out());
  w.Bytes(sum.data(), sum.size());
  return std::move(w.out());
}

Result<TreeManifest> ParseTreeManifest(std::span<const std::byte> data) {
  ASSIGN_OR_RETURN(const uint32_t version, ManifestVersion(data));
  if (version != kTreeManifestVersion) {
    return IoError("unsupported (manifest version " + std::to_string(version) +
                   " where version 2 belongs)");
  }
  Reader r(data);
  (void)r.Skip(sizeof kManifestMagic + 4);
  uint64_t chunk_size = 0, size = 0, leaf = 0, fan = 0, depth = 0, flags = 0;
  TreeManifest m;
  if (!r.Le(&chunk_size, 4) || !r.Le(&size, 8) || !r.Le(&leaf, 4) ||
      !r.Le(&fan, 4) || !r.Le(&depth, 1) || !r.Le(&flags, 1) ||
      !r.String(&m.backup_id) || !r.String(&m.disk)) {
    return CorruptManifest("truncated header");
  }
  constexpr size_t kSum = 32;
  if (r.left() != 32 + kSum) {
    return CorruptManifest(std::to_string(data.size()) + " bytes, expected " +
                           std::to_string(r.pos() + 32 + kSum));
  }
  const ChunkHash sum = Sha256(data.first(data.size() - kSum));
  if (std::memcmp(sum.data(), data.data() + data.size() - kSum, kSum) != 0) {
    return CorruptManifest("checksum mismatch");
  }
  if (chunk_size == 0) return CorruptManifest("chunk size 0");
  if (m.disk.empty()) return CorruptManifest("empty disk name");
  const uint64_t count = ChunkCount(size, static_cast<uint32_t>(chunk_size));
  const int want = TreeDepth(count, leaf, fan);
  if (want < 0 || static_cast<uint64_t>(want) != depth) {
    return CorruptManifest("tree geometry " + std::to_string(leaf) + "/" +
                           std::to_string(fan) + " depth " +
                           std::to_string(depth) + " for " +
                           std::to_string(count) + " chunks");
  }
  if ((flags & ~uint64_t{kTreeHasRoot | kTreeFull}) != 0 ||
      ((flags & kTreeFull) != 0 && (flags & kTreeHasRoot) == 0)) {
    return CorruptManifest("flags " + std::to_string(flags));
  }
  std::memcpy(m.root.data(), data.data() + r.pos(), m.root.size());
  m.has_root = (flags & kTreeHasRoot) != 0;
  if (!m.has_root && m.root != ChunkHash{}) {
    return CorruptManifest("a root hash without a root");
  }
  m.full = (flags & kTreeFull) != 0;
  m.size = size;
  m.chunk_size = static_cast<uint32_t>(chunk_size);
  m.leaf_span = static_cast<uint32_t>(leaf);
  m.fan_out = static_cast<uint32_t>(fan);
  m.depth = static_cast<uint8_t>(depth);
  return m;
}

// ----------------------------------------------------------- backup record

namespace {

using nlohmann::json;

Status CorruptRecord(const std::string& reason) {
  return IoError("corrupt (" + reason + ")");
}

const json* Field(const json& object, const char* name, Status* error) {
  const auto it = object.find(name);
  if (it == object.end()) {
    *error = CorruptRecord(std::string("missing field \"") + name + "\"");
    return nullptr;
  }
  return &*it;
}

Status GetString(const json& object, const char* name, std::string* out) {
  Status error;
  const json* v = Field(object, name, &error);
  if (v == nullptr) return error;
  if (!v->is_string()) {
    return CorruptRecord(std::string("field \"") + name + "\" is not a string");
  }
  *out = v->get<std::string>();
  return Status::Ok();
}

Status GetInt64(const json& object, const char* name, int64_t* out) {
  Status error;
  const json* v = Field(object, name, &error);
  if (v == nullptr) return error;
  if (v->is_number_unsigned()) {
    const auto u = v->get<uint64_t>();
    if (u <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
      *out = static_cast<int64_t>(u);
      return Status::Ok();
    }
  } else if (v->is_number_integer()) {
    *out = v->get<int64_t>();
    return Status::Ok();
  }
  return CorruptRecord(std::string("field \"") + name +
                       "\" is not a 64-bit integer");
}

Status GetUint64(const json& object, const char* name, uint64_t* out) {
  Status error;
  const json* v = Field(object, name, &error);
  if (v == nullptr) return error;
  if (v->is_number_unsigned()) {
    *out = v->get<uint64_t>();
    return Status::Ok();
  }
  if (v->is_number_integer() && v->get<int64_t>() >= 0) {
    *out = static_cast<uint64_t>(v->get<int64_t>());
    return Status::Ok();
  }
  return CorruptRecord(std::string("field \"") + name +
                       "\" is not a non-negative integer");
}

// "changes": [[offset, length], ...], in order, within the disk. Optional
// (added to BackupDisk after the first records): absent means none known.
Status GetChanges(const json& disk, BackupDisk* out) {
  const auto it = disk.find("changes");
  if (it == disk.end()) return Status::Ok();
  const std::string what = "disk \"" + out->name + "\": ";
  if (!it->is_array()) {
    return CorruptRecord(what + "field \"changes\" is not an array");
  }
  uint64_t end = 0;
  for (const json& e : *it) {
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned()) {
      return CorruptRecord(what + "a change is not [offset, length]");
    }
    const auto offset = e[0].get<uint64_t>();
    const auto length = e[1].get<uint64_t>();
    if (offset < end || length > out->size || offset > out->size - length) {
      return CorruptRecord(what + "change [" + std::to_string(offset) + ", " +
                           std::to_string(length) +
                           "] is out of order or beyond the disk");
    }
    end = offset + length;
    out->changes.emplace_back(offset, length);
  }
  return Status::Ok();
}

}  // namespace

std::string SerializeBackupRecord(const BackupRecord& r) {
  json disks = json::array();
  for (const BackupDisk& d : r.disks) {
    json changes = json::array();
    for (const auto& [offset, length] : d.changes) {
      changes.push_back(json::array({offset, length}));
    }
    disks.push_back({{"name", d.name},
                     {"size", d.size},
                     {"allocated", d.allocated},
                     {"source", d.source},
                     {"bytes_read", d.bytes_read},
                     {"changes", std::move(changes)}});
  }
  const json j = {{"format", kBackupRecordFormat},
                  {"id", r.id},
                  {"domain", r.domain},
                  {"domain_uuid", r.domain_uuid},
                  {"checkpoint", r.checkpoint},
                  {"base", r.base},
                  {"mode", r.mode},
                  {"created", r.created},
                  {"completed", r.completed},
                  {"disks", std::move(disks)},
                  {"checkpoint_xml", r.checkpoint_xml}};
  return j.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
}

Result<BackupRecord> ParseBackupRecord(std::string_view text) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    // parse_error, and out_of_range for a number too large for a double
    // ("1e400"): both mean the text is not a record.
    return CorruptRecord(std::string("not JSON: ") + e.what());
  }
  if (!j.is_object()) return CorruptRecord("not a JSON object");
  int64_t format = 0;
  RETURN_IF_ERROR(GetInt64(j, "format", &format));
  if (format != kBackupRecordFormat) {
    return IoError("unsupported (backup record format " +
                   std::to_string(format) + "; this ckptfs reads format " +
                   std::to_string(kBackupRecordFormat) + ")");
  }
  BackupRecord r;
  RETURN_IF_ERROR(GetString(j, "id", &r.id));
  RETURN_IF_ERROR(GetString(j, "domain", &r.domain));
  RETURN_IF_ERROR(GetString(j, "domain_uuid", &r.domain_uuid));
  RETURN_IF_ERROR(GetString(j, "checkpoint", &r.checkpoint));
  RETURN_IF_ERROR(GetString(j, "base", &r.base));
  RETURN_IF_ERROR(GetString(j, "mode", &r.mode));
  RETURN_IF_ERROR(GetInt64(j, "created", &r.created));
  RETURN_IF_ERROR(GetInt64(j, "completed", &r.completed));
  // Times are shown in milliseconds (info.json, `ckptfs ls`): refuse one
  // whose milliseconds overflow int64 (beyond 292 million years).
  for (const int64_t t : {r.created, r.completed}) {
    if (t > kMaxEpochSeconds || t < -kMaxEpochSeconds) {
      return CorruptRecord("time " + std::to_string(t) + " is out of range");
    }
  }
  RETURN_IF_ERROR(GetString(j, "checkpoint_xml", &r.checkpoint_xml));
  Status error;
  const json* disks = Field(j, "disks", &error);
  if (disks == nullptr) return error;
  if (!disks->is_array())
    return CorruptRecord("field \"disks\" is not an array");
  std::set<std::string> names;
  for (const json& d : *disks) {
    if (!d.is_object()) return CorruptRecord("a disk is not a JSON object");
    BackupDisk disk;
    RETURN_IF_ERROR(GetString(d, "name", &disk.name));
    RETURN_IF_ERROR(GetUint64(d, "size", &disk.size));
    RETURN_IF_ERROR(GetUint64(d, "allocated", &disk.allocated));
    RETURN_IF_ERROR(GetString(d, "source", &disk.source));
    RETURN_IF_ERROR(GetUint64(d, "bytes_read", &disk.bytes_read));
    if (disk.name.empty()) return CorruptRecord("a disk has an empty name");
    RETURN_IF_ERROR(GetChanges(d, &disk));
    if (!names.insert(disk.name).second) {
      return CorruptRecord("disk \"" + disk.name + "\" listed twice");
    }
    r.disks.push_back(std::move(disk));
  }
  if (r.domain_uuid.empty()) return CorruptRecord("empty domain_uuid");
  if (r.checkpoint.empty()) return CorruptRecord("empty checkpoint");
  if (r.id != r.domain_uuid + "/" + r.checkpoint) {
    return CorruptRecord("id \"" + r.id + "\" is not domain_uuid/checkpoint");
  }
  if (r.mode != "full" && r.mode != "incremental") {
    return CorruptRecord("mode \"" + r.mode +
                         "\" is neither full nor incremental");
  }
  return r;
}

}  // namespace ckptfs
