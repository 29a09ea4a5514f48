// strata build: from a parsed Dockerfile to a plan of steps, and the cache
// keys that let an unchanged step be reused.
//
// The planner evaluates a Dockerfile the way docker's builder does before it
// runs anything: stages (FROM ... AS name), the stages --target needs, build
// arguments and their scopes, variable expansion in the instructions docker
// expands, and the image config and history each step leaves behind. The
// executor (strata/build_executor.hpp) then runs the steps that make layers.
//
// History entries follow BuildKit's form (docker's default builder since
// 23.0): "RUN |1 V=1 /bin/sh -c make # buildkit", "COPY a /b # buildkit",
// "ENV a=b", "CMD [\"/bin/sh\" \"-c\" \"x\"]", "EXPOSE map[80/tcp:{}]", with
// the comment "buildkit.dockerfile.v0"; ARG records nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "strata/dockerfile.hpp"

namespace strata::build {

// The default PATH docker gives an image that has none.
inline constexpr const char* kDefaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
inline constexpr const char* kHistoryComment = "buildkit.dockerfile.v0";

struct HealthConfig {
  std::vector<std::string> test;
  std::int64_t interval = 0, timeout = 0, start_period = 0, start_interval = 0;
  int retries = 0;
};

// The part of an image config (the OCI/docker "config" object) that a
// Dockerfile changes. Fields this type does not know are carried in `extra`.
struct ImageConfig {
  std::vector<std::string> env;
  std::optional<std::vector<std::string>> cmd;
  std::optional<std::vector<std::string>> entrypoint;
  std::string working_dir;
  std::string user;
  std::set<std::string> exposed_ports;  // "80/tcp"
  std::map<std::string, std::string> labels;
  std::set<std::string> volumes;
  std::string stop_signal;
  std::optional<HealthConfig> healthcheck;
  std::vector<std::string> shell;  // empty: ["/bin/sh", "-c"]
  std::vector<std::string> on_build;
  nlohmann::json extra = nlohmann::json::object();

  // The value of NAME in env, if set.
  std::optional<std::string> getenv(std::string_view name) const;
  void setenv(const std::string& name, const std::string& value);
};

// docker's "config" JSON object, and back.
nlohmann::json config_to_json(const ImageConfig& config);
ImageConfig config_from_json(const nlohmann::json& config);

// `commit -c` / `import -c`: applies CHANGES (one Dockerfile instruction
// each: CMD ENTRYPOINT ENV EXPOSE HEALTHCHECK LABEL ONBUILD SHELL STOPSIGNAL
// USER VOLUME WORKDIR) to IMAGE_CONFIG (a whole OCI image config) with the
// parser and planner a build uses, and returns the new image config.
// Throws UsageError "invalid change 'X': why" for any other instruction or
// one a Dockerfile would refuse.
nlohmann::json apply_config_changes(const nlohmann::json& image_config, const std::vector<std::string>& changes);

// A COPY/ADD --chmod value: an octal mode (at most 07777) that replaces each
// file's, or chmod(1)'s symbolic clauses (`u=rwX,go=rX`, `+x`, `a-w`, `g+s`,
// `g=u`, `o=`) applied to each file's own mode, directories included. A
// clause is [ugoa]* followed by one or more actions, an action an operator
// (+ - =) then perm letters (r w x X s t) or one class (u g o) to copy.
// No who means all (the umask is not applied). X adds execute to a directory
// or to a file that has an execute bit at that point.
class ModeChange {
 public:
  // nullopt when TEXT is neither form.
  static std::optional<ModeChange> parse(std::string_view text);
  // The new permission bits (07777) of an entry whose bits are MODE.
  std::uint32_t apply(std::uint32_t mode, bool is_dir) const;

 private:
  struct Action {
    char op = '+';              // + - =
    std::uint32_t bits = 0;     // from r w x s t
    bool x_if_exec = false;     // X
    char copy = 0;              // u g o: the class whose bits are copied
  };
  struct Clause {
    std::uint32_t who = 0;      // the bits the clause may change
    std::vector<Action> actions;
  };
  std::optional<std::uint32_t> absolute_;
  std::vector<Clause> clauses_;
};

struct HistoryEntry {
  std::string created_by;
  std::string comment = kHistoryComment;
  bool empty_layer = true;
};

// An image in the local store, as the planner needs it.
struct BaseImage {
  std::string id;  // "sha256:..." of its config: the first link of the cache chain
  ImageConfig config;
  std::string author;
};

// Finds an image by reference in the local store; nullopt when it is not there.
using ImageResolver = std::function<std::optional<BaseImage>(const std::string& reference)>;

enum class StepKind {
  from,    // FROM: the stage's base (nothing to run)
  config,  // changes the config (and history) only
  run,     // RUN: a command in the sandbox -> a layer
  copy,    // COPY: files from the context, another stage or an image -> a layer
  add,     // ADD: like COPY, plus URLs and local tar archives
  workdir, // WORKDIR: config, and a layer when the directory must be created
};

// A file the build puts inside the container for one RUN (a here-document
// with a #! line is run as a script, as docker does).
struct RunFile {
  std::string path;
  std::string content;
};

// RUN --mount=type=...,key=value,...: one mount a RUN step sees for its
// command only (BuildKit's Dockerfile syntax). Nothing a mount shows is part
// of the layer; the spec (never a cache's content or a secret's value) is
// part of the step's cache key.
enum class MountType { bind, cache, tmpfs, secret, ssh };
enum class CacheSharing { shared, private_, locked };

struct RunMount {
  MountType type = MountType::bind;
  std::string target;   // absolute and clean, inside the container
  std::string source;   // bind: a path in `from` ("" or "/..." cleaned; "" is its root)
  std::string from;     // bind: a stage name or index, an image, or "" (the context)
  std::optional<int> from_stage;  // resolved by the planner
  std::string from_image;         // resolved by the planner (image id)
  std::string id;       // cache (default: the target), secret (default: the target's base name), ssh (default: "default")
  std::string env;      // secret: also (or only, without a target) set as this variable
  bool read_only = true;          // bind: true unless rw; cache: false unless ro
  bool required = false;          // secret, ssh
  CacheSharing sharing = CacheSharing::shared;
  std::optional<std::uint32_t> mode;  // cache (0755), secret (0400), ssh (0600)
  std::optional<std::uint32_t> uid, gid;
  std::uint64_t size = 0;         // tmpfs: bytes; 0 is the kernel's default
};

// Parses the value of one --mount flag (already expanded): comma-separated
// key=value fields (CSV quoting), `type` first or anywhere (default bind),
// target|dst|destination, source|src, from, id, sharing, mode, uid, gid,
// size, env, ro|readonly, rw|readwrite, required (a bare boolean key is
// true). A relative target is taken from WORKDIR. Throws Error naming the
// field that is wrong; cache's from= is refused. An ssh mount without a
// target is left without one (the planner numbers them).
RunMount parse_run_mount(std::string_view value, const std::string& workdir);

// The mount as it enters a RUN's cache key and its `normalized` form.
nlohmann::json run_mount_json(const RunMount& mount);

// "bind", "cache", ...
const char* mount_type_name(MountType type);

struct InlineSource {  // COPY <<EOF: a here-document as a source file
  std::string name;
  std::string content;
};

struct Step {
  int number = 0;        // 1-based across the build ("Step N/M")
  int stage = 0;         // index of its stage in the Dockerfile
  StepKind kind = StepKind::config;
  Position pos;          // where the instruction is (for errors during execution)
  std::string display;   // "RUN echo hi": the instruction as written (first line)
  std::string keyword;

  // What identifies the step for the cache besides its parent: the
  // instruction after expansion, and the build args in its environment.
  std::string normalized;
  std::vector<std::pair<std::string, std::string>> used_args;

  // RUN
  std::vector<std::string> argv;
  std::vector<std::string> env;  // the process environment (config Env, then build args ENV does not override)
  std::string user;
  std::string workdir;
  std::string network;           // "default", "none" or "host"
  bool insecure = false;         // RUN --security=insecure: every capability, no seccomp filter
  std::vector<RunFile> files;
  std::vector<RunMount> mounts;  // RUN --mount

  // COPY / ADD
  std::vector<std::string> sources;
  std::vector<InlineSource> inline_sources;
  std::string dest;              // absolute path in the container
  bool dest_is_dir = false;      // ends with '/' (or is "."): copy into it
  std::optional<int> from_stage; // --from=stage (index)
  std::string from_image;        // --from=image reference
  std::string chown, chmod, checksum;
  std::vector<std::string> excludes;
  bool link = false;
  // COPY --parents: each source keeps its path (from the context's root,
  // or from a `/./` in the source) under the destination directory.
  bool parents = false;
  std::optional<bool> unpack;    // ADD --unpack (default: local archives only)
  bool keep_git_dir = false;     // ADD --keep-git-dir: a repository source keeps its .git

  // WORKDIR: the directory the executor creates if it is missing.
  std::string path;

  ImageConfig config;            // the config after this step
  HistoryEntry history;          // meaningful when has_history
  bool has_history = false;
};

struct Stage {
  int index = 0;
  std::string name;              // lower case, or empty
  std::string base;              // the FROM reference after expansion ("scratch", an image, a stage)
  std::optional<int> base_stage; // FROM <earlier stage>
  std::optional<BaseImage> base_image;
  std::vector<int> needs;        // stages whose results it uses (FROM, COPY --from)
  std::vector<std::string> images_needed;  // COPY --from=image
  std::vector<Step> steps;       // the first one is its FROM
  ImageConfig config;            // after the last step
  std::string author;
};

struct PlanOptions {
  std::map<std::string, std::string> build_args;  // --build-arg K=V
  std::string target;                             // --target (empty: the last stage)
  ImageResolver resolve;                          // images in the local store
  // `--allow security.insecure`: RUN --security=insecure may run (else the
  // plan fails at that RUN, as BuildKit refuses the entitlement).
  bool allow_insecure = false;
};

struct Plan {
  std::vector<Stage> stages;     // only the stages the target needs, in Dockerfile order
  int target = 0;                // index into `stages` of the stage that becomes the image
  int total_steps = 0;
  std::vector<std::string> warnings;
  // Build checks that found something, after the check policy (the `check`
  // directive, or the build argument BUILDKIT_DOCKERFILE_CHECK, which wins)
  // dropped the skipped rules; in line order.
  std::vector<CheckWarning> checks;
  bool checks_are_errors = false;  // check=error=true: a finding fails the build
  int check_directive_line = 0;    // where that policy was written (0: a build argument)
};

// Evaluates DOCKERFILE. Throws DockerfileError (with the position) for
// anything docker would refuse before running: an unknown --target, a
// missing base image, a bad substitution, a bad port, ...
Plan plan_build(const Dockerfile& dockerfile, const PlanOptions& options);

// The GOARCH name of this machine ("amd64", "arm64", ...).
std::string native_arch();

// XXH3-128 of the parent, the normalised instruction, the build args it sees
// and (COPY/ADD) the digest of its sources: 32 hex digits.
std::string cache_key(std::string_view parent, std::string_view normalized,
                      const std::vector<std::pair<std::string, std::string>>& used_args,
                      std::string_view sources_digest);

// Go's %q of a []string: ["a" "b"] (as BuildKit writes CMD/ENTRYPOINT history).
std::string go_quote_list(const std::vector<std::string>& items);

}  // namespace strata::build
