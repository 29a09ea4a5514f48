#include "strata/override_stat.hpp"

#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <cstdio>

#include "strata/text.hpp"

namespace strata {

namespace {

constexpr std::uint64_t kMaxId = 0xfffffffeULL;  // 0xffffffff is (uid_t)-1

bool valid_type(mode_t type) {
  switch (type) {
    case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFIFO: case S_IFSOCK: case S_IFBLK: case S_IFCHR: return true;
    default: return false;
  }
}

// "MAJ-MIN" of a device type.
std::optional<dev_t> parse_device(std::string_view text) {
  auto parts = split(text, '-');
  if (parts.size() != 2) return std::nullopt;
  auto maj = parse_unsigned(parts[0], 10, 0xfffff), min = parse_unsigned(parts[1], 10, 0xfffff);
  if (!maj || !min) return std::nullopt;
  return makedev(static_cast<unsigned>(*maj), static_cast<unsigned>(*min));
}

// The type named by a TYPE field; rdev is set for devices.
std::optional<mode_t> parse_type(std::string_view t, dev_t& rdev) {
  if (t == "file") return S_IFREG;
  if (t == "dir") return S_IFDIR;
  if (t == "symlink") return S_IFLNK;
  if (t == "pipe") return S_IFIFO;
  if (t == "socket") return S_IFSOCK;
  for (auto [prefix, type] : {std::pair<std::string_view, mode_t>{"block-", S_IFBLK}, {"char-", S_IFCHR}}) {
    if (!t.starts_with(prefix)) continue;
    auto dev = parse_device(t.substr(prefix.size()));
    if (!dev) return std::nullopt;
    rdev = *dev;
    return type;
  }
  return std::nullopt;
}

}  // namespace

std::optional<OverrideStat> parse_override_stat(std::string_view value) {
  while (!value.empty() && value.back() == '\0') value.remove_suffix(1);
  auto fields = split(value, ':');
  if (fields.size() != 3 && fields.size() != 4) return std::nullopt;
  auto uid = parse_unsigned(fields[0], 10, kMaxId), gid = parse_unsigned(fields[1], 10, kMaxId);
  auto mode = parse_unsigned(fields[2], 8, 0177777);
  if (!uid || !gid || !mode) return std::nullopt;
  OverrideStat o;
  o.uid = static_cast<uid_t>(*uid);
  o.gid = static_cast<gid_t>(*gid);
  o.mode = static_cast<mode_t>(*mode & 07777);
  mode_t type_in_mode = static_cast<mode_t>(*mode) & S_IFMT;
  if (type_in_mode != 0) {
    if (!valid_type(type_in_mode)) return std::nullopt;
    o.mode |= type_in_mode;
    o.has_type = true;
  }
  if (fields.size() == 4) {
    auto type = parse_type(fields[3], o.rdev);
    if (!type || (type_in_mode != 0 && type_in_mode != *type)) return std::nullopt;
    o.mode = (o.mode & 07777) | *type;
    o.has_type = true;
  }
  return o;
}

std::string format_override_stat(const OverrideStat& v) {
  char mode[16];
  std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(v.mode & 07777));
  std::string out = std::to_string(v.uid) + ":" + std::to_string(v.gid) + ":" + mode;
  if (!v.has_type) return out;
  auto device = [&](const char* kind) {
    return out + ":" + kind + "-" + std::to_string(major(v.rdev)) + "-" + std::to_string(minor(v.rdev));
  };
  switch (v.mode & S_IFMT) {
    case S_IFDIR: return out + ":dir";
    case S_IFLNK: return out + ":symlink";
    case S_IFIFO: return out + ":pipe";
    case S_IFSOCK: return out + ":socket";
    case S_IFBLK: return device("block");
    case S_IFCHR: return device("char");
    default: return out + ":file";
  }
}

}  // namespace strata
