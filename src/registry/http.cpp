// src/registry/http: libcurl easy handles wrapped for the registry client.
#include "http.hpp"

#include <curl/curl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>
#include <exception>
#include <mutex>
#include <thread>

#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/registry.hpp"
#include "util.hpp"

namespace strata::registry::http {

namespace {

struct EasyDeleter {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct SlistDeleter {
  void operator()(curl_slist* l) const noexcept { curl_slist_free_all(l); }
};
struct UrlDeleter {
  void operator()(CURLU* u) const noexcept { curl_url_cleanup(u); }
};
using UniqueEasy = std::unique_ptr<CURL, EasyDeleter>;
using UniqueSlist = std::unique_ptr<curl_slist, SlistDeleter>;
using UniqueUrl = std::unique_ptr<CURLU, UrlDeleter>;

void global_init() {
  static std::once_flag once;
  std::call_once(once, [] {
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) throw Error("cannot initialise libcurl");
  });
}

// The system's CA bundle, read once: extra CAs are appended to it, since a
// CA blob given to libcurl replaces its default bundle.
const std::string& system_ca_pem() {
  static std::once_flag once;
  static std::string pem;
  std::call_once(once, [] {
    std::string path = "/etc/ssl/certs/ca-certificates.crt";
    if (CURL* c = curl_easy_init()) {
      char* info = nullptr;
      if (curl_easy_getinfo(c, CURLINFO_CAINFO, &info) == CURLE_OK && info != nullptr && *info != '\0') path = info;
      curl_easy_cleanup(c);
    }
    try {
      pem = read_file(path);
    } catch (const Error&) {
      pem.clear();  // no system bundle: only the extra CAs are trusted
    }
  });
  return pem;
}

// URL without its query: what messages show (upload locations and
// pre-signed blob URLs carry state and signatures in the query).
std::string shown(std::string_view url) { return std::string(url.substr(0, url.find('?'))); }

std::string url_part(std::string_view url, CURLUPart part) {
  UniqueUrl u(curl_url());
  if (!u) throw Error("out of memory");
  std::string s(url);
  if (curl_url_set(u.get(), CURLUPART_URL, s.c_str(), 0) != CURLUE_OK) throw Error("bad URL " + quote(shown(url)));
  char* out = nullptr;
  if (curl_url_get(u.get(), part, &out, CURLU_DEFAULT_PORT) != CURLUE_OK) return {};
  std::string r = out;
  curl_free(out);
  return r;
}

bool transient_code(CURLcode rc) {
  switch (rc) {
    case CURLE_COULDNT_CONNECT:
    case CURLE_OPERATION_TIMEDOUT:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
    case CURLE_SSL_CONNECT_ERROR:
      return true;
    default:
      return false;
  }
}

// The state of one request/answer exchange, seen by libcurl's callbacks.
struct Exchange {
  CURL* curl = nullptr;
  const Request* request = nullptr;
  const Sink* sink = nullptr;
  const UploadProgress* progress = nullptr;
  const Cancelled* cancelled = nullptr;
  Response* response = nullptr;
  std::string_view body;  // a string body
  std::int64_t sent = 0;
  bool decided = false;  // whether the answer's body goes to the sink
  bool to_sink = false;
  bool was_cancelled = false;
  std::exception_ptr error;

  static std::size_t on_header(char* data, std::size_t size, std::size_t n, void* self) {
    auto* x = static_cast<Exchange*>(self);
    std::string_view line(data, size * n);
    if (line.substr(0, 5) == "HTTP/") {
      x->response->headers.clear();  // a new answer (after 100 Continue)
    } else if (auto colon = line.find(':'); colon != std::string_view::npos) {
      x->response->headers.emplace_back(lower(trim(line.substr(0, colon))), trim(line.substr(colon + 1)));
    }
    return size * n;
  }

  static std::size_t on_body(char* data, std::size_t size, std::size_t n, void* self) {
    auto* x = static_cast<Exchange*>(self);
    std::size_t len = size * n;
    if (!x->decided) {
      long status = 0;
      curl_easy_getinfo(x->curl, CURLINFO_RESPONSE_CODE, &status);
      x->to_sink = x->sink != nullptr && status >= 200 && status < 300;
      x->decided = true;
      x->response->status = status;
      if (x->to_sink && x->sink->start) {
        try {
          x->sink->start(*x->response);
        } catch (...) {
          x->error = std::current_exception();
          return 0;
        }
      }
    }
    if (x->to_sink) {
      try {
        x->sink->data(data, len);
      } catch (...) {
        x->error = std::current_exception();
        return 0;
      }
      return len;
    }
    auto room = static_cast<std::size_t>(std::max<std::int64_t>(
        0, x->request->max_body - static_cast<std::int64_t>(x->response->body.size())));
    if (len > room) {
      x->response->body.append(data, room);
      x->response->too_large = true;
      return 0;
    }
    x->response->body.append(data, len);
    return len;
  }

  static std::size_t on_read(char* out, std::size_t size, std::size_t n, void* self) {
    auto* x = static_cast<Exchange*>(self);
    std::size_t want = size * n;
    std::size_t got = 0;
    if (x->request->file) {
      const FileBody& f = *x->request->file;
      auto left = static_cast<std::size_t>(f.length - x->sent);
      want = std::min(want, left);
      while (got < want) {
        ssize_t r = ::pread(f.fd, out + got, want - got, f.offset + x->sent + static_cast<std::int64_t>(got));
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
          x->error = std::make_exception_ptr(SysError(r < 0 ? errno : EIO, "read the upload body"));
          return CURL_READFUNC_ABORT;
        }
        got += static_cast<std::size_t>(r);
      }
    } else {
      got = std::min(want, x->body.size() - static_cast<std::size_t>(x->sent));
      std::memcpy(out, x->body.data() + x->sent, got);
    }
    x->sent += static_cast<std::int64_t>(got);
    if (x->progress != nullptr && *x->progress) {
      try {
        (*x->progress)(x->sent);
      } catch (...) {
        x->error = std::current_exception();
        return CURL_READFUNC_ABORT;
      }
    }
    return got;
  }

  static int on_progress(void* self, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
    auto* x = static_cast<Exchange*>(self);
    if (x->cancelled != nullptr && *x->cancelled && (*x->cancelled)()) {
      x->was_cancelled = true;
      return 1;
    }
    return 0;
  }

  static int on_seek(void* self, curl_off_t offset, int origin) {
    auto* x = static_cast<Exchange*>(self);
    if (origin != SEEK_SET || offset < 0) return CURL_SEEKFUNC_CANTSEEK;
    x->sent = offset;
    return CURL_SEEKFUNC_OK;
  }
};

template <typename T>
void setopt(CURL* c, CURLoption opt, T value) {
  if (curl_easy_setopt(c, opt, value) != CURLE_OK)
    throw Error("libcurl refused option " + std::to_string(static_cast<int>(opt)));
}

}  // namespace

std::optional<std::string> Response::header(std::string_view name) const {
  std::string want = lower(name);
  for (const auto& [k, v] : headers)
    if (k == want) return v;
  return std::nullopt;
}

struct Connection::Impl {
  Tls tls;
  bool allow_http = false;
  Cancelled cancelled;
  UniqueEasy curl;
  std::string ca_pem;  // system bundle + extra CAs, when there are extra CAs
  char error_buffer[CURL_ERROR_SIZE] = {};

  Response once(const Request& r, const std::string& method, const std::string& url,
                const std::vector<std::string>& headers, const Sink* sink, const UploadProgress* progress);
};

Connection::Connection(Tls tls, bool allow_http, Cancelled cancelled) : impl_(std::make_unique<Impl>()) {
  global_init();
  impl_->tls = std::move(tls);
  impl_->allow_http = allow_http;
  impl_->cancelled = std::move(cancelled);
  impl_->curl.reset(curl_easy_init());
  if (!impl_->curl) throw Error("cannot create a libcurl handle");
  if (!impl_->tls.extra_ca_pem.empty()) impl_->ca_pem = system_ca_pem() + "\n" + impl_->tls.extra_ca_pem;
}

Connection::~Connection() = default;

Response Connection::Impl::once(const Request& r, const std::string& method, const std::string& url,
                                const std::vector<std::string>& headers, const Sink* sink,
                                const UploadProgress* progress) {
  CURL* c = curl.get();
  curl_easy_reset(c);  // keeps the connection cache
  Response resp;
  Exchange x;
  x.curl = c;
  x.request = &r;
  x.sink = sink;
  x.progress = progress;
  x.cancelled = &cancelled;
  x.response = &resp;
  x.body = r.body;

  UniqueSlist list;
  for (const auto& h : headers) {
    curl_slist* next = curl_slist_append(list.get(), h.c_str());
    if (next == nullptr) throw Error("out of memory");
    static_cast<void>(list.release());
    list.reset(next);
  }
  // libcurl would wait a second for "100 Continue" before a large body.
  curl_slist* next = curl_slist_append(list.get(), "Expect:");
  if (next == nullptr) throw Error("out of memory");
  static_cast<void>(list.release());
  list.reset(next);

  error_buffer[0] = '\0';
  setopt(c, CURLOPT_ERRORBUFFER, error_buffer);
  setopt(c, CURLOPT_URL, url.c_str());
  setopt(c, CURLOPT_HTTPHEADER, list.get());
  setopt(c, CURLOPT_USERAGENT, "strata/" STRATA_VERSION);
  setopt(c, CURLOPT_NOSIGNAL, 1L);
  setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
  setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
  setopt(c, CURLOPT_CONNECTTIMEOUT, 30L);
  setopt(c, CURLOPT_LOW_SPEED_LIMIT, 1L);
  setopt(c, CURLOPT_LOW_SPEED_TIME, 60L);
  setopt(c, CURLOPT_TCP_KEEPALIVE, 1L);
  setopt(c, CURLOPT_BUFFERSIZE, 256L * 1024);
  setopt(c, CURLOPT_UPLOAD_BUFFERSIZE, 1024L * 1024);
  setopt(c, CURLOPT_SSL_VERIFYPEER, tls.verify ? 1L : 0L);
  setopt(c, CURLOPT_SSL_VERIFYHOST, tls.verify ? 2L : 0L);
  curl_blob ca{};
  if (!ca_pem.empty()) {
    ca.data = ca_pem.data();
    ca.len = ca_pem.size();
    ca.flags = CURL_BLOB_NOCOPY;
    setopt(c, CURLOPT_CAINFO_BLOB, &ca);
  }
  if (!tls.client_cert.empty()) {
    setopt(c, CURLOPT_SSLCERT, tls.client_cert.c_str());
    setopt(c, CURLOPT_SSLKEY, tls.client_key.c_str());
  }
  setopt(c, CURLOPT_HEADERFUNCTION, &Exchange::on_header);
  setopt(c, CURLOPT_HEADERDATA, &x);
  setopt(c, CURLOPT_WRITEFUNCTION, &Exchange::on_body);
  setopt(c, CURLOPT_WRITEDATA, &x);
  setopt(c, CURLOPT_NOPROGRESS, 0L);
  setopt(c, CURLOPT_XFERINFOFUNCTION, &Exchange::on_progress);
  setopt(c, CURLOPT_XFERINFODATA, &x);

  bool has_body = method == "POST" || method == "PUT" || method == "PATCH";
  std::int64_t body_size = r.file ? r.file->length : static_cast<std::int64_t>(r.body.size());
  if (method == "HEAD") {
    setopt(c, CURLOPT_NOBODY, 1L);
  } else if (has_body) {
    setopt(c, CURLOPT_READFUNCTION, &Exchange::on_read);
    setopt(c, CURLOPT_READDATA, &x);
    setopt(c, CURLOPT_SEEKFUNCTION, &Exchange::on_seek);
    setopt(c, CURLOPT_SEEKDATA, &x);
    if (method == "POST") {
      setopt(c, CURLOPT_POST, 1L);
      setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_size));
    } else {
      setopt(c, CURLOPT_UPLOAD, 1L);
      setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body_size));
      if (method == "PATCH") setopt(c, CURLOPT_CUSTOMREQUEST, "PATCH");
    }
  } else if (method != "GET") {
    setopt(c, CURLOPT_CUSTOMREQUEST, method.c_str());
  }

  CURLcode rc = curl_easy_perform(c);
  if (x.error) std::rethrow_exception(x.error);
  if (x.was_cancelled) throw Interrupted("interrupted");
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &resp.status);
  if (rc == CURLE_WRITE_ERROR && resp.too_large) return resp;
  if (rc != CURLE_OK) {
    std::string detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(rc);
    while (!detail.empty() && (detail.back() == '\n' || detail.back() == '\r')) detail.pop_back();
    bool transient = transient_code(rc);
    if (rc == CURLE_PEER_FAILED_VERIFICATION)
      detail += " (the registry's certificate is not trusted: add its CA to certs.d or use --cert-dir)";
    if (rc == CURLE_SSL_CONNECT_ERROR && detail.find("wrong version number") != std::string::npos) {
      detail += " (the server does not speak TLS; plain http needs --tls-verify=false or insecure = true in "
                "registries.conf)";
      transient = false;
    }
    throw TransportError(method + " " + shown(url) + ": " + detail, transient);
  }
  return resp;
}

Response Connection::perform(const Request& request, const Sink* sink, const UploadProgress* progress) {
  std::string method = request.method;
  std::string url = request.url;
  std::vector<std::string> headers = request.headers;
  for (int hop = 0;; ++hop) {
    Response resp = impl_->once(request, method, url, headers, sink, progress);
    resp.url = url;
    bool redirect = resp.status == 301 || resp.status == 302 || resp.status == 303 || resp.status == 307 ||
                    resp.status == 308;
    auto location = resp.header("location");
    if (!redirect || !location) return resp;
    if (hop == 10) throw TransportError(method + " " + shown(request.url) + ": more than 10 redirects", false);
    std::string next = resolve_url(url, *location);
    std::string scheme = lower(url_part(next, CURLUPART_SCHEME));
    if (scheme != "https" && !(scheme == "http" && impl_->allow_http))
      throw TransportError(method + " " + shown(url) + ": redirected to " + quote(shown(next)) +
                               ", another scheme than https; refused",
                           false);
    // Credentials are for the registry; blob storage elsewhere gets none.
    if (origin(next) != origin(url)) {
      std::erase_if(headers, [](const std::string& h) { return lower(h.substr(0, 14)) == "authorization:"; });
    }
    if (resp.status == 303) method = method == "HEAD" ? "HEAD" : "GET";
    url = next;
  }
}

bool retryable(long status) {
  return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504;
}

void sleep_cancellable(double seconds, const Cancelled& cancelled) {
  auto until = std::chrono::steady_clock::now() +
               std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(seconds));
  for (;;) {
    if (cancelled && cancelled()) throw Interrupted("interrupted");
    auto now = std::chrono::steady_clock::now();
    if (now >= until) return;
    std::chrono::steady_clock::duration step = std::chrono::milliseconds(100);
    std::this_thread::sleep_for(std::min(step, until - now));
  }
}

bool Backoff::wait(const Response* response) {
  ++attempt_;
  if (attempt_ >= max_attempts_) return false;
  double delay = std::min(30.0, 0.5 * std::pow(2.0, attempt_ - 1));
  if (response != nullptr) {
    if (auto after = response->header("retry-after")) {
      double wanted = -1;
      char* end = nullptr;
      long secs = std::strtol(after->c_str(), &end, 10);
      if (end != after->c_str() && *end == '\0' && secs >= 0) {
        wanted = static_cast<double>(secs);
      } else if (std::time_t when = curl_getdate(after->c_str(), nullptr); when != -1) {
        wanted = std::max(0.0, std::difftime(when, std::time(nullptr)));
      }
      if (wanted > 60) return false;
      if (wanted >= 0) delay = wanted;
    }
  }
  sleep_cancellable(delay, cancelled_);
  return true;
}

std::string origin(std::string_view url) {
  return lower(url_part(url, CURLUPART_SCHEME)) + "://" + lower(url_part(url, CURLUPART_HOST)) + ":" +
         url_part(url, CURLUPART_PORT);
}

std::string escape(std::string_view text) {
  static const char hex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if (std::isalnum(c) != 0 || c == '-' || c == '_' || c == '.' || c == '~') {
      out += static_cast<char>(c);
    } else {
      out += '%';
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return out;
}

std::string resolve_url(std::string_view base, std::string_view location) {
  UniqueUrl u(curl_url());
  if (!u) throw Error("out of memory");
  std::string b(base), l(location);
  if (curl_url_set(u.get(), CURLUPART_URL, b.c_str(), 0) != CURLUE_OK ||
      curl_url_set(u.get(), CURLUPART_URL, l.c_str(), CURLU_NON_SUPPORT_SCHEME) != CURLUE_OK)
    throw TransportError("the registry sent a bad Location " + quote(shown(location)), false);
  char* out = nullptr;
  if (curl_url_get(u.get(), CURLUPART_URL, &out, 0) != CURLUE_OK) throw Error("bad URL " + quote(shown(location)));
  std::string r = out;
  curl_free(out);
  return r;
}

}  // namespace strata::registry::http
