// src/archive: what a hostile archive is held to: the names of its entries
// (split_name: no absolute names, no `..`) and how many bytes one stream may
// inflate to (the limit given, STRATA_MAX_LAYER_SIZE, or the free space of
// the destination's file system), with human_size for the messages.
#include <fcntl.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <iterator>

#include "archive_internal.hpp"
#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/text.hpp"

namespace strata::archive {

std::string detail::human_size(std::int64_t n) {
  static const char* const units[] = {"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(n);
  std::size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(units)) v /= 1024, ++u;
  char buf[48];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

namespace {

// The default limit for the file system of the directory open at DIR_FD
// (default_size_limit's rule).
std::int64_t free_space_limit(int dir_fd, const std::string& shown) {
  struct statvfs vfs {};
  if (::fstatvfs(dir_fd, &vfs) != 0) throw_errno("check free space of " + shown);
  auto unit = static_cast<std::int64_t>(vfs.f_frsize);
  std::int64_t free_bytes = static_cast<std::int64_t>(vfs.f_bavail) * unit;
  std::int64_t reserve = static_cast<std::int64_t>(vfs.f_blocks) * unit / 20;
  return std::max<std::int64_t>(free_bytes - reserve, 1);
}

}  // namespace

detail::SizeLimit detail::size_limit_for(const std::optional<std::int64_t>& explicit_limit, int dir_fd, const std::string& shown) {
  if (explicit_limit) return {*explicit_limit, "the limit given"};
  if (const char* env = std::getenv(kSizeLimitEnv); env != nullptr && *env != '\0') {
    std::string_view s = env;
    std::uint64_t scale = 1;
    if (auto p = std::string_view("KMGT").find(static_cast<char>(std::toupper(s.back()))); p != std::string_view::npos) {
      scale = std::uint64_t{1} << (10 * (p + 1));
      s.remove_suffix(1);
    }
    auto n = parse_unsigned(s, 10, static_cast<std::uint64_t>(INT64_MAX) / scale);
    if (!n) throw Error(std::string(kSizeLimitEnv) + "=" + quote(env) + " is not a size (bytes, or a number with K, M, G or T)");
    return {static_cast<std::int64_t>(*n * scale), std::string("the limit ") + kSizeLimitEnv + " sets"};
  }
  return {free_space_limit(dir_fd, shown), std::string("the free space on its file system, less a 5% reserve; free space or set ") +
                                       kSizeLimitEnv};
}

// Splits an entry name into safe components; throws on `..` and absolute names.
std::vector<std::string> detail::split_name(std::string_view name, std::string_view what) {
  if (!name.empty() && name[0] == '/')
    throw Error("refusing " + std::string(what) + " " + quote(name) + ": absolute path");
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= name.size()) {
    auto end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view c = name.substr(start, end - start);
    if (c == "..") throw Error("refusing " + std::string(what) + " " + quote(name) + ": path contains '..'");
    if (!c.empty() && c != ".") out.emplace_back(c);
    start = end + 1;
  }
  return out;
}

std::int64_t default_size_limit(const std::string& dir) {
  UniqueFd fd = open_at(AT_FDCWD, dir, O_PATH | O_DIRECTORY);
  return free_space_limit(fd.get(), quote(dir));
}

}  // namespace strata::archive
