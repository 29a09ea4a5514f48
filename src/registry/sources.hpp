// src/registry/sources: which repositories a stored blob is known to be in
// (it was pulled from or pushed to them), so that push can mount it from
// there instead of uploading it. Kept in ROOT/registry/sources/HEX, one
// "domain/path" a line, appended to (a short O_APPEND write is atomic, so
// concurrent pulls need no lock). Only a hint: push asks the registry first.
#pragma once

#include <string>
#include <vector>

#include "strata/oci.hpp"

namespace strata::registry {

void record_source(const std::string& store_root, const oci::Digest& blob, const std::string& repository);
// Newest last, without repeats.
std::vector<std::string> blob_sources(const std::string& store_root, const oci::Digest& blob);

}  // namespace strata::registry
