// `strata run IMAGE`: a container from the store, its union mounted by
// stratafs inside the container, and the image config combined with the
// command line as docker does.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "strata/error.hpp"
#include "strata/lifecycle.hpp"
#include "strata/sandbox.hpp"
#include "strata/store.hpp"
#include "strata/stratafs_client.hpp"

namespace strata::sandbox {

namespace {

std::vector<std::string> string_list(const oci::json& config, const char* key) {
  std::vector<std::string> out;
  if (!config.is_object()) return out;
  auto it = config.find(key);
  if (it == config.end() || !it->is_array()) return out;
  for (const auto& v : *it) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

std::string string_field(const oci::json& config, const char* key) {
  if (!config.is_object()) return {};
  auto it = config.find(key);
  return it != config.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// The exposed ports of container C: the image's ExposedPorts keys and
// `--expose`, sorted, each once.
std::vector<std::string> exposed_ports(const oci::json& cfg, const ContainerRunOptions& o) {
  std::set<std::string> keys(o.expose.begin(), o.expose.end());
  if (cfg.is_object() && cfg.contains("ExposedPorts") && cfg["ExposedPorts"].is_object())
    for (const auto& [key, value] : cfg["ExposedPorts"].items()) keys.insert(key);
  return {keys.begin(), keys.end()};
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create " + quote(path));
}

// The image config CFG combined with O as docker does: Env (the image's,
// then O's), WorkingDir, User and the host name (the short id by default).
void apply_container_settings(RunSpec& spec, const oci::json& cfg, const ContainerRunOptions& o, const store::Container& c) {
  spec.env = string_list(cfg, "Env");
  spec.env.insert(spec.env.end(), o.env.begin(), o.env.end());
  spec.workdir = o.workdir ? *o.workdir : string_field(cfg, "WorkingDir");
  if (spec.workdir.empty()) spec.workdir = "/";
  spec.user = o.user ? *o.user : string_field(cfg, "User");
  spec.hostname = o.hostname ? *o.hostname : c.id.substr(0, 12);
}

}  // namespace

std::vector<std::string> volume_names(const ContainerRunOptions& o, bool anonymous) {
  std::vector<std::string> out;
  for (const auto& v : o.volumes)
    if (!v.volume.empty() && v.anonymous == anonymous) out.push_back(v.volume);
  return out;
}

std::optional<std::string> clean_volume_target(const std::string& path) {
  if (path.empty() || path[0] != '/') return std::nullopt;
  std::string out = std::filesystem::path(path).lexically_normal().string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  if (out == "/") return std::nullopt;
  return out;
}

void add_image_volumes(ContainerRunOptions& o, const std::vector<std::string>& image_volumes) {
  if (image_volumes.size() > kMaxImageVolumes) {
    throw Error("the image " + quote(o.image) + " declares " + std::to_string(image_volumes.size()) +
                " volumes (at most " + std::to_string(kMaxImageVolumes) + ")");
  }
  std::set<std::string> covered;
  for (const auto& v : o.volumes) covered.insert(clean_volume_target(v.target).value_or(v.target));
  for (const auto& t : o.tmpfs) covered.insert(clean_volume_target(t.target).value_or(t.target));
  for (const auto& path : image_volumes) {
    auto target = clean_volume_target(path);
    if (!target) {
      throw Error("the image " + quote(o.image) + " declares the volume " + quote(path) +
                  (path.empty() || path[0] != '/' ? ", which is not an absolute path" : " over its root"));
    }
    if (!covered.insert(*target).second) continue;  // the user's mount, or a duplicate, wins
    BindMount m;
    m.target = *target;
    m.anonymous = true;
    o.volumes.push_back(m);
  }
  // Parents first, as docker orders mounts, so that none hides another.
  auto depth = [](const BindMount& m) {
    std::string t = clean_volume_target(m.target).value_or(m.target);
    return std::count(t.begin(), t.end(), '/');
  };
  std::stable_sort(o.volumes.begin(), o.volumes.end(),
                   [&](const BindMount& a, const BindMount& b) { return depth(a) < depth(b); });
}

std::vector<std::string> combine_command(const std::vector<std::string>& image_entrypoint,
                                         const std::vector<std::string>& image_cmd,
                                         const std::optional<std::string>& entrypoint_flag,
                                         const std::vector<std::string>& args) {
  std::vector<std::string> out;
  if (entrypoint_flag) {
    if (!entrypoint_flag->empty()) out.push_back(*entrypoint_flag);
  } else {
    out = image_entrypoint;
  }
  if (!args.empty()) {
    out.insert(out.end(), args.begin(), args.end());
  } else if (!entrypoint_flag) {
    out.insert(out.end(), image_cmd.begin(), image_cmd.end());
  }
  return out;
}

int run_container(store::Store& store, const store::Container& c, const ContainerRunOptions& o,
                  const std::function<void()>& after_start) {
  store::Image image = store.image_by_manifest(c.image);
  const oci::json empty = oci::json::object();
  const oci::json& cfg = image.config.contains("config") ? image.config["config"] : empty;

  RunSpec spec;
  spec.argv = combine_command(string_list(cfg, "Entrypoint"), string_list(cfg, "Cmd"), o.entrypoint, o.args);
  if (spec.argv.empty()) {
    throw Error("no command given and the image " + quote(c.image_name) + " has none", ExitCode::run_failed);
  }
  apply_container_settings(spec, cfg, o, c);
  spec.tty = o.tty;
  spec.interactive = o.interactive;
  spec.network = o.network;
  spec.ports = o.publish_all ? publish_exposed(o.ports, exposed_ports(cfg, o)) : o.ports;
  spec.dns = o.dns;
  spec.extra_hosts = o.extra_hosts;
  spec.volumes = o.volumes;
  // A volume removed with `volume rm -f` since is made again, empty.
  for (auto& v : spec.volumes) {
    if (v.volume.empty()) continue;
    std::map<std::string, std::string> labels;
    if (v.anonymous) labels[store::kAnonymousVolumeLabel] = "";
    v.source = store.create_volume(v.volume, labels).data;
  }
  spec.fill_volume = o.fill_volume;
  spec.tmpfs = o.tmpfs;
  spec.read_only_root = o.read_only_root;
  spec.capabilities = o.capabilities;
  spec.seccomp = o.seccomp;
  spec.init = o.init;
  spec.resources = o.resources;
  spec.cgroup_name = container_cgroup_name(c.id);
  spec.state_dir = c.dir;
  // What a SIGKILLed earlier run left on the host.
  remove_leftovers(c.dir);

  spec.rootfs = c.dir + "/rootfs";
  make_dir(spec.rootfs);
  UnionRoot u;
  u.stratafs = o.stratafs.empty() ? fs::find_stratafs() : o.stratafs;
  u.lowerdirs = image.layer_dirs;
  u.initdir = c.dir + "/init";
  u.upperdir = c.upper;
  u.workdir = c.work;
  spec.union_root = std::move(u);

  lifecycle::State state;
  spec.on_started = [&](pid_t pid1, const std::vector<PortMapping>& published) {
    state.status = "running";
    state.pid = pid1;
    state.ports = published;
    state.monitor_pid = ::getpid();
    state.started_at = lifecycle::rfc3339_nano_now();
    lifecycle::write_state(c, state);
    if (after_start) after_start();
  };
  auto finish = [&](int code, const std::string& error) {
    state.status = "exited";
    state.pid = 0;
    state.ports.clear();
    state.exit_code = code;
    state.error = error;
    state.finished_at = lifecycle::rfc3339_nano_now();
    try {
      lifecycle::write_state(c, state);
    } catch (const Error&) {
      // The container was removed meanwhile (`rm -f`).
    }
  };
  int status = 0;
  try {
    status = run(spec);
  } catch (const Error& e) {
    finish(static_cast<int>(e.code() == ExitCode::failure ? ExitCode::run_failed : e.code()), e.what());
    throw;
  }
  finish(status, "");
  return status;
}

int run_image(const std::string& store_root, const ContainerRunOptions& o) {
  auto store = store::Store::open(store_root);
  store::Container c = store.create_container(o.image, o.name, volume_names(o), volume_names(o, true));
  lifecycle::save_config(c, o);
  std::optional<store::Store::ContainerLock> use;
  auto cleanup = [&] {
    try {
      store.remove_container(c.id, true, true);
    } catch (const Error&) {
      // Reported by the error that caused the cleanup, if any.
    }
  };
  int status = 0;
  try {
    use.emplace(store.lock_container(c));
    status = run_container(store, c, o);
  } catch (...) {
    use.reset();
    cleanup();
    throw;
  }
  use.reset();
  if (o.remove) cleanup();
  return status;
}

oci::json inspect_container(const store::Store& store, const store::Container& c) {
  using oci::json;
  ContainerRunOptions o = lifecycle::load_config(c).value_or(ContainerRunOptions{});
  json j = {{"Id", c.id}, {"Name", c.name}, {"Image", c.image.str()}, {"ImageName", c.image_name}, {"Created", c.created}};
  lifecycle::State state = lifecycle::container_state(store, c);
  j["State"] = state.to_json();
  std::string lower;
  json cfg = json::object();
  try {
    store::Image image = store.image_by_manifest(c.image);
    lower = image.lowerdir();
    if (image.config.contains("config") && image.config["config"].is_object()) cfg = image.config["config"];
  } catch (const Error&) {
    // The image is gone (removed with -f): the container's own settings remain.
  }
  std::vector<std::string> entrypoint = o.entrypoint ? (o.entrypoint->empty() ? std::vector<std::string>{}
                                                                               : std::vector<std::string>{*o.entrypoint})
                                                     : string_list(cfg, "Entrypoint");
  std::vector<std::string> cmd = !o.args.empty() ? o.args : o.entrypoint ? std::vector<std::string>{} : string_list(cfg, "Cmd");
  std::vector<std::string> env = string_list(cfg, "Env");
  env.insert(env.end(), o.env.begin(), o.env.end());
  std::string workdir = o.workdir ? *o.workdir : string_field(cfg, "WorkingDir");
  j["Config"] = {{"Hostname", o.hostname ? *o.hostname : c.id.substr(0, 12)},
                 {"User", o.user ? *o.user : string_field(cfg, "User")},
                 {"Tty", o.tty},
                 {"OpenStdin", o.open_stdin},
                 {"Env", env},
                 {"Cmd", cmd},
                 {"Entrypoint", entrypoint},
                 {"WorkingDir", workdir.empty() ? "/" : workdir},
                 {"Image", c.image_name},
                 {"StopSignal", string_field(cfg, "StopSignal").empty() ? "SIGTERM" : string_field(cfg, "StopSignal")}};
  json binds = json::array();
  json mounts = json::array();
  for (const auto& v : o.volumes) {
    if (!v.anonymous)
      binds.push_back((v.volume.empty() ? v.source : v.volume) + ":" + v.target + (v.read_only ? ":ro" : ""));
    json m = {{"Type", v.volume.empty() ? "bind" : "volume"}, {"Source", v.source}, {"Destination", v.target},
              {"RW", !v.read_only}, {"Mode", v.read_only ? "ro" : ""}, {"Propagation", v.volume.empty() ? "rprivate" : ""}};
    if (!v.volume.empty()) {
      m["Name"] = v.volume;
      m["Driver"] = "local";
    }
    mounts.push_back(m);
  }
  json tmpfs = json::object();
  for (const auto& t : o.tmpfs) tmpfs[t.target] = t.options;
  // docker's shape: {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}]},
  // HostPort "" for a port chosen at start (what was asked for), the port
  // chosen in NetworkSettings (what runs).
  auto bindings = [](const std::vector<PortMapping>& ports) {
    json out = json::object();
    for (const auto& p : ports) {
      std::string key = std::to_string(p.container_port) + "/" + p.protocol;
      if (!out.contains(key)) out[key] = json::array();
      out[key].push_back({{"HostIp", p.host_ip}, {"HostPort", p.host_port == 0 ? "" : std::to_string(p.host_port)}});
    }
    return out;
  };
  json port_bindings = bindings(o.ports);
  json exposed = json::object();
  for (const auto& key : exposed_ports(cfg, o)) exposed[key] = json::object();
  json extra_hosts = json::array();
  for (const auto& h : o.extra_hosts) extra_hosts.push_back(h.name + ":" + h.ip);
  bool private_running = o.network == Network::private_net && state.running();
  j["NetworkSettings"] = {{"IPAddress", private_running ? kPrivateAddress : ""},
                          {"IPPrefixLen", private_running ? 24 : 0},
                          {"Gateway", private_running ? kPrivateGateway : ""},
                          {"Ports", private_running ? bindings(state.ports) : json::object()}};
  if (!exposed.empty()) j["Config"]["ExposedPorts"] = exposed;
  j["HostConfig"] = {{"NetworkMode", network_name(o.network)},
                     {"PortBindings", port_bindings},
                     {"PublishAllPorts", o.publish_all},
                     {"Dns", o.dns},
                     {"ExtraHosts", extra_hosts},
                     {"Binds", binds},
                     {"Tmpfs", tmpfs},
                     {"ReadonlyRootfs", o.read_only_root},
                     {"Init", o.init},
                     {"Memory", o.resources.memory},
                     {"MemorySwap", o.resources.memory_swap},
                     {"NanoCpus", o.resources.nano_cpus},
                     {"PidsLimit", o.resources.pids_limit > 0 ? json(o.resources.pids_limit) : json(nullptr)},
                     {"Privileged", !o.seccomp && o.capabilities == capability_set({"ALL"}, {}, false)},
                     {"SecurityOpt", o.seccomp ? json::array() : json::array({"seccomp=unconfined"})},
                     {"LogConfig", {{"Type", "k8s-file"}, {"Path", c.dir + "/ctr.log"}}}};
  j["LogPath"] = c.dir + "/ctr.log";
  j["GraphDriver"] = {{"Name", "stratafs"},
                      {"Data", {{"LowerDir", lower}, {"UpperDir", c.upper}, {"WorkDir", c.work}, {"MergedDir", c.dir + "/rootfs"}}}};
  j["Mounts"] = mounts;
  j["MountedAt"] = store.mounted_at(c);
  return j;
}

RunSpec exec_spec(const store::Store& store, const store::Container& c) {
  ContainerRunOptions o = lifecycle::load_config(c).value_or(ContainerRunOptions{});
  store::Image image = store.image_by_manifest(c.image);
  const oci::json empty = oci::json::object();
  const oci::json& cfg = image.config.contains("config") ? image.config["config"] : empty;
  RunSpec spec;
  apply_container_settings(spec, cfg, o, c);
  spec.capabilities = o.capabilities;
  spec.seccomp = o.seccomp;
  spec.cgroup_name = container_cgroup_name(c.id);
  return spec;
}

ContainerRunOptions start_options(const store::Container& c, const ContainerRunOptions& given) {
  ContainerRunOptions o = lifecycle::load_config(c).value_or(given);
  o.interactive = given.interactive;
  o.tty = o.tty || given.tty;
  o.fill_volume = given.fill_volume;
  return o;
}

int start_container(const std::string& store_root, const std::string& container, const ContainerRunOptions& o) {
  auto store = store::Store::open(store_root);
  store::Container c = store.container(container);
  auto use = store.lock_container(c);  // refuses a container that is running
  // Two unions on one upper would each cache what the other changes.
  if (auto m = store.mounted_at(c); !m.empty())
    throw Error("container " + quote(c.name) + " is mounted at " + quote(m[0]) + " (unmount it first)", ExitCode::run_failed);
  return run_container(store, c, start_options(c, o));
}

}  // namespace strata::sandbox
