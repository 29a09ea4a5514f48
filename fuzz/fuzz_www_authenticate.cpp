// The registry client's WWW-Authenticate parser: never throws, and every
// challenge it returns has a lower-case scheme and lower-case parameter names.
#include <cctype>

#include "fuzz_input.hpp"
#include "strata/registry.hpp"

using namespace strata;

namespace {

bool has_upper(const std::string& s) {
  for (char c : s)
    if (std::isupper(static_cast<unsigned char>(c))) return true;
  return false;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  for (const registry::Challenge& c : registry::parse_www_authenticate(fuzz::as_text(data, size))) {
    fuzz::check(!c.scheme.empty() && !has_upper(c.scheme), "challenge scheme empty or not lower case");
    for (const auto& [name, value] : c.params) fuzz::check(!has_upper(name), "challenge parameter not lower case");
  }
  return 0;
}
