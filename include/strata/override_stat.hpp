// The `user.containers.override_stat` xattr (the convention of
// containers/storage and fuse-overlayfs): the owner, mode and file type of a
// file that the host could not store, kept on a stand-in file by rootless
// writers. Read by stratafs (to show the recorded owner) and by the layer
// tar code (to write it into layers). One parser and one formatter for both.
//
// Format: "UID:GID:MODE[:TYPE]", MODE in octal (permission bits; file-type
// bits, as some writers add, are accepted and read as the type), TYPE one of
// file, dir, symlink, pipe, socket, block-MAJ-MIN, char-MAJ-MIN.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <string_view>

namespace strata {

inline constexpr const char* kOverrideStatXattr = "user.containers.override_stat";

struct OverrideStat {
  uid_t uid = 0;
  gid_t gid = 0;
  mode_t mode = 0;  // permission bits and, when a type was given, the S_IFMT type
  dev_t rdev = 0;
  bool has_type = false;
};

// nullopt when VALUE is not a valid record (a trailing NUL is tolerated;
// uid and gid 4294967295, the kernel's "no id", are refused).
std::optional<OverrideStat> parse_override_stat(std::string_view value);
// Always writes the type when VALUE has one.
std::string format_override_stat(const OverrideStat& value);

}  // namespace strata
