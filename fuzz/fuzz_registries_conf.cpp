// registries.conf (TOML): parsed or refused with Error; what parses answers
// lookups and resolves short names. The text after the first NUL is the name
// looked up.
#include "fuzz_input.hpp"
#include "strata/registry.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = fuzz::split_at_nul(fuzz::as_text(data, size));
  std::string_view toml = parts.first, name = parts.second;
  fuzz::refusal_is_fine([&] {
    registry::RegistriesConf conf = registry::RegistriesConf::parse(toml, "registries.conf");
    registry::RegistriesConf merged;
    merged.merge(conf);
    conf.find(name);
    registry::has_domain(name);
    registry::resolve_reference(name, conf);
  });
  return 0;
}
