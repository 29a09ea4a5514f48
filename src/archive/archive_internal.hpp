// Helpers that archive.cpp (layers) and image_archive.cpp (whole images)
// share; not part of the module's interface.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace strata::archive::detail {

// "1.5 MiB": a byte count as people read it, for messages.
std::string human_size(std::int64_t n);

// Splits an entry name into safe components; throws Error on `..` and
// absolute names, naming WHAT.
std::vector<std::string> split_name(std::string_view name, std::string_view what);

}  // namespace strata::archive::detail
