// strata build: running a plan (strata/build.hpp) into an image.
//
// One step makes one layer (RUN, COPY, ADD, and WORKDIR when it has to create
// the directory) or a config-only history entry. A step that makes a layer
// works on a union mount of its parent's layers with a fresh upper directory:
// COPY and ADD write through the mount (so symlinks in lower layers resolve
// as the container sees them), RUN runs its command in it, and the upper
// directory is committed as a layer through the store.
//
// The executor reaches the store, the mount and the sandbox only through the
// interfaces below, so that it can be tested without them and so that the
// build module links neither the sandbox nor the FUSE driver.
//
// Build cache: the key of a step is cache_key(parent key, normalised
// instruction, build args used, digest of COPY/ADD sources); the first parent
// is the base image id (or "scratch"). The cache maps a key to the layer the
// step made (or to "no layer"), so a hit needs only the layer to be in the
// store; RUN is not run again.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <ostream>
#include <set>
#include <string>
#include <vector>

#include "strata/build.hpp"
#include "strata/dockerignore.hpp"

namespace strata::build {

// What the executor needs from the image store.
class BuildStore {
 public:
  virtual ~BuildStore() = default;
  // The full image config document (architecture, os, config, rootfs,
  // history) of the image IMAGE_ID ("sha256:..."), as stored.
  virtual nlohmann::json image_config(const std::string& image_id) = 0;
  // True when the image IMAGE_ID is in the store.
  virtual bool has_image(const std::string& image_id) = 0;
  // The extracted directory of the layer DIFF_ID, to mount read-only;
  // nullopt when the store does not have it.
  virtual std::optional<std::string> layer_path(const std::string& diff_id) = 0;
  // A directory on the store's file system for staging (upper dirs, mounts).
  virtual std::string temp_parent() = 0;
  // Turns UPPER (an overlay upper directory: whiteouts as 0/0 character
  // devices, opaque directories by xattr) into a layer; returns its diff_id.
  // UPPER may be consumed.
  virtual std::string commit_layer(const std::string& upper) = 0;
  // Merges the stored layers DIFF_IDS (bottom first) into one layer, as
  // applying them in order on top of the layers beneath gives; returns its
  // diff_id.
  virtual std::string squash_layers(const std::vector<std::string>& diff_ids) = 0;
  // Writes the image with config document CONFIG (whose rootfs.diff_ids name
  // layers already in the store); returns its id ("sha256:...").
  virtual std::string write_image(const nlohmann::json& config) = 0;
  // Points the reference NAME[:TAG] at IMAGE_ID.
  virtual void tag(const std::string& image_id, const std::string& reference) = 0;
  // The build cache index: key -> value.
  virtual std::optional<std::string> cache_get(const std::string& key) = 0;
  virtual void cache_put(const std::string& key, const std::string& value) = 0;
  // The directory that keeps RUN --mount=type=cache directories between
  // builds (created when missing); "" when the store has none.
  virtual std::string cache_mounts_dir() { return {}; }
};

// A union mount of read-only layers and an optional upper directory.
struct MountRequest {
  std::vector<std::string> lowers;  // topmost first (overlayfs's lowerdir= order)
  std::string upper, work;          // empty: a read-only mount
  std::string target;
};

class Mounter {
 public:
  virtual ~Mounter() = default;
  // Mounts; when it returns, TARGET shows the union. Throws Error.
  virtual void mount(const MountRequest& request) = 0;
  // Unmounts TARGET; never throws (it is called on error paths).
  virtual void unmount(const std::string& target) noexcept = 0;
};

// Mounts with the stratafs binary at STRATAFS (fork/exec; it detaches once the
// mount is ready) and unmounts with umount2 or fusermount3.
class StratafsMounter : public Mounter {
 public:
  explicit StratafsMounter(std::string stratafs) : stratafs_(std::move(stratafs)) {}
  void mount(const MountRequest& request) override;
  void unmount(const std::string& target) noexcept override;
  const std::string& stratafs() const { return stratafs_; }

 private:
  std::string stratafs_;
};

// A mount the command of one RUN sees (RUN --mount), ready for the sandbox:
// a host path bound over TARGET, or a tmpfs.
struct RunMountRequest {
  bool tmpfs = false;
  std::string source;      // bind: the host file or directory
  std::string target;      // absolute, inside the container
  bool read_only = false;
  std::uint64_t size = 0;  // tmpfs: bytes (0: the kernel's default)
  // bind: set on SOURCE inside the container's user namespace before it is
  // bound (container ids, mapped as the command's are).
  std::optional<std::uint32_t> uid, gid, mode;
};

// One RUN: the command and its environment. ROOTFS is the union of the
// parent's layers and the step's fresh upper (MOUNT says which), mounted by
// the executor for the duration of the command; with
// ExecuteOptions::run_mounts_root the command mounts MOUNT on ROOTFS itself,
// inside its own namespaces, and INITDIR is a directory of the step's for
// the mount points it needs (see sandbox::UnionRoot::initdir).
struct RunRequest {
  std::string rootfs;
  MountRequest mount;
  std::string initdir;
  std::vector<std::string> argv;
  std::vector<std::string> env;
  std::string user;     // "" (root), "name", "uid", "name:group", "uid:gid"
  std::string workdir;  // absolute, inside the container
  std::string network;  // "default", "none" or "host"
  bool insecure = false;  // RUN --security=insecure: every capability, no seccomp filter
  std::vector<RunMountRequest> mounts;  // in Dockerfile order
  // With progress shown: each line the command prints is shown as
  // LOG_PREFIX, the seconds since LOG_STARTED (three decimals), a space and
  // the line, as BuildKit's plain progress shows it ("#6 0.215 hello").
  std::string log_prefix;
  std::chrono::steady_clock::time_point log_started;
};

// Runs a RUN step's command (in the sandbox); returns its exit status, or
// 128+N when it was killed by signal N. Throws Error when it cannot run.
using RunCommand = std::function<int(const RunRequest& request)>;

// The key of the image config's field that holds its inline build cache:
// [{"key": CACHE KEY, "layer": DIFF_ID or "", "created": RFC 3339}, ...].
inline constexpr const char* kInlineCacheKey = "strata.build.cache.v1";

// The inline cache entries of an image config DOC: key -> {"layer",
// "created"}, keeping only entries whose layer is one of DOC's own layers
// (or none) and whose fields have the right types.
std::map<std::string, nlohmann::json> inline_cache_entries(const nlohmann::json& doc);

struct Owner {
  unsigned uid = 0;
  unsigned gid = 0;
};

struct ExecuteOptions {
  std::string context_dir;          // the build context
  IgnoreMatcher ignore;             // .dockerignore of the context
  std::vector<std::string> tags;    // references to point at the image
  bool no_cache = false;
  // --no-cache-filter: the stages (Stage::index) whose steps run without
  // the cache; the other stages still use it.
  std::set<int> no_cache_stages;
  // `--cache-to type=inline`: the image's config also holds the cache
  // entries of the steps whose layers it has (kInlineCacheKey), so that a
  // build elsewhere can take them with --cache-from.
  bool inline_cache = false;
  // `--cache-from`: cache entries read from images' configs
  // (inline_cache_entries), looked up when the store's own cache misses.
  std::map<std::string, nlohmann::json> imported_cache;
  // The layers the target stage made on top of its FROM are merged into
  // one; the history keeps every entry, only the last one that made a layer
  // points to the merged layer. The cache keeps the separate steps.
  bool squash = false;
  bool quiet = false;               // no step lines, no RUN output
  std::ostream* out = nullptr;      // progress (nullptr: none)
  BuildStore* store = nullptr;
  Mounter* mounter = nullptr;
  RunCommand run;
  // RUN mounts RunRequest::mount itself, inside the command's namespaces.
  // An unprivileged user's FUSE mount on the host lets in only that user,
  // not the image's other users (the user's subordinate ids).
  bool run_mounts_root = false;
  // How the host numbers the owner of a file the build writes for the
  // container (COPY, ADD, WORKDIR, RUN's scripts and secrets): an
  // unprivileged user's container root is the user itself, its other users
  // are subordinate ids. Unset: the same ids.
  std::function<Owner(const Owner&)> host_owner;
  // `--secret`: id -> value, for RUN --mount=type=secret. A value is given
  // to the command only: never in a layer, the history, the config or a
  // cache key.
  std::map<std::string, std::string> secrets;
  // `--ssh`: id -> an O_PATH descriptor of an ssh agent's socket (checked
  // when the build started; the caller keeps it open), for RUN
  // --mount=type=ssh. The command reaches the agent through a socket of
  // its own; the agent's path is in no layer, history or cache key.
  std::map<std::string, int> ssh_agents;
  // Polled between steps and after each step's work: true stops the build
  // (SIGINT/SIGTERM), cleaning up as for a failing step.
  std::function<bool()> cancelled;
};

struct BuildResult {
  std::string image_id;
  int steps_cached = 0;  // layer steps taken from the cache
  int steps_run = 0;     // layer steps executed
};

// Runs PLAN (from DOCKERFILE_PATH, for messages). Throws Error (DockerfileError
// with the instruction's position for a failing step); nothing is tagged and
// no image is written then, while layers of finished steps stay cached.
BuildResult execute_plan(const Plan& plan, const std::string& dockerfile_path, const ExecuteOptions& options);

// The build cache as files: DIR/<key> holds the value. Keys are 32 hex
// digits (cache_key); anything else is refused. Writes are staged in TMP_DIR
// (same file system), fsynced and renamed into place.
std::optional<std::string> read_cache_entry(const std::string& dir, const std::string& key);
void write_cache_entry(const std::string& dir, const std::string& tmp_dir, const std::string& key,
                       const std::string& value);

// `strata builder prune`: removes the RUN --mount=type=cache directories
// under DIR (BuildStore::cache_mounts_dir) that no build is using; returns
// how many it removed. A cache in use is left.
int prune_cache_mounts(const std::string& dir);

// ---- parts the executor is made of, exposed for tests ----

// A --chown value resolved against the container's /etc/passwd and
// /etc/group contents. Throws Error naming the user or group that is missing.
// With PRIMARY_GROUP, a user named without a group gets its primary group
// from passwd (as USER does for RUN and WORKDIR) instead of its uid.
Owner resolve_chown(const std::string& spec, const std::string& passwd, const std::string& group,
                    bool primary_group = false);

// Expands SOURCE (a context-relative path, possibly a glob) against the tree
// at ROOT_FD; returns the matching context-relative paths, sorted. Paths that
// clean to outside the root throw Error. IGNORE hides paths from globs.
std::vector<std::string> expand_sources(int root_fd, const std::string& source, const IgnoreMatcher& ignore);

// XXH3-128 over the names, types, modes, sizes, link targets and contents of
// PATHS (relative to ROOT_FD, recursively, honouring IGNORE): the part of a
// COPY's cache key that changes when a source changes. 32 hex digits.
std::string digest_sources(int root_fd, const std::vector<std::string>& paths, const IgnoreMatcher& ignore);

// True when the file at FD is a tar archive (plain, gzip, bzip2, xz or zstd),
// the kind ADD unpacks.
bool is_tar_archive(int fd);

// Extracts the tar archive at ARCHIVE_FD into DEST_FD. Every entry must stay
// beneath DEST: an absolute name, a `..` that climbs out, a hard link to
// outside, or a path through a symlink is refused with an Error naming the
// entry (ORIGIN names the archive). OWNER, when given, owns every entry.
void extract_tar_beneath(int archive_fd, int dest_fd, const std::string& origin, const std::optional<Owner>& owner);

}  // namespace strata::build
