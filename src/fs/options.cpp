// Command line and on-disk conventions of stratafs: option parsing in the
// overlayfs / FUSE style and id maps.
//
// The command line is parsed by hand rather than with Boost.Program_options:
// mount(8), mount.fuse3 and fstab hand FUSE drivers a comma-separated `-o`
// list in which values may themselves contain commas and colons, and the
// first positional may be a source name; that grammar is FUSE's, not POSIX
// getopt's.
#include <sys/stat.h>

#include <cstring>
#include <filesystem>

#include "strata/error.hpp"
#include "strata/fs.hpp"
#include "strata/idfile.hpp"
#include "strata/text.hpp"

namespace strata::fs {

namespace {

// Splits the -o list on commas. uidmapping/gidmapping values use colons only,
// so a plain comma split is what fuse-overlayfs and mount.fuse3 expect.
std::vector<std::string> split_option_list(std::string_view list) {
  std::vector<std::string> out;
  for (auto part : split(list, ',')) {
    if (!part.empty()) out.emplace_back(part);
  }
  return out;
}

// Options that mount(8), mount.fuse3 or fstab pass along and that either mean
// nothing to a FUSE driver or are the kernel's business. Accepting them is
// what lets `mount -t fuse.stratafs` and fstab lines work.
bool is_ignored_mount_option(std::string_view opt) {
  static constexpr std::string_view ignored[] = {
      "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
      "strictatime", "nodiratime", "diratime", "defaults", "auto", "noauto", "nofail", "_netdev",
      "user", "nouser", "users", "async", "sync", "default_permissions", "lazytime", "nolazytime",
      // Kernel overlayfs options that describe what stratafs always does or
      // that have no effect on a FUSE implementation.
      "redirect_dir=on", "redirect_dir=follow", "redirect_dir=off", "redirect_dir=nofollow",
      "index=off", "xino=auto", "xino=on", "xino=off", "metacopy=off", "userxattr"};
  for (auto i : ignored) {
    if (opt == i) return true;
  }
  return opt.starts_with("x-") || opt.starts_with("comment=") || opt.starts_with("context=");
}

void apply_option(const std::string& opt, MountOptions& o) {
  auto eq = opt.find('=');
  std::string key = opt.substr(0, eq);
  std::string value = eq == std::string::npos ? std::string() : opt.substr(eq + 1);
  auto need_value = [&] {
    if (eq == std::string::npos || value.empty()) throw UsageError("option " + quote(key) + " needs a value");
  };
  if (key == "lowerdir") {
    need_value();
    o.lowerdirs = split_layer_list(value);
  } else if (key == "upperdir") {
    need_value();
    o.upperdir = value;
  } else if (key == "workdir") {
    need_value();
    o.workdir = value;
  } else if (key == "uidmapping") {
    need_value();
    o.uid_map = IdMap::parse(value, "uidmapping");
  } else if (key == "gidmapping") {
    need_value();
    o.gid_map = IdMap::parse(value, "gidmapping");
  } else if (key == "fsname") {
    need_value();
    o.source = value;
  } else if (opt == "allow_other") {
    o.allow_other = true;
    o.deny_other = false;
  } else if (opt == "noallow_other") {
    o.allow_other = false;
    o.deny_other = true;
  } else if (opt == "allow_root") {
    o.allow_root = true;
  } else if (opt == "ro") {
    o.read_only = true;
  } else if (opt == "debug") {
    o.debug = true;
  } else if (key == "owner") {
    need_value();
    auto pid = parse_unsigned(value, 10, 0x3fffffff);
    if (!pid || *pid == 0) throw UsageError("option 'owner' needs a process id, not " + quote(value));
    o.owner_pid = static_cast<int>(*pid);
  } else if (opt == "nopassthrough") {
    o.passthrough = false;
  } else if (opt == "volatile") {
    o.volatile_upper = true;
  } else if (key == "stats") {
    need_value();
    // Absolute now: the daemon changes to / when it detaches.
    o.stats_file = std::filesystem::absolute(value).lexically_normal().string();
  } else if (is_ignored_mount_option(opt)) {
    // accepted for mount(8)/fstab compatibility
  } else {
    throw UsageError("unknown option " + quote(opt) + " (see 'stratafs --help')");
  }
}

}  // namespace

std::vector<std::string> split_layer_list(std::string_view list) {
  std::vector<std::string> out;
  std::string cur;
  for (std::size_t i = 0; i < list.size(); ++i) {
    char c = list[i];
    if (c == '\\' && i + 1 < list.size()) {
      cur += list[++i];
    } else if (c == ':') {
      out.push_back(std::move(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  out.push_back(std::move(cur));
  for (const auto& l : out) {
    if (l.empty()) throw UsageError("empty directory in layer list " + quote(list));
  }
  return out;
}

IdMap IdMap::parse(std::string_view spec, std::string_view what) {
  auto fields = split(spec, ':');
  if (fields.size() % 3 != 0) {
    throw UsageError(std::string(what) + " " + quote(spec) + " is not CONTAINER:HOST:COUNT[:...]");
  }
  std::vector<IdRange> ranges;
  for (std::size_t i = 0; i < fields.size(); i += 3) {
    auto c = parse_unsigned(fields[i], 10), h = parse_unsigned(fields[i + 1], 10), n = parse_unsigned(fields[i + 2], 10);
    // Ids end at idfile::kMaxId: the next one is (uid_t)-1, "no change" to
    // chown, and no user namespace maps it either.
    constexpr std::uint64_t id_end = std::uint64_t{idfile::kMaxId} + 1;
    if (!c || !h || !n || *n == 0 || *c + *n > id_end || *h + *n > id_end) {
      throw UsageError(std::string(what) + " " + quote(spec) + " has a bad range at field " + std::to_string(i + 1) +
                       " (COUNT > 0; ids from 0 to " + std::to_string(idfile::kMaxId) + ")");
    }
    ranges.push_back({static_cast<std::uint32_t>(*c), static_cast<std::uint32_t>(*h), static_cast<std::uint32_t>(*n)});
  }
  return IdMap(std::move(ranges));
}

std::uint32_t IdMap::to_container(std::uint32_t host_id) const noexcept {
  if (ranges_.empty()) return host_id;
  for (const auto& r : ranges_) {
    if (host_id >= r.host && host_id - r.host < r.count) return r.container + (host_id - r.host);
  }
  return 65534;  // the kernel's overflow id, as a user namespace shows unmapped ids
}

std::optional<std::uint32_t> IdMap::to_host(std::uint32_t container_id) const noexcept {
  if (ranges_.empty()) return container_id;
  for (const auto& r : ranges_) {
    if (container_id >= r.container && container_id - r.container < r.count) return r.host + (container_id - r.container);
  }
  return std::nullopt;
}

CommandLineAction parse_command_line(int argc, const char* const* argv, MountOptions& o) {
  std::vector<std::string> positionals;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "-h" || a == "--help") return CommandLineAction::help;
    if (a == "-V" || a == "--version") return CommandLineAction::version;
    if (a == "-f") {
      o.foreground = true;
    } else if (a == "-d" || a == "--debug") {
      o.debug = true;
      o.foreground = true;
    } else if (a == "-s") {
      o.single_threaded = true;
    } else if (a == "-o") {
      if (i + 1 >= argc) throw UsageError("option '-o' needs a value");
      for (const auto& opt : split_option_list(argv[++i])) apply_option(opt, o);
    } else if (a.starts_with("-o")) {
      for (const auto& opt : split_option_list(a.substr(2))) apply_option(opt, o);
    } else if (a.starts_with("-")) {
      throw UsageError("unknown option " + quote(a) + " (see 'stratafs --help')");
    } else {
      positionals.emplace_back(a);
    }
  }
  if (o.debug) o.foreground = true;
  if (positionals.empty()) throw UsageError("no mount point given (see 'stratafs --help')");
  if (positionals.size() > 2) throw UsageError("unexpected argument " + quote(positionals[2]));
  if (positionals.size() == 2) {
    // mount.fuse3 and fstab: `stratafs SOURCE MOUNTPOINT -o ...`
    o.source = positionals[0];
    o.mountpoint = positionals[1];
  } else {
    o.mountpoint = positionals[0];
  }
  if (o.lowerdirs.empty()) throw UsageError("no lowerdir given: use -o lowerdir=TOP:...:BOTTOM");
  if (o.upperdir.empty() != o.workdir.empty()) {
    throw UsageError(o.upperdir.empty() ? "workdir given without upperdir" : "upperdir given without workdir");
  }
  if (o.lowerdirs.size() > kMaxLowerLayers) {
    throw UsageError("too many lower layers: " + std::to_string(o.lowerdirs.size()) + " (at most " +
                     std::to_string(kMaxLowerLayers) + ")");
  }
  return CommandLineAction::mount;
}

std::string usage_text(std::string_view program) {
  std::string p(program);
  return "Usage: " + p + " -o lowerdir=TOP:...:BOTTOM[,upperdir=UPPER,workdir=WORK][,OPTIONS] MOUNTPOINT\n"
         "       " + p + " SOURCE MOUNTPOINT -o lowerdir=...   (as called by mount -t fuse." + p + ")\n"
         "Mount stacked layer directories as one tree with overlayfs semantics.\n"
         "\n"
         "Options:\n"
         "  -o lowerdir=DIRS     read-only layers, topmost first, separated by ':' (\\: escapes)\n"
         "  -o upperdir=DIR      writable layer that receives every change\n"
         "  -o workdir=DIR       empty directory on the upper's file system, for staging\n"
         "  -o uidmapping=C:H:N[:C:H:N...]  show on-disk uid H as C (N ids per range)\n"
         "  -o gidmapping=C:H:N[:C:H:N...]  the same for group ids\n"
         "  -o ro                mount read-only even with an upperdir\n"
         "  -o allow_other       let other users access the mount (permissions are enforced;\n"
         "                       the default when run by root)\n"
         "  -o noallow_other     only the mounting user may access the mount, even as root\n"
         "  -o allow_root        let root access the mount\n"
         "  -o fsname=NAME       source name shown in /proc/mounts\n"
         "  -o owner=PID         unmount and exit when process PID ends\n"
         "  -o nopassthrough     serve every read and write through the daemon (no FUSE passthrough)\n"
         "  -o volatile          never sync the upper to disk (copy-up, fsync): for uppers a crash\n"
         "                       may lose, such as a build step's\n"
         "  -o stats=FILE        count requests per opcode with their latency; write the table\n"
         "                       to FILE on SIGUSR1 and at unmount\n"
         "  -f                   stay in the foreground\n"
         "  -d, --debug          foreground, and log every request\n"
         "  -s                   serve requests on one thread\n"
         "  -h, --help           show this help\n"
         "  -V, --version        show the version\n"
         "\n"
         "Unmount with 'fusermount3 -u MOUNTPOINT' or 'umount MOUNTPOINT'. See stratafs(1).\n";
}

}  // namespace strata::fs
