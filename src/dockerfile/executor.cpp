// The build executor: runs a plan's steps on the store, the union mount and
// the sandbox (see strata/build_executor.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <functional>
#include <list>
#include <map>

#include "agent_forwarder.hpp"
#include "files.hpp"
#include "git_source.hpp"
#include "strata/build_executor.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"

namespace strata::build {

namespace {

// Staging directories are named KIND-PID-XXXXXX, as the store names its own:
// `strata prune` removes those whose process is gone (a killed build).
std::string staging_prefix(const char* kind) { return std::string(kind) + "-" + std::to_string(::getpid()) + "-"; }

std::string now_rfc3339() {
  auto now = std::chrono::system_clock::now();
  auto secs = std::chrono::time_point_cast<std::chrono::seconds>(now);
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now - secs).count();
  std::time_t t = std::chrono::system_clock::to_time_t(secs);
  struct tm tm {};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
  char frac[16];
  std::snprintf(frac, sizeof frac, ".%09lldZ", static_cast<long long>(nanos));
  return std::string(buf) + frac;
}

std::string short_id(const std::string& id) {
  std::string hex = id.rfind("sha256:", 0) == 0 ? id.substr(7) : id;
  return hex.substr(0, 12);
}

std::string dirname_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "/";
  return path.substr(0, slash);
}

std::string basename_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

bool is_url(const std::string& s) { return s.rfind("http://", 0) == 0 || s.rfind("https://", 0) == 0; }

bool dir_is_empty(const std::string& path) {
  UniqueFd fd = open_at(AT_FDCWD, path, O_RDONLY | O_DIRECTORY);
  return read_dir_names(fd.get(), path).empty();
}

// What a COPY/ADD step fetched from outside the build before its cache
// lookup: downloads (their content is part of the key) and the commits git
// refs resolve to (the repositories themselves are fetched only when the
// step runs).
struct FetchedSources {
  std::optional<TempDir> dir;                  // downloads and checkouts
  std::map<std::string, std::string> files;    // url -> file name in `dir`
  std::map<std::string, std::string> commits;  // git source -> commit id
  int checkouts = 0;                           // of git sources, each in its own directory
  // The directory, made under TEMP_PARENT on first use.
  const std::string& path(const std::string& temp_parent) {
    if (!dir) dir.emplace(temp_parent, staging_prefix("download"));
    return dir->path();
  }
};

// What a stage has built so far.
struct State {
  std::vector<std::string> layers;  // diff_ids, bottom first
  nlohmann::json history = nlohmann::json::array();
  std::string chain;                // the last step's cache key, with the layer it made
  size_t base_layers = 0;           // layers of the stage's FROM
  size_t base_history = 0;          // history entries of the stage's FROM
  std::string created;              // of the last step
  nlohmann::json base_doc = nlohmann::json::object();
  nlohmann::json cache_entries = nlohmann::json::array();  // of every step that led here, for --cache-to inline
};

// A union mount that is unmounted when it goes out of scope.
class ScopedMount {
 public:
  ScopedMount(Mounter& m, const MountRequest& req) : m_(m), target_(req.target) {
    m_.mount(req);
    mounted_ = true;
  }
  ScopedMount(const ScopedMount&) = delete;
  ScopedMount& operator=(const ScopedMount&) = delete;
  ~ScopedMount() { release(); }
  void release() noexcept {
    if (mounted_) m_.unmount(target_);
    mounted_ = false;
  }

 private:
  Mounter& m_;
  std::string target_;
  bool mounted_ = false;
};

class Executor {
 public:
  Executor(const Plan& plan, const std::string& path, const ExecuteOptions& opt)
      : plan_(plan), path_(path), opt_(opt), store_(*opt.store) {
    if (opt.mounter == nullptr || opt.store == nullptr) throw Error("the build has no store or no mounter");
  }

  BuildResult run() {
    if (!opt_.context_dir.empty()) {
      ctx_ = open_at(AT_FDCWD, opt_.context_dir, O_RDONLY | O_DIRECTORY);
    }
    for (const auto& stage : plan_.stages) build_stage(stage);
    const Stage& target = plan_.stages[static_cast<size_t>(plan_.target)];
    State& s = states_.at(target.index);
    if (opt_.squash) squash(s);
    nlohmann::json doc = s.base_doc.is_object() ? s.base_doc : nlohmann::json::object();
    doc.erase("container");
    doc.erase("container_config");
    doc.erase("docker_version");
    doc.erase("parent");
    doc.erase("id");
    doc["created"] = s.created;
    doc["architecture"] = doc.contains("architecture") ? doc["architecture"] : nlohmann::json(native_arch());
    doc["os"] = "linux";
    if (!target.author.empty()) {
      doc["author"] = target.author;
    } else {
      doc.erase("author");
    }
    doc["config"] = config_to_json(target.config);
    doc["rootfs"] = {{"type", "layers"}, {"diff_ids", s.layers}};
    doc["history"] = s.history;
    doc.erase(kInlineCacheKey);
    if (opt_.inline_cache) {
      // Only the entries whose layer the image has: the others could not be used from it.
      nlohmann::json entries = nlohmann::json::array();
      for (const auto& e : s.cache_entries) {
        const std::string& layer = e["layer"].get_ref<const std::string&>();
        if (layer.empty() || std::find(s.layers.begin(), s.layers.end(), layer) != s.layers.end()) {
          entries.push_back(e);
        }
      }
      doc[kInlineCacheKey] = std::move(entries);
    }
    begin_vertex("exporting to image");
    result_.image_id = store_.write_image(doc);
    vertex_log("writing image " + result_.image_id + " done");
    for (const auto& tag : opt_.tags) {
      store_.tag(result_.image_id, tag);
      vertex_log("naming to " + tag + " done");
    }
    end_vertex(done_text());
    if (opt_.out != nullptr && opt_.quiet) *opt_.out << result_.image_id << "\n";
    return result_;
  }

 private:
  std::ostream* progress() const { return opt_.quiet ? nullptr : opt_.out; }

  static bool makes_layer(const Step& step) {
    return step.kind == StepKind::run || step.kind == StepKind::copy || step.kind == StepKind::add ||
           step.kind == StepKind::workdir;
  }

  // --squash: the stage's own layers become one; the history keeps its
  // entries, and only the last that made a layer still does.
  void squash(State& s) {
    if (s.layers.size() <= s.base_layers + 1) return;
    std::vector<std::string> own(s.layers.begin() + static_cast<std::ptrdiff_t>(s.base_layers), s.layers.end());
    begin_vertex("squashing " + std::to_string(own.size()) + " layers");
    std::string merged = store_.squash_layers(own);
    s.layers.resize(s.base_layers);
    s.layers.push_back(merged);
    std::optional<size_t> last;
    for (size_t i = s.base_history; i < s.history.size(); ++i) {
      if (!s.history[i].value("empty_layer", false)) last = i;
    }
    for (size_t i = s.base_history; i < s.history.size(); ++i) {
      if (last && i != *last) s.history[i]["empty_layer"] = true;
    }
    vertex_log("layer " + short_id(merged));
    end_vertex(done_text());
  }

  void say(const std::string& line) const {
    if (auto* o = progress()) *o << line << "\n" << std::flush;
  }

  // BuildKit's plain progress: each piece of work is a numbered vertex,
  // "#N NAME", then its lines "#N TEXT" (a RUN's output with the seconds
  // since the vertex began, see RunRequest::log_prefix), then "#N DONE 1.2s",
  // "#N CACHED" or "#N ERROR: MESSAGE", and a blank line.
  void begin_vertex(const std::string& name) {
    vertex_ = ++vertices_;
    vertex_started_ = std::chrono::steady_clock::now();
    say(vertex_prefix() + name);
  }
  std::string vertex_prefix() const { return "#" + std::to_string(vertex_) + " "; }
  void vertex_log(const std::string& text) const { say(vertex_ != 0 ? vertex_prefix() + text : text); }
  void end_vertex(const std::string& outcome) {
    if (vertex_ == 0) return;
    say(vertex_prefix() + outcome);
    say("");
    vertex_ = 0;
  }
  std::string done_text() const {
    double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - vertex_started_).count();
    char buf[48];
    std::snprintf(buf, sizeof buf, "DONE %.1fs", secs);
    return buf;
  }

  // "[NAME I/N] ": BuildKit's step label (the stage's name when it has one;
  // I counts the FROM and each step that makes a layer, padded to N's width).
  std::string step_label(int index) const {
    std::string total = std::to_string(stage_total_);
    std::string number = std::to_string(index);
    if (number.size() < total.size()) number.insert(0, total.size() - number.size(), ' ');
    return "[" + (stage_name_.empty() ? std::string() : stage_name_ + " ") + number + "/" + total + "] ";
  }

  [[noreturn]] void fail_step(const Step& step, const std::string& message) {
    end_vertex("ERROR: " + message);
    throw DockerfileError(path_, step.pos, message, step.display);
  }

  void build_stage(const Stage& stage) {
    State s;
    const Step& from = stage.steps.front();
    stage_name_ = stage.name;
    stage_total_ = 1 + static_cast<int>(std::count_if(stage.steps.begin() + 1, stage.steps.end(),
                                                        [](const Step& st) { return makes_layer(st); }));
    stage_step_ = 1;
    if (stage.base_stage) {
      s = states_.at(*stage.base_stage);
    } else if (stage.base_image) {
      begin_vertex(step_label(1) + from.display);
      nlohmann::json doc = store_.image_config(stage.base_image->id);
      s.base_doc = doc;
      if (doc.contains("rootfs") && doc["rootfs"].contains("diff_ids")) {
        for (const auto& d : doc["rootfs"]["diff_ids"]) s.layers.push_back(d.get<std::string>());
      }
      if (doc.contains("history") && doc["history"].is_array()) s.history = doc["history"];
      s.created = doc.contains("created") && doc["created"].is_string() ? doc["created"].get<std::string>() : "";
      s.chain = stage.base_image->id;
      vertex_log("image " + short_id(stage.base_image->id));
      end_vertex(done_text());
    } else {
      s.chain = "scratch";
    }
    s.base_layers = s.layers.size();
    s.base_history = s.history.size();
    s.base_doc.erase("config");
    for (size_t i = 1; i < stage.steps.size(); ++i) run_step(stage, stage.steps[i], s);
    states_[stage.index] = std::move(s);
  }

  std::vector<std::string> lower_dirs(const std::vector<std::string>& layers, const std::string& empty_dir) {
    std::vector<std::string> out;
    for (auto it = layers.rbegin(); it != layers.rend(); ++it) {
      auto p = store_.layer_path(*it);
      if (!p) throw Error("layer " + *it + " is missing from the store");
      out.push_back(*p);
    }
    if (out.empty()) out.push_back(empty_dir);
    if (out.size() > 255) throw Error("the image has more than 255 layers");
    return out;
  }

  void check_cancelled(const Step& step) {
    if (opt_.cancelled && opt_.cancelled()) fail_step(step, "the build was interrupted");
  }

  void run_step(const Stage& stage, const Step& step, State& s) {
    (void)stage;
    check_cancelled(step);
    const bool makes_layer = Executor::makes_layer(step);
    if (makes_layer) begin_vertex(step_label(++stage_step_) + step.display);
    // Sources of COPY/ADD that are downloaded are fetched before the cache
    // lookup: their content is part of the key.
    FetchedSources fetched;
    std::string digest;
    if (step.kind == StepKind::copy || step.kind == StepKind::add || step.kind == StepKind::run) {
      try {
        digest = step.kind == StepKind::run ? bind_sources_digest(step) : sources_digest(step, fetched);
      } catch (const DockerfileError&) {
        throw;
      } catch (const Error& e) {
        fail_step(step, e.what());
      }
    }
    std::string key = cache_key(s.chain, step.normalized, step.used_args, digest);
    std::optional<nlohmann::json> cached;
    if (!opt_.no_cache && opt_.no_cache_stages.count(step.stage) == 0) {
      if (auto v = store_.cache_get(key)) {
        try {
          nlohmann::json j = nlohmann::json::parse(*v);
          std::string layer = j.value("layer", "");
          if (layer.empty() || store_.layer_path(layer)) cached = j;
        } catch (const nlohmann::json::exception&) {
        }
      }
      // --cache-from: an image's entry, whose layer the store has with the image.
      if (auto it = opt_.imported_cache.find(key); !cached && it != opt_.imported_cache.end()) {
        std::string layer = it->second.value("layer", "");
        if (layer.empty() || store_.layer_path(layer)) {
          cached = it->second;
          store_.cache_put(key, it->second.dump());
        }
      }
    }
    std::string layer;
    std::string created;
    if (cached) {
      layer = cached->value("layer", "");
      created = cached->value("created", "");
      if (makes_layer) {
        ++result_.steps_cached;
        end_vertex("CACHED");
      }
    } else {
      created = now_rfc3339();
      if (makes_layer) {
        try {
          layer = execute(step, s, fetched);
        } catch (const DockerfileError&) {
          throw;
        } catch (const Error& e) {
          fail_step(step, e.what());
        }
        ++result_.steps_run;
      }
      nlohmann::json entry = {{"created", created}};
      if (makes_layer) entry["layer"] = layer;
      store_.cache_put(key, entry.dump());
    }
    if (!layer.empty()) s.layers.push_back(layer);
    s.cache_entries.push_back({{"key", key}, {"layer", layer}, {"created", created}});
    // The chain names what the stage holds, not only how it got there: a
    // step run again without the cache (--no-cache-filter) may give another
    // layer, and every later step, a COPY --from or a FROM of this stage
    // must then miss the cache too. A cache hit gives the same layer, so the
    // same chain.
    s.chain = layer.empty() ? key : cache_key(key, "layer", {}, layer);
    s.created = created;
    if (step.has_history) {
      nlohmann::json h = {{"created", created}, {"created_by", step.history.created_by}};
      if (!step.history.comment.empty()) h["comment"] = step.history.comment;
      if (layer.empty()) h["empty_layer"] = true;
      s.history.push_back(h);
    }
    if (makes_layer && !cached) {
      vertex_log(layer.empty() ? std::string("no changes") : "layer " + short_id(layer));
      end_vertex(done_text());
    }
  }

  std::string sources_digest(const Step& step, FetchedSources& fetched) {
    std::string digest;
    if (step.from_stage) return "stage:" + states_.at(*step.from_stage).chain;
    if (!step.from_image.empty()) return "image:" + step.from_image;
    std::vector<std::string> local;
    for (const auto& src : step.sources) {
      if (auto git = step.kind == StepKind::add ? parse_git_source(src) : std::nullopt) {
        vertex_log("resolving " + redact_git_remote(git->remote) + (git->ref.empty() ? "" : " " + git->ref));
        std::string commit = resolve_git_commit(*git, fetched.path(store_.temp_parent()));
        if (!step.checksum.empty() && step.checksum != commit) {
          throw Error("ADD --checksum: " + quote(redact_git_remote(git->remote)) + (git->ref.empty() ? "" : " " + git->ref) +
                      " is at commit " + commit + ", not " + step.checksum);
        }
        fetched.commits[src] = commit;
        digest.append("git:").append(git->remote).append("@").append(commit).append(":").append(git->subdir).append(";");
        continue;
      }
      if (is_url(src)) {
        std::string name = "f" + std::to_string(fetched.files.size());
        UniqueFd dir = open_at(AT_FDCWD, fetched.path(store_.temp_parent()), O_RDONLY | O_DIRECTORY);
        vertex_log("downloading " + src);
        std::string content = files::download(src, dir.get(), name, step.checksum);
        // Appended piece by piece: one concatenated temporary trips GCC 12's -Wrestrict at -O3.
        digest.append("url:").append(src).append("=").append(content).append(";");
        fetched.files[src] = name;
        continue;
      }
      if (!ctx_) throw Error("there is no build context to copy " + quote(src) + " from");
      auto paths = expand_sources(ctx_.get(), src, opt_.ignore);
      for (const auto& p : paths) {
        if (opt_.ignore.excluded(p)) continue;
        local.push_back(p);
      }
    }
    if (!local.empty()) digest += "context:" + digest_sources(ctx_.get(), local, opt_.ignore);
    return digest;
  }

  // The part of a RUN's key that changes with what its bind mounts show:
  // the stage's key, the image, or the digest of the context's files. ("" without bind mounts.)
  std::string bind_sources_digest(const Step& step) {
    std::string digest;
    for (const auto& m : step.mounts) {
      if (m.type != MountType::bind) continue;
      if (m.from_stage) {
        digest.append("stage:").append(states_.at(*m.from_stage).chain).append(";");
      } else if (!m.from_image.empty()) {
        digest.append("image:").append(m.from_image).append(";");
      } else {
        if (!ctx_) throw Error("there is no build context to bind " + quote(m.target) + " from");
        std::string rel = m.source.empty() ? std::string(".") : m.source.substr(1);
        digest.append("context:").append(digest_sources(ctx_.get(), {rel}, opt_.ignore)).append(";");
      }
    }
    return digest;
  }

  // Runs a step that makes a layer; returns its diff_id ("" when the step
  // changed nothing).
  std::string execute(const Step& step, const State& s, FetchedSources& fetched) {
    TempDir work(store_.temp_parent(), staging_prefix("step"));
    for (const char* d : {"upper", "work", "mnt", "empty"}) {
      if (::mkdir((work.path() + "/" + d).c_str(), 0755) != 0) throw_errno("create " + quote(work.path() + "/" + d));
    }
    MountRequest req;
    req.lowers = lower_dirs(s.layers, work.path() + "/empty");
    req.upper = work.path() + "/upper";
    req.work = work.path() + "/work";
    req.target = work.path() + "/mnt";
    if (step.kind == StepKind::run) {
      prepare_run(step, req);
    }
    if (step.kind == StepKind::run && opt_.run_mounts_root) {
      run_command(step, req, -1, work.path());
    } else {
      ScopedMount mount(*opt_.mounter, req);
      UniqueFd root = open_at(AT_FDCWD, req.target, O_PATH | O_DIRECTORY);
      switch (step.kind) {
        case StepKind::run: run_command(step, req, root.get(), work.path()); break;
        case StepKind::workdir: {
          // BuildKit creates the directory as the current USER.
          std::optional<Owner> owner;
          if (!step.config.user.empty()) {
            owner = resolve_chown(step.config.user, files::read_small_file(root.get(), "/etc/passwd"),
                                  files::read_small_file(root.get(), "/etc/group"), true);
          }
          files::make_dirs(root.get(), step.path, on_host(owner));
          break;
        }
        case StepKind::copy:
        case StepKind::add: do_copy(step, root.get(), work.path(), fetched); break;
        default: break;
      }
      root.reset();
      mount.release();
    }
    check_cancelled(step);
    if (step.kind == StepKind::run && !step.files.empty()) {
      UniqueFd upper = open_at(AT_FDCWD, req.upper, O_RDONLY | O_DIRECTORY);
      remove_tree_at(upper.get(), kScriptDir);
    }
    if (dir_is_empty(req.upper)) return {};
    return store_.commit_layer(req.upper);
  }

  static constexpr const char* kScriptDir = ".strata-heredoc";

  // A here-document script (#!) is put in the container for the run only:
  // written into the fresh upper before the mount, removed before the commit.
  void prepare_run(const Step& step, const MountRequest& mount) {
    if (step.files.empty()) return;
    UniqueFd upper = open_at(AT_FDCWD, mount.upper, O_RDONLY | O_DIRECTORY);
    if (::mkdirat(upper.get(), kScriptDir, 0755) != 0) throw_errno("create " + quote(kScriptDir));
    UniqueFd dir = open_at(upper.get(), kScriptDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    for (const auto& f : step.files) files::write_file(dir.get(), basename_of(f.path), f.content, 0755, on_host(Owner{}));
  }

  // A cache mount's directory, held (flock on its lock file) for one RUN.
  struct HeldCache {
    std::string dir;
    UniqueFd lock;
  };

  // ROOT/<hash of the id>/<N> (never a path made of the id itself) with the
  // lock N.lock beside it: shared users share instance 0 (LOCK_SH), locked
  // ones wait for it alone (LOCK_EX), private ones take the first instance
  // nobody holds.
  HeldCache hold_cache(const Step& step, const RunMount& m) {
    std::string base = store_.cache_mounts_dir();
    if (base.empty()) throw Error("this store keeps no cache mounts");
    std::string dir = base + "/" + cache_key("cache-mount", m.id, {}, "");
    for (const std::string& d : {base, dir}) {
      if (::mkdir(d.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + quote(d));
    }
    constexpr int kMaxPrivate = 64;
    for (int i = 0; i < kMaxPrivate; ++i) {
      std::string instance = dir + "/" + std::to_string(i);
      UniqueFd lock = open_at(AT_FDCWD, instance + ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
      const bool is_private = m.sharing == CacheSharing::private_;
      int op = m.sharing == CacheSharing::shared ? LOCK_SH : LOCK_EX;
      if (is_private) op |= LOCK_NB;
      bool taken = false;
      while (!taken) {
        if (::flock(lock.get(), op) == 0) {
          taken = true;
        } else if (errno == EWOULDBLOCK && is_private) {
          break;
        } else if (errno == EINTR) {
          check_cancelled(step);
        } else {
          throw_errno("lock the cache mount " + quote(m.id));
        }
      }
      if (!taken) continue;
      if (::mkdir(instance.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create " + quote(instance));
      return {instance, std::move(lock)};
    }
    throw Error("the cache mount " + quote(m.id) + " has " + std::to_string(kMaxPrivate) + " private copies in use");
  }

  // What the build was given for M's id (a secret's value, an agent's
  // socket), or nullptr when nothing was and M is not required (skipped, as
  // BuildKit skips it). WHAT names the kind, FLAG the option that gives it.
  template <class Value>
  static const Value* given_for(const std::map<std::string, Value>& given, const RunMount& m, const std::string& what,
                                const std::string& flag) {
    auto it = given.find(m.id);
    if (it != given.end()) return &it->second;
    if (m.required) throw Error(what + " " + quote(m.id) + " is required but not given (strata build " + flag + ")");
    return nullptr;
  }

  // The mount's mode (DEFAULT_MODE unless given) and owner (unchanged
  // unless given), set inside the container's user namespace.
  static void set_owner_and_mode(RunMountRequest& req, const RunMount& m, std::uint32_t default_mode) {
    req.mode = m.mode.value_or(default_mode);
    if (m.uid || m.gid) {
      req.uid = m.uid.value_or(0);
      req.gid = m.gid.value_or(0);
    }
  }

  // What the mounts of STEP need on the host for its run (unmounted, unlocked
  // and removed when it ends).
  struct PreparedMounts {
    std::list<ScopedMount> unions;  // stages and images to bind, rw binds
    std::vector<HeldCache> caches;
    std::vector<std::string> stubs;  // mount points the run created, deepest last
    AgentForwarder agents;           // last: its relay ends before the caches unlock
  };

  void prepare_mounts(const Step& step, int root, const std::string& work_dir, RunRequest& r, PreparedMounts& p) {
    // As BuildKit: SSH_AUTH_SOCK names the first ssh mount unless the step sets it.
    auto first_ssh = std::find_if(step.mounts.begin(), step.mounts.end(),
                                  [](const RunMount& m) { return m.type == MountType::ssh; });
    const bool env_has_agent = std::any_of(r.env.begin(), r.env.end(),
                                           [](const std::string& e) { return e.rfind("SSH_AUTH_SOCK=", 0) == 0; });
    if (first_ssh != step.mounts.end() && !env_has_agent) r.env.push_back("SSH_AUTH_SOCK=" + first_ssh->target);
    int n = 0;
    for (const auto& m : step.mounts) {
      std::string slot = work_dir + "/m" + std::to_string(n++);
      RunMountRequest req;
      req.target = m.target;
      req.read_only = m.read_only;
      switch (m.type) {
        case MountType::tmpfs:
          req.tmpfs = true;
          req.size = m.size;
          break;
        case MountType::cache: {
          p.caches.push_back(hold_cache(step, m));
          req.source = p.caches.back().dir;
          set_owner_and_mode(req, m, 0755);
          break;
        }
        case MountType::bind: req.source = bind_source(m, slot, p); break;
        case MountType::secret: {
          const std::string* value = given_for(opt_.secrets, m, "secret", "--secret id=" + m.id + ",src=PATH");
          if (value == nullptr) continue;  // as BuildKit: the mount is skipped
          if (!m.env.empty()) r.env.push_back(m.env + "=" + *value);
          if (m.target.empty()) continue;
          if (::mkdir(slot.c_str(), 0700) != 0) throw_errno("create " + quote(slot));
          UniqueFd d = open_at(AT_FDCWD, slot, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
          files::write_file(d.get(), "secret", *value, 0400, on_host(Owner{}));
          req.source = slot + "/secret";
          req.read_only = true;
          set_owner_and_mode(req, m, 0400);
          break;
        }
        case MountType::ssh: {
          const int* agent = given_for(opt_.ssh_agents, m, "ssh agent", "--ssh " + m.id + "[=SOCKET]");
          if (agent == nullptr) continue;
          if (::mkdir(slot.c_str(), 0700) != 0) throw_errno("create " + quote(slot));
          req.source = slot + "/agent.sock";
          p.agents.add(req.source, *agent);
          req.read_only = false;
          set_owner_and_mode(req, m, 0600);
          break;
        }
      }
      // The mount points the sandbox will create (the target and its
      // missing parents, where symlinks lead inside the root): removed again
      // after the run when still empty, so that the layer does not keep them.
      std::string real = resolve_in_root(root, m.target);
      std::vector<std::string> missing;
      for (std::string at = real; at != "/" && !at.empty(); at = dirname_of(at)) {
        UniqueFd probe = files::open_in_root(root, at, O_PATH);
        if (probe) break;
        missing.push_back(at);
      }
      p.stubs.insert(p.stubs.end(), missing.rbegin(), missing.rend());
      r.mounts.push_back(std::move(req));
    }
  }

  // The host path a bind mount shows: SOURCE resolved inside the context, or
  // inside a read-only union of the stage or image (symlinks and `..` stay
  // inside). With rw, a union over it whose writes are discarded.
  std::string bind_source(const RunMount& m, const std::string& slot, PreparedMounts& p) {
    UniqueFd from_root;
    std::string where;
    if (m.from_stage || !m.from_image.empty()) {
      std::vector<std::string> layers;
      if (m.from_stage) {
        layers = states_.at(*m.from_stage).layers;
        where = "stage " + std::to_string(*m.from_stage);
      } else {
        nlohmann::json doc = store_.image_config(m.from_image);
        if (doc.contains("rootfs") && doc["rootfs"].contains("diff_ids")) {
          for (const auto& d : doc["rootfs"]["diff_ids"]) layers.push_back(d.get<std::string>());
        }
        where = "image " + short_id(m.from_image);
      }
      for (const char* d : {"", "-empty"}) {
        std::string path = slot + d;
        if (::mkdir(path.c_str(), 0755) != 0) throw_errno("create " + quote(path));
      }
      MountRequest req;
      req.lowers = lower_dirs(layers, slot + "-empty");
      req.target = slot;
      p.unions.emplace_back(*opt_.mounter, req);
      from_root = open_at(AT_FDCWD, slot, O_PATH | O_DIRECTORY);
    } else {
      if (!ctx_) throw Error("there is no build context to bind " + quote(m.target) + " from");
      from_root = open_at(ctx_.get(), ".", O_PATH | O_DIRECTORY);
      where = "the build context";
    }
    std::string rel = m.source.empty() ? std::string(".") : m.source.substr(1);
    UniqueFd src = files::open_in_root(from_root.get(), rel, O_PATH);
    if (!src) throw_errno("bind source " + quote(m.source.empty() ? "/" : m.source) + " in " + where);
    std::string host;
    {
      char buf[4096];
      std::string link = "/proc/self/fd/" + std::to_string(src.get());
      ssize_t len = ::readlink(link.c_str(), buf, sizeof buf - 1);
      if (len < 0) throw_errno("resolve the bind source " + quote(m.source));
      host.assign(buf, static_cast<size_t>(len));
    }
    if (m.read_only) return host;
    // rw: the command writes into a union over the source; the writes go
    // away with it.
    struct stat st {};
    if (::fstat(src.get(), &st) != 0) throw_errno("stat the bind source " + quote(m.source));
    std::string rw = slot + "-rw";
    for (const char* d : {"", "/upper", "/work", "/mnt"}) {
      std::string path = rw + d;
      if (::mkdir(path.c_str(), 0755) != 0) throw_errno("create " + quote(path));
    }
    if (!S_ISDIR(st.st_mode)) {
      UniqueFd in(files::open_in_root(from_root.get(), rel, O_RDONLY));
      if (!in) throw_errno("open the bind source " + quote(m.source));
      UniqueFd upper = open_at(AT_FDCWD, rw + "/upper", O_RDONLY | O_DIRECTORY);
      std::string content;
      char buf[65536];
      ssize_t got;
      while ((got = ::read(in.get(), buf, sizeof buf)) > 0) content.append(buf, static_cast<size_t>(got));
      if (got < 0) throw_errno("read the bind source " + quote(m.source));
      files::write_file(upper.get(), "file", content, st.st_mode & 07777, on_host(Owner{}));
      return rw + "/upper/file";
    }
    MountRequest req;
    req.lowers = {host};
    req.upper = rw + "/upper";
    req.work = rw + "/work";
    req.target = rw + "/mnt";
    p.unions.emplace_back(*opt_.mounter, req);
    return req.target;
  }

  // Removes the mount points in STUBS that are still empty (deepest first),
  // each through its parent opened inside ROOT.
  static void remove_stubs(int root, const std::vector<std::string>& stubs) noexcept {
    for (auto it = stubs.rbegin(); it != stubs.rend(); ++it) {
      UniqueFd parent = files::open_in_root(root, dirname_of(*it), O_PATH | O_DIRECTORY);
      if (!parent) continue;
      std::string name = basename_of(*it);
      struct stat st {};
      if (::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (S_ISDIR(st.st_mode)) {
        ::unlinkat(parent.get(), name.c_str(), AT_REMOVEDIR);  // fails when not empty: kept
      } else if (S_ISREG(st.st_mode) && st.st_size == 0) {
        ::unlinkat(parent.get(), name.c_str(), 0);
      }
    }
  }

  // Runs STEP's command on MOUNT, whose root is ROOT, or -1 when the command
  // mounts it itself (ExecuteOptions::run_mounts_root): the executor then
  // mounts it here only around the command and only for RUN --mount, to see
  // which mount points the sandbox will create and to remove them after.
  void run_command(const Step& step, const MountRequest& mount, int root, const std::string& work_dir) {
    RunRequest r;
    r.rootfs = mount.target;
    r.mount = mount;
    if (root < 0) r.initdir = work_dir + "/init";
    r.argv = step.argv;
    r.env = step.env;
    r.user = step.user;
    r.workdir = step.workdir;
    r.network = step.network;
    r.insecure = step.insecure;
    for (const auto& f : step.files) {
      for (auto& a : r.argv) {
        if (a == f.path) a = std::string("/") + kScriptDir + "/" + basename_of(f.path);
      }
    }
    if (!opt_.run) throw Error("RUN is not available in this build");
    PreparedMounts prepared;
    auto with_root = [&](const std::function<void(int)>& work) {
      if (root >= 0) return work(root);
      ScopedMount view(*opt_.mounter, mount);
      UniqueFd view_root = open_at(AT_FDCWD, mount.target, O_PATH | O_DIRECTORY);
      work(view_root.get());
      view_root.reset();
      view.release();
    };
    if (!step.mounts.empty()) with_root([&](int at) { prepare_mounts(step, at, work_dir, r, prepared); });
    prepared.agents.start();
    if (progress() != nullptr && vertex_ != 0) {
      r.log_prefix = vertex_prefix();
      r.log_started = vertex_started_;
    }
    int rc = opt_.run(r);
    if (!prepared.stubs.empty()) with_root([&](int at) { remove_stubs(at, prepared.stubs); });
    prepared.unions.clear();
    if (rc != 0) {
      std::string cmd;
      for (const auto& a : step.argv) cmd += (cmd.empty() ? "" : " ") + a;
      fail_step(step, "the command '" + cmd + "' returned a non-zero code: " + std::to_string(rc));
    }
  }

  void do_copy(const Step& step, int root, const std::string& work_dir, FetchedSources& fetched) {
    const bool is_add = step.kind == StepKind::add;
    std::optional<Owner> owner;
    if (!step.chown.empty()) {
      owner = resolve_chown(step.chown, files::read_small_file(root, "/etc/passwd"),
                            files::read_small_file(root, "/etc/group"));
    }
    if (owner && (owner->uid != 0 || owner->gid != 0) && opt_.host_owner) {
      // The step's union is mounted on the host, where the user may give a
      // file only to itself (the container's root).
      throw Error("--chown=" + step.chown + ": an unprivileged build can give copied files only to the container's root");
    }
    std::optional<ModeChange> mode;
    if (!step.chmod.empty()) mode = ModeChange::parse(step.chmod);

    // Where the sources come from: the context, or a read-only mount of
    // another stage or image.
    std::optional<ScopedMount> from_mount;
    UniqueFd from_root;
    if (step.from_stage || !step.from_image.empty()) {
      std::vector<std::string> layers;
      if (step.from_stage) {
        layers = states_.at(*step.from_stage).layers;
      } else {
        nlohmann::json doc = store_.image_config(step.from_image);
        if (doc.contains("rootfs") && doc["rootfs"].contains("diff_ids")) {
          for (const auto& d : doc["rootfs"]["diff_ids"]) layers.push_back(d.get<std::string>());
        }
      }
      std::string target = work_dir + "/from";
      if (::mkdir(target.c_str(), 0755) != 0) throw_errno("create " + quote(target));
      MountRequest req;
      req.lowers = lower_dirs(layers, work_dir + "/empty");
      req.target = target;
      from_mount.emplace(*opt_.mounter, req);
      from_root = open_at(AT_FDCWD, target, O_PATH | O_DIRECTORY);
    }
    const bool from_context = !from_root;
    int src_root = from_context ? ctx_.get() : from_root.get();
    static const IgnoreMatcher no_ignore;
    const IgnoreMatcher& ignore = from_context ? opt_.ignore : no_ignore;
    std::optional<Owner> created_owner = on_host(owner);
    files::CopySpec spec;
    // A stage's or an image's files keep their owners, as the host already numbers them.
    spec.owner = on_host(owner ? owner : (from_context ? std::optional<Owner>(Owner{}) : std::nullopt));
    spec.mode = mode;
    spec.ignore = from_context && !opt_.ignore.empty() ? &opt_.ignore : nullptr;
    std::optional<IgnoreMatcher> excludes;
    if (!step.excludes.empty()) {
      excludes = IgnoreMatcher::from_patterns(step.excludes, "--exclude");
      spec.exclude = &*excludes;
    }

    struct Item {
      std::string rel;   // in the source root
      std::string url;
      std::string kept;  // --parents: the path it keeps under the destination ("." for the pivot itself)
      std::string git;   // a git repository
    };
    std::vector<Item> items;
    for (const auto& src : step.sources) {
      if (fetched.commits.count(src) != 0) {
        items.push_back({{}, {}, {}, src});
        continue;
      }
      if (is_url(src)) {
        items.push_back({{}, src, {}, {}});
        continue;
      }
      std::string s = from_context ? src : clean_path("/" + src);
      // --parents keeps each path from the root, or from the `/./` in the
      // source (`./app/./src/*.go` keeps `src/...`); a pattern before the
      // `/./` makes each directory it matches a pivot (`*/./lib`).
      std::vector<std::string> pivots;
      if (auto mark = src.find("/./"); step.parents && mark != std::string::npos) {
        std::string before = clean_path("/" + src.substr(0, mark)).substr(1);
        if (!before.empty()) pivots = expand_sources(src_root, from_context ? before : "/" + before, ignore);
      }
      auto paths = expand_sources(src_root, s, ignore);
      std::vector<std::string> kept;
      for (const auto& p : paths) {
        UniqueFd probe = files::open_in_root(src_root, p, O_PATH);
        if (!probe || ignore.excluded(p) || (excludes && excludes->excluded(p))) continue;
        kept.push_back(p);
      }
      if (kept.empty()) {
        throw Error(std::string(from_context ? "file not found in build context or excluded by .dockerignore: "
                                             : "file not found in the source stage: ") +
                    quote(src));
      }
      for (auto& p : kept) {
        std::string keep;
        if (step.parents) {
          keep = p;
          for (const auto& pivot : pivots) {
            if (p == pivot) keep = ".";
            else if (p.rfind(pivot + "/", 0) == 0) keep = p.substr(pivot.size() + 1);
            if (keep != p) break;
          }
        }
        items.push_back({p, {}, keep, {}});
      }
    }
    // Symlinks in the destination lead where they lead in the container,
    // dangling ones included (their target is created), never outside it.
    std::string dest = resolve_in_root(root, step.dest);
    bool into_dir = step.dest_is_dir || step.parents || items.size() + step.inline_sources.size() > 1;
    if (!into_dir) {
      UniqueFd d = files::open_in_root(root, dest, O_PATH | O_DIRECTORY);
      into_dir = static_cast<bool>(d);
    }
    auto target_of = [&](const std::string& name, std::string& leaf) {
      if (into_dir) {
        leaf = name;
        return files::make_dirs(root, dest, created_owner);
      }
      leaf = basename_of(dest);
      return files::make_dirs(root, dirname_of(dest), created_owner);
    };
    if (!into_dir && dest == "/") throw Error("cannot copy a file onto the root directory");

    // An archive is unpacked into the destination directory: a local one
    // unless --unpack=false, a downloaded one only with --unpack=true.
    auto unpack = [&](int data, const std::string& what) {
      if (!is_tar_archive(data)) return false;
      UniqueFd target = files::make_dirs(root, dest, created_owner);
      UniqueFd real = files::open_in_root(root, dest, O_RDONLY | O_DIRECTORY);
      if (!real) throw_errno("open " + quote(dest));
      extract_tar_beneath(data, real.get(), "ADD " + quote(what), owner);
      return true;
    };
    // A directory's contents are copied, not the directory itself.
    auto copy_contents = [&](int in, const std::string& rel, const std::string& to, files::CopySpec sub) {
      UniqueFd target = files::make_dirs(root, to, created_owner);
      std::vector<std::string> names = read_dir_names(in, rel);
      for (const auto& n : names) {
        std::string child = rel == "." ? n : rel + "/" + n;
        sub.ignore_prefix = child;
        sub.exclude_prefix = n;
        if (sub.skipped()) continue;
        UniqueFd c(::openat(in, n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
        if (!c) throw_errno("open " + quote(child));
        struct stat cst {};
        if (::fstat(c.get(), &cst) != 0) throw_errno("stat " + quote(child));
        files::copy_tree(c.get(), cst, target.get(), n, sub);
      }
    };
    for (const auto& item : items) {
      if (!item.git.empty()) {
        copy_git_source(item.git, step, fetched, [&](int src, const struct stat& st, const std::string& rel) {
          files::CopySpec s2 = spec;
          s2.ignore = nullptr;
          if (!s2.owner) s2.owner = on_host(Owner{});
          if (S_ISDIR(st.st_mode)) {
            UniqueFd in = files::open_in_root(src, ".", O_RDONLY | O_DIRECTORY);
            if (!in) throw_errno("open " + quote(rel));
            copy_contents(in.get(), ".", dest, s2);
            return;
          }
          std::string leaf;
          UniqueFd parent = target_of(basename_of(rel), leaf);
          copy_leaf(src, st, parent.get(), leaf, s2);
        });
        continue;
      }
      if (!item.url.empty()) {
        const std::string download = fetched.dir->path() + "/" + fetched.files.at(item.url);
        if (is_add && step.unpack.value_or(false)) {
          UniqueFd data = open_at(AT_FDCWD, download, O_RDONLY | O_NOFOLLOW);
          if (unpack(data.get(), item.url)) continue;
        }
        std::string name = files::url_file_name(item.url);
        if (into_dir && name.empty()) throw Error("cannot tell a file name from the URL " + quote(item.url) + "; give a file destination");
        std::string leaf;
        UniqueFd parent = target_of(name, leaf);
        UniqueFd dl = open_at(AT_FDCWD, download, O_PATH | O_NOFOLLOW);
        struct stat st {};
        if (::fstat(dl.get(), &st) != 0) throw_errno("stat the download of " + quote(item.url));
        files::CopySpec s2 = spec;
        s2.ignore = nullptr;
        if (!s2.owner) s2.owner = on_host(Owner{});
        copy_leaf(dl.get(), st, parent.get(), leaf, s2);
        continue;
      }
      UniqueFd src = files::open_in_root(src_root, item.rel, O_PATH);
      if (!src) throw SysError(errno, "open " + quote(item.rel));
      struct stat st {};
      if (::fstat(src.get(), &st) != 0) throw_errno("stat " + quote(item.rel));
      // --parents: the source's path, less the pivot, under the destination.
      const std::string item_dest = step.parents ? clean_path(dest + "/" + item.kept) : dest;
      if (S_ISDIR(st.st_mode)) {
        UniqueFd in = files::open_in_root(src_root, item.rel, O_RDONLY | O_DIRECTORY);
        if (!in) throw_errno("open " + quote(item.rel));
        copy_contents(in.get(), item.rel, item_dest, spec);
        continue;
      }
      if (is_add && step.unpack.value_or(true) && S_ISREG(st.st_mode)) {
        UniqueFd data = files::open_in_root(src_root, item.rel, O_RDONLY);
        if (data && unpack(data.get(), item.rel)) continue;
      }
      std::string leaf;
      UniqueFd parent;
      if (step.parents && item.kept == ".") {
        // A file that is its own pivot (`f.txt/./`) keeps only its name.
        parent = files::make_dirs(root, dest, created_owner);
        leaf = basename_of(item.rel);
      } else if (step.parents) {
        leaf = basename_of(item_dest);
        parent = files::make_dirs(root, dirname_of(item_dest), created_owner);
      } else {
        parent = target_of(basename_of(item.rel), leaf);
      }
      files::CopySpec s2 = spec;
      s2.ignore_prefix = item.rel;
      s2.exclude_prefix = basename_of(item.rel);
      copy_leaf(src.get(), st, parent.get(), leaf, s2);
    }
    for (const auto& in : step.inline_sources) {
      if (in.name.find('/') != std::string::npos || in.name == "." || in.name == ".." || in.name.empty()) {
        throw Error("here-document " + quote(in.name) + " cannot be a file name");  // the planner refuses it first
      }
      std::string leaf;
      UniqueFd parent = target_of(in.name, leaf);
      UniqueFd real = reopen_dir(parent.get());
      files::write_file(real.get(), leaf, in.content, mode ? mode->apply(0644, false) : 0644, on_host(owner.value_or(Owner{})));
    }
  }

  // Fetches the git source SRC at the commit its ref resolved to and hands
  // COPY the tree (or the directory or file the URL names in it): an O_PATH
  // fd, its stat and its name in the repository.
  void copy_git_source(const std::string& src, const Step& step, FetchedSources& fetched,
                       const std::function<void(int, const struct stat&, const std::string&)>& copy) {
    GitSource git = *parse_git_source(src);
    const std::string& commit = fetched.commits.at(src);
    std::string checkout = fetched.path(store_.temp_parent()) + "/git" + std::to_string(++fetched.checkouts);
    vertex_log("fetching " + redact_git_remote(git.remote) + " at " + commit);
    fetch_git_tree(git, commit, checkout, step.keep_git_dir);
    UniqueFd top = open_at(AT_FDCWD, checkout, O_PATH | O_DIRECTORY);
    // The directory is looked up inside the checkout: a symlink in the
    // repository cannot lead it out.
    UniqueFd at = files::open_in_root(top.get(), git.subdir.empty() ? std::string(".") : git.subdir, O_PATH);
    if (!at) {
      throw Error("git repository " + quote(redact_git_remote(git.remote)) + " at commit " + commit + " has no " +
                  quote(git.subdir) + " inside it (a symlink out of the repository leads nowhere)");
    }
    struct stat st {};
    if (::fstat(at.get(), &st) != 0) throw_errno("stat " + quote(git.subdir));
    copy(at.get(), st, git.subdir.empty() ? std::string(".") : git.subdir);
    remove_tree_at(AT_FDCWD, checkout);
  }

  Owner on_host(const Owner& owner) const { return opt_.host_owner ? opt_.host_owner(owner) : owner; }
  std::optional<Owner> on_host(const std::optional<Owner>& owner) const {
    return owner ? std::optional<Owner>(on_host(*owner)) : std::nullopt;
  }

  static UniqueFd reopen_dir(int opath) {
    std::string proc = "/proc/self/fd/" + std::to_string(opath);
    return open_at(AT_FDCWD, proc, O_RDONLY | O_DIRECTORY);
  }

  // Copies one source to PARENT/LEAF; when LEAF is a symlink to a directory
  // in the container, into that directory, as the container would see it.
  void copy_leaf(int src, const struct stat& st, int parent, const std::string& leaf, const files::CopySpec& spec) {
    files::copy_tree(src, st, parent, leaf, spec);
  }

  const Plan& plan_;
  std::string path_;
  const ExecuteOptions& opt_;
  BuildStore& store_;
  UniqueFd ctx_;
  std::map<int, State> states_;
  BuildResult result_;
  // Progress: the open vertex (0: none), how many there were, when it began;
  // the stage being built, its step count and the last step's number.
  int vertex_ = 0;
  int vertices_ = 0;
  std::chrono::steady_clock::time_point vertex_started_;
  std::string stage_name_;
  int stage_total_ = 0;
  int stage_step_ = 0;
};

}  // namespace

namespace {

void check_key(const std::string& key) {
  bool ok = key.size() == 32 && std::all_of(key.begin(), key.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
  if (!ok) throw Error("invalid build cache key " + quote(key));
}

}  // namespace

std::optional<std::string> read_cache_entry(const std::string& dir, const std::string& key) {
  check_key(key);
  UniqueFd fd(::open((dir + "/" + key).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return std::nullopt;
    throw_errno("read the build cache entry " + quote(dir + "/" + key));
  }
  std::string out;
  char buf[4096];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) throw_errno("read the build cache entry " + quote(dir + "/" + key));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

void write_cache_entry(const std::string& dir, const std::string& tmp_dir, const std::string& key,
                       const std::string& value) {
  check_key(key);
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) throw_errno("create " + quote(dir));
  std::string tmpl = tmp_dir + "/cache." + key + ".XXXXXX";
  int raw = ::mkstemp(tmpl.data());
  if (raw < 0) throw_errno("create a file in " + quote(tmp_dir));
  UniqueFd fd(raw);
  // The staged file goes unless it was renamed into place.
  struct Staged {
    std::string path;
    bool placed = false;
    ~Staged() {
      if (!placed) ::unlink(path.c_str());
    }
  } staged{tmpl};
  std::string entry = dir + "/" + key;
  write_all(fd.get(), value, "the build cache entry " + quote(entry));
  if (::fsync(fd.get()) != 0 || ::rename(tmpl.c_str(), entry.c_str()) != 0)
    throw_errno("write the build cache entry " + quote(entry));
  staged.placed = true;
}

int prune_cache_mounts(const std::string& dir) {
  int removed = 0;
  UniqueFd base(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!base) {
    if (errno == ENOENT) return 0;
    throw_errno("open " + quote(dir));
  }
  for (const auto& cache : read_dir_names(base.get(), dir)) {
    UniqueFd cdir = open_at(base.get(), cache, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    bool in_use = false;
    for (const auto& name : read_dir_names(cdir.get(), dir + "/" + cache)) {
      if (name.size() <= 5 || name.substr(name.size() - 5) != ".lock") continue;
      UniqueFd lock = open_at(cdir.get(), name, O_RDWR | O_NOFOLLOW);
      if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
        in_use = true;
        continue;
      }
      remove_tree_at(cdir.get(), name.substr(0, name.size() - 5));
      if (::unlinkat(cdir.get(), name.c_str(), 0) != 0) throw_errno("remove " + quote(dir + "/" + cache + "/" + name));
    }
    if (!in_use) {
      remove_tree_at(base.get(), cache);
      ++removed;
    }
  }
  return removed;
}

std::map<std::string, nlohmann::json> inline_cache_entries(const nlohmann::json& doc) {
  std::map<std::string, nlohmann::json> out;
  if (!doc.is_object() || !doc.contains(kInlineCacheKey) || !doc[kInlineCacheKey].is_array()) return out;
  std::set<std::string> layers;
  if (doc.contains("rootfs") && doc["rootfs"].is_object() && doc["rootfs"].contains("diff_ids") &&
      doc["rootfs"]["diff_ids"].is_array()) {
    for (const auto& d : doc["rootfs"]["diff_ids"]) {
      if (d.is_string()) layers.insert(d.get<std::string>());
    }
  }
  for (const auto& e : doc[kInlineCacheKey]) {
    if (!e.is_object() || !e.contains("key") || !e["key"].is_string() || !e.contains("layer") ||
        !e["layer"].is_string() || !e.contains("created") || !e["created"].is_string()) {
      continue;
    }
    const std::string& layer = e["layer"].get_ref<const std::string&>();
    if (!layer.empty() && layers.count(layer) == 0) continue;  // not this image's: never taken
    out.insert_or_assign(e["key"].get<std::string>(), nlohmann::json{{"layer", layer}, {"created", e["created"]}});
  }
  return out;
}

BuildResult execute_plan(const Plan& plan, const std::string& dockerfile_path, const ExecuteOptions& options) {
  Executor e(plan, dockerfile_path, options);
  return e.run();
}

}  // namespace strata::build
