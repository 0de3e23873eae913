// Deterministic test data: `size` bytes that differ with `seed` and never
// form an all-zero chunk (every byte is 1..251), so stores keep them.
#pragma once

#include <cstddef>
#include <vector>

namespace ckptfs {

inline std::vector<std::byte> Pattern(int seed, size_t size) {
  std::vector<std::byte> out(size);
  for (size_t i = 0; i < size; ++i) {
    out[i] = static_cast<std::byte>((i * 131 + seed * 7919 + 1) % 251 + 1);
  }
  return out;
}

}  // namespace ckptfs
