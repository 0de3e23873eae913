// Plain data of the backup store: chunk references, per-disk manifests and
// backup records. Serialisation lives with the store (backend/store/); the
// catalog (backend/store/catalog.h) indexes the same records.
//
// Thread safety: values.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace ckptfs {

// SHA-256 of a chunk's plain bytes.
using ChunkHash = std::array<uint8_t, 32>;

std::string HashToHex(const ChunkHash& hash);
bool HexToHash(const std::string& hex, ChunkHash* out);

struct ChunkRef {
  ChunkHash hash{};
  bool zero = false;  // all-zero chunk: not stored, reads as zeros (a hole)
  bool operator==(const ChunkRef&) const = default;
};

// Every chunk of one disk of one backup, in order: any backup reads in O(1)
// per block without walking a chain, and can be deleted alone.
struct Manifest {
  std::string backup_id;
  std::string disk;              // target, "vda"
  uint64_t size = 0;             // virtual disk size in bytes
  uint32_t chunk_size = 0;       // the store's chunk size
  std::vector<ChunkRef> chunks;  // ceil(size / chunk_size) entries
};

// Store format 2: the manifest names the root of the disk's index tree of
// content-addressed pages (backend/store/tree_index.h, docs/FORMAT.md 8).
struct TreeManifest {
  std::string backup_id;
  std::string disk;
  uint64_t size = 0;
  uint32_t chunk_size = 0;
  uint32_t leaf_span = 0;  // chunks per leaf page
  uint32_t fan_out = 0;    // children per interior page
  uint8_t depth = 0;       // level of the root
  bool has_root = false;   // false: no chunk holds data
  bool full = false;       // every chunk holds data
  ChunkHash root{};        // the root page's hash (0 without a root)
  bool operator==(const TreeManifest&) const = default;
};

struct BackupDisk {
  std::string name;  // target
  uint64_t size = 0;
  uint64_t allocated = 0;   // bytes of non-zero chunks
  std::string source;       // the disk's file on the host at backup time
  uint64_t bytes_read = 0;  // read from the export by this backup
  // Extents changed since the base (dirty bitmap, or allocation for a full
  // backup), bytes: the <disk>.changes file.
  std::vector<std::pair<uint64_t, uint64_t>> changes;
};

// One complete backup of a checkpoint: written to the store after every
// manifest it names is durable; the catalog row follows.
struct BackupRecord {
  std::string id;  // "<domain-uuid>/<checkpoint>"
  std::string domain;
  std::string domain_uuid;
  std::string checkpoint;
  std::string base;            // checkpoint of the base backup, "" for full
  std::string mode;            // "full" | "incremental"
  int64_t created = 0;         // checkpoint creation time, epoch seconds
  int64_t completed = 0;       // epoch seconds
  std::string checkpoint_xml;  // with the domain XML
  std::vector<BackupDisk> disks;
};

}  // namespace ckptfs
