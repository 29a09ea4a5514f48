// src/registry/compress: recompressing a layer blob for push
// (--compression, or v2s2 which cannot carry zstd).
#pragma once

#include <cstdint>
#include <utility>

#include "strata/archive.hpp"
#include "strata/oci.hpp"

namespace strata::registry {

// Reads IN_FD (plain, gzip, zstd, ...: detected from the bytes), writes its
// decompressed content compressed with TARGET (gzip without a timestamp,
// so the same layer gives the same blob; or zstd) to OUT_FD. Returns the
// digest and size of what was written.
std::pair<oci::Digest, std::int64_t> recompress(int in_fd, int out_fd, archive::Compression target);

// The compression a layer media type names (none for a plain tar).
archive::Compression layer_compression(std::string_view media_type);

}  // namespace strata::registry
