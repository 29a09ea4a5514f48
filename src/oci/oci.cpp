// src/oci: OCI vocabulary: SHA-256 digests (OpenSSL), docker-grammar image
// references, descriptors, manifests, history and image config helpers.
#include "strata/oci.hpp"

#include <openssl/evp.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <ctime>

#include "strata/error.hpp"

namespace strata::oci {

// ---------------------------------------------------------------- digests

static bool is_hex64(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::optional<Digest> Digest::try_parse(std::string_view text) noexcept {
  if (text.substr(0, 7) != "sha256:" || !is_hex64(text.substr(7))) return std::nullopt;
  Digest d;
  d.hex_ = std::string(text.substr(7));
  return d;
}

Digest Digest::parse(std::string_view text) {
  if (auto d = try_parse(text)) return *d;
  auto colon = text.find(':');
  if (colon != std::string_view::npos && colon > 0 && text.substr(0, 7) != "sha256:")
    throw Error("unsupported digest algorithm in " + quote(text) + " (only sha256)");
  throw Error("invalid digest " + quote(text));
}

Digest Digest::from_hex(std::string_view hex) {
  if (!is_hex64(hex)) throw Error("invalid sha256 hex " + quote(hex));
  Digest d;
  d.hex_ = std::string(hex);
  return d;
}

struct Sha256::Impl {
  EVP_MD_CTX* ctx = nullptr;
  ~Impl() { EVP_MD_CTX_free(ctx); }
};

Sha256::Sha256() : impl_(std::make_unique<Impl>()) {
  impl_->ctx = EVP_MD_CTX_new();
  if (impl_->ctx == nullptr || EVP_DigestInit_ex(impl_->ctx, EVP_sha256(), nullptr) != 1)
    throw Error("cannot initialise SHA-256");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, std::size_t size) {
  if (size > 0 && EVP_DigestUpdate(impl_->ctx, data, size) != 1) throw Error("SHA-256 update failed");
}

Digest Sha256::finish() {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(impl_->ctx, md, &len) != 1) throw Error("SHA-256 final failed");
  static const char hex[] = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return Digest::from_hex(out);
}

Digest sha256(std::string_view data) {
  Sha256 h;
  h.update(data);
  return h.finish();
}

Digest sha256_fd(int fd) {
  Sha256 h;
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read for SHA-256");
    }
    if (n == 0) break;
    h.update(buf.data(), static_cast<std::size_t>(n));
  }
  return h.finish();
}

// ---------------------------------------------------------------- references

namespace {
bool lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool alnum(char c) { return lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*
bool valid_path_component(std::string_view s) {
  if (s.empty() || !lower_alnum(s.front()) || !lower_alnum(s.back())) return false;
  std::size_t i = 0;
  while (i < s.size()) {
    if (lower_alnum(s[i])) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < s.size() && !lower_alnum(s[j])) ++j;
    std::string_view sep = s.substr(i, j - i);
    bool ok = sep == "." || sep == "_" || sep == "__" || sep.find_first_not_of('-') == std::string_view::npos;
    if (!ok) return false;
    i = j;
  }
  return true;
}

// [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
bool valid_tag(std::string_view s) {
  if (s.empty() || s.size() > 128) return false;
  if (!(alnum(s[0]) || s[0] == '_')) return false;
  for (char c : s)
    if (!(alnum(c) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

// host labels of [A-Za-z0-9-] not starting or ending with '-', separated by '.', then an optional :PORT
bool valid_domain(std::string_view s) {
  auto colon = s.find(':');
  std::string_view host = s.substr(0, colon);
  if (colon != std::string_view::npos) {
    std::string_view port = s.substr(colon + 1);
    if (port.empty() || port.find_first_not_of("0123456789") != std::string_view::npos) return false;
  }
  if (host.empty()) return false;
  std::size_t start = 0;
  while (start <= host.size()) {
    auto end = host.find('.', start);
    if (end == std::string_view::npos) end = host.size();
    std::string_view label = host.substr(start, end - start);
    if (label.empty() || label.front() == '-' || label.back() == '-') return false;
    for (char c : label)
      if (!(alnum(c) || c == '-')) return false;
    start = end + 1;
  }
  return true;
}

bool all_digits(std::string_view s, std::size_t n) {
  if (s.size() != n) return false;
  return s.find_first_not_of("0123456789") == std::string_view::npos;
}
}  // namespace

std::optional<Reference> Reference::try_parse(std::string_view text) noexcept {
  try {
    return parse(text);
  } catch (const Error&) {
    return std::nullopt;
  }
}

Reference Reference::parse(std::string_view text) {
  auto bad = [&](const std::string& why) -> UsageError {
    return UsageError("invalid reference format: " + quote(text) + (why.empty() ? "" : " (" + why + ")"));
  };
  if (text.empty()) throw bad("empty");
  Reference r;
  std::string name(text);
  if (auto at = name.find('@'); at != std::string::npos) {
    auto d = Digest::try_parse(name.substr(at + 1));
    if (!d) throw bad("bad digest");
    r.digest = *d;
    name.resize(at);
  }
  auto slash = name.rfind('/');
  auto colon = name.rfind(':');
  if (colon != std::string::npos && (slash == std::string::npos || colon > slash)) {
    r.tag = name.substr(colon + 1);
    name.resize(colon);
    if (!valid_tag(r.tag)) throw bad("bad tag");
  }
  if (name.empty()) throw bad("empty name");
  auto first_slash = name.find('/');
  std::string first = name.substr(0, first_slash);
  if (first_slash != std::string::npos &&
      (first.find('.') != std::string::npos || first.find(':') != std::string::npos || first == "localhost")) {
    r.domain = first;
    r.path = name.substr(first_slash + 1);
    if (!valid_domain(r.domain)) throw bad("bad registry host");
  } else {
    r.domain = "docker.io";
    r.path = name;
  }
  if (r.domain == "index.docker.io") r.domain = "docker.io";
  std::size_t start = 0;
  for (;;) {
    auto end = r.path.find('/', start);
    std::string comp = r.path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    if (!valid_path_component(comp)) {
      bool upper = false;
      for (char c : comp) upper = upper || (c >= 'A' && c <= 'Z');
      throw bad(upper ? "repository name must be lowercase" : "");
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (r.domain == "docker.io" && r.path.find('/') == std::string::npos) r.path = "library/" + r.path;
  // As docker, the limit is on the normalised name ("docker.io/library/..."),
  // which is what str() prints and what must parse again.
  if (r.name().size() > 255) throw bad("name longer than 255 characters");
  if (r.tag.empty() && !r.digest) r.tag = "latest";
  return r;
}

std::string Reference::name() const { return domain + "/" + path; }

std::string Reference::str() const {
  std::string s = name();
  if (!tag.empty()) s += ":" + tag;
  if (digest) s += "@" + digest->str();
  return s;
}

std::string Reference::familiar_name() const {
  if (domain != "docker.io") return name();
  if (path.rfind("library/", 0) == 0 && path.find('/', 8) == std::string::npos) return path.substr(8);
  // Without the domain, a first component such as "my.org" would be read
  // back as a registry host: another image.
  auto slash = path.find('/');
  std::string first = path.substr(0, slash);
  if (slash != std::string::npos &&
      (first.find('.') != std::string::npos || first.find(':') != std::string::npos || first == "localhost"))
    return name();
  return path;
}

std::string Reference::familiar() const {
  std::string s = familiar_name();
  if (!tag.empty()) s += ":" + tag;
  if (digest) s += "@" + digest->str();
  return s;
}

// ---------------------------------------------------------------- documents

json Descriptor::to_json() const {
  json j;
  j["mediaType"] = media_type;
  j["digest"] = digest.str();
  j["size"] = size;
  if (!annotations.empty()) j["annotations"] = annotations;
  if (platform) j["platform"] = *platform;
  return j;
}

Descriptor Descriptor::from_json(const json& j, std::string_view where) {
  try {
    Descriptor d;
    if (!j.is_object()) throw Error("not an object");
    if (j.contains("mediaType") && !j["mediaType"].is_string()) throw Error("mediaType is not a string");
    d.media_type = j.value("mediaType", "");
    d.digest = Digest::parse(j.at("digest").get<std::string>());
    // Not get<int64_t>() of any number: a float such as 1e300 does not fit.
    if (!j.at("size").is_number_integer()) throw Error("size is not an integer");
    d.size = j["size"].get<std::int64_t>();
    if (d.size < 0) throw Error("negative size");
    if (j.contains("annotations") && j["annotations"].is_object())
      for (auto& [k, v] : j["annotations"].items())
        if (v.is_string()) d.annotations[k] = v.get<std::string>();
    if (j.contains("platform")) d.platform = j["platform"];
    return d;
  } catch (const std::exception& e) {
    throw Error("invalid descriptor in " + std::string(where) + ": " + e.what());
  }
}

json Manifest::to_json() const {
  json j;
  j["schemaVersion"] = 2;
  j["mediaType"] = media_type;
  j["config"] = config.to_json();
  j["layers"] = json::array();
  for (const auto& l : layers) j["layers"].push_back(l.to_json());
  if (!annotations.empty()) j["annotations"] = annotations;
  return j;
}

Manifest Manifest::from_json(const json& j, std::string_view where) {
  if (!j.is_object()) throw Error("invalid manifest in " + std::string(where) + ": not an object");
  Manifest m;
  if (j.contains("mediaType") && !j["mediaType"].is_string())
    throw Error("invalid manifest in " + std::string(where) + ": mediaType is not a string");
  m.media_type = j.value("mediaType", kMediaTypeManifest);
  if (!j.contains("schemaVersion") || !j["schemaVersion"].is_number_integer() || j["schemaVersion"] != 2)
    throw Error("invalid manifest in " + std::string(where) + ": schemaVersion is not 2");
  if (!j.contains("config") || !j.contains("layers") || !j["layers"].is_array())
    throw Error("invalid manifest in " + std::string(where) + ": no config or layers");
  m.config = Descriptor::from_json(j["config"], where);
  for (const auto& l : j["layers"]) m.layers.push_back(Descriptor::from_json(l, where));
  if (j.contains("annotations") && j["annotations"].is_object())
    for (auto& [k, v] : j["annotations"].items())
      if (v.is_string()) m.annotations[k] = v.get<std::string>();
  return m;
}

json History::to_json() const {
  json j = json::object();
  if (!created.empty()) j["created"] = created;
  if (!created_by.empty()) j["created_by"] = created_by;
  if (!author.empty()) j["author"] = author;
  if (!comment.empty()) j["comment"] = comment;
  if (empty_layer) j["empty_layer"] = true;
  return j;
}

History History::from_json(const json& j) {
  History h;
  if (!j.is_object()) return h;
  auto str = [&](const char* k) { return j.contains(k) && j[k].is_string() ? j[k].get<std::string>() : std::string(); };
  h.created = str("created");
  h.created_by = str("created_by");
  h.author = str("author");
  h.comment = str("comment");
  h.empty_layer = j.contains("empty_layer") && j["empty_layer"].is_boolean() && j["empty_layer"].get<bool>();
  return h;
}

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  if (const char* sde = std::getenv("SOURCE_DATE_EPOCH"); sde != nullptr && *sde != '\0') {
    char* end = nullptr;
    long long v = std::strtoll(sde, &end, 10);
    if (end != nullptr && *end == '\0' && v >= 0) t = static_cast<std::time_t>(v);
  }
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::optional<std::int64_t> parse_rfc3339(std::string_view text) {
  // YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM)
  if (text.size() < 20) return std::nullopt;
  auto num = [&](std::size_t pos, std::size_t n) -> std::optional<int> {
    std::string_view d = text.substr(pos, n);
    if (!all_digits(d, n)) return std::nullopt;
    return std::stoi(std::string(d));
  };
  if (text[4] != '-' || text[7] != '-' || (text[10] != 'T' && text[10] != 't' && text[10] != ' ') || text[13] != ':' ||
      text[16] != ':')
    return std::nullopt;
  auto y = num(0, 4), mo = num(5, 2), d = num(8, 2), h = num(11, 2), mi = num(14, 2), se = num(17, 2);
  if (!y || !mo || !d || !h || !mi || !se) return std::nullopt;
  std::size_t pos = 19;
  if (pos < text.size() && text[pos] == '.') {
    ++pos;
    std::size_t digits = 0;
    while (pos < text.size() && text[pos] >= '0' && text[pos] <= '9') ++pos, ++digits;
    if (digits == 0) return std::nullopt;
  }
  std::tm tm{};
  tm.tm_year = *y - 1900;
  tm.tm_mon = *mo - 1;
  tm.tm_mday = *d;
  tm.tm_hour = *h;
  tm.tm_min = *mi;
  tm.tm_sec = *se;
  std::int64_t t = ::timegm(&tm);
  std::string_view zone = text.substr(pos);
  if (zone == "Z" || zone == "z") return t;
  if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') || zone[3] != ':') return std::nullopt;
  auto zh = num(pos + 1, 2), zm = num(pos + 4, 2);
  if (!zh || !zm) return std::nullopt;
  int off = *zh * 3600 + *zm * 60;
  return zone[0] == '-' ? t + off : t - off;
}

std::vector<Digest> config_diff_ids(const json& config) {
  std::vector<Digest> out;
  if (!config.is_object() || !config.contains("rootfs")) return out;
  const auto& rootfs = config["rootfs"];
  if (!rootfs.is_object() || !rootfs.contains("diff_ids") || !rootfs["diff_ids"].is_array()) return out;
  for (const auto& d : rootfs["diff_ids"]) {
    if (!d.is_string()) throw Error("invalid diff_id in image config");
    out.push_back(Digest::parse(d.get<std::string>()));
  }
  return out;
}

std::vector<History> config_history(const json& config) {
  std::vector<History> out;
  if (!config.is_object() || !config.contains("history") || !config["history"].is_array()) return out;
  for (const auto& h : config["history"]) out.push_back(History::from_json(h));
  return out;
}

std::string host_architecture() {
  utsname u{};
  ::uname(&u);
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64") return "arm64";
  if (m == "armv7l" || m == "armv6l") return "arm";
  if (m == "i686" || m == "i386") return "386";
  return m;
}

json empty_config() {
  json c;
  c["architecture"] = host_architecture();
  c["os"] = "linux";
  c["config"] = json::object();
  c["rootfs"] = {{"type", "layers"}, {"diff_ids", json::array()}};
  c["history"] = json::array();
  return c;
}

}  // namespace strata::oci
