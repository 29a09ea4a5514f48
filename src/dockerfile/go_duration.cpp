// Go's time.Duration text, as docker reads and prints HEALTHCHECK's
// --interval, --timeout, --start-period and --start-interval:
// parse_go_duration ("1h2m3.5s", "250ms", a sign, fractions) and
// format_go_duration (Duration.String()).
#include <cctype>
#include <cmath>

#include "strata/dockerfile.hpp"

namespace strata::build {

std::optional<std::int64_t> parse_go_duration(std::string_view s) {
  if (s.empty()) return std::nullopt;
  bool negative = false;
  if (s[0] == '-' || s[0] == '+') {
    negative = s[0] == '-';
    s.remove_prefix(1);
  }
  if (s == "0") return 0;
  if (s.empty()) return std::nullopt;
  long double total = 0;
  while (!s.empty()) {
    size_t p = 0;
    long double value = 0;
    bool digits = false;
    while (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) {
      value = value * 10 + (s[p] - '0');
      ++p;
      digits = true;
    }
    if (p < s.size() && s[p] == '.') {
      ++p;
      long double scale = 0.1L;
      while (p < s.size() && std::isdigit(static_cast<unsigned char>(s[p]))) {
        value += (s[p] - '0') * scale;
        scale /= 10;
        ++p;
        digits = true;
      }
    }
    if (!digits) return std::nullopt;
    size_t u = p;
    while (u < s.size() && !std::isdigit(static_cast<unsigned char>(s[u])) && s[u] != '.') ++u;
    std::string_view unit = s.substr(p, u - p);
    long double mult = 0;
    if (unit == "ns") mult = 1;
    else if (unit == "us" || unit == "\xC2\xB5s" || unit == "\xCE\xBCs") mult = 1e3L;
    else if (unit == "ms") mult = 1e6L;
    else if (unit == "s") mult = 1e9L;
    else if (unit == "m") mult = 60e9L;
    else if (unit == "h") mult = 3600e9L;
    else return std::nullopt;
    total += value * mult;
    if (total > 9.2e18L) return std::nullopt;
    s.remove_prefix(u);
  }
  auto ns = static_cast<std::int64_t>(std::llroundl(total));
  return negative ? -ns : ns;
}

std::string format_go_duration(std::int64_t ns) {
  if (ns == 0) return "0s";
  std::string sign = ns < 0 ? "-" : "";
  auto u = static_cast<std::uint64_t>(ns < 0 ? -ns : ns);
  auto fraction = [](std::uint64_t v, std::uint64_t unit) {
    std::string s = std::to_string(v / unit);
    std::uint64_t rest = v % unit;
    if (rest != 0) {
      std::string digits = std::to_string(rest);
      std::string frac = std::string(std::to_string(unit).size() - 1 - digits.size(), '0') + digits;
      while (!frac.empty() && frac.back() == '0') frac.pop_back();
      s += "." + frac;
    }
    return s;
  };
  if (u < 1000) return sign + std::to_string(u) + "ns";
  if (u < 1000000) return sign + fraction(u, 1000) + "\xC2\xB5s";
  if (u < 1000000000) return sign + fraction(u, 1000000) + "ms";
  std::string out;
  std::uint64_t hours = u / 3600000000000ULL;
  u %= 3600000000000ULL;
  std::uint64_t minutes = u / 60000000000ULL;
  u %= 60000000000ULL;
  if (hours > 0) out += std::to_string(hours) + "h";
  if (hours > 0 || minutes > 0) out += std::to_string(minutes) + "m";
  out += fraction(u, 1000000000) + "s";
  return sign + out;
}

}  // namespace strata::build
