#include "backend/store/index_page.h"

#include <algorithm>
#include <cstring>
#include <string>

namespace ckptfs {

namespace {

Status Corrupt(const std::string& reason) {
  return IoError("corrupt (" + reason + ")");
}

void PutLe(std::vector<std::byte>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i)
    out.push_back(static_cast<std::byte>(v >> (8 * i)));
}

uint64_t GetLe(const std::byte* p, int n) {
  uint64_t v = 0;
  for (int i = 0; i < n; ++i)
    v |= uint64_t{std::to_integer<uint8_t>(p[i])} << (8 * i);
  return v;
}

bool Bit(const std::byte* map, uint32_t s) {
  return (std::to_integer<uint8_t>(map[s / 8]) >> (s % 8) & 1) != 0;
}

}  // namespace

size_t IndexPage::LowerBound(uint32_t slot) const {
  auto it = std::lower_bound(entries.begin(), entries.end(), slot,
                             [](const std::pair<uint32_t, ChunkHash>& e,
                                uint32_t s) { return e.first < s; });
  return static_cast<size_t>(it - entries.begin());
}

const std::pair<uint32_t, ChunkHash>* IndexPage::Find(uint32_t slot) const {
  const size_t k = LowerBound(slot);
  return k < entries.size() && entries[k].first == slot ? &entries[k] : nullptr;
}

std::vector<std::byte> SerializeIndexPage(const IndexPage& page) {
  const size_t map_bytes = (page.slots + 7) / 8;
  const size_t maps = page.level == 0 ? 1 : 2;
  std::vector<std::byte> out;
  out.reserve(kIndexPageHeader + maps * map_bytes + 32 * page.entries.size());
  const auto* magic = reinterpret_cast<const std::byte*>(kIndexPageMagic);
  out.insert(out.end(), magic, magic + sizeof kIndexPageMagic);
  PutLe(out, kIndexPageVersion, 1);
  PutLe(out, page.level, 1);
  PutLe(out, 0, 2);
  PutLe(out, page.first, 8);
  PutLe(out, page.slots, 4);
  const size_t present_at = out.size();
  out.resize(out.size() + maps * map_bytes, std::byte{0});
  for (size_t k = 0; k < page.entries.size(); ++k) {
    const uint32_t s = page.entries[k].first;
    out[present_at + s / 8] |= static_cast<std::byte>(1u << (s % 8));
    if (page.level != 0 && page.full[k]) {
      out[present_at + map_bytes + s / 8] |=
          static_cast<std::byte>(1u << (s % 8));
    }
  }
  for (const auto& [slot, hash] : page.entries) {
    const auto* h = reinterpret_cast<const std::byte*>(hash.data());
    out.insert(out.end(), h, h + hash.size());
  }
  return out;
}

Result<IndexPage> ParseIndexPage(std::span<const std::byte> data) {
  if (data.size() < kIndexPageHeader) {
    return Corrupt("truncated: " + std::to_string(data.size()) + " bytes");
  }
  if (std::memcmp(data.data(), kIndexPageMagic, sizeof kIndexPageMagic) != 0) {
    return Corrupt("bad magic");
  }
  const std::byte* p = data.data();
  const uint64_t version = GetLe(p + 8, 1);
  if (version != kIndexPageVersion) {
    return Corrupt("version " + std::to_string(version));
  }
  IndexPage page;
  page.level = static_cast<uint8_t>(GetLe(p + 9, 1));
  if (page.level > kMaxIndexLevel) {
    return Corrupt("level " + std::to_string(page.level));
  }
  if (GetLe(p + 10, 2) != 0) return Corrupt("unknown flags");
  page.first = GetLe(p + 12, 8);
  page.slots = static_cast<uint32_t>(GetLe(p + 20, 4));
  if (page.slots == 0 || page.slots > kMaxIndexSlots) {
    return Corrupt(std::to_string(page.slots) + " slots");
  }
  const size_t map_bytes = (page.slots + 7) / 8;
  const size_t maps = page.level == 0 ? 1 : 2;
  if (data.size() < kIndexPageHeader + maps * map_bytes) {
    return Corrupt("truncated bitmap");
  }
  const std::byte* present = p + kIndexPageHeader;
  const std::byte* full = present + map_bytes;
  size_t count = 0;
  for (uint32_t s = 0; s < map_bytes * 8; ++s) {
    const bool set = Bit(present, s);
    if (set && s >= page.slots) return Corrupt("bit beyond the slots");
    if (maps == 2 && Bit(full, s) && !set) {
      return Corrupt("full slot " + std::to_string(s) + " is absent");
    }
    count += set ? 1 : 0;
  }
  if (count == 0) return Corrupt("no entries");
  const size_t want = kIndexPageHeader + maps * map_bytes + 32 * count;
  if (data.size() != want) {
    return Corrupt(std::to_string(data.size()) + " bytes, expected " +
                   std::to_string(want));
  }
  page.entries.reserve(count);
  const std::byte* h = present + maps * map_bytes;
  for (uint32_t s = 0; s < page.slots; ++s) {
    if (!Bit(present, s)) continue;
    ChunkHash hash;
    std::memcpy(hash.data(), h, hash.size());
    h += hash.size();
    page.entries.emplace_back(s, hash);
    if (maps == 2) page.full.push_back(Bit(full, s));
  }
  return page;
}

}  // namespace ckptfs
