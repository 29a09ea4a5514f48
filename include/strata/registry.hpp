// strata::registry: a client of the OCI distribution protocol (the Docker
// Registry HTTP API v2) over libcurl: pull, push, login and logout, and the
// pieces they are made of (authentication challenges, credential files,
// registries.conf, platform selection, manifest checks).
//
// A registry is hostile input. Every manifest and blob is checked against
// its digest before the store keeps it; a manifest larger than 4 MiB, of an
// unknown media type or of Docker's schema 1 is refused; a blob longer or
// shorter than its descriptor says is refused; redirects are followed to
// other hosts (blob storage) but never from https to another scheme.
// Failures throw strata::Error with one line naming the reference and, where
// there is one, the digest; credentials never appear in a message.
//
// Transport (libcurl):
//   - https with the system's CA store, plus for registry HOST[:PORT] the
//     *.crt files (CA certificates) and a *.cert/*.key pair (client
//     certificate) of the first existing directory among
//     $STRATA_CERTS_D/HOST[:PORT] (a colon-separated list of directories),
//     /etc/containers/certs.d/HOST[:PORT], /etc/docker/certs.d/HOST[:PORT]
//     and, for users other than root, ~/.config/containers/certs.d/HOST[:PORT].
//     --cert-dir DIR (TransportOptions::cert_dir) replaces that search.
//   - Plain http only for a registry that registries.conf marks
//     `insecure = true` or when --tls-verify=false is given (as podman):
//     then https is tried first without verifying the certificate, and
//     http when the server does not speak TLS. localhost is not special.
//   - Requests that fail with 429, 5xx or a connection error are retried,
//     at most 5 attempts with exponential backoff (0.5 s doubling, at most
//     30 s), honouring Retry-After up to 60 s; a longer Retry-After fails.
//     A blob download that breaks off is resumed with a Range request.
//   - Connections stall out after 60 s without a byte; connect timeout 30 s.
//
// Authentication: anonymous first; on a 401 the WWW-Authenticate challenge
// decides: Bearer (a token from the realm for the repository's scope, with
// the stored credentials if any, reused until it expires) or Basic (the
// stored credentials).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/error.hpp"
#include "strata/oci.hpp"
#include "strata/store.hpp"

namespace strata::registry {

// ---------------------------------------------------------------- platforms

// An image platform as --platform writes it: OS/ARCH[/VARIANT].
struct Platform {
  std::string os = "linux";
  std::string architecture;
  std::string variant;  // may be empty

  // The running machine: linux and oci::host_architecture() (variant v8 on
  // arm64, v7 on arm, as containerd normalises them).
  static Platform host();
  // Parses OS/ARCH[/VARIANT]; throws UsageError naming TEXT when malformed.
  static Platform parse(std::string_view text);
  std::string str() const;
};

// The entry of INDEX (an OCI image index or a docker manifest list, parsed)
// that WANT runs: same os and architecture, and the same variant when both
// name one (an entry without a variant matches the architecture's default
// variant). An exact variant match is preferred. nullopt when none matches.
// Entries that are not image manifests (attestations, nested indexes) are
// skipped.
std::optional<oci::Descriptor> select_platform(const oci::json& index, const Platform& want);

// ---------------------------------------------------------------- manifests

inline constexpr std::int64_t kMaxManifestSize = 4 << 20;

enum class ManifestKind { image, index };

struct ManifestInfo {
  ManifestKind kind = ManifestKind::image;
  std::string media_type;  // the manifest's own mediaType, else CONTENT_TYPE
  oci::json json;          // the parsed document
};

// Checks manifest BYTES as a registry sent them (CONTENT_TYPE: the
// Content-Type header, may be empty). Throws Error "WHERE: ..." when they
// are larger than kMaxManifestSize, not JSON, a Docker schema 1 manifest,
// of a media type other than the OCI and docker v2 schema 2 manifest and
// index/list types, or an image manifest whose config or layers are not of
// a known media type (see known_layer_media_type).
ManifestInfo check_manifest(std::string_view bytes, std::string_view content_type, std::string_view where);

// The layer media types strata can pull and store: OCI tar, tar+gzip,
// tar+zstd and docker's rootfs.diff.tar(.gzip). Foreign (non-distributable)
// layers are not among them.
bool known_layer_media_type(std::string_view media_type);

// ---------------------------------------------------------------- authentication

// One challenge of a WWW-Authenticate header (RFC 7235): the scheme in lower
// case ("bearer", "basic") and its parameters, names in lower case, quoted
// values unescaped.
struct Challenge {
  std::string scheme;
  std::map<std::string, std::string> params;
};
// Parses a WWW-Authenticate value, which may hold several challenges.
// Malformed parts are skipped; never throws.
std::vector<Challenge> parse_www_authenticate(std::string_view value);

struct Credentials {
  std::string username;
  std::string password;
};

// The credential files, as podman and docker keep them (the "auths" object
// of auth.json and config.json: KEY -> {"auth": base64(USER:PASSWORD)}).
struct AuthFiles {
  std::vector<std::string> read;  // searched in order; the first with an entry wins
  std::string write;              // where login writes and logout removes

  // AUTHFILE (--authfile) when given, else $REGISTRY_AUTH_FILE when set:
  // that file alone, read and written. Otherwise read
  // ${XDG_RUNTIME_DIR}/containers/auth.json (/run/containers/UID/auth.json
  // when XDG_RUNTIME_DIR is unset), $XDG_CONFIG_HOME/containers/auth.json
  // (~/.config/...), ~/.docker/config.json; write the first.
  static AuthFiles standard(const std::string& authfile = {});
};

// The key of a registry in a credential file: the host[:port] alone, with
// "docker.io" for docker.io, index.docker.io, registry-1.docker.io and
// "https://index.docker.io/v1/". A scheme and a trailing path are dropped.
// Throws UsageError when nothing is left.
std::string credential_key(std::string_view registry);

// The credentials for REPOSITORY (a path such as "library/debian") on
// DOMAIN: the first file of FILES that has an entry for "DOMAIN/REPOSITORY",
// one of its parent paths, or DOMAIN (any spelling credential_key maps to
// it). nullopt when none; throws Error naming the file when one does not
// parse. Entries kept by a credential helper (credsStore, credHelpers) are
// not read.
std::optional<Credentials> find_credentials(const AuthFiles& files, std::string_view domain,
                                            std::string_view repository = {});
// Adds or replaces the entry KEY of the file PATH (created with its parent
// directories; other entries and fields kept); written to a staging file
// of mode 0600 and renamed into place.
void save_credentials(const std::string& path, std::string_view key, const Credentials& credentials);
// Removes the entry KEY from PATH; false when it had none.
bool remove_credentials(const std::string& path, std::string_view key);

// ---------------------------------------------------------------- registries.conf

// One [[registry]] table of containers-registries.conf(5).
struct RegistryConfig {
  std::string prefix;    // what it applies to: "host[:port][/path]" or "*.domain"; defaults to location
  std::string location;  // "host[:port][/path]"
  bool insecure = false;
  bool blocked = false;
};

struct RegistriesConf {
  // unqualified-search-registries; nullopt when no file sets it.
  std::optional<std::vector<std::string>> unqualified_search;
  std::vector<RegistryConfig> registries;
  std::map<std::string, std::string> aliases;  // [aliases]: short name -> full name

  // Parses the TOML text of one file (WHERE names it in errors: "WHERE: line
  // L: ..."). Throws Error on bad TOML or fields of the wrong type; unknown
  // keys are ignored.
  static RegistriesConf parse(std::string_view text, const std::string& where);
  // $CONTAINERS_REGISTRIES_CONF when set (that file alone); else
  // $HOME/.config/containers/registries.conf when it exists, else
  // /etc/containers/registries.conf; then the *.conf drop-ins of
  // /etc/containers/registries.conf.d/ and
  // $HOME/.config/containers/registries.conf.d/ in name order. Missing
  // files are skipped.
  static RegistriesConf load();
  // Applies LATER on top: its search list and aliases replace, its
  // registries replace those of the same prefix.
  void merge(const RegistriesConf& later);
  // The [[registry]] whose prefix matches NAME ("host[:port]/path") best
  // (longest prefix at a path boundary, wildcard "*.domain" after exact
  // ones); nullptr when none.
  const RegistryConfig* find(std::string_view name) const;
};

// True when TEXT names its registry (its first path component has a '.' or
// a ':' or is "localhost"), as docker decides.
bool has_domain(std::string_view text);

// The references to try, in order, for TEXT as a user wrote it. A name
// with a registry is itself. A short name is looked up in CONF's aliases
// (by the name without tag or digest), else put on each of
// unqualified-search-registries in order, else on docker.io. Throws
// UsageError for a malformed reference.
std::vector<oci::Reference> resolve_reference(std::string_view text, const RegistriesConf& conf);

// The host that serves DOMAIN's API: "registry-1.docker.io" for docker.io.
std::string api_host(std::string_view domain);

// ---------------------------------------------------------------- progress

// What a transfer is doing, for one line per layer as docker shows it.
struct ProgressEvent {
  enum class Kind {
    waiting,      // queued ("Waiting")
    exists,       // already in the store / in the registry ("Already exists", "Layer already exists")
    transfer,     // bytes moving: current/total ("Downloading", "Pushing")
    verifying,    // download complete, being checked and stored ("Extracting")
    done,         // "Pull complete", "Pushed"
    mounted,      // pushed by a cross-repository mount; detail: the source repository
    retrying,     // a transient failure; detail: why
  };
  std::string id;  // the blob's short digest (12 hex characters)
  Kind kind = Kind::waiting;
  std::int64_t current = 0;
  std::int64_t total = 0;
  std::string detail;
};
// Called from transfer threads, never two at once.
using ProgressFn = std::function<void(const ProgressEvent&)>;

// ---------------------------------------------------------------- operations

// How to reach registries, shared by pull, push and login.
struct TransportOptions {
  // false: as --tls-verify=false (no certificate check, plain http
  // allowed); true: verify even where registries.conf says insecure;
  // nullopt: registries.conf decides.
  std::optional<bool> tls_verify;
  std::string cert_dir;  // --cert-dir: CA and client certificates for every registry
  std::string authfile;  // --authfile (see AuthFiles::standard)
  // Polled during transfers and backoff waits; true stops the operation
  // with Interrupted.
  std::function<bool()> cancelled;
};

// Thrown when TransportOptions::cancelled stopped an operation; exit code
// ExitCode::interrupted.
class Interrupted : public Error {
 public:
  explicit Interrupted(const std::string& message) : Error(message, ExitCode::interrupted) {}
};

struct PullOptions : TransportOptions {
  std::optional<Platform> platform;  // default: Platform::host()
  int max_concurrent_downloads = 3;  // layers downloaded at once (1..32)
  ProgressFn progress;               // per-layer events (none by default)
  // One-line messages ("Trying to pull REF...", "Pulling from REPO") for a
  // person; none by default.
  std::function<void(const std::string&)> message;
};

struct PullResult {
  store::Image image;
  oci::Reference reference;   // what was pulled, resolved and normalised
  std::string name;           // the name tagged in the store; empty for a pull by digest
  oci::Digest digest;         // the stored manifest's digest
  bool downloaded = false;    // false when everything was in the store already
};

// `strata pull`: resolves TEXT (resolve_reference), fetches its manifest
// (an index picks OPTIONS.platform), the config and the layers the store
// lacks (a layer whose diff_id and blob are both stored is not fetched),
// several at once, each checked against its digest while it streams and
// imported into the store; then puts the image with the manifest's exact
// bytes and tags it with the name as given, normalised (nothing for a pull
// by digest). A short name tries each candidate registry in order; the
// first that has it wins. On any failure nothing is tagged: layers that
// were complete stay in the store unreferenced (the next pull reuses them,
// prune removes them), and a partial download stays in ROOT/tmp as
// pull-PID-HEX to be resumed by the next pull (or removed by prune).
// Errors: "manifest unknown: REF" for a 404; 401/403 name `strata login`;
// every other one names REF and the digest concerned.
PullResult pull(store::Store& store, std::string_view text, const PullOptions& options);

enum class PushFormat { keep, oci, v2s2 };
enum class PushCompression { keep, gzip, zstd };

struct PushOptions : TransportOptions {
  // keep: the stored manifest byte for byte (the pushed digest is the
  // store's). oci/v2s2: media types converted (a new manifest digest).
  PushFormat format = PushFormat::keep;
  // keep: layers as stored. gzip: uncompressed and zstd layers are
  // recompressed with gzip; zstd: every layer that is not zstd is. Either
  // changes the manifest (and its digest); v2s2 cannot carry zstd.
  PushCompression compression = PushCompression::keep;
  int max_concurrent_uploads = 3;
  ProgressFn progress;
  std::function<void(const std::string&)> message;
};

struct PushResult {
  oci::Reference reference;  // the destination, normalised
  oci::Digest digest;        // of the manifest as pushed
  std::int64_t size = 0;     // of the manifest as pushed
};

// `strata push`: IMAGE (a name or id in the store) to DESTINATION (a
// reference; empty: IMAGE's name). Each blob is first asked for (HEAD);
// a blob the store pulled from another repository of the same registry is
// mounted from there (POST ?mount=&from=); others are uploaded, in one
// request up to 32 MiB, in 32 MiB chunks above; the manifest is put last.
// Which repositories a blob came from is kept in ROOT/registry/sources/.
PushResult push(store::Store& store, std::string_view image, std::string_view destination, const PushOptions& options);

// `strata login`: checks CREDENTIALS against REGISTRY (a GET /v2/ that
// must succeed with them, through a token when the registry asks for
// Bearer) and saves them under credential_key(REGISTRY) in the AuthFiles
// write file. Throws Error "login to REGISTRY failed: ..." when the
// registry refuses them (nothing saved). Returns the file written.
std::string login(std::string_view registry, const Credentials& credentials, const TransportOptions& options);

// `strata logout`: removes REGISTRY's credentials from the write file.
// Throws Error "not logged in to REGISTRY" when it had none. Returns the
// file changed.
std::string logout(std::string_view registry, const TransportOptions& options);

}  // namespace strata::registry
