// src/registry/manifest: what a registry's manifests may be, and which
// entry of an index runs here.
#include <algorithm>

#include "strata/registry.hpp"
#include "util.hpp"

namespace strata::registry {

using oci::json;

namespace {

constexpr const char* kDockerSchema1 = "application/vnd.docker.distribution.manifest.v1+json";
constexpr const char* kDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws";

// The media type without parameters (";charset=utf-8") or spaces.
std::string bare_type(std::string_view content_type) {
  std::string t = lower(content_type.substr(0, content_type.find(';')));
  while (!t.empty() && t.back() == ' ') t.pop_back();
  while (!t.empty() && t.front() == ' ') t.erase(t.begin());
  return t;
}

bool is_index_type(std::string_view t) { return t == oci::kMediaTypeIndex || t == oci::kMediaTypeDockerManifestList; }
bool is_image_type(std::string_view t) { return t == oci::kMediaTypeManifest || t == oci::kMediaTypeDockerManifest; }

// The variant an architecture has when none is named (as containerd
// normalises platforms).
std::string default_variant(std::string_view arch) {
  if (arch == "arm64") return "v8";
  if (arch == "arm") return "v7";
  return {};
}

std::string normal_variant(std::string_view arch, std::string_view variant) {
  return variant.empty() ? default_variant(arch) : std::string(variant);
}

}  // namespace

Platform Platform::host() {
  Platform p;
  p.architecture = oci::host_architecture();
  p.variant = default_variant(p.architecture);
  return p;
}

Platform Platform::parse(std::string_view text) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  for (;;) {
    auto slash = text.find('/', start);
    parts.push_back(lower(text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start)));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  bool ok = (parts.size() == 2 || parts.size() == 3) &&
            std::none_of(parts.begin(), parts.end(), [](const std::string& p) { return p.empty(); });
  if (!ok) throw UsageError("invalid platform " + quote(text) + " (expected OS/ARCH[/VARIANT], e.g. linux/arm64)");
  Platform p;
  p.os = parts[0];
  p.architecture = parts[1];
  if (parts.size() == 3) p.variant = parts[2];
  return p;
}

std::string Platform::str() const { return os + "/" + architecture + (variant.empty() ? "" : "/" + variant); }

std::optional<oci::Descriptor> select_platform(const json& index, const Platform& want) {
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array()) return std::nullopt;
  std::optional<oci::Descriptor> loose;
  for (const auto& entry : index["manifests"]) {
    oci::Descriptor d = oci::Descriptor::from_json(entry, "image index");
    if (!is_image_type(d.media_type) || !d.platform || !d.platform->is_object()) continue;
    const json& p = *d.platform;
    // A field that is not a string names no platform: the entry runs nowhere.
    auto field = [&](const char* key) -> std::optional<std::string> {
      if (!p.contains(key)) return std::string();
      if (!p[key].is_string()) return std::nullopt;
      return p[key].get<std::string>();
    };
    auto os_field = field("os"), arch_field = field("architecture"), variant_field = field("variant");
    if (!os_field || !arch_field || !variant_field) continue;
    const std::string &os = *os_field, &arch = *arch_field, &variant = *variant_field;
    if (os != want.os || arch != want.architecture) continue;
    if (variant == want.variant) return d;
    if (!loose && normal_variant(arch, variant) == normal_variant(want.architecture, want.variant)) loose = d;
  }
  return loose;
}

bool known_layer_media_type(std::string_view t) {
  return t == oci::kMediaTypeLayer || t == oci::kMediaTypeLayerGzip || t == oci::kMediaTypeLayerZstd ||
         t == oci::kMediaTypeDockerLayer || t == oci::kMediaTypeDockerLayerGzip;
}

ManifestInfo check_manifest(std::string_view bytes, std::string_view content_type, std::string_view where_in) {
  std::string where(where_in);
  if (static_cast<std::int64_t>(bytes.size()) > kMaxManifestSize)
    throw Error(where + ": the manifest is larger than 4 MiB; refused");
  std::string header_type = bare_type(content_type);
  auto schema1 = [&]() {
    return Error(where + ": a Docker schema 1 manifest, which is deprecated and not supported; push the image again "
                         "with a current tool");
  };
  if (header_type == kDockerSchema1 || header_type == kDockerSchema1Signed) throw schema1();
  ManifestInfo info;
  info.json = json::parse(bytes, nullptr, false);
  if (info.json.is_discarded() || !info.json.is_object()) throw Error(where + ": the manifest is not a JSON object");
  const json& j = info.json;
  if (j.contains("schemaVersion") && j["schemaVersion"] == 1) throw schema1();
  if (j.contains("mediaType")) {
    if (!j["mediaType"].is_string()) throw Error(where + ": the manifest's mediaType is not a string");
    info.media_type = j["mediaType"].get<std::string>();
  } else if (is_index_type(header_type) || is_image_type(header_type)) {
    info.media_type = header_type;
  } else if (j.contains("manifests")) {
    info.media_type = oci::kMediaTypeIndex;  // an OCI index need not name its type
  } else if (j.contains("config")) {
    info.media_type = oci::kMediaTypeManifest;
  }
  if (info.media_type == kDockerSchema1 || info.media_type == kDockerSchema1Signed) throw schema1();
  if (is_index_type(info.media_type)) {
    info.kind = ManifestKind::index;
    if (!j.contains("manifests") || !j["manifests"].is_array()) throw Error(where + ": the index has no manifests list");
    return info;
  }
  if (!is_image_type(info.media_type))
    throw Error(where + ": unknown manifest media type " + quote(info.media_type.empty() ? header_type : info.media_type));
  info.kind = ManifestKind::image;
  oci::Manifest m = oci::Manifest::from_json(j, where);
  if (m.config.media_type != oci::kMediaTypeConfig && m.config.media_type != oci::kMediaTypeDockerConfig)
    throw Error(where + ": not a container image (config media type " + quote(m.config.media_type) + ")");
  for (const auto& l : m.layers)
    if (!known_layer_media_type(l.media_type))
      throw Error(where + ": layer " + l.digest.str() + " has media type " + quote(l.media_type) +
                  ", which strata cannot store");
  return info;
}

}  // namespace strata::registry
