// strata run: run a command in a new container (docker run).
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <set>

#include "cli.hpp"
#include "registry_common.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/lifecycle.hpp"
#include "strata/sandbox.hpp"
#include "strata/store.hpp"
#include "strata/text.hpp"

namespace strata::cli {

namespace {

constexpr const char* kUsage =
    "strata run [OPTIONS] (IMAGE | --rootfs DIR) [COMMAND [ARG...]]\n\n"
    "Runs COMMAND (or the image's entrypoint and command) in a new rootless container;\n"
    "with -d in the background, under a monitor, printing the container's id.\n"
    "Exit status: the command's, 128+N when it dies of signal N, 125 when strata fails,\n"
    "126 when the command cannot be invoked, 127 when it does not exist";

// Options that take a value: everything up to the first word that is neither
// an option nor an option's value belongs to strata, the rest to the command.
const std::set<std::string> kLongWithValue = {"--env",      "--env-file", "--workdir",  "--user",     "--volume",
                                              "--name",     "--entrypoint", "--hostname", "--network", "--rootfs",
                                              "--pull",     "--platform", "--cert-dir", "--authfile",
                                              "--cap-add",  "--cap-drop", "--security-opt", "--log-opt",
                                              "--mount",    "--tmpfs",    "--publish",  "--expose", "--dns",
                                              "--add-host", "--memory",   "--memory-swap", "--cpus",
                                              "--pids-limit"};
const std::string kShortWithValue = "ewuvpm";

std::size_t split_point(const std::vector<std::string>& args) {
  std::size_t i = 0;
  while (i < args.size()) {
    const std::string& a = args[i];
    if (a == "--") return i;
    if (a.size() < 2 || a[0] != '-') return i;
    if (a[1] == '-') {
      if (a.find('=') == std::string::npos && kLongWithValue.count(a) != 0) ++i;
    } else {
      for (std::size_t k = 1; k < a.size(); ++k) {
        if (kShortWithValue.find(a[k]) != std::string::npos) {
          if (k + 1 == a.size()) ++i;  // the value is the next word
          break;                       // else the rest of the word is the value
        }
      }
    }
    ++i;
  }
  return std::min(i, args.size());
}

void add_env(const std::string& verb, std::vector<std::string>& env, const std::string& item) {
  if (item.empty()) throw UsageError(verb + ": empty environment variable");
  if (item.find('=') != std::string::npos) {
    env.push_back(item);
  } else if (const char* v = std::getenv(item.c_str()); v != nullptr) {
    env.push_back(item + "=" + v);  // docker: `-e NAME` takes the caller's value
  }
}

void read_env_file(const std::string& verb, std::vector<std::string>& env, const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(verb + ": cannot read the env file " + quote(path));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    add_env(verb, env, line.substr(first));
  }
}

// A volume source as docker tells them apart: a host path starts with '/' or
// '.' (a relative one is made absolute), anything else names a volume.
void set_volume_source(sandbox::BindMount& m, const std::string& source, const std::string& what) {
  if (source[0] == '/') {
    m.source = source;
  } else if (source[0] == '.') {
    m.source = std::filesystem::absolute(source).lexically_normal().string();
    while (m.source.size() > 1 && m.source.back() == '/') m.source.pop_back();
  } else if (store::valid_name(source)) {
    m.volume = source;  // the source is set once the store is open
  } else {
    throw UsageError(what + " " + quote(source) +
                     " is neither an absolute host path nor a volume name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128)");
  }
}

// A volume target: absolute, and not the root. An anonymous volume's is
// cleaned ("/a/../b" is "/b"); others are kept as given.
std::string volume_target(const std::string& what, const std::string& target, bool anonymous) {
  if (target.empty() || target[0] != '/') throw UsageError(what + " " + quote(target) + " is not an absolute path");
  auto clean = sandbox::clean_volume_target(target);
  if (!clean) throw UsageError(what + " " + quote(target) + " is the container's root");
  return anonymous ? *clean : target;
}

sandbox::BindMount parse_volume(const std::string& verb, const std::string& spec) {
  sandbox::BindMount m;
  if (!spec.empty() && spec[0] == '/' && spec.find(':') == std::string::npos) {
    // `-v /path`: an anonymous volume.
    m.anonymous = true;
    m.target = volume_target(verb + ": volume target", spec, true);
    return m;
  }
  std::vector<std::string> parts;
  for (std::string_view p : split(spec, ':')) parts.emplace_back(p);
  if (parts.size() == 3 && (parts[2] == "ro" || parts[2] == "rw")) {
    m.read_only = parts[2] == "ro";
    parts.pop_back();
  }
  if (parts.size() != 2 || parts[0].empty() || parts[1].empty()) {
    throw UsageError(verb + ": bad volume " + quote(spec) +
                     " (expected HOSTPATH:CTRPATH[:ro], NAME:CTRPATH[:ro] or CTRPATH)");
  }
  set_volume_source(m, parts[0], verb + ": volume source");
  m.target = volume_target(verb + ": volume target", parts[1], false);
  return m;
}

// `--mount type=bind|tmpfs,...` (docker's keys) as a volume or a tmpfs of SPEC.
void add_mount(sandbox::RunSpec& spec, const std::string& text) {
  std::string type, source, target, size, mode;
  bool read_only = false;
  for (std::string_view part : split(text, ',')) {
    std::string field(part);
    auto eq = field.find('=');
    std::string key = field.substr(0, eq), value = eq == std::string::npos ? "" : field.substr(eq + 1);
    if (key == "type") {
      type = value;
    } else if (key == "source" || key == "src") {
      source = value;
    } else if (key == "target" || key == "destination" || key == "dst") {
      target = value;
    } else if (key == "readonly" || key == "ro") {
      if (!value.empty() && value != "true" && value != "1" && value != "false" && value != "0")
        throw UsageError("bad mount " + quote(text) + ": " + quote(field));
      read_only = value.empty() || value == "true" || value == "1";
    } else if (key == "tmpfs-size") {
      size = value;
    } else if (key == "tmpfs-mode") {
      mode = value;
    } else {
      throw UsageError("bad mount " + quote(text) + ": unknown key " + quote(key));
    }
  }
  if (target.empty()) throw UsageError("bad mount " + quote(text) + ": no target");
  if (type == "bind") {
    if (!size.empty() || !mode.empty()) throw UsageError("bad mount " + quote(text) + ": tmpfs options on a bind mount");
    if (source.empty() || source[0] != '/') throw UsageError("bad mount " + quote(text) + ": the source must be an absolute host path");
    spec.volumes.push_back({source, volume_target("bad mount " + quote(text) + ": target", target, false), read_only, "", {}, {}, {}});
  } else if (type == "tmpfs") {
    if (!source.empty()) throw UsageError("bad mount " + quote(text) + ": a tmpfs has no source");
    std::string options = "rw";
    if (read_only) options = "ro";
    if (!size.empty()) options += ",size=" + size;
    if (!mode.empty()) options += ",mode=" + mode;
    spec.tmpfs.push_back(sandbox::parse_tmpfs(target + ":" + options));
  } else if (type == "volume") {
    if (!size.empty() || !mode.empty()) throw UsageError("bad mount " + quote(text) + ": tmpfs options on a volume");
    if (!source.empty() && (source[0] == '/' || source[0] == '.'))
      throw UsageError("bad mount " + quote(text) + ": the source must be a volume name");
    sandbox::BindMount m;
    if (source.empty()) {
      m.anonymous = true;  // no source: an anonymous volume
    } else {
      set_volume_source(m, source, "bad mount " + quote(text) + ": source");
    }
    m.target = volume_target("bad mount " + quote(text) + ": target", target, m.anonymous);
    m.read_only = read_only;
    spec.volumes.push_back(m);
  } else {
    throw UsageError("bad mount " + quote(text) + ": type must be bind, volume or tmpfs");
  }
}

// `--security-opt`: seccomp=unconfined, seccomp=FILE (docker's JSON format),
// and no-new-privileges, which strata always sets.
void apply_security_opt(const std::string& verb, sandbox::RunSpec& spec, std::string& profile_text,
                        const std::string& opt) {
  auto eq = opt.find_first_of("=:");
  std::string key = opt.substr(0, eq), value = eq == std::string::npos ? "" : opt.substr(eq + 1);
  if (key == "no-new-privileges" && (value.empty() || value == "true")) return;
  if (key == "seccomp" && !value.empty()) {
    if (value == "unconfined") {
      spec.seccomp.reset();
      profile_text.clear();
    } else {
      std::string text;
      try {
        text = read_file(value);
      } catch (const Error& e) {
        throw UsageError(verb + ": seccomp profile: " + e.what());
      }
      spec.seccomp = sandbox::parse_seccomp_profile(text, "seccomp profile " + quote(value));
      profile_text = text;
    }
    return;
  }
  throw UsageError(verb + ": unsupported security option " + quote(opt) +
                   " (seccomp=unconfined, seccomp=FILE or no-new-privileges)");
}

// `run -d`: the container is created, then started under its monitor; one
// that cannot start is removed, as a foreground run removes it.
int run_detached(const std::string& root, const sandbox::ContainerRunOptions& o, const lifecycle::LogOptions& log) {
  auto store = store::Store::open(root);
  store::Container c = store.create_container(o.image, o.name, sandbox::volume_names(o), sandbox::volume_names(o, true));
  try {
    lifecycle::save_config(c, o, log);
    lifecycle::start_detached(root, c, o, log, o.remove);
  } catch (...) {
    try {
      lifecycle::wait_stopped(store, c, 10000);  // the monitor lets go once its log is written
      store.remove_container(c.id, true, true);
    } catch (const Error&) {
      // Reported by the error that caused the cleanup.
    }
    throw;
  }
  std::cout << c.id << std::endl;
  return 0;
}

// The options that set what a container runs and how, which `run` and
// `create` share (a created container keeps them for `start`).
void add_container_options(po::options_description& options) {
  options.add_options()
      ("tty,t", po::bool_switch(), "give the command a pseudo-terminal")
      ("init", po::bool_switch(), "run a reaper as pid 1 that passes on signals and reaps orphans")
      ("log-opt", po::value<std::vector<std::string>>()->composing(), "with -d: max-size=SIZE (default 10m) or max-file=N (default 2)")
      ("env,e", po::value<std::vector<std::string>>()->composing(), "set an environment variable (KEY=VALUE, or KEY to take the caller's value)")
      ("env-file", po::value<std::vector<std::string>>()->composing(), "read environment variables from a file, one KEY=VALUE a line")
      ("workdir,w", po::value<std::string>(), "working directory inside the container (created when missing)")
      ("user,u", po::value<std::string>(), "run as USER[:GROUP] or UID[:GID] of the image")
      ("volume,v", po::value<std::vector<std::string>>()->composing(), "bind a host path, mount a named volume (created when missing) or a new anonymous one: HOSTPATH:CTRPATH[:ro], NAME:CTRPATH[:ro] or CTRPATH")
      ("mount", po::value<std::vector<std::string>>()->composing(), "type=bind,source=HOSTPATH,target=CTRPATH[,readonly], type=volume[,source=NAME],target=CTRPATH[,readonly] (no source: an anonymous volume) or type=tmpfs,target=CTRPATH[,tmpfs-size=N][,tmpfs-mode=OCTAL]")
      ("tmpfs", po::value<std::vector<std::string>>()->composing(), "mount a tmpfs: CTRPATH[:OPTIONS] (default rw,noexec,nosuid,nodev)")
      ("read-only", po::bool_switch(), "mount the container's root read-only")
      ("name", po::value<std::string>(), "name of the container")
      ("entrypoint", po::value<std::string>(), "override the image's entrypoint ('' clears it)")
      ("hostname", po::value<std::string>(), "host name inside the container")
      ("network", po::value<std::string>()->default_value("private"), "private (the default; 'bridge' also names it: a network namespace of its own, connected through slirp4netns), host (share the host's network) or none (loopback only)")
      ("publish,p", po::value<std::vector<std::string>>()->composing(), "publish container ports on the host (private network): [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp], ports or ranges FIRST-LAST; without HOSTPORT one is chosen")
      ("publish-all,P", po::bool_switch(), "publish every exposed port (the image's EXPOSE and --expose) to a chosen host port")
      ("expose", po::value<std::vector<std::string>>()->composing(), "expose a port or a range: PORT[/tcp|/udp] (published by -P)")
      ("dns", po::value<std::vector<std::string>>()->composing(), "a DNS server for the container's /etc/resolv.conf (repeatable)")
      ("add-host", po::value<std::vector<std::string>>()->composing(), "add NAME:IP to the container's /etc/hosts (IP may be host-gateway)")
      ("cap-add", po::value<std::vector<std::string>>()->composing(), "add a capability to docker's default set (NAME or ALL)")
      ("cap-drop", po::value<std::vector<std::string>>()->composing(), "drop a capability from docker's default set (NAME or ALL)")
      ("privileged", po::bool_switch(), "every capability and no seccomp filter")
      ("security-opt", po::value<std::vector<std::string>>()->composing(), "seccomp=unconfined, seccomp=PROFILE.json (docker's format) or no-new-privileges")
      ("memory,m", po::value<std::string>(), "memory limit (cgroup v2 memory.max): SIZE such as 512m or 1g")
      ("memory-swap", po::value<std::string>(), "memory plus swap limit: SIZE (at least --memory) or -1 for unlimited swap (default: twice --memory)")
      ("cpus", po::value<std::string>(), "CPU limit (cgroup v2 cpu.max): a decimal number of CPUs such as 0.5")
      ("pids-limit", po::value<std::string>(), "limit on the container's processes and threads (pids.max); 0 or -1: none");
  add_pull_options(options);
}

// What add_container_options' options say, read by VERB ("run" or
// "create"); the image and command come from the caller.
struct ContainerSettings {
  sandbox::RunSpec spec;
  std::string profile_text;  // the JSON of --security-opt seccomp=FILE
  std::string name;
  std::optional<std::string> entrypoint, workdir;
  lifecycle::LogOptions log;
  bool publish_all = false;         // -P
  std::vector<std::string> expose;  // --expose, as "80/tcp" keys
};

ContainerSettings read_container_settings(const std::string& verb, const po::variables_map& vm) {
  ContainerSettings s;
  sandbox::RunSpec& spec = s.spec;
  auto strings = [&](const char* key) {
    return vm.count(key) != 0U ? vm[key].as<std::vector<std::string>>() : std::vector<std::string>{};
  };
  spec.interactive = vm.count("interactive") != 0U && vm["interactive"].as<bool>();
  spec.tty = vm["tty"].as<bool>();
  for (const auto& f : strings("env-file")) read_env_file(verb, spec.env, f);
  for (const auto& e : strings("env")) add_env(verb, spec.env, e);
  for (const auto& v : strings("volume")) spec.volumes.push_back(parse_volume(verb, v));
  try {
    for (const auto& t : strings("tmpfs")) spec.tmpfs.push_back(sandbox::parse_tmpfs(t));
    for (const auto& m : strings("mount")) add_mount(spec, m);
  } catch (const Error& e) {
    throw UsageError(verb + ": " + e.what());
  }
  spec.read_only_root = vm["read-only"].as<bool>();
  if (vm.count("user") != 0U) spec.user = vm["user"].as<std::string>();
  bool privileged = vm["privileged"].as<bool>();
  try {
    spec.capabilities = sandbox::capability_set(strings("cap-add"), strings("cap-drop"), privileged);
  } catch (const Error& e) {
    throw UsageError(verb + ": " + e.what());
  }
  if (privileged) spec.seccomp.reset();
  for (const auto& opt : strings("security-opt")) apply_security_opt(verb, spec, s.profile_text, opt);
  spec.init = vm["init"].as<bool>();
  for (const auto& opt : strings("log-opt")) lifecycle::parse_log_opt(s.log, opt);
  try {
    spec.network = sandbox::parse_network(vm["network"].as<std::string>());
    for (const auto& p : strings("publish"))
      for (auto& port : sandbox::parse_publish(p)) spec.ports.push_back(port);
    sandbox::check_ports(spec.ports);
    for (const auto& e : strings("expose"))
      for (auto& key : sandbox::parse_expose(e)) s.expose.push_back(key);
    for (const auto& d : strings("dns")) {
      sandbox::check_dns_server(d);
      spec.dns.push_back(d);
    }
    for (const auto& h : strings("add-host")) spec.extra_hosts.push_back(sandbox::parse_add_host(h));
  } catch (const Error& e) {
    throw UsageError(verb + ": " + e.what());
  }
  s.publish_all = vm["publish-all"].as<bool>();
  if ((!spec.ports.empty() || s.publish_all) && spec.network != sandbox::Network::private_net) {
    throw UsageError(verb + ": " + (spec.ports.empty() ? "-P" : "-p") +
                     " publishes ports of a private network, not with --network " + sandbox::network_name(spec.network));
  }
  try {
    sandbox::Resources& r = spec.resources;
    if (vm.count("memory") != 0U) r.memory = sandbox::parse_memory_size(vm["memory"].as<std::string>(), "--memory");
    if (vm.count("memory-swap") != 0U) r.memory_swap = sandbox::parse_memory_swap(vm["memory-swap"].as<std::string>());
    if (vm.count("cpus") != 0U) r.nano_cpus = sandbox::parse_cpus(vm["cpus"].as<std::string>());
    if (vm.count("pids-limit") != 0U) r.pids_limit = sandbox::parse_pids_limit(vm["pids-limit"].as<std::string>());
    sandbox::check_resources(r);
  } catch (const Error& e) {
    throw UsageError(verb + ": " + e.what());
  }
  s.name = vm.count("name") != 0U ? vm["name"].as<std::string>() : "";
  spec.hostname = vm.count("hostname") != 0U ? vm["hostname"].as<std::string>() : "strata";
  if (spec.hostname.empty() || spec.hostname.size() > 64) throw UsageError(verb + ": bad host name " + quote(spec.hostname));
  if (vm.count("entrypoint") != 0U) s.entrypoint = vm["entrypoint"].as<std::string>();
  if (vm.count("workdir") != 0U) s.workdir = vm["workdir"].as<std::string>();
  return s;
}

// The image config's Volumes (Dockerfile VOLUME): its keys.
std::vector<std::string> image_volume_paths(const store::Image& image) {
  std::vector<std::string> out;
  if (!image.config.contains("config") || !image.config["config"].is_object()) return out;
  const auto& cfg = image.config["config"];
  if (!cfg.contains("Volumes") || !cfg["Volumes"].is_object()) return out;
  for (auto it = cfg["Volumes"].begin(); it != cfg["Volumes"].end(); ++it) out.push_back(it.key());
  return out;
}

// The container REST names (its image, then the command), with the image
// pulled when the store lacks it.
sandbox::ContainerRunOptions container_run_options(const std::string& verb, const std::string& root,
                                                   const ContainerSettings& s, const po::variables_map& vm,
                                                   const std::vector<std::string>& rest) {
  const sandbox::RunSpec& spec = s.spec;
  sandbox::ContainerRunOptions o;
  {
    // Pull progress goes to stderr: stdout is the command's.
    auto store = store::Store::open(root);
    o.image = ensure_image(store, rest.at(0), pull_policy(vm, verb.c_str()), vm, std::cerr);
    o.volumes = spec.volumes;
    o.tmpfs = spec.tmpfs;
    sandbox::add_image_volumes(o, image_volume_paths(store.image(o.image, store::Layers::as_blobs)));
    for (auto& v : o.volumes) {
      if (v.anonymous) v.volume = store::new_volume_name();
      if (!v.volume.empty()) v.source = store.volume_data(v.volume);
    }
  }
  o.args.assign(rest.begin() + 1, rest.end());
  o.name = s.name;
  o.entrypoint = s.entrypoint;
  o.env = spec.env;
  o.workdir = s.workdir;
  if (vm.count("user") != 0U) o.user = spec.user;
  if (vm.count("hostname") != 0U) o.hostname = spec.hostname;
  o.tty = spec.tty;
  o.interactive = spec.interactive;
  o.open_stdin = spec.interactive;
  o.network = spec.network;
  o.fill_volume = fill_new_volume;
  o.ports = spec.ports;
  o.publish_all = s.publish_all;
  o.expose = s.expose;
  o.dns = spec.dns;
  o.extra_hosts = spec.extra_hosts;
  o.read_only_root = spec.read_only_root;
  o.capabilities = spec.capabilities;
  o.seccomp = spec.seccomp;
  o.seccomp_profile_text = s.profile_text;
  o.init = spec.init;
  o.resources = spec.resources;
  return o;
}

// Splits ARGS into the verb's own options and the image with its command.
std::pair<std::vector<std::string>, std::vector<std::string>> split_run_args(const std::vector<std::string>& args) {
  std::size_t split = split_point(args);
  std::vector<std::string> own(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(split));
  std::vector<std::string> rest(args.begin() + static_cast<std::ptrdiff_t>(split), args.end());
  if (!rest.empty() && rest[0] == "--") rest.erase(rest.begin());
  return {own, rest};
}

int run_verb(const GlobalOptions& global, const std::vector<std::string>& args) {
  auto [own, rest] = split_run_args(args);
  po::options_description options("Options");
  options.add_options()
      ("interactive,i", po::bool_switch(), "keep stdin open and pass it to the command")
      ("detach,d", po::bool_switch(), "run in the background and print the container id")
      ("rm", po::bool_switch(), "remove the container when the command ends")
      ("rootfs", po::value<std::string>(), "run in the directory DIR instead of an image (changes are made in DIR)");
  add_container_options(options);
  po::variables_map vm;
  if (!parse_args("run", kUsage, options, po::positional_options_description(), own, vm)) return 0;

  ContainerSettings s = read_container_settings("run", vm);
  sandbox::RunSpec& spec = s.spec;
  bool detach = vm["detach"].as<bool>();

  if (vm.count("rootfs") == 0U) {
    if (rest.empty()) throw UsageError("run: an IMAGE or --rootfs DIR is required (see 'strata run --help')");
    std::string root = global.root.empty() ? store::default_root() : global.root;
    sandbox::ContainerRunOptions o = container_run_options("run", root, s, vm, rest);
    o.remove = vm["rm"].as<bool>();
    if (detach) return run_detached(root, o, s.log);
    return sandbox::run_image(root, o);
  }
  if (detach) throw UsageError("run: -d needs an IMAGE (a --rootfs run makes no container)");
  if (!s.name.empty()) throw UsageError("run: --name needs an IMAGE (a --rootfs run makes no container)");
  for (const auto& v : spec.volumes)
    if (!v.volume.empty() || v.anonymous)
      throw UsageError("run: volume " + quote(v.anonymous ? v.target : v.volume) +
                       " needs an IMAGE (a --rootfs run has no store)");
  if (s.publish_all) throw UsageError("run: -P needs an IMAGE (a --rootfs run has no exposed ports)");
  for (const auto& p : spec.ports)
    if (p.host_port == 0)
      throw UsageError("run: -p without a host port needs an IMAGE (a --rootfs run makes no container to show the chosen port)");
  spec.rootfs = vm["rootfs"].as<std::string>();
  spec.argv = sandbox::combine_command({}, {}, s.entrypoint, rest);
  if (spec.argv.empty()) throw UsageError("run: no command given");
  spec.workdir = s.workdir ? *s.workdir : "/";
  spec.cgroup_name = sandbox::container_cgroup_name("run-" + std::to_string(::getpid()));
  return sandbox::run(spec);
}

constexpr const char* kCreateUsage =
    "strata create [OPTIONS] IMAGE [COMMAND [ARG...]]\n\n"
    "Creates a container from IMAGE with the settings of strata run (kept for strata\n"
    "start) and prints its id; nothing runs until it is started.\n"
    "Exit status: 0 created, 1 it could not be created, 2 bad usage";

int create_verb(const GlobalOptions& global, const std::vector<std::string>& args) {
  auto [own, rest] = split_run_args(args);
  po::options_description options("Options");
  add_container_options(options);
  po::variables_map vm;
  if (!parse_args("create", kCreateUsage, options, po::positional_options_description(), own, vm)) return 0;
  ContainerSettings s = read_container_settings("create", vm);
  if (rest.empty()) throw UsageError("create: an IMAGE is required (see 'strata create --help')");
  std::string root = global.root.empty() ? store::default_root() : global.root;
  sandbox::ContainerRunOptions o = container_run_options("create", root, s, vm, rest);
  auto store = store::Store::open(root);
  store::Container c = store.create_container(o.image, o.name, sandbox::volume_names(o), sandbox::volume_names(o, true));
  try {
    lifecycle::save_config(c, o, s.log);
  } catch (...) {
    try {
      store.remove_container(c.id, true, true);
    } catch (const Error&) {
      // Reported by the error that caused the cleanup.
    }
    throw;
  }
  std::cout << c.id << "\n";
  return 0;
}

// docker run reports its own failures with 125, whatever they were.
int run_main(const GlobalOptions& global, const std::vector<std::string>& args) {
  try {
    return run_verb(global, args);
  } catch (const Error& e) {
    if (e.code() == ExitCode::failure || e.code() == ExitCode::usage) throw Error(e.what(), ExitCode::run_failed);
    throw;
  }
}

const VerbRegistration kRun("run", "run a command in a new container", run_main);
const VerbRegistration kCreate("create", "create a container from an image", create_verb);

}  // namespace

}  // namespace strata::cli
