#include "registry_common.hpp"

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <iostream>

#include "store_common.hpp"
#include "strata/error.hpp"

namespace strata::cli {

namespace {

volatile sig_atomic_t g_interrupted = 0;

void on_interrupt(int) { g_interrupted = 1; }

struct sigaction g_old_int {}, g_old_term {};
int g_guards = 0;

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

}  // namespace

void add_transport_options(po::options_description& options) {
  options.add_options()
      ("tls-verify", po::value<std::string>()->implicit_value("true"),
       "require https with a verified certificate (default: as registries.conf says; =false allows plain http)")
      ("cert-dir", po::value<std::string>(), "use the CA certificates (*.crt) and client certificate (*.cert, *.key) in DIR")
      ("authfile", po::value<std::string>(), "the credential file (default: $REGISTRY_AUTH_FILE, else podman's auth.json)");
}

registry::TransportOptions transport_options(const po::variables_map& vm) {
  registry::TransportOptions t;
  if (vm.count("tls-verify") != 0U) {
    std::string v = vm["tls-verify"].as<std::string>();
    if (v == "true" || v == "1")
      t.tls_verify = true;
    else if (v == "false" || v == "0")
      t.tls_verify = false;
    else
      throw UsageError("--tls-verify must be true or false, not " + quote(v));
  }
  if (vm.count("cert-dir") != 0U) t.cert_dir = vm["cert-dir"].as<std::string>();
  if (vm.count("authfile") != 0U) t.authfile = vm["authfile"].as<std::string>();
  t.cancelled = [] { return InterruptGuard::cancelled(); };
  return t;
}

void add_pull_options(po::options_description& options) {
  options.add_options()
      ("pull", po::value<std::string>()->default_value("missing"),
       "pull the image: missing (when not in the store), always, never")
      ("platform", po::value<std::string>(), "pull the image for OS/ARCH[/VARIANT] (default: this machine's)");
  add_transport_options(options);
}

PullPolicy pull_policy(const po::variables_map& vm, const char* verb) {
  std::string p = vm["pull"].as<std::string>();
  if (p == "missing") return PullPolicy::missing;
  if (p == "always" || p == "true") return PullPolicy::always;
  if (p == "never" || p == "false") return PullPolicy::never;
  throw UsageError(std::string(verb) + ": --pull must be missing, always or never, not " + quote(p));
}

InterruptGuard::InterruptGuard() {
  if (g_guards++ > 0) return;
  g_interrupted = 0;
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  ::sigaction(SIGINT, &sa, &g_old_int);
  ::sigaction(SIGTERM, &sa, &g_old_term);
}

InterruptGuard::~InterruptGuard() {
  if (--g_guards > 0) return;
  ::sigaction(SIGINT, &g_old_int, nullptr);
  ::sigaction(SIGTERM, &g_old_term, nullptr);
}

bool InterruptGuard::cancelled() { return g_interrupted != 0; }

ProgressPrinter::ProgressPrinter(std::ostream& out, bool terminal, bool push)
    : out_(out), terminal_(terminal), push_(push) {}

std::string ProgressPrinter::describe(const registry::ProgressEvent& e, Line& line) const {
  using K = registry::ProgressEvent::Kind;
  switch (e.kind) {
    case K::waiting: return "Waiting";
    case K::exists: return push_ ? "Layer already exists" : "Already exists";
    case K::transfer: {
      double t = now_seconds();
      if (line.started < 0) {
        line.started = t;
        line.start_bytes = e.current;
      }
      std::string s = std::string(push_ ? "Pushing" : "Downloading") + "  " + human_size(e.current) + "/" +
                      human_size(e.total);
      if (t - line.started > 0.2)
        s += "  " + human_size(static_cast<std::int64_t>(static_cast<double>(e.current - line.start_bytes) /
                                                         (t - line.started))) +
             "/s";
      if (!e.detail.empty()) s += "  (" + e.detail + ")";
      return s;
    }
    case K::verifying: return push_ ? "Pushing" : "Extracting";
    case K::done: return push_ ? "Pushed" : "Pull complete";
    case K::mounted: return "Mounted from " + e.detail;
    case K::retrying: return "Retrying: " + e.detail;
  }
  return {};
}

void ProgressPrinter::operator()(const registry::ProgressEvent& e) {
  auto [it, fresh] = lines_.try_emplace(e.id);
  Line& line = it->second;
  if (fresh) order_.push_back(e.id);
  bool changed_kind = fresh || line.kind != e.kind;
  line.kind = e.kind;
  line.text = e.id + ": " + describe(e, line);
  if (!terminal_) {
    // Plain output: one line per change of state, not per byte count.
    if (changed_kind) out_ << line.text << "\n" << std::flush;
    return;
  }
  if (!line.shown) {
    out_ << line.text << "\n" << std::flush;
    line.shown = true;
    return;
  }
  std::size_t shown = 0, pos = 0;
  for (const auto& id : order_) {
    if (!lines_[id].shown) continue;
    if (id == e.id) pos = shown;
    ++shown;
  }
  std::size_t up = shown - pos;
  out_ << "\033[" << up << "A\r\033[2K" << line.text << "\033[" << up << "B\r" << std::flush;
}

std::string ensure_image(store::Store& store, const std::string& ref, PullPolicy policy, const po::variables_map& vm,
                         std::ostream& out) {
  if (policy == PullPolicy::never) return ref;
  if (policy == PullPolicy::missing) {
    if (store.find_image(ref)) return ref;
    // An id or digest the store lacks cannot be pulled by name.
    if (!oci::Reference::try_parse(ref)) return ref;
    out << "Unable to find image " << quote(ref) << " locally\n";
  }
  registry::PullOptions o;
  static_cast<registry::TransportOptions&>(o) = transport_options(vm);
  if (vm.count("platform") != 0U) o.platform = registry::Platform::parse(vm["platform"].as<std::string>());
  bool terminal = ::isatty(&out == &std::cout ? 1 : 2) != 0;
  ProgressPrinter printer(out, terminal, false);
  o.progress = std::ref(printer);
  o.message = [&out](const std::string& m) { out << m << "\n" << std::flush; };
  InterruptGuard guard;
  registry::PullResult r = registry::pull(store, ref, o);
  out << "Digest: " << r.digest.str() << "\n"
      << "Status: " << (r.downloaded ? "Downloaded newer image for " : "Image is up to date for ")
      << r.reference.familiar() << "\n"
      << std::flush;
  return r.name.empty() ? r.digest.str() : r.name;
}

}  // namespace strata::cli
