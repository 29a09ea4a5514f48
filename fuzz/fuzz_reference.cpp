// oci::Reference::parse and oci::Digest::parse on arbitrary text: they
// accept or refuse with Error; what they accept prints back to a reference
// that parses to the same thing.
#include "fuzz_input.hpp"
#include "strata/oci.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  fuzz::refusal_is_fine([&] {
    oci::Reference ref = oci::Reference::parse(text);
    fuzz::check(!ref.domain.empty() && !ref.path.empty(), "parsed reference without domain or path");
    fuzz::check(!ref.tag.empty() || ref.digest.has_value(), "parsed reference without tag or digest");
    std::optional<oci::Reference> again = oci::Reference::try_parse(ref.str());
    fuzz::check(again.has_value(), "str() of a parsed reference does not parse");
    fuzz::check(again->str() == ref.str(), "str() does not round-trip");
    std::optional<oci::Reference> familiar = oci::Reference::try_parse(ref.familiar());
    fuzz::check(familiar.has_value(), "familiar() of a parsed reference does not parse");
    fuzz::check(familiar->str() == ref.str(), "familiar() names another image");
  });
  std::optional<oci::Digest> digest = oci::Digest::try_parse(text);
  if (digest) fuzz::check(digest->str() == text, "a parsed digest prints differently");
  fuzz::refusal_is_fine([&] { oci::Digest::from_hex(text); });
  return 0;
}
