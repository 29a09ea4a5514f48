// The build executor: runs a plan's steps on the store, the union mount and
// the sandbox (see strata/build_executor.hpp).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>

#include "files.hpp"
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

// What a stage has built so far.
struct State {
  std::vector<std::string> layers;  // diff_ids, bottom first
  nlohmann::json history = nlohmann::json::array();
  std::string chain;                // cache key of the last step
  size_t base_layers = 0;           // layers of the stage's FROM
  size_t base_history = 0;          // history entries of the stage's FROM
  std::string created;              // of the last step
  nlohmann::json base_doc = nlohmann::json::object();
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
    result_.image_id = store_.write_image(doc);
    for (const auto& tag : opt_.tags) store_.tag(result_.image_id, tag);
    if (opt_.out != nullptr) {
      if (opt_.quiet) {
        *opt_.out << result_.image_id << "\n";
      } else {
        *opt_.out << "Successfully built " << short_id(result_.image_id) << "\n";
        for (const auto& tag : opt_.tags) *opt_.out << "Successfully tagged " << tag << "\n";
      }
    }
    return result_;
  }

 private:
  std::ostream* progress() const { return opt_.quiet ? nullptr : opt_.out; }

  // --squash: the stage's own layers become one; the history keeps its
  // entries, and only the last that made a layer still does.
  void squash(State& s) {
    if (s.layers.size() <= s.base_layers + 1) return;
    std::vector<std::string> own(s.layers.begin() + static_cast<std::ptrdiff_t>(s.base_layers), s.layers.end());
    say("Squashing " + std::to_string(own.size()) + " layers");
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
    say(" ---> layer " + short_id(merged));
  }

  void say(const std::string& line) const {
    if (auto* o = progress()) *o << line << "\n" << std::flush;
  }

  [[noreturn]] void fail_step(const Step& step, const std::string& message) const {
    throw DockerfileError(path_, step.pos, message, step.display);
  }

  void build_stage(const Stage& stage) {
    State s;
    const Step& from = stage.steps.front();
    say("Step " + std::to_string(from.number) + "/" + std::to_string(plan_.total_steps) + " : " + from.display);
    if (stage.base_stage) {
      s = states_.at(*stage.base_stage);
      say(" ---> stage " + std::to_string(*stage.base_stage));
    } else if (stage.base_image) {
      nlohmann::json doc = store_.image_config(stage.base_image->id);
      s.base_doc = doc;
      if (doc.contains("rootfs") && doc["rootfs"].contains("diff_ids")) {
        for (const auto& d : doc["rootfs"]["diff_ids"]) s.layers.push_back(d.get<std::string>());
      }
      if (doc.contains("history") && doc["history"].is_array()) s.history = doc["history"];
      s.created = doc.contains("created") && doc["created"].is_string() ? doc["created"].get<std::string>() : "";
      s.chain = stage.base_image->id;
      say(" ---> " + short_id(stage.base_image->id));
    } else {
      s.chain = "scratch";
      say(" ---> scratch");
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

  void check_cancelled(const Step& step) const {
    if (opt_.cancelled && opt_.cancelled()) fail_step(step, "the build was interrupted");
  }

  void run_step(const Stage& stage, const Step& step, State& s) {
    (void)stage;
    check_cancelled(step);
    auto started = std::chrono::steady_clock::now();
    say("Step " + std::to_string(step.number) + "/" + std::to_string(plan_.total_steps) + " : " + step.display);
    bool makes_layer = step.kind == StepKind::run || step.kind == StepKind::copy || step.kind == StepKind::add ||
                       step.kind == StepKind::workdir;
    // Sources of COPY/ADD that are downloaded are fetched before the cache
    // lookup: their content is part of the key.
    std::optional<TempDir> downloads;
    std::map<std::string, std::string> downloaded;  // url -> file name in `downloads`
    std::string digest;
    if (step.kind == StepKind::copy || step.kind == StepKind::add) {
      try {
        digest = sources_digest(step, downloads, downloaded);
      } catch (const DockerfileError&) {
        throw;
      } catch (const Error& e) {
        fail_step(step, e.what());
      }
    }
    std::string key = cache_key(s.chain, step.normalized, step.used_args, digest);
    std::optional<nlohmann::json> cached;
    if (!opt_.no_cache) {
      if (auto v = store_.cache_get(key)) {
        try {
          nlohmann::json j = nlohmann::json::parse(*v);
          std::string layer = j.value("layer", "");
          if (layer.empty() || store_.layer_path(layer)) cached = j;
        } catch (const nlohmann::json::exception&) {
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
        say(" ---> Using cache");
      }
    } else {
      created = now_rfc3339();
      if (makes_layer) {
        try {
          layer = execute(step, s, downloads, downloaded);
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
    s.chain = key;
    s.created = created;
    if (step.has_history) {
      nlohmann::json h = {{"created", created}, {"created_by", step.history.created_by}};
      if (!step.history.comment.empty()) h["comment"] = step.history.comment;
      if (layer.empty()) h["empty_layer"] = true;
      s.history.push_back(h);
    }
    if (makes_layer && !cached) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.2fs", secs);
      say(" ---> " + (layer.empty() ? std::string("no changes") : "layer " + short_id(layer)) + " (" + buf + ")");
    }
  }

  std::string sources_digest(const Step& step, std::optional<TempDir>& downloads,
                             std::map<std::string, std::string>& downloaded) {
    std::string digest;
    if (step.from_stage) return "stage:" + states_.at(*step.from_stage).chain;
    if (!step.from_image.empty()) return "image:" + step.from_image;
    std::vector<std::string> local;
    for (const auto& src : step.sources) {
      if (is_url(src)) {
        if (!downloads) downloads.emplace(store_.temp_parent(), staging_prefix("download"));
        std::string name = "f" + std::to_string(downloaded.size());
        UniqueFd dir = open_at(AT_FDCWD, downloads->path(), O_RDONLY | O_DIRECTORY);
        say(" ---> downloading " + src);
        std::string fetched = files::download(src, dir.get(), name, step.checksum);
        // Appended piece by piece: one concatenated temporary trips GCC 12's -Wrestrict at -O3.
        digest.append("url:").append(src).append("=").append(fetched).append(";");
        downloaded[src] = name;
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

  // Runs a step that makes a layer; returns its diff_id ("" when the step
  // changed nothing).
  std::string execute(const Step& step, const State& s, std::optional<TempDir>& downloads,
                      const std::map<std::string, std::string>& downloaded) {
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
    {
      ScopedMount mount(*opt_.mounter, req);
      UniqueFd root = open_at(AT_FDCWD, req.target, O_PATH | O_DIRECTORY);
      switch (step.kind) {
        case StepKind::run: run_command(step, req); break;
        case StepKind::workdir: {
          // BuildKit creates the directory as the current USER.
          std::optional<Owner> owner;
          if (!step.config.user.empty()) {
            owner = resolve_chown(step.config.user, files::read_small_file(root.get(), "/etc/passwd"),
                                  files::read_small_file(root.get(), "/etc/group"), true);
          }
          files::make_dirs(root.get(), step.path, owner);
          break;
        }
        case StepKind::copy:
        case StepKind::add: do_copy(step, root.get(), work.path(), downloads, downloaded); break;
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
    for (const auto& f : step.files) files::write_file(dir.get(), basename_of(f.path), f.content, 0755, Owner{});
  }

  void run_command(const Step& step, const MountRequest& mount) {
    RunRequest r;
    r.rootfs = mount.target;
    r.mount = mount;
    r.argv = step.argv;
    r.env = step.env;
    r.user = step.user;
    r.workdir = step.workdir;
    r.network = step.network;
    for (const auto& f : step.files) {
      for (auto& a : r.argv) {
        if (a == f.path) a = std::string("/") + kScriptDir + "/" + basename_of(f.path);
      }
    }
    if (!opt_.run) throw Error("RUN is not available in this build");
    int rc = opt_.run(r);
    if (rc != 0) {
      std::string cmd;
      for (const auto& a : step.argv) cmd += (cmd.empty() ? "" : " ") + a;
      fail_step(step, "the command '" + cmd + "' returned a non-zero code: " + std::to_string(rc));
    }
  }

  void do_copy(const Step& step, int root, const std::string& work_dir, std::optional<TempDir>& downloads,
               const std::map<std::string, std::string>& downloaded) {
    const bool is_add = step.kind == StepKind::add;
    std::optional<Owner> owner;
    if (!step.chown.empty()) {
      owner = resolve_chown(step.chown, files::read_small_file(root, "/etc/passwd"),
                            files::read_small_file(root, "/etc/group"));
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
    std::optional<Owner> created_owner = owner;
    files::CopySpec spec;
    spec.owner = owner ? owner : (from_context ? std::optional<Owner>(Owner{}) : std::nullopt);
    spec.mode = mode;
    spec.ignore = from_context && !opt_.ignore.empty() ? &opt_.ignore : nullptr;
    std::optional<IgnoreMatcher> excludes;
    if (!step.excludes.empty()) {
      excludes = IgnoreMatcher::from_patterns(step.excludes, "--exclude");
      spec.exclude = &*excludes;
    }

    struct Item {
      std::string rel;  // in the source root
      std::string url;
    };
    std::vector<Item> items;
    for (const auto& src : step.sources) {
      if (is_url(src)) {
        items.push_back({{}, src});
        continue;
      }
      std::string s = from_context ? src : clean_path("/" + src);
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
      for (auto& p : kept) items.push_back({p, {}});
    }
    // Symlinks in the destination lead where they lead in the container,
    // dangling ones included (their target is created), never outside it.
    std::string dest = resolve_in_root(root, step.dest);
    bool into_dir = step.dest_is_dir || items.size() + step.inline_sources.size() > 1;
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
    for (const auto& item : items) {
      if (!item.url.empty()) {
        if (is_add && step.unpack.value_or(false)) {
          UniqueFd data = open_at(AT_FDCWD, downloads->path() + "/" + downloaded.at(item.url), O_RDONLY | O_NOFOLLOW);
          if (unpack(data.get(), item.url)) continue;
        }
        std::string name = files::url_file_name(item.url);
        if (into_dir && name.empty()) throw Error("cannot tell a file name from the URL " + quote(item.url) + "; give a file destination");
        std::string leaf;
        UniqueFd parent = target_of(name, leaf);
        UniqueFd dl = open_at(AT_FDCWD, downloads->path() + "/" + downloaded.at(item.url), O_PATH | O_NOFOLLOW);
        struct stat st {};
        if (::fstat(dl.get(), &st) != 0) throw_errno("stat the download of " + quote(item.url));
        files::CopySpec s2 = spec;
        s2.ignore = nullptr;
        if (!s2.owner) s2.owner = Owner{};
        copy_leaf(dl.get(), st, parent.get(), leaf, s2);
        continue;
      }
      UniqueFd src = files::open_in_root(src_root, item.rel, O_PATH);
      if (!src) throw SysError(errno, "open " + quote(item.rel));
      struct stat st {};
      if (::fstat(src.get(), &st) != 0) throw_errno("stat " + quote(item.rel));
      if (S_ISDIR(st.st_mode)) {
        // A directory's contents are copied, not the directory itself.
        UniqueFd target = files::make_dirs(root, dest, created_owner);
        UniqueFd in = files::open_in_root(src_root, item.rel, O_RDONLY | O_DIRECTORY);
        files::CopySpec sub = spec;
        std::vector<std::string> names = read_dir_names(in.get(), item.rel);
        for (const auto& n : names) {
          std::string rel = item.rel == "." ? n : item.rel + "/" + n;
          sub.ignore_prefix = rel;
          sub.exclude_prefix = n;
          if (sub.skipped()) continue;
          UniqueFd c(::openat(in.get(), n.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
          if (!c) throw_errno("open " + quote(rel));
          struct stat cst {};
          if (::fstat(c.get(), &cst) != 0) throw_errno("stat " + quote(rel));
          files::copy_tree(c.get(), cst, target.get(), n, sub);
        }
        continue;
      }
      if (is_add && step.unpack.value_or(true) && S_ISREG(st.st_mode)) {
        UniqueFd data = files::open_in_root(src_root, item.rel, O_RDONLY);
        if (data && unpack(data.get(), item.rel)) continue;
      }
      std::string leaf;
      UniqueFd parent = target_of(basename_of(item.rel), leaf);
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
      files::write_file(real.get(), leaf, in.content, mode ? mode->apply(0644, false) : 0644, owner ? *owner : Owner{});
    }
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

BuildResult execute_plan(const Plan& plan, const std::string& dockerfile_path, const ExecuteOptions& options) {
  Executor e(plan, dockerfile_path, options);
  return e.run();
}

}  // namespace strata::build
