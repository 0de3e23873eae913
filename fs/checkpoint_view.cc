#include "fs/checkpoint_view.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "backend/clock.h"

namespace ckptfs {

std::string CheckpointInfoJson(const CheckpointView& v) {
  nlohmann::json disks = nlohmann::json::array();
  for (const auto& d : v.disks) {
    disks.push_back({{"name", d->target},
                     {"size", d->size},
                     {"allocated", d->allocated},
                     {"source", d->source}});
  }
  nlohmann::json j = {
      {"domain", v.domain},
      {"checkpoint", v.name},
      {"state", v.state},
      {"mode", v.mode},
      // null when none, as in the job records.
      {"base",
       v.base.empty() ? nlohmann::json(nullptr) : nlohmann::json(v.base)},
      {"created", IsoTime(v.created * 1000)},
      {"disks", disks},
  };
  return j.dump(2) + "\n";
}

std::string FormatChanges(
    const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  std::string out;
  for (const auto& [off, len] : ranges) {
    out += std::to_string(off) + " " + std::to_string(len) + "\n";
  }
  return out;
}

std::vector<std::pair<uint64_t, uint64_t>> DataRanges(
    const std::vector<Extent>& extents) {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  for (const Extent& e : extents) {
    if (e.hole) continue;
    if (!out.empty() && out.back().first + out.back().second == e.offset) {
      out.back().second += e.length;
    } else {
      out.emplace_back(e.offset, e.length);
    }
  }
  return out;
}

Result<uint64_t> SeekExtents(const std::vector<Extent>& extents, uint64_t size,
                             uint64_t offset, bool data) {
  if (offset >= size) return Status(Code::kOutOfRange, "offset beyond the end");
  // First extent that ends after offset.
  auto it = std::upper_bound(
      extents.begin(), extents.end(), offset,
      [](uint64_t off, const Extent& e) { return off < e.offset + e.length; });
  for (; it != extents.end(); ++it) {
    bool is_hole = it->hole || it->zero;
    if (is_hole != data) return std::max(offset, it->offset);
  }
  // Past the last extent: the implicit hole at the end of the file.
  if (data) return Status(Code::kOutOfRange, "no data after offset");
  return size;
}

Result<uint64_t> SeekImage(ImageSource& image, uint64_t offset, bool data) {
  const uint64_t size = image.size();
  if (offset >= size) return Status(Code::kOutOfRange, "offset beyond the end");
  constexpr uint64_t kFirstWindow = 1u << 20;
  uint64_t window = kFirstWindow;
  for (uint64_t pos = offset; pos < size;
       window = std::min(2 * window, uint64_t{1} << 62)) {
    const uint64_t length = std::min(window, size - pos);
    auto extents = image.extents(pos, length);
    if (!extents.ok()) return IoError(extents.status().message());
    for (const Extent& e : *extents) {
      bool is_hole = e.hole || e.zero;
      if (is_hole != data) return std::max(pos, e.offset);
    }
    pos += length;
  }
  // The implicit hole at the end of the file.
  if (data) return Status(Code::kOutOfRange, "no data after offset");
  return size;
}

}  // namespace ckptfs
