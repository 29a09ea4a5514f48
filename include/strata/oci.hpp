// strata::oci: the vocabulary of OCI images shared by the store, the archive
// code, the registry client and the build executor: SHA-256 digests,
// image references (docker's grammar), media types and the JSON documents
// (descriptor, manifest, index, image config) as nlohmann::json values with
// small typed helpers.
#pragma once

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::oci {

using json = nlohmann::json;

// ---------------------------------------------------------------- digests

// A content digest "sha256:<64 lowercase hex>". Only sha256 is produced;
// parse() accepts sha256 and refuses everything else with a clear error.
class Digest {
 public:
  Digest() = default;
  // Parses "sha256:HEX"; throws Error naming the text when malformed.
  static Digest parse(std::string_view text);
  // Like parse() but returns nullopt instead of throwing.
  static std::optional<Digest> try_parse(std::string_view text) noexcept;
  // Builds a digest from 64 lowercase hex characters; throws when malformed.
  static Digest from_hex(std::string_view hex);

  bool empty() const noexcept { return hex_.empty(); }
  const std::string& hex() const noexcept { return hex_; }  // 64 hex characters
  std::string str() const { return empty() ? std::string() : "sha256:" + hex_; }
  std::string short_id() const { return hex_.substr(0, 12); }  // as `docker images` shows ids

  friend bool operator==(const Digest& a, const Digest& b) noexcept { return a.hex_ == b.hex_; }
  friend bool operator<(const Digest& a, const Digest& b) noexcept { return a.hex_ < b.hex_; }

 private:
  std::string hex_;
};

// Streaming SHA-256 (OpenSSL libcrypto).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, std::size_t size);
  void update(std::string_view data) { update(data.data(), data.size()); }
  // Finishes and returns the digest; the object may not be updated afterwards.
  Digest finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

Digest sha256(std::string_view data);
// Digest of the whole content of the open file FD (read from its current offset).
Digest sha256_fd(int fd);

// ---------------------------------------------------------------- references

// An image reference in docker's grammar: [DOMAIN[:PORT]/]PATH[:TAG][@DIGEST].
// parse() normalises like docker: no domain means docker.io, a one-component
// path on docker.io gets "library/", no tag and no digest means "latest".
struct Reference {
  std::string domain;  // "docker.io", "localhost:5000", ...
  std::string path;    // "library/alpine", "team/app"
  std::string tag;     // empty only when a digest was given without a tag
  std::optional<Digest> digest;

  // Throws UsageError ("invalid reference format: 'X'") when TEXT is not a reference.
  static Reference parse(std::string_view text);
  static std::optional<Reference> try_parse(std::string_view text) noexcept;

  // "docker.io/library/alpine" (no tag, no digest).
  std::string name() const;
  // The full normalised form: "docker.io/library/alpine:3.20[@sha256:...]".
  std::string str() const;
  // As docker shows it: "alpine", "team/app", "localhost:5000/x" (no tag).
  std::string familiar_name() const;
  // familiar_name() plus ":TAG" and/or "@DIGEST".
  std::string familiar() const;
};

// ---------------------------------------------------------------- media types

inline constexpr const char* kMediaTypeIndex = "application/vnd.oci.image.index.v1+json";
inline constexpr const char* kMediaTypeManifest = "application/vnd.oci.image.manifest.v1+json";
inline constexpr const char* kMediaTypeConfig = "application/vnd.oci.image.config.v1+json";
inline constexpr const char* kMediaTypeLayer = "application/vnd.oci.image.layer.v1.tar";
inline constexpr const char* kMediaTypeLayerGzip = "application/vnd.oci.image.layer.v1.tar+gzip";
inline constexpr const char* kMediaTypeLayerZstd = "application/vnd.oci.image.layer.v1.tar+zstd";
inline constexpr const char* kMediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json";
inline constexpr const char* kMediaTypeDockerManifestList =
    "application/vnd.docker.distribution.manifest.list.v2+json";
inline constexpr const char* kMediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json";
inline constexpr const char* kMediaTypeDockerLayer = "application/vnd.docker.image.rootfs.diff.tar";
inline constexpr const char* kMediaTypeDockerLayerGzip = "application/vnd.docker.image.rootfs.diff.tar.gzip";

// The tag annotation of an index entry in an OCI layout.
inline constexpr const char* kAnnotationRefName = "org.opencontainers.image.ref.name";

// ---------------------------------------------------------------- documents

struct Descriptor {
  std::string media_type;
  Digest digest;
  std::int64_t size = 0;
  std::map<std::string, std::string> annotations;
  std::optional<json> platform;

  json to_json() const;
  // Throws Error ("invalid descriptor in WHERE: ...") when J is not a descriptor.
  static Descriptor from_json(const json& j, std::string_view where);
};

// An image manifest (OCI or docker schema 2; both have the same shape).
struct Manifest {
  std::string media_type = kMediaTypeManifest;
  Descriptor config;
  std::vector<Descriptor> layers;  // bottom first
  std::map<std::string, std::string> annotations;

  json to_json() const;
  static Manifest from_json(const json& j, std::string_view where);
};

// One entry of an image config's history.
struct History {
  std::string created;     // RFC 3339, may be empty
  std::string created_by;  // the instruction that made the step
  std::string author;
  std::string comment;
  bool empty_layer = false;  // the step changed only the config

  json to_json() const;
  static History from_json(const json& j);
};

// Current time as RFC 3339 UTC ("2024-01-01T00:00:00Z"); honours
// SOURCE_DATE_EPOCH so that builds can be reproducible.
std::string now_rfc3339();

// Parses RFC 3339 (as written by docker, podman, skopeo: fractional seconds
// and zone offsets allowed) to seconds since the epoch; nullopt when malformed.
std::optional<std::int64_t> parse_rfc3339(std::string_view text);

// The parts of an image config that strata reads and writes. The config is
// kept as JSON (unknown fields survive a round trip); these helpers read
// and update its well-known fields.
//   config["config"]: Env, Cmd, Entrypoint, WorkingDir, User, ExposedPorts,
//                     Labels, Volumes, StopSignal
//   config["rootfs"]: {"type":"layers","diff_ids":[...]}
//   config["history"]: [History...]
std::vector<Digest> config_diff_ids(const json& config);
std::vector<History> config_history(const json& config);
// A minimal config for the running platform ("architecture", "os", empty rootfs).
json empty_config();

// Docker/Go architecture name of the running machine ("amd64", "arm64", ...).
std::string host_architecture();

}  // namespace strata::oci
