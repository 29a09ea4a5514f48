// Shared by the verbs that reach registries (pull, push, login, logout) and
// those that pull what they lack (build, run, create, mount): the transport
// options, the pull policy, Ctrl-C, and docker-style progress lines.
#pragma once

#include <iosfwd>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "cli.hpp"
#include "strata/registry.hpp"
#include "strata/store.hpp"

namespace strata::cli {

// --tls-verify[=BOOL], --cert-dir DIR, --authfile FILE.
void add_transport_options(po::options_description& options);
// The transport options given (cancellation set by InterruptGuard users).
registry::TransportOptions transport_options(const po::variables_map& vm);

// docker's --pull=missing|always|never (also true = always, false = never).
enum class PullPolicy { missing, always, never };
// --pull POLICY (default missing) and --platform OS/ARCH[/VARIANT].
void add_pull_options(po::options_description& options);
PullPolicy pull_policy(const po::variables_map& vm, const char* verb);

// While alive, SIGINT and SIGTERM set a flag (cancelled() says so) instead
// of killing the process, so that a transfer stops cleanly; the previous
// handlers come back when it is destroyed.
class InterruptGuard {
 public:
  InterruptGuard();
  ~InterruptGuard();
  InterruptGuard(const InterruptGuard&) = delete;
  InterruptGuard& operator=(const InterruptGuard&) = delete;
  static bool cancelled();
};

// Renders progress events as docker does: on a terminal one line per blob
// updated in place (short digest, state, bytes/total, rate), else one
// plain line per change of state.
class ProgressPrinter {
 public:
  ProgressPrinter(std::ostream& out, bool terminal, bool push);
  void operator()(const registry::ProgressEvent& e);

 private:
  struct Line {
    std::string text;
    registry::ProgressEvent::Kind kind = registry::ProgressEvent::Kind::waiting;
    bool shown = false;
    double started = -1;  // seconds, when bytes began to move
    std::int64_t start_bytes = 0;
  };
  std::string describe(const registry::ProgressEvent& e, Line& line) const;
  std::ostream& out_;
  bool terminal_;
  bool push_;
  std::vector<std::string> order_;
  std::map<std::string, Line> lines_;
};

// Makes sure the image REF is in the store as POLICY says, pulling it with
// progress on OUT (stderr for run, create and mount). Returns what to look
// the image up by: REF itself, or the name (or manifest digest) pulled.
std::string ensure_image(store::Store& store, const std::string& ref, PullPolicy policy, const po::variables_map& vm,
                         std::ostream& out);

}  // namespace strata::cli
