// src/registry/client: the distribution API of one registry: the endpoint
// (scheme, TLS, certs.d), authentication (Bearer tokens per scope, Basic),
// retries, and the calls pull and push are made of. Thread-safe: each call
// borrows a connection from a pool.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "http.hpp"
#include "strata/registry.hpp"

namespace strata::registry {

// How to reach one registry, from registries.conf, certs.d and the options.
struct Endpoint {
  std::string domain;     // as references name it: "docker.io", "localhost:5000"
  std::string host;       // what serves the API: "registry-1.docker.io", "localhost:5000"
  bool insecure = false;  // plain http allowed, certificates not checked
  http::Tls tls;

  // Throws Error when registries.conf blocks DOMAIN, UsageError when
  // --cert-dir names no directory.
  static Endpoint for_domain(std::string_view domain, const RegistriesConf& conf, const TransportOptions& options);
};

// A registry's answer other than the one expected.
class StatusError : public Error {
 public:
  StatusError(const std::string& message, long status) : Error(message), status_(status) {}
  long status() const noexcept { return status_; }

 private:
  long status_;
};

// The receiving side of a blob download (see Client::fetch_blob).
class BlobTarget {
 public:
  virtual ~BlobTarget() = default;
  virtual std::int64_t offset() const = 0;  // bytes held so far
  virtual void write(const char* data, std::size_t size) = 0;
  virtual void restart() = 0;  // the registry ignored the Range: drop what is held
};

// Result of a blob upload session that may have mounted the blob instead.
struct UploadStart {
  bool mounted = false;
  std::string location;  // the upload session's URL when not mounted
};

class Client {
 public:
  Client(Endpoint endpoint, std::optional<Credentials> credentials, http::Cancelled cancelled);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Endpoint& endpoint() const noexcept { return endpoint_; }
  bool has_credentials() const noexcept { return credentials_.has_value(); }

  // GET /v2/ with the credentials (through a token when the registry asks
  // for Bearer): throws StatusError when they are refused. For login.
  void check_login();

  struct Fetched {
    std::string bytes;
    std::string content_type;
    std::optional<std::string> digest;  // Docker-Content-Digest
  };
  // GET manifests/REF (tag or "sha256:..."). SHOWN names the reference in
  // errors. 404: StatusError "manifest unknown: SHOWN".
  Fetched get_manifest(const std::string& repo, const std::string& ref, const std::string& shown);
  // PUT manifests/REF; returns the Docker-Content-Digest the registry gave.
  std::optional<std::string> put_manifest(const std::string& repo, const std::string& ref, const std::string& bytes,
                                          const std::string& media_type, const std::string& shown);

  // A small blob (a config) read whole; at most LIMIT bytes.
  std::string get_blob(const std::string& repo, const oci::Descriptor& blob, std::int64_t limit, const std::string& shown);
  // Streams the blob into TARGET from TARGET.offset(): a broken transfer is
  // resumed with a Range request, with backoff; a blob longer than its
  // descriptor or a size the registry contradicts is refused. Returns when
  // TARGET holds blob.size bytes. ON_RETRY is told why before a retry.
  void fetch_blob(const std::string& repo, const oci::Descriptor& blob, BlobTarget& target, const std::string& shown,
                  const std::function<void(const std::string&)>& on_retry = {});

  // HEAD blobs/DIGEST: whether the repository has it.
  bool has_blob(const std::string& repo, const oci::Digest& digest, const std::string& shown);
  // POST blobs/uploads/, with ?mount=DIGEST&from=FROM when FROM is given.
  UploadStart start_upload(const std::string& repo, const std::string& shown, const oci::Digest* mount = nullptr,
                           const std::string& from = {});
  // Uploads SIZE bytes of FD as DIGEST into the session LOCATION: one PUT
  // up to kMonolithicMax, PATCH chunks of kChunkSize and a final PUT above
  // (a failed chunk resumes where the registry says the upload stands).
  void upload_blob(const std::string& repo, std::string location, const oci::Digest& digest, int fd, std::int64_t size,
                   const std::string& shown, const std::function<void(std::int64_t)>& progress);

  static constexpr std::int64_t kMonolithicMax = 32 << 20;
  static constexpr std::int64_t kChunkSize = 32 << 20;

 private:
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };

  // Sends REQUEST for SCOPE ("repository:NAME:pull[,push]", several
  // separated by spaces; "" for none) with authentication, answering a 401
  // challenge once; retries 429/5xx/connection errors when RETRY.
  http::Response send(http::Request request, const std::string& scope, bool retry, const http::Sink* sink = nullptr,
                      const http::UploadProgress* progress = nullptr);
  std::string base_url();
  std::string url(const std::string& repo, const std::string& rest);
  std::optional<std::string> authorization(const std::string& scope);
  // Answers a 401: takes note of its challenge and, for Bearer, gets a new
  // token unless another thread already replaced the REFUSED one.
  void authenticate(const http::Response& challenge, const std::string& scope, const std::string& refused);
  bool token_valid(const std::string& scope);
  // A valid token for SCOPE (fetched when there is none, or when the cached
  // one is the REFUSED authorization).
  void ensure_token(const std::string& scope, const std::string& refused = {});
  void fetch_token(const std::string& scope);
  // An Error for an unexpected answer to WHAT.
  [[noreturn]] void fail(const http::Response& resp, const std::string& what);

  class Lease;
  std::unique_ptr<http::Connection> acquire();
  void release(std::unique_ptr<http::Connection> c);

  Endpoint endpoint_;
  std::optional<Credentials> credentials_;
  http::Cancelled cancelled_;

  std::mutex token_mu_;  // held while a token is fetched
  std::mutex mu_;        // guards everything below
  std::vector<std::unique_ptr<http::Connection>> idle_;
  std::optional<std::string> base_;       // "https://host" once decided
  std::optional<Challenge> bearer_;       // the registry's Bearer challenge, once seen
  bool basic_ = false;                    // the registry asked for Basic
  std::map<std::string, Token> tokens_;   // by scope
};

// A client for the registry of NAME ("domain/path"), with the stored
// credentials for that repository, if any.
std::unique_ptr<Client> connect(std::string_view name, const RegistriesConf& conf, const TransportOptions& options,
                                http::Cancelled cancelled);

// "repository:REPO:pull" (PUSH: "pull,push").
std::string repository_scope(const std::string& repo, bool push);

// One line of a registry's error body ({"errors":[{"code","message"}]}),
// made safe to print (printable ASCII, at most 200 characters); "" when
// there is none.
std::string registry_message(const std::string& body);

}  // namespace strata::registry
