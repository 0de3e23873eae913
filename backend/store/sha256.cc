#include "backend/store/sha256.h"

#include <openssl/evp.h>

#include <new>

namespace ckptfs {

ChunkHash Sha256(std::span<const std::byte> data) {
  ChunkHash hash{};
  unsigned int length = 0;
  // EVP_Digest fails only when OpenSSL cannot allocate or has no SHA-256,
  // which leaves nothing sensible to do.
  if (EVP_Digest(data.data(), data.size(), hash.data(), &length, EVP_sha256(),
                 nullptr) != 1 ||
      length != hash.size()) {
    throw std::bad_alloc();
  }
  return hash;
}

}  // namespace ckptfs
