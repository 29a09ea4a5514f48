// The build cache's key for a step: XXH3-128 over the parent's key, the
// normalised instruction, the build args it used and the digest of its
// sources, each field length-prefixed.
#include <xxhash.h>

#include "strata/build.hpp"
#include "strata/error.hpp"

namespace strata::build {

std::string cache_key(std::string_view parent, std::string_view normalized,
                      const std::vector<std::pair<std::string, std::string>>& used_args,
                      std::string_view sources_digest) {
  XXH3_state_t* state = XXH3_createState();
  if (state == nullptr) throw Error("out of memory creating a hash state");
  XXH3_128bits_reset(state);
  // Every field is length-prefixed so that no two different inputs hash the
  // same bytes.
  auto field = [state](std::string_view s) {
    std::uint64_t n = s.size();
    XXH3_128bits_update(state, &n, sizeof n);
    XXH3_128bits_update(state, s.data(), s.size());
  };
  field("strata-build-cache-v1");
  field(parent);
  field(normalized);
  field(std::to_string(used_args.size()));
  for (const auto& [name, value] : used_args) {
    field(name);
    field(value);
  }
  field(sources_digest);
  XXH128_hash_t h = XXH3_128bits_digest(state);
  XXH3_freeState(state);
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, h);
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char b : canon.digest) {
    out += hex[b >> 4];
    out += hex[b & 15];
  }
  return out;
}

}  // namespace strata::build
