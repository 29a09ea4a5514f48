// The OCI JSON readers: descriptor, manifest (image and index shapes), the
// image config's rootfs and history, RFC 3339 times, and the registry's
// manifest check and platform choice. Malformed documents are refused with
// Error; nothing else may escape.
#include "fuzz_input.hpp"
#include "strata/oci.hpp"
#include "strata/registry.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = fuzz::split_at_nul(fuzz::as_text(data, size));
  std::string_view document = parts.first, content_type = parts.second;
  oci::parse_rfc3339(document);
  oci::json j = oci::json::parse(document, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return 0;
  fuzz::refusal_is_fine([&] { oci::Descriptor::from_json(j, "fuzz"); });
  fuzz::refusal_is_fine([&] {
    oci::Manifest m = oci::Manifest::from_json(j, "fuzz");
    oci::Manifest again = oci::Manifest::from_json(m.to_json(), "fuzz round trip");
    fuzz::check(again.to_json() == m.to_json(), "manifest to_json does not round-trip");
  });
  fuzz::refusal_is_fine([&] { oci::config_diff_ids(j); });
  fuzz::refusal_is_fine([&] {
    for (const oci::History& h : oci::config_history(j)) oci::History::from_json(h.to_json());
  });
  fuzz::refusal_is_fine([&] {
    registry::ManifestInfo info = registry::check_manifest(document, content_type, "fuzz");
    if (info.kind == registry::ManifestKind::index) {
      registry::select_platform(info.json, registry::Platform::host());
      fuzz::refusal_is_fine([&] { registry::select_platform(info.json, registry::Platform::parse(content_type)); });
    }
  });
  return 0;
}
