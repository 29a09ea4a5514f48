#include "store_common.hpp"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <iostream>

#include <unistd.h>

#include "strata/build.hpp"

namespace strata::cli {

store::Store open_store(const GlobalOptions& global) {
  auto s = store::Store::open(global.root.empty() ? store::default_root() : global.root);
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

}  // namespace strata::cli
