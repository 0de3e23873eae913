// Serialisation of the store's metadata objects (see docs/FORMAT.md):
// manifests in a compact, versioned, checksummed binary format and backup
// records as JSON. Exposed for tests and fuzzing; Store uses them.
//
// Parsers accept exactly what the serialisers produce (for the current and
// understood versions) and reject everything else with kIoError and a precise
// reason ("corrupt (bad magic)", "corrupt (checksum mismatch)",
// "corrupt (missing field \"mode\")", ...). They never crash, whatever the
// input, and never allocate more than a small multiple of the input size.
//
// Thread safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "backend/status.h"
#include "backend/store/types.h"

namespace ckptfs {

// Manifest layout, all integers little-endian:
//   magic "CKPTFSMF" (8) | version u32 | chunk_size u32 | size u64 |
//   entry count u64 | backup_id length u16 | backup_id | disk length u16 |
//   disk | entries (33 bytes each: flags u8, SHA-256 32) |
//   SHA-256 of everything before it (32)
inline constexpr char kManifestMagic[8] = {'C', 'K', 'P', 'T',
                                           'F', 'S', 'M', 'F'};
inline constexpr uint32_t kManifestVersion = 1;
inline constexpr size_t kManifestEntrySize = 33;
inline constexpr uint8_t kManifestEntryZero = 0x01;  // flags bit 0

// Format 2 manifest (docs/FORMAT.md section 8), little-endian:
//   magic "CKPTFSMF" (8) | version u32 = 2 | chunk_size u32 | size u64 |
//   leaf_span u32 | fan_out u32 | depth u8 | flags u8 (bit 0: has a root,
//   bit 1: full) | backup_id length u16 | backup_id | disk length u16 | disk |
//   root hash (32, zeros without a root) | SHA-256 of everything before (32)
inline constexpr uint32_t kTreeManifestVersion = 2;

// Backup records: JSON with "format": kBackupRecordFormat.
inline constexpr int kBackupRecordFormat = 1;
// "created" and "completed" lie within +-kMaxEpochSeconds, so that their
// milliseconds fit an int64.
inline constexpr int64_t kMaxEpochSeconds = INT64_MAX / 1000;

// Number of chunks of a disk of `size` bytes: ceil(size / chunk_size).
// REQUIRES: chunk_size > 0.
uint64_t ChunkCount(uint64_t size, uint32_t chunk_size);

// REQUIRES: backup_id and disk are at most 65535 bytes (Store::PutManifest
// checks). A zero entry is written with an all-zero hash, whatever
// ChunkRef::hash holds; ParseManifest returns zero entries with hash {}.
std::vector<std::byte> SerializeManifest(const Manifest& m);
Result<Manifest> ParseManifest(std::span<const std::byte> data);

// The version of a manifest object (after its magic): which parser reads it.
Result<uint32_t> ManifestVersion(std::span<const std::byte> data);
// REQUIRES: as SerializeManifest. The parser also checks the geometry (spans
// 2..65536, depth the least that covers the chunks) and the flags.
std::vector<std::byte> SerializeTreeManifest(const TreeManifest& m);
Result<TreeManifest> ParseTreeManifest(std::span<const std::byte> data);

// Strings that are not valid UTF-8 are written with U+FFFD replacements
// (JSON cannot carry them).
std::string SerializeBackupRecord(const BackupRecord& r);
Result<BackupRecord> ParseBackupRecord(std::string_view json);

}  // namespace ckptfs
