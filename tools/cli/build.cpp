// strata build: an image from a Dockerfile and a context directory.
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <fstream>
#include <iostream>
#include <iterator>
#include <set>
#include <sstream>

#include "build_output.hpp"
#include "cli.hpp"
#include "registry_common.hpp"
#include "store_common.hpp"
#include "strata/archive.hpp"
#include "strata/build.hpp"
#include "strata/build_executor.hpp"
#include "strata/descriptors.hpp"
#include "strata/dockerfile.hpp"
#include "strata/dockerignore.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/sandbox.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/store.hpp"
#include "strata/text.hpp"

namespace strata::cli {

namespace {

namespace b = strata::build;

// Under the store's root: RUN --mount=type=cache directories.
constexpr const char* kCacheMountsDir = "build-cache-mounts";

// The store as the executor sees it.
class StoreAdapter : public b::BuildStore {
 public:
  explicit StoreAdapter(store::Store& s) : s_(s) {}
  nlohmann::json image_config(const std::string& id) override { return s_.image(id).config; }
  bool has_image(const std::string& id) override { return s_.find_image(id).has_value(); }
  std::optional<std::string> layer_path(const std::string& diff_id) override {
    auto d = oci::Digest::try_parse(diff_id);
    if (!d) return std::nullopt;
    auto layer = s_.find_layer(*d);
    if (!layer) return std::nullopt;
    return layer->dir;
  }
  std::string temp_parent() override { return s_.tmp_dir(); }
  // A step's upper is thrown away after its commit: its files become the layer's.
  std::string commit_layer(const std::string& upper) override {
    store::LayerOptions lo;
    lo.adopt_files = true;
    return s_.create_layer(upper, lo).diff_id.str();
  }
  std::string squash_layers(const std::vector<std::string>& diff_ids) override {
    std::vector<oci::Digest> ids;
    for (const auto& d : diff_ids) ids.push_back(oci::Digest::parse(d));
    return s_.squash_layers(ids).diff_id.str();
  }
  std::string write_image(const nlohmann::json& config) override { return s_.write_image(config).config_digest.str(); }
  void tag(const std::string& id, const std::string& ref) override { s_.tag(s_.image(id), ref); }
  std::optional<std::string> cache_get(const std::string& key) override {
    return b::read_cache_entry(s_.root() + "/cache", key);
  }
  std::string cache_mounts_dir() override { return s_.root() + "/" + kCacheMountsDir; }
  void cache_put(const std::string& key, const std::string& value) override {
    b::write_cache_entry(s_.root() + "/cache", s_.tmp_dir(), key, value);
  }

 private:
  store::Store& s_;
};

volatile sig_atomic_t g_interrupted = 0;

void on_interrupt(int) { g_interrupted = 1; }

// Ctrl-C and SIGTERM stop the build between steps, so that no union mount
// and no staging directory is left behind.
void catch_interrupts() {
  struct sigaction sa {};
  sa.sa_handler = on_interrupt;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) ::sigaction(sig, &sa, nullptr);
}

std::string read_text(std::istream& in) { return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()}; }

// `--secret id=ID[,src=PATH|,env=VAR][,type=file|env]`, as docker build
// takes it: a file (src, source) or a variable of strata's environment (env);
// without either, the variable named ID if it is set, else the file ID.
// Returns the id and the value.
std::pair<std::string, std::string> read_secret(const std::string& spec) {
  std::string id, src, env, type;
  for (auto field : split(spec, ',')) {
    auto eq = field.find('=');
    std::string key(field.substr(0, eq));
    std::string value(eq == std::string_view::npos ? std::string_view() : field.substr(eq + 1));
    if (eq == std::string_view::npos || value.empty()) throw UsageError("build: --secret " + quote(spec) + ": " + quote(key) + " needs a value");
    if (key == "id") {
      id = value;
    } else if (key == "src" || key == "source") {
      src = value;
    } else if (key == "env") {
      env = value;
    } else if (key == "type") {
      if (value != "file" && value != "env") throw UsageError("build: --secret " + quote(spec) + ": type is file or env");
      type = value;
    } else {
      throw UsageError("build: --secret " + quote(spec) + ": unknown key " + quote(key) + " (id, src, env, type)");
    }
  }
  if (!src.empty() && !env.empty()) throw UsageError("build: --secret " + quote(spec) + ": give src or env, not both");
  if (type == "env" && env.empty()) env = src.empty() ? id : src;
  if (type == "env") src.clear();
  if (id.empty()) id = !env.empty() ? env : src.substr(src.rfind('/') + 1);
  if (id.empty()) throw UsageError("build: --secret " + quote(spec) + " has no id");
  if (src.empty() && env.empty()) {
    if (type != "file" && std::getenv(id.c_str()) != nullptr) {
      env = id;
    } else {
      src = id;
    }
  }
  if (!env.empty()) {
    const char* v = std::getenv(env.c_str());
    if (v == nullptr) throw UsageError("build: --secret " + quote(spec) + ": the variable " + env + " is not set");
    return {id, v};
  }
  try {
    return {id, read_file(src)};
  } catch (const Error& e) {
    throw UsageError("build: --secret " + quote(spec) + ": " + e.what());
  }
}

// Where a RUN's standard output and error go (sandbox::RunSpec::output_fd;
// one descriptor for both, so their order holds): nowhere (-q), or a pipe
// to a forked process that writes each line to strata's standard output
// after PREFIX and the seconds since STARTED, as BuildKit's plain progress
// does ("#6 0.215 hello"). The destructor waits until every line is written.
class CommandOutput {
 public:
  CommandOutput() : fd_(::open("/dev/null", O_WRONLY | O_CLOEXEC)) {  // discarded
    if (!fd_) throw SysError(errno, "build: open /dev/null");
  }
  CommandOutput(const std::string& prefix, std::chrono::steady_clock::time_point started) {
    int ends[2];
    if (::pipe2(ends, O_CLOEXEC) != 0) throw SysError(errno, "build: make a pipe for the command's output");
    UniqueFd read_end(ends[0]);
    fd_.reset(ends[1]);
    std::cout.flush();
    pid_t parent = ::getpid();
    pid_ = ::fork();
    if (pid_ < 0) throw SysError(errno, "build: start the output writer");
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() != parent) ::_exit(0);
      fd_.reset();
      // Nothing of the build's (store locks, the step's mounts) stays open
      // in the writer, which may outlive the step by a moment.
      const int keep[] = {read_end.get()};
      close_descriptors_except(keep);
      prefix_lines(read_end.get(), STDOUT_FILENO, prefix, started);
    }
  }
  CommandOutput(const CommandOutput&) = delete;
  CommandOutput& operator=(const CommandOutput&) = delete;
  ~CommandOutput() {
    fd_.reset();  // the writer sees the end once the command's processes are gone too
    if (pid_ > 0) {
      while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
  }

  int fd() const { return fd_.get(); }

 private:
  [[noreturn]] static void prefix_lines(int in, int out, const std::string& prefix,
                                        std::chrono::steady_clock::time_point started) {
    constexpr size_t kLongestLine = 64 * 1024;  // a longer line is cut, as a terminal would wrap it
    std::string pending;
    auto emit = [&](std::string_view line) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      char stamp[32];
      std::snprintf(stamp, sizeof stamp, "%.3f ", secs);
      std::string text = prefix + stamp;
      text.append(line).push_back('\n');
      write_all(out, text);
    };
    char buf[16384];
    while (true) {
      ssize_t n = ::read(in, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<size_t>(n));
      size_t start = 0;
      for (size_t nl; (nl = pending.find('\n', start)) != std::string::npos; start = nl + 1) {
        emit(std::string_view(pending).substr(start, nl - start));
      }
      pending.erase(0, start);
      while (pending.size() >= kLongestLine) {
        emit(std::string_view(pending).substr(0, kLongestLine));
        pending.erase(0, kLongestLine);
      }
    }
    if (!pending.empty()) emit(pending);
    ::_exit(0);
  }

  static void write_all(int fd, std::string_view text) {
    while (!text.empty()) {
      ssize_t n = ::write(fd, text.data(), text.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;  // nowhere to write (a closed pipe): the lines are lost, the build goes on
      text.remove_prefix(static_cast<size_t>(n));
    }
  }

  UniqueFd fd_;
  pid_t pid_ = -1;
};

// `--ssh default|ID[=SOCKET]`, as docker build takes it: an ssh agent's
// socket (without one, the agent of SSH_AUTH_SOCK). Returns the id and an
// O_PATH descriptor of the socket, opened now: whatever its path leads to
// later, the steps reach the socket checked here. docker also takes private
// key files here (it runs an agent of its own); strata does not: load them
// with ssh-add.
std::pair<std::string, UniqueFd> read_ssh(const std::string& spec) {
  auto eq = spec.find('=');
  std::string id = spec.substr(0, eq);
  std::string path = eq == std::string::npos ? std::string() : spec.substr(eq + 1);
  auto bad = [&](const std::string& why) { return UsageError("build: --ssh " + quote(spec) + ": " + why); };
  if (id.empty()) throw bad("no id (default or a name)");
  if (id.find_first_of(",\"'") != std::string::npos) throw bad("an id has no ',' or quotes");
  if (eq != std::string::npos && path.empty()) throw bad("no socket after '='");
  if (path.empty()) {
    const char* agent = std::getenv("SSH_AUTH_SOCK");
    if (agent == nullptr || *agent == '\0') throw bad("SSH_AUTH_SOCK is not set (give ID=SOCKET)");
    path = agent;
  }
  const char* const keys_hint = "key files are not supported: load them into an ssh agent (ssh-add) and give its socket";
  if (path.find(',') != std::string::npos) throw bad(keys_hint);
  UniqueFd socket(::open(path.c_str(), O_PATH | O_CLOEXEC));
  struct stat st {};
  if (!socket || ::fstat(socket.get(), &st) != 0) throw bad(quote(path) + ": " + std::strerror(errno));
  if (S_ISREG(st.st_mode)) throw bad(quote(path) + " is a file; " + keys_hint);
  if (!S_ISSOCK(st.st_mode)) throw bad(quote(path) + " is not a socket");
  return {id, std::move(socket)};
}

// `--cache-from NAME` or `type=registry,ref=NAME`: the image whose inline
// cache (see --cache-to) a build may take. Returns NAME.
std::string cache_source(const std::string& spec) {
  if (spec.find('=') == std::string::npos) return spec;
  auto bad = [&](const std::string& why) { return UsageError("build: --cache-from " + quote(spec) + ": " + why); };
  std::map<std::string, std::string> fields;
  for (auto field : split(spec, ',')) {
    auto eq = field.find('=');
    fields[std::string(field.substr(0, eq))] = eq == std::string_view::npos ? "" : std::string(field.substr(eq + 1));
  }
  if (fields["type"] != "registry") throw bad("only type=registry (an image, pulled when missing) is supported");
  for (const auto& [key, value] : fields) {
    if (key != "type" && key != "ref") throw bad("unknown key " + quote(key) + " (type, ref)");
  }
  if (fields["ref"].empty()) throw bad("ref= is missing");
  return fields["ref"];
}

// --no-cache-filter: stage names (any case) or numbers, comma-separated,
// as Stage::index values; a name no FROM gives is a usage error.
std::set<int> stages_named(const b::Dockerfile& df, const std::vector<std::string>& specs) {
  std::vector<std::string> names;
  for (const auto& ins : df.instructions) {
    if (ins.keyword == "FROM") names.push_back(ins.stage_name);
  }
  std::set<int> out;
  for (const auto& spec : specs) {
    for (auto part : split(spec, ',')) {
      std::string wanted(part);
      for (auto& c : wanted) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      auto it = std::find(names.begin(), names.end(), wanted);
      if (!wanted.empty() && it != names.end()) {
        out.insert(static_cast<int>(it - names.begin()));
        continue;
      }
      auto number = parse_unsigned(wanted);
      if (!number || *number >= names.size()) {
        throw UsageError("build: --no-cache-filter: no stage " + quote(part) + " in the Dockerfile");
      }
      out.insert(static_cast<int>(*number));
    }
  }
  return out;
}

// Prints what the build checks found: as warnings before a build, or as
// the result of --check (then returns true: nothing is to be built). With
// check=error=true a finding fails the build before any step runs.
bool report_checks(const b::Plan& plan, const std::string& dockerfile, bool check_only) {
  std::vector<std::string> rules;
  for (const auto& c : plan.checks) {
    std::string line = dockerfile + ":" + std::to_string(c.line) + ": " + c.rule + ": " + c.message;
    if (check_only) {
      std::cout << line << "\n";
    } else {
      std::cerr << "strata: warning: " << line << "\n";
    }
    if (std::find(rules.begin(), rules.end(), c.rule) == rules.end()) rules.push_back(c.rule);
  }
  if (check_only) {
    if (plan.checks.empty()) {
      std::cout << "Check complete, no warnings found.\n";
      return true;
    }
    throw Error(std::to_string(plan.checks.size()) + (plan.checks.size() == 1 ? " build check warning" : " build check warnings") +
                " found in " + dockerfile);
  }
  if (!plan.checks_are_errors || rules.empty()) return false;
  std::string list;
  for (const auto& r : rules) list += (list.empty() ? "" : ", ") + r;
  std::string message = "lint violation found for rules: " + list;
  if (plan.check_directive_line == 0) throw Error(dockerfile + ": " + message + " (build argument BUILDKIT_DOCKERFILE_CHECK)");
  throw b::DockerfileError(dockerfile, {plan.check_directive_line, 1}, message, "");
}

int build_verb(const GlobalOptions& global, const std::vector<std::string>& args) {
  po::options_description options("Options");
  std::vector<std::string> tags, build_args, labels, secrets, ssh_specs, no_cache_filter, allow, cache_from, cache_to;
  std::string file, target, progress = "auto", context, iidfile, output_spec;
  options.add_options()
      ("tag,t", po::value(&tags), "name the image NAME[:TAG] (repeatable)")
      ("file,f", po::value(&file), "the Dockerfile (default: CONTEXT/Dockerfile; '-' reads standard input)")
      ("target", po::value(&target), "build the stage of this name and stop")
      ("build-arg", po::value(&build_args), "set a build argument K=V (K alone: from the environment; repeatable)")
      ("no-cache", po::bool_switch(), "run every step, using no cached layer")
      ("no-cache-filter", po::value(&no_cache_filter), "run the steps of these stages (names or numbers, comma-separated; repeatable) without the cache")
      ("cache-from", po::value(&cache_from), "take cached steps from the inline cache of this image (NAME or type=registry,ref=NAME; pulled when missing; repeatable)")
      ("cache-to", po::value(&cache_to), "type=inline: write the steps' cache into the image's config, for --cache-from")
      ("squash", po::bool_switch(), "merge the layers the final stage adds to its FROM into one layer")
      ("label", po::value(&labels), "add a label K=V to the image (repeatable)")
      ("secret", po::value(&secrets), "give RUN --mount=type=secret a secret: id=ID,src=PATH or id=ID,env=VAR (repeatable; never stored in the image or the cache)")
      ("ssh", po::value(&ssh_specs), "give RUN --mount=type=ssh an ssh agent: default or ID, =SOCKET (default: SSH_AUTH_SOCK; repeatable)")
      ("progress", po::value(&progress), "progress output: auto, plain or tty (all three: BuildKit's plain format), or quiet (-q)")
      ("quiet,q", po::bool_switch(), "print only the image id")
      ("iidfile", po::value(&iidfile), "write the image id to FILE (a regular FILE is removed first, so a failed build leaves none)")
      ("output,o", po::value(&output_spec),
       "also write the image out: DIR (its files), '-' (a tar on standard output) or type=local|tar|oci|docker,dest=PATH")
      ("allow", po::value(&allow), "grant an entitlement: security.insecure (RUN --security=insecure may run)")
      ("check", po::bool_switch(), "run the build checks only: print their findings, build nothing (exit 1 when there are any)")
      ("context", po::value(&context)->required(), "the build context directory ('-': a tar, or a Dockerfile, on standard input)");
  add_pull_options(options);
  po::positional_options_description positional;
  positional.add("context", 1);
  po::variables_map vm;
  if (!parse_args("build", "strata build [OPTIONS] CONTEXT|-", options, positional, args, vm)) return 0;
  if (progress != "plain" && progress != "tty" && progress != "auto" && progress != "quiet") {
    throw UsageError("build: --progress must be auto, plain, tty or quiet, not " + quote(progress));
  }
  PullPolicy pull = pull_policy(vm, "build");
  bool allow_insecure = false;
  for (const auto& spec : allow) {
    for (auto e : split(spec, ',')) {
      if (e != "security.insecure") {
        throw UsageError("build: --allow " + quote(e) + ": the only entitlement is security.insecure");
      }
      allow_insecure = true;
    }
  }
  std::optional<BuildOutput> output;
  if (!output_spec.empty()) output = parse_build_output(output_spec);
  // With the output on standard output, everything the build prints (a
  // base image's pull, the steps, the commands' output) goes to standard error instead.
  UniqueFd saved_stdout;
  if (output && output->to_stdout()) {
    std::cout.flush();
    saved_stdout.reset(::fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3));
    if (!saved_stdout || ::dup2(STDERR_FILENO, STDOUT_FILENO) < 0) throw SysError(errno, "build: redirect standard output");
  }
  // As docker does: an id left from an earlier build must not pass for this one's.
  // Only a regular file is removed: never /dev/null or /dev/stdout.
  struct stat old_iid {};
  if (!iidfile.empty() && ::stat(iidfile.c_str(), &old_iid) == 0 && S_ISREG(old_iid.st_mode) &&
      ::unlink(iidfile.c_str()) != 0 && errno != ENOENT) {
    throw SysError(errno, "build: remove the old --iidfile " + quote(iidfile));
  }

  std::map<std::string, std::string> arg_map;
  for (const auto& a : build_args) {
    auto eq = a.find('=');
    if (eq == 0) throw UsageError("build: --build-arg " + quote(a) + " has no name");
    if (eq == std::string::npos) {
      if (const char* v = std::getenv(a.c_str())) arg_map[a] = v;
      continue;
    }
    arg_map[a.substr(0, eq)] = a.substr(eq + 1);
  }
  std::map<std::string, UniqueFd> ssh_map;  // held until the build ends
  for (const auto& spec : ssh_specs) {
    auto [id, socket] = read_ssh(spec);
    if (ssh_map.count(id) != 0) throw UsageError("build: --ssh: the id " + quote(id) + " is given twice");
    ssh_map.emplace(id, std::move(socket));
  }
  std::map<std::string, std::string> secret_map;
  for (const auto& spec : secrets) {
    auto [id, value] = read_secret(spec);
    secret_map.insert_or_assign(id, std::move(value));
  }
  std::map<std::string, std::string> label_map;
  for (const auto& l : labels) {
    auto eq = l.find('=');
    if (eq == 0) throw UsageError("build: --label " + quote(l) + " has no name");
    label_map[l.substr(0, eq)] = eq == std::string::npos ? std::string() : l.substr(eq + 1);
  }

  // `strata build -`: standard input is the context as a tar (plain or
  // compressed; -f then names a file in it), or else the Dockerfile itself
  // with an empty context, as docker build reads it.
  std::optional<TempDir> stdin_context;
  std::optional<std::string> stdin_dockerfile;
  const std::string file_as_given = file;
  if (context == "-") {
    if (file == "-") throw UsageError("build: standard input cannot be both the context and the Dockerfile");
    stdin_context.emplace(std::filesystem::temp_directory_path().string(), "strata-build-context.");
    std::string spool = stdin_context->path() + "/stdin";
    {
      UniqueFd out(::open(spool.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
      if (!out) throw SysError(errno, "create " + quote(spool));
      archive::copy_and_digest(STDIN_FILENO, out.get());
    }
    context = stdin_context->path() + "/context";
    if (::mkdir(context.c_str(), 0700) != 0) throw SysError(errno, "create " + quote(context));
    UniqueFd in(::open(spool.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw SysError(errno, "open " + quote(spool));
    try {
      archive::ExtractOptions xo;
      xo.privileged = ::geteuid() == 0;
      archive::extract_layer(in.get(), context, xo);
      if (!file.empty()) file = context + "/" + file;
    } catch (const archive::NotATar&) {
      stdin_dockerfile = read_file(spool);
    } catch (const Error& e) {
      throw Error(std::string("build context on standard input: ") + e.what());
    }
  }
  struct stat st {};
  if (::stat(context.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw Error("build context " + quote(context) + " is not a directory");
  }
  std::string text;
  std::string shown;  // the Dockerfile's name in messages
  std::string path;   // the Dockerfile's path ("" for standard input)
  if (stdin_dockerfile) {
    text = *stdin_dockerfile;
    shown = "Dockerfile";
  } else if (file == "-") {
    text = read_text(std::cin);
    shown = "Dockerfile";
  } else {
    path = file.empty() ? context + "/Dockerfile" : file;
    shown = file.empty() ? "Dockerfile" : file_as_given;
    std::ifstream in(path, std::ios::binary);
    if (!in) throw Error("cannot read the Dockerfile " + quote(path));
    text = read_text(in);
  }

  std::string ignore_file = b::find_ignore_file(context, path);
  b::IgnoreMatcher ignore;
  if (!ignore_file.empty()) {
    std::ifstream in(ignore_file, std::ios::binary);
    ignore = b::IgnoreMatcher::parse(read_text(in), ignore_file);
  }

  auto store = open_store(global);
  StoreAdapter adapter(store);
  b::Dockerfile df = b::parse_dockerfile(text, shown);
  b::PlanOptions popt;
  popt.build_args = arg_map;
  popt.allow_insecure = allow_insecure;
  popt.target = target;
  popt.resolve = [&store, &vm, pull](const std::string& ref) -> std::optional<b::BaseImage> {
    // A base the store lacks is pulled (FROM); its progress shares stdout with the steps.
    auto img = store.find_image(ensure_image(store, ref, pull, vm, std::cout));
    if (!img) return std::nullopt;
    b::BaseImage base;
    base.id = img->config_digest.str();
    if (img->config.contains("config")) base.config = b::config_from_json(img->config["config"]);
    if (img->config.contains("author") && img->config["author"].is_string()) base.author = img->config["author"];
    return base;
  };
  b::Plan plan = b::plan_build(df, popt);
  for (const auto& w : plan.warnings) std::cerr << "strata: warning: " << w << "\n";
  if (report_checks(plan, shown, vm["check"].as<bool>())) return 0;
  for (const auto& [k, v] : label_map) plan.stages[static_cast<size_t>(plan.target)].config.labels[k] = v;

  b::StratafsMounter mounter(fs::find_stratafs());
  b::ExecuteOptions eo;
  eo.context_dir = context;
  eo.ignore = ignore;
  eo.tags = tags;
  eo.no_cache = vm["no-cache"].as<bool>();
  eo.no_cache_stages = stages_named(df, no_cache_filter);
  eo.squash = vm["squash"].as<bool>();
  // As docker: --cache-to type=inline, or the build argument BUILDKIT_INLINE_CACHE=1.
  if (auto it = arg_map.find("BUILDKIT_INLINE_CACHE"); it != arg_map.end()) {
    eo.inline_cache = it->second == "1" || it->second == "true";
  }
  for (const auto& spec : cache_to) {
    if (spec != "type=inline" && spec != "inline") {
      throw UsageError("build: --cache-to " + quote(spec) + ": only type=inline is supported");
    }
    eo.inline_cache = true;
  }
  // A cache source that cannot be had is a warning, as in docker: the build goes on without it.
  for (const auto& spec : cache_from) {
    std::string ref = cache_source(spec);
    try {
      auto img = store.image(ensure_image(store, ref, pull, vm, std::cout));
      auto entries = b::inline_cache_entries(img.config);
      if (entries.empty()) std::cerr << "strata: warning: --cache-from " << quote(ref) << ": the image has no inline cache\n";
      eo.imported_cache.merge(entries);
    } catch (const Error& e) {
      std::cerr << "strata: warning: --cache-from " << quote(ref) << ": " << e.what() << "\n";
    }
  }
  eo.quiet = vm["quiet"].as<bool>() || progress == "quiet";
  eo.out = &std::cout;
  eo.store = &adapter;
  eo.mounter = &mounter;
  eo.secrets = std::move(secret_map);
  for (const auto& [id, socket] : ssh_map) eo.ssh_agents.emplace(id, socket.get());
  // An unprivileged user's mount on the host lets in only that user, not
  // the image's other users: the RUN mounts its root itself (as a run does).
  eo.run_mounts_root = ::geteuid() != 0;
  if (auto to_host = sandbox::host_owners(sandbox::own_id_maps())) {
    eo.host_owner = [to_host](const b::Owner& o) {
      std::uint32_t uid = o.uid, gid = o.gid;
      to_host(uid, gid);
      return b::Owner{uid, gid};
    };
  }
  eo.run = [quiet = eo.quiet, &mounter, own_root = eo.run_mounts_root](const b::RunRequest& r) -> int {
    sandbox::RunSpec spec;
    spec.rootfs = r.rootfs;
    if (own_root) {
      sandbox::UnionRoot u;
      u.stratafs = mounter.stratafs();
      u.lowerdirs = r.mount.lowers;
      u.upperdir = r.mount.upper;
      u.workdir = r.mount.work;
      u.initdir = r.initdir;
      u.volatile_upper = true;  // as StratafsMounter mounts a step's upper
      spec.union_root = std::move(u);
    }
    spec.argv = r.argv;
    spec.env = r.env;
    spec.workdir = r.workdir.empty() ? "/" : r.workdir;
    spec.user = r.user;
    spec.network = r.network == "none" ? sandbox::Network::none : sandbox::Network::host;
    if (r.insecure) {
      // As `strata run --privileged`: still the step's user namespace, so no
      // more than the user running the build may do.
      spec.capabilities = sandbox::capability_set({}, {}, true);
      spec.seccomp.reset();
    }
    spec.signals_end_command = true;  // Ctrl-C cancels the step, as in docker build
    for (const auto& m : r.mounts) {
      if (m.tmpfs) {
        sandbox::TmpfsMount t;
        t.target = m.target;
        t.flags = MS_NOSUID | MS_NODEV;
        if (m.size != 0) t.data = "size=" + std::to_string(m.size);
        spec.tmpfs.push_back(std::move(t));
      } else {
        sandbox::BindMount b;
        b.source = m.source;
        b.target = m.target;
        b.read_only = m.read_only;
        b.uid = m.uid;
        b.gid = m.gid;
        b.mode = m.mode;
        spec.volumes.push_back(std::move(b));
      }
    }
    // -q: the command's output is not shown; with progress, each of its lines is prefixed.
    std::optional<CommandOutput> command_output;
    if (quiet) {
      command_output.emplace();
    } else if (!r.log_prefix.empty()) {
      command_output.emplace(r.log_prefix, r.log_started);
    }
    if (command_output) spec.output_fd = command_output->fd();
    std::cout.flush();
    try {
      int rc = sandbox::run(spec);
      command_output.reset();
      return rc;
    } catch (const Error& e) {
      command_output.reset();
      if (e.code() == ExitCode::cannot_invoke || e.code() == ExitCode::command_not_found) {
        std::cerr << "strata: " << e.what() << "\n";
        return static_cast<int>(e.code());
      }
      throw;
    }
  };
  eo.cancelled = [] { return g_interrupted != 0; };
  catch_interrupts();
  b::BuildResult result = b::execute_plan(plan, shown, eo);
  if (saved_stdout) {
    std::cout.flush();
    if (::dup2(saved_stdout.get(), STDOUT_FILENO) < 0) throw SysError(errno, "build: restore standard output");
  }
  if (output) write_build_output(store, *output, result.image_id, tags.empty() ? std::string() : tags.front());
  // The id alone, as docker writes it (no newline).
  if (!iidfile.empty()) {
    write_file_staged(
        iidfile, [&](int fd, const std::string& where) { write_all(fd, result.image_id, quote(where)); },
        "build --iidfile");
  }
  return 0;
}

int builder_prune(const GlobalOptions& global, const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()("force,f", "do not ask for confirmation");
  po::positional_options_description positional;
  po::variables_map vm;
  if (!parse_args("builder prune",
                  "strata builder prune [-f]\n\nRemoves the directories RUN --mount=type=cache keeps between builds\n"
                  "(those no running build uses). The cache of built steps is kept.",
                  options, positional, args, vm)) {
    return 0;
  }
  auto store = open_store(global);
  confirm("builder prune", "This will remove all build cache mounts.", vm.count("force") != 0U);
  int removed = b::prune_cache_mounts(store.root() + "/" + kCacheMountsDir);
  std::cout << "Deleted cache mounts: " << removed << "\n";
  return 0;
}

int builder_verb(const GlobalOptions& global, const std::vector<std::string>& args) {
  return dispatch("builder", {{"prune", builder_prune}}, global, args);
}

const VerbRegistration registration("build", "build an image from a Dockerfile", build_verb);
const VerbRegistration builder_registration("builder", "builder prune: remove the build's cache mounts", builder_verb);

}  // namespace

}  // namespace strata::cli
