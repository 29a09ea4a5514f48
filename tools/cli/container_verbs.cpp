// Container verbs: ps, rm, mount, umount, diff, port, commit.
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <climits>
#include <csignal>
#include <optional>
#include <cstdlib>
#include <iostream>

#include "cli.hpp"
#include "format.hpp"
#include "registry_common.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/lifecycle.hpp"

namespace strata::cli {
namespace {

using oci::json;

// The command a container runs, as docker's COMMAND column shows it: the
// image's entrypoint and cmd, quoted; "" when the image cannot be read.
std::string container_command(const store::Store& store, const store::Container& c, bool no_trunc) {
  std::string command;
  try {
    auto img = store.image_by_manifest(c.image, store::Layers::as_blobs);
    if (img.config.contains("config") && img.config["config"].is_object()) {
      const json& config = img.config["config"];
      for (const char* part : {"Entrypoint", "Cmd"})
        if (config.contains(part) && config[part].is_array())
          for (const auto& a : config[part])
            if (a.is_string()) command += (command.empty() ? "" : " ") + a.get<std::string>();
    }
  } catch (const Error&) {
    return "";
  }
  return json(ellipsis(command, 20, no_trunc)).dump(-1, ' ', false, json::error_handler_t::replace);
}

// docker's PORTS column: a running container's published ports,
// "127.0.0.1:8080->80/tcp, 0.0.0.0:5353-5354->53-54/udp".
std::string container_ports(const lifecycle::State& state) {
  return state.running() ? sandbox::format_ports(state.ports) : "";
}

// What --filter leaves of the ps listing (docker's keys and meanings).
class ContainerFilter {
 public:
  ContainerFilter(const store::Store& store, const po::variables_map& vm) {
    for (auto& [key, value] : filters(vm, "ps", {"status", "name", "id", "ancestor"})) {
      if (key == "status") {
        static const std::vector<std::string> states{"created", "running", "mounted", "paused",
                                                     "restarting", "removing", "exited", "dead"};
        if (std::find(states.begin(), states.end(), value) == states.end())
          throw UsageError("ps: --filter status=" + value +
                           ": created, running, mounted, paused, restarting, removing, exited or dead");
        statuses_.push_back(value);
      } else if (key == "name") {
        names_.push_back(value);
      } else if (key == "id") {
        ids_.push_back(value);
      } else {
        ancestors_.push_back(store.image(value, store::Layers::as_blobs).manifest_digest);
      }
    }
  }

  // STATUS: the container's status as ps shows it ("Running", "Up 3 minutes").
  bool matches(const store::Container& c, const std::string& status) const {
    auto any = [](const auto& list, auto pred) {
      return list.empty() || std::any_of(list.begin(), list.end(), pred);
    };
    std::string state = status.substr(0, status.find(' '));
    std::transform(state.begin(), state.end(), state.begin(), [](unsigned char ch) { return std::tolower(ch); });
    if (state == "up") state = "running";
    return any(statuses_, [&](const std::string& s) { return s == state; }) &&
           any(names_, [&](const std::string& n) { return c.name.find(n) != std::string::npos; }) &&
           any(ids_, [&](const std::string& i) { return c.id.starts_with(i); }) &&
           any(ancestors_, [&](const oci::Digest& d) { return c.image == d; });
  }

 private:
  std::vector<std::string> statuses_;
  std::vector<std::string> names_;
  std::vector<std::string> ids_;
  std::vector<oci::Digest> ancestors_;
};

int ps_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("all,a", "show all containers (the default: every container is shown)")(
      "quiet,q", "only show container ids")("no-trunc", "do not truncate ids and commands")(
      "format", po::value<std::string>(), "table (default), json, or a Go template: '{{.ID}} {{.Names}}'")(
      "filter,f", po::value<std::vector<std::string>>(),
      "status=STATE, name=TEXT, id=PREFIX, ancestor=IMAGE (repeatable)");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("ps", "strata ps [-a] [-q] [--no-trunc] [--filter KEY=VALUE]... [--format FORMAT]", opts, pos, args,
                  vm))
    return 0;
  Format format(format_option(vm),
                "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}",
                {{"ID", "CONTAINER ID"},
                 {"Image", "IMAGE"},
                 {"Command", "COMMAND"},
                 {"CreatedAt", "CREATED AT"},
                 {"RunningFor", "CREATED"},
                 {"Status", "STATUS"},
                 {"Ports", "PORTS"},
                 {"Names", "NAMES"},
                 {"Mounts", "MOUNTS"}});
  auto store = open_store(g);
  ContainerFilter filter(store, vm);
  bool no_trunc = vm.count("no-trunc") != 0U;
  json out = json::array();
  std::vector<json> rows;
  for (const auto& c : store.containers()) {
    auto mounts = store.mounted_at(c);
    lifecycle::State state = lifecycle::container_state(store, c);
    std::string status = !state.running() && !mounts.empty() ? "Mounted" : lifecycle::status_text(state);
    if (!filter.matches(c, status)) continue;
    std::string ports = container_ports(state);
    rows.push_back({{"ID", no_trunc ? c.id : c.id.substr(0, 12)},
                    {"Image", c.image_name},
                    {"Command", container_command(store, c, no_trunc)},
                    {"CreatedAt", local_time(c.created)},
                    {"RunningFor", human_ago(c.created)},
                    {"Status", status},
                    {"Ports", ports},
                    {"Names", c.name},
                    {"Mounts", mounts}});
    out.push_back({{"ID", c.id},
                   {"Names", c.name},
                   {"Image", c.image_name},
                   {"ImageDigest", c.image.str()},
                   {"Created", c.created},
                   {"Status", status},
                   {"State", state.status},
                   {"Ports", ports},
                   {"Mounts", mounts}});
  }
  if (vm.count("quiet") != 0U) {
    for (const auto& r : rows) std::cout << r["ID"].get<std::string>() << "\n";
  } else if (format.is_json()) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << format.render(rows);
  }
  return 0;
}

int rm_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("force,f", "kill it first if it runs, unmount it first if mounted")(
      "volumes,v", "remove the container's anonymous volumes too (named volumes stay)")("containers", po::value<std::vector<std::string>>()->required(),
                                                            "containers");
  po::positional_options_description pos;
  pos.add("containers", -1);
  po::variables_map vm;
  if (!parse_args("rm", "strata rm [-f] [-v] CONTAINER...", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  int rc = 0;
  for (const auto& n : vm["containers"].as<std::vector<std::string>>()) {
    try {
      bool force = vm.count("force") != 0U;
      if (force) {
        // docker rm -f: SIGKILL, then the removal once it has ended.
        store::Container c = store.container(n);
        if (store.running(c)) {
          try {
            lifecycle::kill_container(store, c, SIGKILL);
          } catch (const Error&) {
            // It ended meanwhile, or it runs without a recorded pid (being started).
          }
          lifecycle::wait_stopped(store, c, 10000);
        }
      }
      // What a killed `strata run` left on the host (its cgroup, its
      // network runtime directory).
      if (store::Container c = store.container(n); !store.running(c)) sandbox::remove_leftovers(c.dir);
      store.remove_container(n, force, vm.count("volumes") != 0U);
      std::cout << n << "\n";
    } catch (const Error& e) {
      std::cerr << "strata: " << e.what() << "\n";
      rc = static_cast<int>(e.code());
    }
  }
  return rc;
}

std::string absolute(const std::string& p) {
  char real[PATH_MAX];
  if (::realpath(p.c_str(), real) == nullptr) throw_errno("mount point " + quote(p));
  return real;
}

int mount_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("read-only,r", "mount a container read-only")("target", po::value<std::string>()->required(),
                                                                  "image or container")(
      "mountpoint", po::value<std::string>()->required(), "directory");
  add_pull_options(opts);
  po::positional_options_description pos;
  pos.add("target", 1).add("mountpoint", 1);
  po::variables_map vm;
  if (!parse_args("mount", "strata mount [-r] [--pull POLICY] IMAGE|CONTAINER MOUNTPOINT", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  std::string target = vm["target"].as<std::string>();
  std::string mnt = absolute(vm["mountpoint"].as<std::string>());
  std::optional<store::Container> ctr = store.find_container(target);
  if (!ctr) target = ensure_image(store, target, pull_policy(vm, "mount"), vm, std::cerr);
  store::Image img = ctr ? store.image_by_manifest(ctr->image) : store.image(target);
  if (img.layer_dirs.empty()) throw Error("image " + quote(target) + " has no layers to mount");
  fs::StratafsMount m;
  m.lowerdirs = img.layer_dirs;
  bool writable = ctr && vm.count("read-only") == 0U;
  std::optional<store::Store::ContainerLock> use;
  if (writable) {
    use.emplace(store.lock_container(*ctr));  // refuses a container that is running
    if (auto mounted = store.mounted_at(*ctr); !mounted.empty())
      throw Error("container " + quote(ctr->name) + " is already mounted at " + quote(mounted[0]));
    m.upperdir = ctr->upper;
    m.workdir = ctr->work;
  } else {
    m.read_only = true;
  }
  fs::mount_stratafs(mount_program(), m, mnt, quote(target) + " at " + quote(mnt));
  if (ctr) store.record_mount(*ctr, mnt);
  return 0;
}

int umount_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("mountpoint", po::value<std::string>()->required(), "directory");
  po::positional_options_description pos;
  pos.add("mountpoint", 1);
  po::variables_map vm;
  if (!parse_args("umount", "strata umount MOUNTPOINT", opts, pos, args, vm)) return 0;
  std::string mnt = absolute(vm["mountpoint"].as<std::string>());
  auto store = open_store(g);
  std::vector<store::Container> held;
  for (const auto& c : store.containers()) {
    auto at = store.mounted_at(c);
    if (std::find(at.begin(), at.end(), mnt) != at.end()) held.push_back(c);
  }
  // When umount returns, the container can be started or mounted again: a
  // container's mount waits for its daemon to let go of the work directory.
  fs::unmount_stratafs(mnt, held.empty() ? std::string() : held.front().work);
  for (const auto& c : store.containers()) {
    try {
      store.forget_mount(c, mnt);
    } catch (const Error&) {
    }
  }
  return 0;
}

int diff_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("format", po::value<std::string>(), "lines (default), json, or a Go template: '{{.Path}}'")(
      "container", po::value<std::string>()->required(), "container");
  po::positional_options_description pos;
  pos.add("container", 1);
  po::variables_map vm;
  if (!parse_args("diff", "strata diff [--format FORMAT] CONTAINER", opts, pos, args, vm)) return 0;
  Format format(format_option(vm), "{{.Kind}} {{.Path}}", {{"Kind", "KIND"}, {"Path", "PATH"}});
  auto store = open_store(g);
  std::vector<json> rows;
  for (const auto& c : store.diff(vm["container"].as<std::string>()))
    rows.push_back({{"Kind", std::string(1, c.kind)}, {"Path", c.path}});
  if (format.is_json())
    std::cout << json(rows).dump(2) << "\n";
  else
    std::cout << format.render(rows);
  return 0;
}

// docker port: a container's published ports ("80/tcp -> 0.0.0.0:8080"),
// or where one private port is published ("0.0.0.0:8080"). Only a running
// container has any, as docker's NetworkSettings.
int port_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("container", po::value<std::string>()->required(), "container")(
      "private-port", po::value<std::string>(), "PRIVATE_PORT[/PROTO]");
  po::positional_options_description pos;
  pos.add("container", 1).add("private-port", 1);
  po::variables_map vm;
  if (!parse_args("port", "strata port CONTAINER [PRIVATE_PORT[/tcp|/udp]]", opts, pos, args, vm)) return 0;
  std::optional<std::string> wanted;  // "80/tcp"
  if (vm.count("private-port") != 0U) {
    std::string given = vm["private-port"].as<std::string>();
    std::vector<std::string> keys;
    try {
      keys = sandbox::parse_expose(given);
    } catch (const Error&) {
    }
    if (keys.size() != 1) throw UsageError("port: bad private port " + quote(given) + " (PORT[/tcp|/udp], one port)");
    wanted = keys[0];
  }
  auto store = open_store(g);
  store::Container c = store.container(vm["container"].as<std::string>());
  lifecycle::State state = lifecycle::container_state(store, c);
  std::string out;
  for (const auto& p : state.running() ? state.ports : std::vector<sandbox::PortMapping>{}) {
    std::string key = std::to_string(p.container_port) + "/" + p.protocol;
    std::string host = p.host_ip + ":" + std::to_string(p.host_port);
    if (!wanted)
      out += key + " -> " + host + "\n";
    else if (key == *wanted)
      out += host + "\n";
  }
  if (wanted && out.empty()) throw Error("no public port " + quote(*wanted) + " published for " + quote(c.name));
  std::cout << out;
  return 0;
}

int commit_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("message,m", po::value<std::string>(), "commit message (history comment)")(
      "author,a", po::value<std::string>(), "author")(
      "change,c", po::value<std::vector<std::string>>(),
      "Dockerfile instruction applied to the config: CMD ENTRYPOINT ENV EXPOSE LABEL STOPSIGNAL USER VOLUME WORKDIR")(
      "container", po::value<std::string>()->required(), "container")("name", po::value<std::string>(), "new name");
  po::positional_options_description pos;
  pos.add("container", 1).add("name", 1);
  po::variables_map vm;
  if (!parse_args("commit", "strata commit [-m MSG] [-a AUTHOR] [-c INSTR]... CONTAINER [NAME[:TAG]]", opts, pos, args,
                  vm))
    return 0;
  store::CommitOptions o = commit_options(vm);
  std::string name = vm.count("name") != 0U ? vm["name"].as<std::string>() : "";
  if (!name.empty()) oci::Reference::parse(name);
  auto store = open_store(g);
  auto img = store.commit(vm["container"].as<std::string>(), o, name);
  std::cout << img.config_digest.str() << "\n";
  return 0;
}

const VerbRegistration reg_ps("ps", "list containers", ps_verb);
const VerbRegistration reg_rm("rm", "remove containers", rm_verb);
const VerbRegistration reg_mount("mount", "mount an image (read-only) or a container (writable)", mount_verb);
const VerbRegistration reg_umount("umount", "unmount what strata mount mounted", umount_verb);
const VerbRegistration reg_diff("diff", "list a container's changes (A/C/D)", diff_verb);
const VerbRegistration reg_port("port", "list a container's published ports, or where one port is published", port_verb);
const VerbRegistration reg_commit("commit", "make a new image from a container's changes", commit_verb);

}  // namespace
}  // namespace strata::cli
