// Resource limits: parsing `--memory`, `--memory-swap`, `--cpus` and
// `--pids-limit`, and the container's cgroup v2.
//
// Placement: the container's cgroup "strata-<id>" is made beside the cgroup
// strata runs in (under its parent), or under the root when strata runs in
// the root cgroup. cgroup v2 lets a cgroup hand controllers to its children
// only while it has no processes of its own (the root excepted), so a child
// of strata's own cgroup could not get them; its parent has none of its own
// when it is a delegated subtree (a systemd user's user@UID.service, a
// container's own namespace) or the root. The caller needs write access to
// the parent (to make the cgroup, enable controllers and move processes
// between its children); root has it on the host, a rootless user only in
// a subtree delegated to it. Without it, or without a controller in the
// parent's cgroup.controllers, strata warns once on stderr and runs the
// container without the limit, as rootless docker and podman do.
#include "cgroup.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <iostream>
#include <thread>

#include <linux/magic.h>

#include "sandbox_internal.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/text.hpp"

namespace strata::sandbox {

namespace {

constexpr std::int64_t kCpuPeriod = 100000;
constexpr std::int64_t kMinMemory = 6 << 20;  // docker's minimum

// "DIGITS[.DIGITS]" as a double, nullopt otherwise.
std::optional<double> parse_decimal(std::string_view s) {
  auto dot = s.find('.');
  std::string_view whole = s.substr(0, dot), frac = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if (whole.empty() || !parse_unsigned(whole) || (dot != std::string_view::npos && !parse_unsigned(frac))) return std::nullopt;
  if (whole.size() > 15) return std::nullopt;
  return std::strtod(std::string(s).c_str(), nullptr);
}

bool has_word(std::string_view list, std::string_view word) {
  std::size_t at = 0;
  while (at < list.size()) {
    auto end = list.find_first_of(" \n", at);
    if (end == std::string_view::npos) end = list.size();
    if (list.substr(at, end - at) == word) return true;
    at = end + 1;
  }
  return false;
}

void warn(const std::string& what) { std::cerr << "strata: warning: " << what << "\n"; }

void write_cgroup_file(const std::string& path, const std::string& value) {
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) throw_errno("open " + quote(path));
  if (::write(fd.get(), value.data(), value.size()) != static_cast<ssize_t>(value.size()))
    throw_errno("write " + quote(value) + " to " + quote(path));
}

}  // namespace

std::int64_t parse_memory_size(const std::string& value, const std::string& flag) {
  auto bad = [&] {
    return UsageError("bad " + flag + " " + quote(value) + ": expected a size such as 512m or 1.5g (b, k, m, g, t, p)");
  };
  std::string_view s = value;
  std::size_t digits = 0;
  while (digits < s.size() && (std::isdigit(static_cast<unsigned char>(s[digits])) != 0 || s[digits] == '.')) ++digits;
  auto number = parse_decimal(s.substr(0, digits));
  if (!number) throw bad();
  std::string unit;
  for (char ch : s.substr(digits)) unit += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  static constexpr std::string_view kUnits = "bkmgtp";
  double scale = 1;
  if (!unit.empty()) {
    auto at = kUnits.find(unit[0]);
    std::string_view tail = std::string_view(unit).substr(1);
    if (at == std::string_view::npos || !(tail.empty() || (at > 0 && (tail == "b" || tail == "ib")))) throw bad();
    scale = std::pow(1024.0, static_cast<double>(at));
  }
  double bytes = *number * scale;
  if (bytes >= 9.0e18) throw UsageError("bad " + flag + " " + quote(value) + ": too large");
  return static_cast<std::int64_t>(bytes);
}

std::int64_t parse_memory_swap(const std::string& value) {
  if (value == "-1") return -1;
  return parse_memory_size(value, "--memory-swap");
}

std::int64_t parse_cpus(const std::string& value) {
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 1) cpus = 1;
  auto n = parse_decimal(value);
  std::string range = "from 0.01 to " + std::to_string(cpus) + " (the CPUs available)";
  if (!n) throw UsageError("bad --cpus " + quote(value) + ": expected a decimal number of CPUs " + range);
  auto nano = static_cast<std::int64_t>(std::llround(*n * 1e9));
  if (nano < 10'000'000 || nano > static_cast<std::int64_t>(cpus) * 1'000'000'000)
    throw UsageError("bad --cpus " + quote(value) + ": the number of CPUs must be " + range);
  return nano;
}

std::int64_t parse_pids_limit(const std::string& value) {
  if (value == "-1" || value == "0") return 0;
  auto n = parse_unsigned(value, 10, 1U << 30);
  if (!n) throw UsageError("bad --pids-limit " + quote(value) + ": expected a positive number, or 0 or -1 for no limit");
  return static_cast<std::int64_t>(*n);
}

void check_resources(const Resources& r) {
  if (r.memory != 0 && r.memory < kMinMemory) throw UsageError("--memory must be at least 6m");
  if (r.memory_swap != 0 && r.memory == 0) throw UsageError("--memory-swap needs --memory");
  if (r.memory_swap > 0 && r.memory_swap < r.memory) throw UsageError("--memory-swap must be at least --memory (memory plus swap)");
}

std::string cpu_max(std::int64_t nano_cpus) {
  return std::to_string(nano_cpus * kCpuPeriod / 1'000'000'000) + " " + std::to_string(kCpuPeriod);
}

std::string container_cgroup_name(const std::string& id) { return "strata-" + id; }

std::string cgroup2_mount() {
  for (const char* path : {"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}) {
    struct statfs st {};
    if (::statfs(path, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC) return path;
  }
  return {};
}

std::string cgroup2_path(const std::string& content) {
  for (std::string_view line : content_lines(content))
    if (line.starts_with("0::")) return std::string(line.substr(3));
  return {};
}

std::string cgroup_parent_for(const std::string& own) {
  if (own.empty() || own == "/") return "/";
  auto slash = own.rfind('/');
  return slash == 0 || slash == std::string::npos ? "/" : own.substr(0, slash);
}

ContainerCgroup::ContainerCgroup(const Resources& res, const std::string& name, const std::string& state_dir) {
  if (!res.any()) return;
  std::vector<std::string> needed;
  if (res.memory > 0) needed.emplace_back("memory");
  if (res.nano_cpus > 0) needed.emplace_back("cpu");
  if (res.pids_limit > 0) needed.emplace_back("pids");
  std::string flags;
  for (const auto& c : needed) flags += (flags.empty() ? "" : ", ") + std::string(c == "memory" ? "--memory" : c == "cpu" ? "--cpus" : "--pids-limit");
  std::string mount = cgroup2_mount();
  if (mount.empty()) {
    warn("cgroup v2 is not mounted on /sys/fs/cgroup; the container runs without " + flags);
    return;
  }
  std::string own = cgroup2_path(read_file_or_empty("/proc/self/cgroup"));
  std::string parent = mount + (cgroup_parent_for(own) == "/" ? "" : cgroup_parent_for(own));
  std::string available = read_file_or_empty(parent + "/cgroup.controllers");
  std::string missing;
  for (const auto& c : needed)
    if (!has_word(available, c)) missing += (missing.empty() ? "" : ", ") + c;
  if (!missing.empty()) {
    bool one = missing.find(',') == std::string::npos;
    warn(std::string(one ? "the cgroup controller " : "the cgroup controllers ") + missing + (one ? " is" : " are") +
         " not available in " + quote(parent) +
         " (cgroup.controllers); the container runs without " + flags);
    return;
  }
  if (::access(parent.c_str(), W_OK) != 0 || ::access((parent + "/cgroup.subtree_control").c_str(), W_OK) != 0 ||
      ::access((parent + "/cgroup.procs").c_str(), W_OK) != 0) {
    warn("the cgroup " + quote(parent) + " is not delegated to you (no write access); the container runs without " + flags);
    return;
  }
  std::string enabled = read_file_or_empty(parent + "/cgroup.subtree_control");
  std::string enable;
  for (const auto& c : needed)
    if (!has_word(enabled, c)) enable += (enable.empty() ? "+" : " +") + c;
  if (!enable.empty()) {
    try {
      write_cgroup_file(parent + "/cgroup.subtree_control", enable);
    } catch (const Error& e) {
      warn(std::string("cannot enable the cgroup controllers (") + e.what() + "); the container runs without " + flags);
      return;
    }
  }
  std::string path = parent + "/" + name;
  remove_cgroup(path);  // a stale one of an earlier run
  if (::mkdir(path.c_str(), 0755) != 0) throw_errno("create the cgroup " + quote(path));
  path_ = path;
  try {
    if (!state_dir.empty()) {
      record_leftover(state_dir, "cgroup", path_);
      record_ = state_dir;
    }
    if (res.memory > 0) {
      write_cgroup_file(path + "/memory.max", std::to_string(res.memory));
      std::string swap = res.memory_swap < 0   ? "max"
                         : res.memory_swap > 0 ? std::to_string(res.memory_swap - res.memory)
                                               : std::to_string(res.memory);
      if (::access((path + "/memory.swap.max").c_str(), F_OK) == 0) write_cgroup_file(path + "/memory.swap.max", swap);
    }
    if (res.nano_cpus > 0) write_cgroup_file(path + "/cpu.max", cpu_max(res.nano_cpus));
    if (res.pids_limit > 0) write_cgroup_file(path + "/pids.max", std::to_string(res.pids_limit));
  } catch (const SysError& e) {
    remove_cgroup(path_);
    if (!record_.empty()) forget_leftover(record_, "cgroup");
    throw Error(std::string("resource limits: ") + e.what(), ExitCode::run_failed);
  }
}

ContainerCgroup::~ContainerCgroup() {
  if (path_.empty()) return;
  if (remove_cgroup(path_) && !record_.empty()) forget_leftover(record_, "cgroup");
}

void ContainerCgroup::add(pid_t pid) const {
  try {
    write_cgroup_file(path_ + "/cgroup.procs", std::to_string(pid));
  } catch (const SysError& e) {
    throw Error(std::string("put the container in its cgroup: ") + e.what(), ExitCode::run_failed);
  }
}

bool remove_cgroup(const std::string& path) noexcept {
  // The kernel frees a cgroup's last processes a moment after they exit.
  for (int tries = 0; tries < 200; ++tries) {
    if (::rmdir(path.c_str()) == 0 || errno == ENOENT) return true;
    if (errno != EBUSY) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

UniqueFd open_container_cgroup_procs(pid_t pid, const std::string& name) {
  std::string rel = cgroup2_path(read_file_or_empty("/proc/" + std::to_string(pid) + "/cgroup"));
  auto slash = rel.rfind('/');
  std::string mount = cgroup2_mount();
  if (name.empty() || mount.empty() || slash == std::string::npos || rel.substr(slash + 1) != name) return {};
  return UniqueFd(::open((mount + rel + "/cgroup.procs").c_str(), O_WRONLY | O_CLOEXEC | O_NOFOLLOW));
}

// ---- what a killed run leaves ------------------------------------------------

void record_leftover(const std::string& state_dir, const std::string& what, const std::string& path) {
  std::string file = state_dir + "/leftover." + what;
  UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!fd) throw_errno("create " + quote(file));
  write_all(fd.get(), path, file);
}

void forget_leftover(const std::string& state_dir, const std::string& what) noexcept {
  ::unlink((state_dir + "/leftover." + what).c_str());
}

void remove_leftovers(const std::string& state_dir) noexcept {
  auto recorded = [&](const char* what) { return read_file_or_empty(state_dir + "/leftover." + what); };
  auto plain = [](const std::string& path, std::string_view prefix) {
    auto slash = path.rfind('/');
    return !path.empty() && path[0] == '/' && path.find("/..") == std::string::npos && slash != std::string::npos &&
           std::string_view(path).substr(slash + 1).starts_with(prefix);
  };
  std::string cgroup = recorded("cgroup");
  std::string mount = cgroup2_mount();
  // Only a strata cgroup of the v2 hierarchy: the file is in the store.
  if (!mount.empty() && plain(cgroup, "strata-") && cgroup.starts_with(mount + "/") && remove_cgroup(cgroup))
    forget_leftover(state_dir, "cgroup");
  if (cgroup.empty()) forget_leftover(state_dir, "cgroup");
  std::string netdir = recorded("netdir");
  if (plain(netdir, "strata-net.")) {
    try {
      remove_tree_at(AT_FDCWD, netdir);
      forget_leftover(state_dir, "netdir");
    } catch (const Error&) {
      // Left for the next attempt.
    }
  } else if (netdir.empty()) {
    forget_leftover(state_dir, "netdir");
  }
}

}  // namespace strata::sandbox
