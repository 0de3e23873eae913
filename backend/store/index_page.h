// Index pages of store format 2 (docs/FORMAT.md): the nodes of a disk's
// Merkle index. A leaf page covers a fixed range of chunk numbers and holds
// the hashes of its present (allocated) chunks only; an interior page holds
// the page hashes of its non-empty children only. An empty range has no
// page at all, so holes and zero chunks cost nothing. A page is stored under
// the SHA-256 of its bytes, which is also its integrity check.
//
// Layout, integers little-endian:
//   magic "CKPTFSIP" (8) | version u8 (2) | level u8 (0: leaf) | flags u16
//   (0) | first chunk number u64 | slots u32 | present bitmap
//   (ceil(slots / 8) bytes, bit s of byte s / 8 = slot s) | interior only:
//   full bitmap (same size: the child's whole range holds data) | one
//   32-byte hash per present slot, in slot order.
//
// ParseIndexPage accepts exactly what SerializeIndexPage produces and
// rejects everything else with kIoError "corrupt (...)"; it never crashes
// and allocates at most a small multiple of the input.
//
// Thread safety: values and pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "backend/status.h"
#include "backend/store/types.h"

namespace ckptfs {

inline constexpr char kIndexPageMagic[8] = {'C', 'K', 'P', 'T',
                                            'F', 'S', 'I', 'P'};
inline constexpr uint8_t kIndexPageVersion = 2;
inline constexpr size_t kIndexPageHeader = 24;
// Bounds the parser enforces (a tree is at most this deep and wide).
inline constexpr uint8_t kMaxIndexLevel = 32;
inline constexpr uint32_t kMaxIndexSlots = 1u << 16;

struct IndexPage {
  uint8_t level = 0;   // 0: leaf (slots are chunks), else interior
  uint64_t first = 0;  // chunk number of slot 0's first chunk
  uint32_t slots = 0;  // leaf span, or fan-out
  // Present slots, ascending, with the chunk hash (leaf) or child page
  // hash (interior).
  std::vector<std::pair<uint32_t, ChunkHash>> entries;
  // Interior only, parallel to entries: the child's range is all data.
  std::vector<bool> full;

  // The entry of `slot`, or nullptr.
  const std::pair<uint32_t, ChunkHash>* Find(uint32_t slot) const;
  // Index into entries of the first entry with slot >= `slot`.
  size_t LowerBound(uint32_t slot) const;
};

// REQUIRES: entries ascending, unique, below slots; full.size() equals
// entries.size() for an interior page, 0 for a leaf.
std::vector<std::byte> SerializeIndexPage(const IndexPage& page);
Result<IndexPage> ParseIndexPage(std::span<const std::byte> data);

}  // namespace ckptfs
