// MemoryImageSource: an ImageSource over bytes in memory, with the
// allocation map a test gives it (default: all data). For tests that feed a
// backup or a cache from known bytes.
//
// Thread safety: reads may run concurrently (the bytes never change).
#pragma once

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "backend/image_source.h"

namespace ckptfs {

class MemoryImageSource : public ImageSource {
 public:
  explicit MemoryImageSource(std::vector<std::byte> data,
                             std::vector<Extent> map = {})
      : data_(std::move(data)),
        map_(map.empty() ? std::vector<Extent>{{0, data_.size(), false, false}}
                         : std::move(map)) {}

  uint64_t size() const override { return data_.size(); }

  Status pread(std::span<std::byte> buf, uint64_t offset) override {
    if (offset > data_.size() || buf.size() > data_.size() - offset) {
      return InvalidArgument("read beyond the end of the image");
    }
    std::memcpy(buf.data(), data_.data() + offset, buf.size());
    return Status::Ok();
  }

  Result<std::vector<Extent>> extents(uint64_t offset,
                                      uint64_t length) override {
    std::vector<Extent> out;
    for (const Extent& e : map_) {
      const uint64_t b = std::max(offset, e.offset);
      const uint64_t end = std::min(offset + length, e.offset + e.length);
      if (b < end) out.push_back({b, end - b, e.hole, e.zero});
    }
    return out;
  }

  const std::vector<Extent>& map() const { return map_; }

 private:
  const std::vector<std::byte> data_;
  const std::vector<Extent> map_;
};

}  // namespace ckptfs
