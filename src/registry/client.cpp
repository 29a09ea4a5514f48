// src/registry/client: one registry's distribution API with authentication
// and retries.
#include "client.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>

#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/text.hpp"
#include "util.hpp"

namespace strata::registry {

using oci::json;

namespace {

constexpr const char* kManifestAccept =
    "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, "
    "application/vnd.docker.distribution.manifest.v2+json, "
    "application/vnd.docker.distribution.manifest.list.v2+json";

bool ends_with(std::string_view s, std::string_view suffix) {
  return s.size() >= suffix.size() && s.substr(s.size() - suffix.size()) == suffix;
}

// The CA certificates (*.crt) and the client certificate (*.cert with its
// *.key) of a certs.d directory, as containers-certs.d(5) describes.
void load_cert_dir(const std::string& dir, http::Tls& tls) {
  for (const auto& n : list_dir(dir)) {
    std::string path = dir + "/" + n;
    if (ends_with(n, ".crt")) {
      tls.extra_ca_pem += read_file(path);
      tls.extra_ca_pem += "\n";
    } else if (ends_with(n, ".cert")) {
      std::string key = dir + "/" + n.substr(0, n.size() - 5) + ".key";
      if (!is_file(key)) throw Error("client certificate " + quote(path) + " has no key " + quote(key));
      tls.client_cert = path;
      tls.client_key = key;
    }
  }
}

std::vector<std::string> cert_bases() {
  if (const char* e = std::getenv("STRATA_CERTS_D"); e != nullptr && *e != '\0') {
    std::vector<std::string> out;
    for (auto part : split(e, ':'))
      if (!part.empty()) out.emplace_back(part);
    return out;
  }
  std::vector<std::string> out;
  if (::geteuid() != 0)
    if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0')
      out.push_back(std::string(h) + "/.config/containers/certs.d");
  out.push_back("/etc/containers/certs.d");
  out.push_back("/etc/docker/certs.d");
  return out;
}

std::string reason(long status) {
  switch (status) {
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 416: return "Range Not Satisfiable";
    case 429: return "Too Many Requests";
    case 500: return "Internal Server Error";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return "";
  }
}

// Appends ?NAME=VALUE or &NAME=VALUE.
std::string with_query(const std::string& url, const std::string& name, const std::string& value) {
  return url + (url.find('?') == std::string::npos ? "?" : "&") + name + "=" + http::escape(value);
}

}  // namespace

std::string repository_scope(const std::string& repo, bool push) {
  return "repository:" + repo + (push ? ":pull,push" : ":pull");
}

std::string registry_message(const std::string& body) {
  json j = json::parse(body, nullptr, false);
  std::string msg;
  if (!j.is_discarded() && j.is_object() && j.contains("errors") && j["errors"].is_array()) {
    for (const auto& e : j["errors"]) {
      if (!e.is_object()) continue;
      std::string part = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "";
      std::string m = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
      if (!m.empty()) part += part.empty() ? m : ": " + m;
      if (part.empty()) continue;
      if (!msg.empty()) msg += "; ";
      msg += part;
    }
  }
  std::string out;
  for (char c : msg) out += (c >= 0x20 && c < 0x7f) ? c : ' ';
  if (out.size() > 200) out = out.substr(0, 197) + "...";
  return out;
}

Endpoint Endpoint::for_domain(std::string_view name, const RegistriesConf& conf, const TransportOptions& options) {
  Endpoint e;
  e.domain = std::string(name.substr(0, name.find('/')));
  e.host = api_host(e.domain);
  const RegistryConfig* rc = conf.find(name);
  if (rc != nullptr && rc->blocked) throw Error("registry " + quote(rc->prefix) + " is blocked in registries.conf");
  e.insecure = options.tls_verify ? !*options.tls_verify : rc != nullptr && rc->insecure;
  e.tls.verify = !e.insecure;
  if (!options.cert_dir.empty()) {
    if (!is_dir(options.cert_dir)) throw UsageError("--cert-dir " + quote(options.cert_dir) + " is not a directory");
    load_cert_dir(options.cert_dir, e.tls);
  } else {
    for (const auto& base : cert_bases()) {
      std::string dir = base + "/" + e.domain;
      if (!is_dir(dir) && e.host != e.domain) dir = base + "/" + e.host;
      if (is_dir(dir)) {
        load_cert_dir(dir, e.tls);
        break;
      }
    }
  }
  return e;
}

std::unique_ptr<Client> connect(std::string_view name, const RegistriesConf& conf, const TransportOptions& options,
                                http::Cancelled cancelled) {
  Endpoint e = Endpoint::for_domain(name, conf, options);
  auto slash = name.find('/');
  std::string_view path = slash == std::string_view::npos ? std::string_view() : name.substr(slash + 1);
  auto credentials = find_credentials(AuthFiles::standard(options.authfile), e.domain, path);
  return std::make_unique<Client>(std::move(e), std::move(credentials), std::move(cancelled));
}

// ---------------------------------------------------------------- connections

Client::Client(Endpoint endpoint, std::optional<Credentials> credentials, http::Cancelled cancelled)
    : endpoint_(std::move(endpoint)), credentials_(std::move(credentials)), cancelled_(std::move(cancelled)) {}

Client::~Client() = default;

std::unique_ptr<http::Connection> Client::acquire() {
  {
    std::lock_guard lock(mu_);
    if (!idle_.empty()) {
      auto c = std::move(idle_.back());
      idle_.pop_back();
      return c;
    }
  }
  return std::make_unique<http::Connection>(endpoint_.tls, endpoint_.insecure, cancelled_);
}

void Client::release(std::unique_ptr<http::Connection> c) {
  std::lock_guard lock(mu_);
  idle_.push_back(std::move(c));
}

// A connection borrowed from the pool for one request.
class Client::Lease {
 public:
  explicit Lease(Client& c) : client_(c), conn_(c.acquire()) {}
  ~Lease() {
    if (conn_) client_.release(std::move(conn_));
  }
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  http::Connection& operator*() { return *conn_; }
  http::Connection* operator->() { return conn_.get(); }

 private:
  Client& client_;
  std::unique_ptr<http::Connection> conn_;
};

std::string Client::base_url() {
  {
    std::lock_guard lock(mu_);
    if (base_) return *base_;
  }
  std::string base = "https://" + endpoint_.host;
  if (endpoint_.insecure) {
    // As podman: https first (unverified), plain http when the server
    // does not speak TLS.
    http::Request r;
    r.url = base + "/v2/";
    try {
      Lease c(*this);
      c->perform(r);
    } catch (const http::TransportError&) {
      base = "http://" + endpoint_.host;
    }
  }
  std::lock_guard lock(mu_);
  if (!base_) base_ = base;
  return *base_;
}

std::string Client::url(const std::string& repo, const std::string& rest) { return base_url() + "/v2/" + repo + "/" + rest; }

// ---------------------------------------------------------------- authentication

std::optional<std::string> Client::authorization(const std::string& scope) {
  std::lock_guard lock(mu_);
  if (bearer_) {
    auto it = tokens_.find(scope);
    if (it != tokens_.end() && std::chrono::steady_clock::now() < it->second.expires) return "Bearer " + it->second.value;
    return std::nullopt;
  }
  if (basic_ && credentials_) return "Basic " + basic_token(credentials_->username, credentials_->password);
  return std::nullopt;
}

void Client::fetch_token(const std::string& scope) {
  Challenge ch;
  {
    std::lock_guard lock(mu_);
    ch = *bearer_;
  }
  auto realm = ch.params.find("realm");
  if (realm == ch.params.end() || realm->second.empty())
    throw Error(endpoint_.domain + ": the registry asks for a Bearer token but names no realm");
  std::string scheme = realm->second.substr(0, realm->second.find("://"));
  if (scheme != "https" && !(scheme == "http" && endpoint_.insecure))
    throw Error(endpoint_.domain + ": the token realm " + quote(realm->second) + " is not https; refused");
  http::Request r;
  r.url = realm->second;
  if (auto s = ch.params.find("service"); s != ch.params.end()) r.url = with_query(r.url, "service", s->second);
  std::size_t start = 0;
  while (start < scope.size()) {
    auto sp = scope.find(' ', start);
    std::string one = scope.substr(start, sp == std::string::npos ? std::string::npos : sp - start);
    if (!one.empty()) r.url = with_query(r.url, "scope", one);
    if (sp == std::string::npos) break;
    start = sp + 1;
  }
  if (credentials_) {
    r.headers.push_back("Authorization: Basic " + basic_token(credentials_->username, credentials_->password));
    r.url = with_query(r.url, "account", credentials_->username);
  }
  http::Backoff backoff(cancelled_);
  http::Response resp;
  for (;;) {
    try {
      Lease c(*this);
      resp = c->perform(r);
    } catch (const http::TransportError& e) {
      if (e.transient() && backoff.wait()) continue;
      throw Error(endpoint_.domain + ": cannot get a token: " + e.what());
    }
    if (http::retryable(resp.status) && backoff.wait(&resp)) continue;
    break;
  }
  if (resp.status == 401 || resp.status == 403) {
    std::string m = registry_message(resp.body);
    throw StatusError(endpoint_.domain + ": unauthorized: the token server refused " +
                          (credentials_ ? "the credentials" : "anonymous access") + (m.empty() ? "" : " (" + m + ")") +
                          " (run 'strata login " + endpoint_.domain + "')",
                      401);
  }
  if (resp.status != 200)
    throw StatusError(endpoint_.domain + ": the token server answered " + std::to_string(resp.status), resp.status);
  json j = json::parse(resp.body, nullptr, false);
  std::string token;
  if (!j.is_discarded() && j.is_object()) {
    if (j.contains("token") && j["token"].is_string()) token = j["token"].get<std::string>();
    if (token.empty() && j.contains("access_token") && j["access_token"].is_string())
      token = j["access_token"].get<std::string>();
  }
  if (token.empty()) throw Error(endpoint_.domain + ": the token server's answer holds no token");
  long lifetime = 60;  // the distribution spec's default
  if (j.contains("expires_in") && j["expires_in"].is_number_integer()) lifetime = std::max(j["expires_in"].get<long>(), 1L);
  // Renewed a little early, so that a token does not expire in flight.
  auto expires = std::chrono::steady_clock::now() + std::chrono::seconds(lifetime) -
                 std::chrono::seconds(std::min(lifetime / 10, 30L));
  std::lock_guard lock(mu_);
  tokens_[scope] = Token{token, expires};
}

bool Client::token_valid(const std::string& scope) {
  std::lock_guard lock(mu_);
  auto it = tokens_.find(scope);
  return it != tokens_.end() && std::chrono::steady_clock::now() < it->second.expires;
}

void Client::ensure_token(const std::string& scope, const std::string& refused) {
  // One fetch at a time: concurrent transfers of the same scope share it.
  std::lock_guard fetching(token_mu_);
  if (token_valid(scope)) {
    auto current = authorization(scope);
    if (refused.empty() || (current && *current != refused)) return;
  }
  fetch_token(scope);
}

void Client::authenticate(const http::Response& resp, const std::string& scope, const std::string& refused) {
  std::optional<Challenge> bearer, basic;
  for (const auto& [name, value] : resp.headers) {
    if (name != "www-authenticate") continue;
    for (auto& ch : parse_www_authenticate(value)) {
      if (ch.scheme == "bearer" && !bearer) bearer = ch;
      if (ch.scheme == "basic" && !basic) basic = ch;
    }
  }
  if (bearer) {
    {
      std::lock_guard lock(mu_);
      bearer_ = bearer;
    }
    ensure_token(scope, refused);
  } else if (basic) {
    std::lock_guard lock(mu_);
    basic_ = true;
  }
}

http::Response Client::send(http::Request request, const std::string& scope, bool retry, const http::Sink* sink,
                            const http::UploadProgress* progress) {
  http::Backoff backoff(cancelled_);
  bool answered_challenge = false;
  const std::vector<std::string> headers = request.headers;
  for (;;) {
    bool bearer = false;
    {
      std::lock_guard lock(mu_);
      bearer = bearer_.has_value();
    }
    // A registry known to want tokens gets one before the request, not after a 401.
    if (bearer) ensure_token(scope);
    request.headers = headers;
    std::string sent;
    if (auto a = authorization(scope)) {
      sent = *a;
      request.headers.push_back("Authorization: " + sent);
    }
    http::Response resp;
    try {
      Lease c(*this);
      resp = c->perform(request, sink, progress);
    } catch (const http::TransportError& e) {
      if (retry && e.transient() && backoff.wait()) continue;
      throw;
    }
    if (resp.status == 401 && !answered_challenge) {
      answered_challenge = true;
      // The credentials themselves were refused: no use asking again.
      if (sent.rfind("Basic ", 0) == 0) return resp;
      authenticate(resp, scope, sent);
      if (!authorization(scope)) return resp;  // Basic, and nothing to answer with
      continue;
    }
    if (retry && http::retryable(resp.status) && backoff.wait(&resp)) continue;
    return resp;
  }
}

void Client::fail(const http::Response& resp, const std::string& what) {
  std::string m = registry_message(resp.body);
  std::string detail = m.empty() ? "" : " (" + m + ")";
  if (resp.status == 401) {
    throw StatusError(what + ": unauthorized: " +
                          (credentials_ ? "the registry refused the stored credentials" : "authentication required") +
                          detail + " (run 'strata login " + endpoint_.domain + "')",
                      401);
  }
  if (resp.status == 403)
    throw StatusError(what + ": denied: access forbidden" + detail + " (run 'strata login " + endpoint_.domain +
                          "' with an account that has access)",
                      403);
  std::string r = reason(resp.status);
  std::string retried = http::retryable(resp.status) ? ", gave up after 5 attempts" : "";
  throw StatusError(what + ": the registry answered " + std::to_string(resp.status) + (r.empty() ? "" : " " + r) +
                        retried + detail,
                    resp.status);
}

void Client::check_login() {
  http::Request r;
  r.url = base_url() + "/v2/";
  http::Response resp = send(r, "", true);
  if (resp.status == 200) {
    bool authenticated = false;
    {
      std::lock_guard lock(mu_);
      authenticated = bearer_.has_value() || basic_;
      // Anonymous access works: have the registry see the credentials anyway.
      if (!authenticated && credentials_) basic_ = true;
    }
    if (authenticated || !credentials_) return;
    resp = send(r, "", true);
    if (resp.status == 200) return;
  }
  fail(resp, "login to " + endpoint_.domain);
}

// ---------------------------------------------------------------- manifests

Client::Fetched Client::get_manifest(const std::string& repo, const std::string& ref, const std::string& shown) {
  http::Request r;
  r.url = url(repo, "manifests/" + ref);
  r.headers.push_back(kManifestAccept);
  r.max_body = kMaxManifestSize + 1;
  http::Response resp = send(r, repository_scope(repo, false), true);
  if (resp.status == 404) throw StatusError("manifest unknown: " + shown, 404);
  if (resp.status != 200) fail(resp, shown);
  if (resp.too_large) throw Error(shown + ": the manifest is larger than 4 MiB; refused");
  Fetched f;
  f.bytes = std::move(resp.body);
  f.content_type = resp.header("content-type").value_or("");
  f.digest = resp.header("docker-content-digest");
  return f;
}

std::optional<std::string> Client::put_manifest(const std::string& repo, const std::string& ref, const std::string& bytes,
                                                const std::string& media_type, const std::string& shown) {
  http::Request r;
  r.method = "PUT";
  r.url = url(repo, "manifests/" + ref);
  r.headers.push_back("Content-Type: " + media_type);
  r.body = bytes;
  http::Response resp = send(r, repository_scope(repo, true), true);
  if (resp.status != 201 && resp.status != 200 && resp.status != 202) fail(resp, shown + ": manifest upload");
  return resp.header("docker-content-digest");
}

// ---------------------------------------------------------------- blobs

std::string Client::get_blob(const std::string& repo, const oci::Descriptor& blob, std::int64_t limit,
                             const std::string& shown) {
  std::string what = shown + ": blob " + blob.digest.str();
  if (blob.size > limit) throw Error(what + " is " + std::to_string(blob.size) + " bytes, more than strata reads for it");
  // Small: kept in memory, restarted from the beginning on a failure.
  class Buffer : public BlobTarget {
   public:
    std::string data;
    std::int64_t offset() const override { return static_cast<std::int64_t>(data.size()); }
    void write(const char* d, std::size_t n) override { data.append(d, n); }
    void restart() override { data.clear(); }
  } buffer;
  fetch_blob(repo, blob, buffer, shown);
  if (!(oci::sha256(buffer.data) == blob.digest))
    throw Error(what + " does not match its digest (got " + oci::sha256(buffer.data).str() + ")");
  return std::move(buffer.data);
}

void Client::fetch_blob(const std::string& repo, const oci::Descriptor& blob, BlobTarget& target, const std::string& shown,
                        const std::function<void(const std::string&)>& on_retry) {
  const std::string what = shown + ": blob " + blob.digest.str();
  constexpr int kMaxResumes = 100;
  int resumes = 0;
  http::Backoff backoff(cancelled_);
  for (;;) {
    std::int64_t start = target.offset();
    if (start > blob.size) throw Error(what + " is longer than the " + std::to_string(blob.size) + " bytes its descriptor says");
    if (start == blob.size && start > 0) return;
    http::Request r;
    r.url = url(repo, "blobs/" + blob.digest.str());
    if (start > 0) r.headers.push_back("Range: bytes=" + std::to_string(start) + "-");
    http::Sink sink;
    sink.start = [&](const http::Response& head) {
      if (head.status == 206) {
        std::string range = head.header("content-range").value_or("");
        std::string want = "bytes " + std::to_string(start) + "-";
        if (range.rfind(want, 0) != 0)
          throw Error(what + ": the registry answered a Range request with " + quote(range));
      } else if (start > 0) {
        target.restart();  // the whole blob again
      }
      if (head.status == 200)
        if (auto len = head.header("content-length"); len && *len != std::to_string(blob.size))
          throw Error(what + ": the registry sends " + *len + " bytes but the descriptor says " +
                      std::to_string(blob.size));
    };
    sink.data = [&](const char* d, std::size_t n) {
      if (target.offset() + static_cast<std::int64_t>(n) > blob.size)
        throw Error(what + " is longer than the " + std::to_string(blob.size) + " bytes its descriptor says");
      target.write(d, n);
    };
    http::Response resp;
    std::string why;
    try {
      resp = send(r, repository_scope(repo, false), false, &sink);
    } catch (const http::TransportError& e) {
      if (!e.transient()) throw Error(what + ": " + e.what());
      why = e.what();
    }
    if (why.empty()) {
      if (resp.status == 200 || resp.status == 206) {
        if (target.offset() == blob.size) return;
        why = "the transfer ended after " + std::to_string(target.offset()) + " of " + std::to_string(blob.size) + " bytes";
      } else if (resp.status == 416 && start > 0) {
        target.restart();
        why = "the registry refused to resume";
      } else if (resp.status == 404) {
        throw StatusError(what + " is unknown to the registry", 404);
      } else if (!http::retryable(resp.status)) {
        fail(resp, what);
      } else {
        why = "the registry answered " + std::to_string(resp.status);
      }
    }
    // Progress earns the attempts back, but a server that sends a little
    // and breaks off forever is given up on all the same.
    if (target.offset() > start && ++resumes <= kMaxResumes) backoff.reset();
    bool again = resp.status != 0 && http::retryable(resp.status) ? backoff.wait(&resp) : backoff.wait();
    if (!again) {
      if (resp.status != 0 && http::retryable(resp.status)) fail(resp, what);
      throw Error(what + ": " + why + "; gave up after " + std::to_string(backoff.attempts()) + " attempts");
    }
    if (on_retry) on_retry(why);
  }
}

bool Client::has_blob(const std::string& repo, const oci::Digest& digest, const std::string& shown) {
  http::Request r;
  r.method = "HEAD";
  r.url = url(repo, "blobs/" + digest.str());
  http::Response resp = send(r, repository_scope(repo, true), true);
  if (resp.status == 200) return true;
  if (resp.status == 404) return false;
  fail(resp, shown + ": blob " + digest.str());
}

UploadStart Client::start_upload(const std::string& repo, const std::string& shown, const oci::Digest* mount,
                                 const std::string& from) {
  http::Request r;
  r.method = "POST";
  r.url = url(repo, "blobs/uploads/");
  std::string scope = repository_scope(repo, true);
  if (mount != nullptr) {
    r.url = with_query(with_query(r.url, "mount", mount->str()), "from", from);
    scope += " " + repository_scope(from, false);
  }
  http::Response resp = send(r, scope, true);
  UploadStart out;
  if (mount != nullptr && resp.status == 201) {
    out.mounted = true;
    return out;
  }
  auto location = resp.header("location");
  if (resp.status != 202 || !location) fail(resp, shown + ": starting a blob upload");
  out.location = http::resolve_url(resp.url, *location);
  return out;
}

void Client::upload_blob(const std::string& repo, std::string location, const oci::Digest& digest, int fd,
                         std::int64_t size, const std::string& shown, const std::function<void(std::int64_t)>& progress) {
  const std::string what = shown + ": blob " + digest.str();
  const std::string scope = repository_scope(repo, true);
  http::Backoff backoff(cancelled_);
  // One attempt: the answer, or nullopt when the connection broke.
  auto attempt = [&](const http::Request& r, std::int64_t base) -> std::optional<http::Response> {
    http::UploadProgress up = [&](std::int64_t sent) {
      if (progress) progress(base + sent);
    };
    try {
      return send(r, scope, false, nullptr, &up);
    } catch (const http::TransportError& e) {
      if (!e.transient()) throw Error(what + ": " + e.what());
      return std::nullopt;
    }
  };
  // After a failed attempt: wait for the next one, or throw.
  auto wait_or_fail = [&](const std::optional<http::Response>& resp) {
    if (resp && !http::retryable(resp->status)) fail(*resp, what);
    if (resp ? backoff.wait(&*resp) : backoff.wait()) return;
    if (resp) fail(*resp, what);
    throw Error(what + ": the upload broke off; gave up after " + std::to_string(backoff.attempts()) + " attempts");
  };
  auto follow = [&](const http::Response& resp) {
    if (auto l = resp.header("location")) location = http::resolve_url(resp.url, *l);
  };
  std::int64_t done = 0;
  if (size > kMonolithicMax) {
    while (done < size) {
      std::int64_t len = std::min(kChunkSize, size - done);
      http::Request r;
      r.method = "PATCH";
      r.url = location;
      r.headers.push_back("Content-Type: application/octet-stream");
      r.headers.push_back("Content-Range: " + std::to_string(done) + "-" + std::to_string(done + len - 1));
      r.file = http::FileBody{fd, done, len};
      auto resp = attempt(r, done);
      if (resp && resp->status == 202) {
        follow(*resp);
        done += len;
        backoff.reset();
        continue;
      }
      wait_or_fail(resp);
      // Where does the upload stand? "Range: 0-N" means N+1 bytes are in.
      http::Request status;
      status.url = location;
      http::Response st = send(status, scope, true);
      if (st.status != 204 && st.status != 200) fail(st, what + " (upload status)");
      follow(st);
      std::string range = st.header("range").value_or("");
      auto dash = range.find('-');
      done = dash == std::string::npos ? 0 : std::strtoll(range.c_str() + dash + 1, nullptr, 10) + 1;
      if (done < 0 || done > size) throw Error(what + ": the registry reports an impossible upload state " + quote(range));
    }
  }
  for (;;) {
    // The whole blob in this PUT (monolithic), or nothing after the chunks.
    http::Request r;
    r.method = "PUT";
    r.url = with_query(location, "digest", digest.str());
    r.headers.push_back("Content-Type: application/octet-stream");
    if (done < size) r.file = http::FileBody{fd, 0, size};
    auto resp = attempt(r, 0);
    if (resp && (resp->status == 201 || resp->status == 204 || resp->status == 200)) {
      if (progress) progress(size);
      return;
    }
    wait_or_fail(resp);
    // The session may be spoilt by a half-sent body: start a new one.
    if (done < size) location = start_upload(repo, shown).location;
  }
}

}  // namespace strata::registry
