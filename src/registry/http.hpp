// src/registry/http: the one libcurl wrapper of the registry client. RAII for
// the easy handle and header lists, streamed bodies both ways, redirects
// followed by hand (so that a change of scheme is refused and credentials
// never follow a change of host), timeouts, cancellation, and the backoff
// that bounds retries.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/error.hpp"

namespace strata::registry::http {

using Cancelled = std::function<bool()>;

struct Tls {
  bool verify = true;
  std::string extra_ca_pem;  // CA certificates trusted besides the system's
  std::string client_cert;   // PEM files of a client certificate and its key
  std::string client_key;
};

// LENGTH bytes of the file FD from OFFSET, sent as a request body.
struct FileBody {
  int fd = -1;
  std::int64_t offset = 0;
  std::int64_t length = 0;
};

struct Request {
  std::string method = "GET";  // GET HEAD POST PUT PATCH DELETE
  std::string url;
  std::vector<std::string> headers;  // "Name: value"
  std::string body;                  // sent for POST/PUT/PATCH unless FILE is set
  std::optional<FileBody> file;
  // A body kept in Response::body (no sink, or not a 2xx answer) is cut at
  // this many bytes and Response::too_large set.
  std::int64_t max_body = 1 << 20;
};

struct Response {
  long status = 0;
  std::string url;  // after redirects
  std::vector<std::pair<std::string, std::string>> headers;  // of the last answer; names in lower case
  std::string body;
  bool too_large = false;
  std::optional<std::string> header(std::string_view name) const;
};

// Receives the body of a 2xx answer as it arrives: START once before the
// first byte (the status and headers so far), then DATA; either may throw
// to stop the transfer.
struct Sink {
  std::function<void(const Response& head)> start;
  std::function<void(const char* data, std::size_t size)> data;
};
// Told how many bytes of the request body have been sent.
using UploadProgress = std::function<void(std::int64_t sent)>;

// No complete answer: connection refused or reset, timeout, TLS failure, a
// refused redirect. TRANSIENT ones are worth another try.
class TransportError : public Error {
 public:
  TransportError(const std::string& message, bool transient) : Error(message), transient_(transient) {}
  bool transient() const noexcept { return transient_; }

 private:
  bool transient_;
};

// One libcurl easy handle (kept alive connections are reused). Not for use
// by two threads at once.
class Connection {
 public:
  // ALLOW_HTTP: the registry is plain http by configuration; redirects may
  // then lead to http too. Otherwise only to https.
  Connection(Tls tls, bool allow_http, Cancelled cancelled);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Sends REQUEST, following up to 10 redirects. Returns the answer, any
  // status; throws TransportError when there is none, Interrupted when
  // cancelled, and whatever SINK throws.
  Response perform(const Request& request, const Sink* sink = nullptr, const UploadProgress* progress = nullptr);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Bounded retries with exponential backoff: wait() sleeps before the next
// attempt and says whether there is one. Delays 0.5 s, 1 s, 2 s, 4 s
// (at most 30 s); Retry-After (seconds or an HTTP date) is honoured up to
// 60 s. The sleep is cut short by cancellation (Interrupted).
class Backoff {
 public:
  explicit Backoff(Cancelled cancelled, int max_attempts = 5)
      : cancelled_(std::move(cancelled)), max_attempts_(max_attempts) {}
  // After a failed attempt; RESPONSE is the answer when there was one.
  // false: give up (attempts used up, or Retry-After is too long).
  bool wait(const Response* response = nullptr);
  int attempts() const noexcept { return attempt_; }
  // A successful transfer of some bytes earns the attempts back (a long
  // download that breaks twice is not a failing one).
  void reset() noexcept { attempt_ = 0; }

 private:
  Cancelled cancelled_;
  int max_attempts_;
  int attempt_ = 0;
};

// Status codes worth another attempt: 408, 429, 500, 502, 503, 504.
bool retryable(long status);

// Sleeps SECONDS, waking every 100 ms to check CANCELLED (throws
// Interrupted).
void sleep_cancellable(double seconds, const Cancelled& cancelled);

// "https://host:port" of URL (scheme, host and port; no path).
std::string origin(std::string_view url);
// URL with percent-encoding for a query parameter value.
std::string escape(std::string_view text);
// Resolves LOCATION (absolute, or a path) against BASE.
std::string resolve_url(std::string_view base, std::string_view location);

}  // namespace strata::registry::http
