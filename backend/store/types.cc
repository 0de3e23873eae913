#include "backend/store/types.h"

namespace ckptfs {

std::string HashToHex(const ChunkHash& hash) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string hex(hash.size() * 2, '0');
  for (size_t i = 0; i < hash.size(); ++i) {
    hex[2 * i] = kDigits[hash[i] >> 4];
    hex[2 * i + 1] = kDigits[hash[i] & 0xf];
  }
  return hex;
}

namespace {

int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

bool HexToHash(const std::string& hex, ChunkHash* out) {
  if (hex.size() != out->size() * 2) return false;
  ChunkHash hash{};
  for (size_t i = 0; i < hash.size(); ++i) {
    const int hi = HexDigit(hex[2 * i]);
    const int lo = HexDigit(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    hash[i] = static_cast<uint8_t>(hi << 4 | lo);
  }
  *out = hash;
  return true;
}

}  // namespace ckptfs
