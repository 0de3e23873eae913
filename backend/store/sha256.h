// SHA-256 (OpenSSL EVP) of a byte range: chunk names and manifest checksums.
//
// Thread safety: a pure function.
#pragma once

#include <cstddef>
#include <span>

#include "backend/store/types.h"

namespace ckptfs {

ChunkHash Sha256(std::span<const std::byte> data);

}  // namespace ckptfs
