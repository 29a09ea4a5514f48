#include "store_common.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "strata/build.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/sandbox.hpp"
#include "strata/stratafs_client.hpp"

namespace strata::cli {

store::Store open_store(const GlobalOptions& global) {
  auto s = store::Store::open(global.root.empty() ? store::default_root() : global.root);
  // A rootless store's files belong to the user and its subordinate ids:
  // the layers it writes record them as the containers number them.
  if (::geteuid() != 0) s.set_owner_map(sandbox::container_owners(sandbox::own_id_maps()));
  if (global.debug) {
    // Every step, timed from the start, whoever reads it.
    auto start = std::chrono::steady_clock::now();
    s.set_progress([start](const std::string& m) {
      std::chrono::duration<double> t = std::chrono::steady_clock::now() - start;
      char stamp[32];
      std::snprintf(stamp, sizeof stamp, "%+.3fs", t.count());
      std::cerr << "strata: debug: " << stamp << " " << m << "\n";
    });
  } else if (::isatty(2) != 0) {
    // Progress only for a person watching a terminal.
    s.set_progress([](const std::string& m) { std::cerr << m << "\n"; });
  }
  return s;
}

store::CommitOptions commit_options(const boost::program_options::variables_map& vm) {
  store::CommitOptions o;
  if (vm.count("message") != 0U) o.message = vm["message"].as<std::string>();
  if (vm.count("author") != 0U) o.author = vm["author"].as<std::string>();
  if (vm.count("change") != 0U) {
    std::vector<std::string> changes = vm["change"].as<std::vector<std::string>>();
    build::apply_config_changes(oci::empty_config(), changes);  // refuses a bad change before any work
    o.edit_config = [changes](const oci::json& config) { return build::apply_config_changes(config, changes); };
  }
  return o;
}

std::string human_size(std::int64_t bytes) {
  static const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1000.0 && u < 4) v /= 1000.0, ++u;
  char buf[32];
  if (u == 0)
    std::snprintf(buf, sizeof buf, "%lldB", static_cast<long long>(bytes));
  else
    std::snprintf(buf, sizeof buf, "%.3g%s", v, units[u]);
  return buf;
}

std::string human_ago(const std::string& rfc3339) {
  auto t = oci::parse_rfc3339(rfc3339);
  if (!t) return "N/A";
  std::int64_t d = static_cast<std::int64_t>(std::time(nullptr)) - *t;
  if (d < 0) d = 0;
  auto fmt = [](std::int64_t n, const char* unit) {
    return std::to_string(n) + " " + unit + (n == 1 ? "" : "s") + " ago";
  };
  if (d < 1) return "Less than a second ago";
  if (d < 60) return fmt(d, "second");
  if (d < 3600) return fmt(d / 60, "minute");
  if (d < 86400 * 2) return fmt(d / 3600, "hour");
  if (d < 86400 * 14) return fmt(d / 86400, "day");
  if (d < 86400 * 60) return fmt(d / (86400 * 7), "week");
  if (d < 86400 * 365 * 2) return fmt(d / (86400 * 30), "month");
  return fmt(d / (86400 * 365), "year");
}

std::string pad(const std::string& s, std::size_t width) {
  return s.size() >= width ? s + " " : s + std::string(width - s.size(), ' ');
}

std::string local_time(const std::string& rfc3339) {
  auto t = oci::parse_rfc3339(rfc3339);
  if (!t) return rfc3339;
  std::time_t when = static_cast<std::time_t>(*t);
  std::tm tm{};
  if (::localtime_r(&when, &tm) == nullptr) return rfc3339;
  char buf[64];
  if (std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S %z %Z", &tm) == 0) return rfc3339;
  return buf;
}

std::string ellipsis(const std::string& s, std::size_t width, bool no_trunc) {
  if (no_trunc || width == 0) return s;
  // Count characters, not bytes, and never cut inside a UTF-8 sequence.
  std::size_t chars = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
    if (++chars == width) {
      std::size_t next = i + 1;
      while (next < s.size() && (static_cast<unsigned char>(s[next]) & 0xC0) == 0x80) ++next;
      return next == s.size() ? s : s.substr(0, i) + "…";
    }
  }
  return s;
}

std::vector<std::pair<std::string, std::string>> filters(const boost::program_options::variables_map& vm,
                                                         const char* verb, const std::vector<std::string>& keys) {
  std::vector<std::pair<std::string, std::string>> out;
  if (vm.count("filter") == 0U) return out;
  std::string known;
  for (const auto& k : keys) known += (known.empty() ? "" : ", ") + k;
  for (const auto& f : vm["filter"].as<std::vector<std::string>>()) {
    auto eq = f.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError(std::string(verb) + ": bad --filter " + quote(f) + " (KEY=VALUE; keys: " + known + ")");
    std::string key = f.substr(0, eq);
    if (std::find(keys.begin(), keys.end(), key) == keys.end())
      throw UsageError(std::string(verb) + ": unknown --filter key " + quote(key) + " (keys: " + known + ")");
    out.emplace_back(key, f.substr(eq + 1));
  }
  return out;
}

bool glob_match(const std::string& pattern, const std::string& name) {
  return ::fnmatch(pattern.c_str(), name.c_str(), FNM_PATHNAME) == 0;
}

std::string format_option(const boost::program_options::variables_map& vm) {
  return vm.count("format") != 0U ? vm["format"].as<std::string>() : "";
}

std::string mount_program() {
  if (const char* p = std::getenv("STRATA_MOUNT_PROGRAM"); p != nullptr && *p != '\0') return p;
  return fs::find_stratafs();
}

// Asks QUESTION on standard error and reads the answer from standard input,
// unless FORCE. A closed or non-"y" answer removes nothing and says so (exit
// 1): a script that forgot -f learns it at once.
void confirm(const std::string& verb, const std::string& warning, bool force) {
  if (force) return;
  std::cerr << "WARNING! " << warning << "\nAre you sure you want to continue? [y/N] " << std::flush;
  std::string answer;
  std::getline(std::cin, answer);
  if (answer == "y" || answer == "Y" || answer == "yes") return;
  if (::isatty(0) == 0) std::cerr << "\n";
  throw Error(verb + ": not confirmed; nothing removed (-f removes without asking)");
}

// Runs the subcommand of a group verb ("image prune", "system df").
int dispatch(const char* group, const std::vector<std::pair<const char*, VerbFn>>& subs, const GlobalOptions& g,
             const std::vector<std::string>& args) {
  std::string names;
  for (const auto& [name, fn] : subs) names += (names.empty() ? "" : ", ") + std::string(name);
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    (args.empty() ? std::cerr : std::cout) << "Usage: strata " << group << " COMMAND [OPTIONS]\n\nCommands: " << names
                                           << "\nRun 'strata " << group << " COMMAND --help' for a command's options.\n";
    return args.empty() ? static_cast<int>(ExitCode::usage) : 0;
  }
  for (const auto& [name, fn] : subs)
    if (args[0] == name) return fn(g, std::vector<std::string>(args.begin() + 1, args.end()));
  throw UsageError(std::string(group) + ": unknown command " + quote(args[0]) + " (" + names + ")");
}

// A staging directory in the store for a stream (load and import from
// standard input, save to standard output); named VERB-PID-... so that prune
// removes it when this process dies before it does.
TempDir stream_staging(const store::Store& store, const std::string& verb) {
  return TempDir(store.tmp_dir(), verb + "-" + std::to_string(::getpid()) + "-");
}

// Copies everything readable from FROM to TO; returns the byte count.
std::int64_t copy_stream(int from, int to, const std::string& from_name, const std::string& to_name) {
  char buf[1 << 16];
  std::int64_t total = 0;
  for (;;) {
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + from_name);
    if (n == 0) return total;
    write_all(to, buf, static_cast<std::size_t>(n), to_name);
    total += n;
  }
}

void write_file_staged(const std::string& path, const std::function<void(int fd, const std::string& where)>& write,
                       const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC));
    if (!fd) throw SysError(errno, what + ": open " + quote(path));
    write(fd.get(), path);
    return;
  }
  std::string tmp = path + ".strata-output-" + std::to_string(::getpid());
  UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
  if (!fd) throw SysError(errno, what + ": create " + quote(tmp));
  try {
    write(fd.get(), tmp);
    if (::fsync(fd.get()) != 0) throw SysError(errno, what + ": sync " + quote(tmp));
    if (::rename(tmp.c_str(), path.c_str()) != 0) throw SysError(errno, what + ": rename to " + quote(path));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace strata::cli
