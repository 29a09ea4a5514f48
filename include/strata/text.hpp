// Small text helpers shared by every parser of colon-separated system files
// and option strings (one of each for the whole tree).
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>
#include <vector>

namespace strata {

// Splits S at every SEP; "a::b" gives {"a", "", "b"}, "" gives {""}.
std::vector<std::string_view> split(std::string_view s, char sep);

// The lines of a passwd-style file: without trailing "\r", without empty
// lines and "#" comments.
std::vector<std::string_view> content_lines(std::string_view content);

// An unsigned number in BASE with nothing around it (no sign, no blanks);
// nullopt when S is empty, malformed or above MAX.
std::optional<std::uint64_t> parse_unsigned(std::string_view s, int base = 10,
                                            std::uint64_t max = UINT64_MAX);

}  // namespace strata
