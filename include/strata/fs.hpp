// strata::fs: the union filesystem behind stratafs(1).
//
// stratafs presents stacked read-only layer directories (and optionally a
// writable upper directory) as one tree with overlayfs semantics, through the
// libfuse3 low-level API. This header is what a tool needs: the mount options
// (parsed from an overlayfs-style command line), the helpers for the on-disk
// conventions that other modules share (override_stat xattr, id maps), and the
// entry point that mounts and serves until unmounted.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/override_stat.hpp"

namespace strata::fs {

// Lower layers are numbered into the top bits of every inode number (as
// overlayfs's xino does), so numbers never collide across layers and stay
// stable across remounts. 8 bits: the upper is 0, lowers are 1..255.
inline constexpr std::size_t kMaxLowerLayers = 255;

// One range of a uid or gid map: ids [container, container+count) in the
// mount are ids [host, host+count) on disk (fuse-overlayfs's
// `uidmapping=CTR:HOST:N[:CTR:HOST:N...]`).
struct IdRange {
  std::uint32_t container = 0;
  std::uint32_t host = 0;
  std::uint32_t count = 0;
};

class IdMap {
 public:
  IdMap() = default;
  explicit IdMap(std::vector<IdRange> ranges) : ranges_(std::move(ranges)) {}
  // Parses "CTR:HOST:N[:CTR:HOST:N...]"; throws UsageError naming WHAT.
  static IdMap parse(std::string_view spec, std::string_view what);
  bool empty() const noexcept { return ranges_.empty(); }
  // On-disk id -> id shown in the mount; unmapped ids become the overflow id.
  std::uint32_t to_container(std::uint32_t host_id) const noexcept;
  // Id from the caller -> id to store on disk; nullopt when it has no mapping.
  std::optional<std::uint32_t> to_host(std::uint32_t container_id) const noexcept;

 private:
  std::vector<IdRange> ranges_;
};

// The override_stat xattr format: strata/override_stat.hpp.

// Splits an overlayfs layer list "A:B:C"; "\:" and "\\" escape.
std::vector<std::string> split_layer_list(std::string_view list);

struct MountOptions {
  std::vector<std::string> lowerdirs;  // topmost first
  std::string upperdir;
  std::string workdir;
  std::string mountpoint;
  std::string source = "stratafs";  // shown as the mount's source (fsname)
  bool foreground = false;
  bool debug = false;
  bool single_threaded = false;
  // Other users may use the mount: asked for (allow_other), refused
  // (noallow_other), or neither, which lets them in when the daemon is root
  // of the initial user namespace, as kernel overlayfs does.
  bool allow_other = false;
  bool deny_other = false;
  bool allow_root = false;
  bool read_only = false;
  bool passthrough = true;  // let the kernel read and write layer files itself where it can
  // `-o volatile`, as overlayfs's: nothing is synced to the upper's disk
  // (copy-up, fsync, fsyncdir), for uppers that a crash makes worthless
  // anyway (a build step's, which becomes a layer only through a commit that
  // syncs it).
  bool volatile_upper = false;
  // Process whose end unmounts the file system (0: none), so that a mount
  // never outlives the program that made it, even one killed with SIGKILL.
  int owner_pid = 0;
  // Where `-o stats=FILE` writes per-opcode request counts and latencies
  // (absolute; empty: no statistics are kept).
  std::string stats_file;
  IdMap uid_map;
  IdMap gid_map;
};

enum class CommandLineAction { mount, help, version };

// Parses stratafs's command line: `[SOURCE] MOUNTPOINT -o OPTS [-f] [-d]`
// (the SOURCE form is how mount.fuse3 and fstab call it). Throws UsageError.
CommandLineAction parse_command_line(int argc, const char* const* argv, MountOptions& options);

std::string usage_text(std::string_view program);

// Checks the options, opens the layers, mounts, and serves requests until the
// file system is unmounted or a SIGINT/SIGTERM arrives. Without `foreground`
// it detaches once the mount is ready. Throws strata::Error before mounting
// when anything is wrong; nothing is mounted then.
void mount_and_serve(const MountOptions& options);

}  // namespace strata::fs
