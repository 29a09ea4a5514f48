// strata volume create|ls|inspect|rm|prune: the store's volumes, and
// the copy of an image's content into a new volume when a container first
// mounts it.
#include <fcntl.h>
#include <sys/stat.h>

#include <algorithm>
#include <iostream>
#include <map>
#include <optional>
#include <set>
#include <string>

#include "../../src/dockerfile/files.hpp"
#include "cli.hpp"
#include "format.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"

namespace strata::cli {

void fill_new_volume(int root, const sandbox::BindMount& v) {
  UniqueFd data(::open(v.source.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!data) throw_errno("open volume " + quote(v.volume));
  if (!read_dir_entries(data.get(), v.source).empty()) return;  // not new: left as it is
  UniqueFd src = build::files::open_in_root(root, v.target, O_PATH);
  if (!src) return;  // nothing there: the mount point is made
  struct stat st {};
  if (::fstat(src.get(), &st) != 0) throw_errno("stat " + quote(v.target) + " in the container");
  if (!S_ISDIR(st.st_mode)) return;
  // The directory itself too, so that the volume takes its owner and mode.
  auto slash = v.source.rfind('/');
  UniqueFd parent(::open(v.source.substr(0, slash).c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!parent) throw_errno("open volume " + quote(v.volume));
  try {
    build::files::copy_tree(src.get(), st, parent.get(), v.source.substr(slash + 1), {});
  } catch (const Error& e) {
    throw Error("copy " + quote(v.target) + " into volume " + quote(v.volume) + ": " + e.what(), ExitCode::run_failed);
  }
}

namespace {

using oci::json;

json labels_json(const std::map<std::string, std::string>& labels) {
  json j = json::object();
  for (const auto& [k, v] : labels) j[k] = v;
  return j;
}

// docker's `volume inspect` object.
json volume_json(const store::Volume& v) {
  return {{"CreatedAt", v.created}, {"Driver", "local"},  {"Labels", labels_json(v.labels)},
          {"Mountpoint", v.data},   {"Name", v.name},      {"Options", json::object()},
          {"Scope", "local"}};
}

int volume_create(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("driver,d", po::value<std::string>()->default_value("local"), "the volume driver (only local)")(
      "label", po::value<std::vector<std::string>>()->composing(), "set a label: KEY=VALUE (may be repeated)")(
      "name", po::value<std::string>(), "name of the volume (also the positional NAME)");
  po::positional_options_description pos;
  pos.add("name", 1);
  po::variables_map vm;
  if (!parse_args("volume create", "strata volume create [--label KEY=VALUE]... [NAME]\n\n"
                                   "Creates a named volume (no NAME: a random 64-hex-digit one) and prints its name;\n"
                                   "a volume of that name that exists already is left as it is.",
                  opts, pos, args, vm))
    return 0;
  if (vm["driver"].as<std::string>() != "local")
    throw UsageError("volume create: unknown driver " + quote(vm["driver"].as<std::string>()) + " (only local)");
  std::map<std::string, std::string> labels;
  if (vm.count("label") != 0U) {
    for (const auto& l : vm["label"].as<std::vector<std::string>>()) {
      auto eq = l.find('=');
      if (l.empty() || eq == 0) throw UsageError("volume create: bad label " + quote(l) + " (KEY=VALUE)");
      labels[l.substr(0, eq)] = eq == std::string::npos ? "" : l.substr(eq + 1);
    }
  }
  std::string name = vm.count("name") != 0U ? vm["name"].as<std::string>() : "";
  if (vm.count("name") != 0U && name.empty()) throw UsageError("volume create: the volume name is empty");
  auto store = open_store(g);
  std::cout << store.create_volume(name, labels).name << "\n";
  return 0;
}

// What --filter leaves of the volume listing, as docker combines filters:
// values of one key match when any does (label: when all do), and every key
// given must match.
class VolumeFilter {
 public:
  explicit VolumeFilter(const po::variables_map& vm) {
    for (auto& [key, value] : filters(vm, "volume ls", {"dangling", "driver", "label", "name"})) {
      if (key == "dangling") {
        if (value != "true" && value != "false" && value != "1" && value != "0")
          throw UsageError("volume ls: --filter dangling=" + value + ": true or false");
        dangling_.insert(value == "true" || value == "1");
      } else {
        (key == "driver" ? drivers_ : key == "label" ? labels_ : names_).push_back(value);
      }
    }
  }

  // USED: whether a container names V.
  bool matches(const store::Volume& v, bool used) const {
    if (!dangling_.empty() && dangling_.count(!used) == 0U) return false;
    auto contains = [](const std::vector<std::string>& subs, const std::string& s) {
      return subs.empty() ||
             std::any_of(subs.begin(), subs.end(), [&](const std::string& sub) { return s.find(sub) != std::string::npos; });
    };
    if (!contains(names_, v.name) || !contains(drivers_, "local")) return false;
    return std::all_of(labels_.begin(), labels_.end(), [&](const std::string& l) {
      auto eq = l.find('=');
      auto it = v.labels.find(l.substr(0, eq));
      return it != v.labels.end() && (eq == std::string::npos || it->second == l.substr(eq + 1));
    });
  }

 private:
  std::set<bool> dangling_;
  std::vector<std::string> drivers_, labels_, names_;
};

int volume_ls(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("quiet,q", "print only the names")(
      "filter,f", po::value<std::vector<std::string>>(),
      "dangling=true|false, driver=SUBSTR, label=KEY[=VALUE], name=SUBSTR (repeatable)")(
      "format", po::value<std::string>(), "table (default), json, or a Go template: '{{.Name}} {{.Mountpoint}}'");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("volume ls", "strata volume ls [-q] [--filter KEY=VALUE]... [--format FORMAT]\n\n"
                               "Lists the volumes, named and anonymous. Filters: dangling (no container uses it),\n"
                               "driver, label (KEY or KEY=VALUE), name (part of the name). Values of one key\n"
                               "match when any does (label: when all do); different keys must all match.",
                  opts, pos, args, vm))
    return 0;
  VolumeFilter filter(vm);
  Format format(format_option(vm), "table {{.Driver}}\t{{.Name}}",
                {{"Driver", "DRIVER"},
                 {"Name", "VOLUME NAME"},
                 {"Mountpoint", "MOUNTPOINT"},
                 {"CreatedAt", "CREATED AT"},
                 {"Labels", "LABELS"},
                 {"Scope", "SCOPE"}});
  auto store = open_store(g);
  std::set<std::string> used;
  for (const auto& c : store.containers()) used.insert(c.volumes.begin(), c.volumes.end());
  json out = json::array();
  std::vector<json> rows;
  for (const auto& v : store.volumes()) {
    if (!filter.matches(v, used.count(v.name) != 0U)) continue;
    std::string labels;
    for (const auto& [k, val] : v.labels) labels += (labels.empty() ? "" : ",") + k + "=" + val;
    rows.push_back({{"Driver", "local"},
                    {"Name", v.name},
                    {"Mountpoint", v.data},
                    {"CreatedAt", local_time(v.created)},
                    {"Labels", labels},
                    {"Scope", "local"}});
    out.push_back(volume_json(v));
  }
  if (vm.count("quiet") != 0U) {
    for (const auto& r : rows) std::cout << r["Name"].get<std::string>() << "\n";
  } else if (format.is_json()) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << format.render(rows);
  }
  return 0;
}

int volume_inspect(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("format,f", po::value<std::string>(), "a Go template applied to each volume: '{{.Mountpoint}}'")(
      "volume", po::value<std::vector<std::string>>()->required(), "volume name");
  po::positional_options_description pos;
  pos.add("volume", -1);
  po::variables_map vm;
  if (!parse_args("volume inspect", "strata volume inspect [--format FORMAT] VOLUME...\n\n"
                                    "Prints the volumes as a JSON array. Exit status 1 when one does not exist.",
                  opts, pos, args, vm))
    return 0;
  std::string f = format_option(vm);
  std::optional<Template> tmpl;
  if (!f.empty() && f != "json") tmpl.emplace(format_template(f));
  auto store = open_store(g);
  json out = json::array();
  bool missing = false;
  for (const auto& name : vm["volume"].as<std::vector<std::string>>()) {
    if (auto v = store.find_volume(name)) {
      out.push_back(volume_json(*v));
    } else {
      std::cerr << "strata: volume inspect: no such volume: " << quote(name) << "\n";
      missing = true;
    }
  }
  if (tmpl) {
    for (const auto& v : out) std::cout << tmpl->render(v) << "\n";
  } else {
    std::cout << out.dump(4) << "\n";
  }
  return missing ? 1 : 0;
}

int volume_rm(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("force,f", "remove a volume that stopped containers use")(
      "volume", po::value<std::vector<std::string>>()->required(), "volume name");
  po::positional_options_description pos;
  pos.add("volume", -1);
  po::variables_map vm;
  if (!parse_args("volume rm", "strata volume rm [-f] VOLUME...\n\n"
                               "Removes volumes and their data, printing each name. A volume a container uses is\n"
                               "refused; with -f it goes when no running container uses it.\n"
                               "Exit status: 0 all removed, 1 one could not be (each is reported)",
                  opts, pos, args, vm))
    return 0;
  auto store = open_store(g);
  bool failed = false;
  for (const auto& name : vm["volume"].as<std::vector<std::string>>()) {
    try {
      store.remove_volume(name, vm.count("force") != 0U);
      std::cout << name << "\n";
    } catch (const Error& e) {
      std::cerr << "strata: volume rm: " << e.what() << "\n";
      failed = true;
    }
  }
  return failed ? 1 : 0;
}

int volume_prune(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("all,a", "every unused volume, not only anonymous ones")("force,f",
                                                                          "do not ask for confirmation");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("volume prune", "strata volume prune [-a] [-f]\n\n"
                                  "Removes the anonymous volumes that no container uses; with -a every unused volume.",
                  opts, pos, args, vm))
    return 0;
  bool all = vm.count("all") != 0U;
  auto store = open_store(g);
  confirm("volume prune",
          all ? "This will remove all local volumes not used by at least one container."
              : "This will remove anonymous local volumes not used by at least one container.",
          vm.count("force") != 0U);
  std::int64_t bytes = 0;
  auto removed = store.prune_volumes(bytes, all);
  if (!removed.empty()) {
    std::cout << "Deleted Volumes:\n";
    for (const auto& n : removed) std::cout << n << "\n";
    std::cout << "\n";
  }
  std::cout << "Total reclaimed space: " << human_size(bytes) << "\n";
  return 0;
}

int volume_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  return dispatch("volume",
                  {{"create", volume_create},
                   {"ls", volume_ls},
                   {"inspect", volume_inspect},
                   {"rm", volume_rm},
                   {"prune", volume_prune}},
                  g, args);
}

const VerbRegistration reg_volume("volume", "volume create, ls, inspect, rm, prune: volumes", volume_verb);

}  // namespace
}  // namespace strata::cli
