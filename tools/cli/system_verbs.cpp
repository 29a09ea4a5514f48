// Verbs about the store as a whole, as docker names them: version, info,
// system df, system prune, image prune, container prune.
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>
#include <string>

#include "cli.hpp"
#include "format.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"

namespace strata::cli {
namespace {

using oci::json;

// The bytes of the files under PATH (not following links); 0 when it is gone.
std::int64_t tree_size(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  std::int64_t total = 0;
  for (fs::recursive_directory_iterator it(path, fs::directory_options::skip_permission_denied, ec), end;
       !ec && it != end; it.increment(ec)) {
    std::error_code fec;
    if (it->is_regular_file(fec) && !it->is_symlink(fec)) total += static_cast<std::int64_t>(it->file_size(fec));
  }
  return total;
}

struct Removed {
  std::vector<std::string> lines;
  std::int64_t images = 0;
};

// Removes the images that no container uses: dangling ones (no name), or
// every one with ALL. An image that cannot be removed is reported and kept.
Removed prune_images(store::Store& store, bool all) {
  std::set<std::string> used;
  for (const auto& c : store.containers()) used.insert(c.image.str());
  Removed r;
  for (const auto& img : store.images()) {
    if (used.count(img.manifest_digest.str()) != 0U) continue;
    if (!all && !img.names.empty()) continue;
    try {
      for (auto& line : store.remove_image(img.config_digest.str(), false)) r.lines.push_back(std::move(line));
      ++r.images;
    } catch (const Error& e) {
      std::cerr << "strata: warning: " << e.what() << "\n";
    }
  }
  return r;
}

// Removes the containers that are not running and not mounted.
std::vector<std::string> prune_containers(store::Store& store) {
  std::vector<std::string> removed;
  for (const auto& c : store.containers()) {
    if (store.running(c)) continue;
    if (!store.mounted_at(c).empty()) {
      std::cerr << "strata: warning: container " << quote(c.name) << " is mounted; kept\n";
      continue;
    }
    try {
      sandbox::remove_leftovers(c.dir);
      store.remove_container(c.id, false);
      removed.push_back(c.id);
    } catch (const Error& e) {
      std::cerr << "strata: warning: " << e.what() << "\n";
    }
  }
  return removed;
}

// Prints a prune's removals and the space that the store's own prune (of
// what nothing references any more) gives back, plus EXTRA_BYTES.
void finish_prune(store::Store& store, const std::vector<std::string>& lines, std::int64_t extra_bytes = 0) {
  for (const auto& l : lines) std::cout << l << "\n";
  auto r = store.prune();
  std::cout << "Total reclaimed space: " << human_size(r.bytes + extra_bytes) << "\n";
}

// image prune and system prune (which removes stopped containers first).
int prune_images_command(const char* verb, bool with_containers, const GlobalOptions& g,
                         const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("all,a", "remove every image no container uses, not only untagged ones")(
      "force,f", "do not ask for confirmation");
  if (with_containers) opts.add_options()("volumes", "remove the anonymous volumes no container uses too");
  po::positional_options_description pos;
  po::variables_map vm;
  std::string usage = std::string("strata ") + verb + (with_containers ? " [-a] [-f] [--volumes]" : " [-a] [-f]");
  if (!parse_args(verb, usage.c_str(), opts, pos, args, vm)) return 0;
  bool all = vm.count("all") != 0U;
  bool volumes = vm.count("volumes") != 0U;
  auto store = open_store(g);
  std::string images = all ? "all images without at least one container associated to them" : "all dangling images";
  confirm(verb,
          with_containers ? "This will remove:\n  - all stopped containers\n" +
                                std::string(volumes ? "  - all anonymous volumes not used by at least one container\n" : "") +
                                "  - " + images + "\n  - every blob, layer and staging leftover nothing refers to"
                          : "This will remove " + images + ".",
          vm.count("force") != 0U);
  std::vector<std::string> lines;
  std::int64_t volume_bytes = 0;
  if (with_containers) {
    lines = prune_containers(store);
    if (!lines.empty()) lines.insert(lines.begin(), "Deleted Containers:");
    // docker: --volumes removes anonymous volumes only, whatever -a says.
    auto gone = volumes ? store.prune_volumes(volume_bytes, false) : std::vector<std::string>{};
    if (!gone.empty()) lines.emplace_back("Deleted Volumes:");
    lines.insert(lines.end(), gone.begin(), gone.end());
  }
  auto removed = prune_images(store, all);
  if (with_containers && !removed.lines.empty()) lines.emplace_back("Deleted Images:");
  lines.insert(lines.end(), removed.lines.begin(), removed.lines.end());
  finish_prune(store, lines, volume_bytes);
  return 0;
}

int image_prune(const GlobalOptions& g, const std::vector<std::string>& args) {
  return prune_images_command("image prune", false, g, args);
}
int system_prune(const GlobalOptions& g, const std::vector<std::string>& args) {
  return prune_images_command("system prune", true, g, args);
}

int container_prune(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("force,f", "do not ask for confirmation");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("container prune", "strata container prune [-f]", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  confirm("container prune", "This will remove all stopped containers.", vm.count("force") != 0U);
  auto ids = prune_containers(store);
  if (!ids.empty()) ids.insert(ids.begin(), "Deleted Containers:");
  finish_prune(store, ids);
  return 0;
}

int system_df(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("format", po::value<std::string>(), "table (default), json, or a Go template: '{{.Type}} {{.Size}}'");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("system df", "strata system df [--format FORMAT]", opts, pos, args, vm)) return 0;
  Format format(format_option(vm), "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
                {{"Type", "TYPE"},
                 {"TotalCount", "TOTAL"},
                 {"Active", "ACTIVE"},
                 {"Size", "SIZE"},
                 {"Reclaimable", "RECLAIMABLE"}});
  auto store = open_store(g);
  auto containers = store.containers();
  std::set<std::string> used;
  for (const auto& c : containers) used.insert(c.image.str());
  // Layers are shared: each counts once, and is reclaimable only when no
  // image that a container uses has it.
  std::map<std::string, std::int64_t> layer_size;
  std::set<std::string> active_layers;
  auto images = store.images();
  std::int64_t active_images = 0;
  for (const auto& img : images) {
    bool active = used.count(img.manifest_digest.str()) != 0U;
    active_images += active ? 1 : 0;
    for (const auto& d : img.diff_ids) {
      if (auto l = store.find_layer(d)) layer_size[d.str()] = l->size;
      if (active) active_layers.insert(d.str());
    }
  }
  std::int64_t image_bytes = 0;
  std::int64_t image_reclaimable = 0;
  for (const auto& [d, size] : layer_size) {
    image_bytes += size;
    if (active_layers.count(d) == 0U) image_reclaimable += size;
  }
  std::int64_t container_bytes = 0;
  std::int64_t container_reclaimable = 0;
  std::int64_t running = 0;
  for (const auto& c : containers) {
    std::int64_t size = tree_size(c.upper);
    container_bytes += size;
    if (store.running(c)) ++running;
    else container_reclaimable += size;
  }
  // Volumes: active when a container (running or not) names them.
  std::set<std::string> used_volumes;
  for (const auto& c : containers) used_volumes.insert(c.volumes.begin(), c.volumes.end());
  auto volumes = store.volumes();
  std::int64_t volume_bytes = 0;
  std::int64_t volume_reclaimable = 0;
  std::int64_t active_volumes = 0;
  for (const auto& v : volumes) {
    std::int64_t size = tree_size(v.data);
    volume_bytes += size;
    if (used_volumes.count(v.name) != 0U) ++active_volumes;
    else volume_reclaimable += size;
  }
  std::int64_t cache_bytes = tree_size(store.root() + "/cache");
  auto percent = [](std::int64_t part, std::int64_t whole) {
    return whole == 0 ? std::string() : " (" + std::to_string(part * 100 / whole) + "%)";
  };
  std::vector<json> rows{
      {{"Type", "Images"},
       {"TotalCount", std::to_string(images.size())},
       {"Active", std::to_string(active_images)},
       {"Size", human_size(image_bytes)},
       {"Reclaimable", human_size(image_reclaimable) + percent(image_reclaimable, image_bytes)}},
      {{"Type", "Containers"},
       {"TotalCount", std::to_string(containers.size())},
       {"Active", std::to_string(running)},
       {"Size", human_size(container_bytes)},
       {"Reclaimable", human_size(container_reclaimable) + percent(container_reclaimable, container_bytes)}},
      {{"Type", "Local Volumes"},
       {"TotalCount", std::to_string(volumes.size())},
       {"Active", std::to_string(active_volumes)},
       {"Size", human_size(volume_bytes)},
       {"Reclaimable", human_size(volume_reclaimable) + percent(volume_reclaimable, volume_bytes)}},
      {{"Type", "Build Cache"},
       {"TotalCount", "-"},
       {"Active", "0"},
       {"Size", human_size(cache_bytes)},
       {"Reclaimable", human_size(cache_bytes)}}};
  if (format.is_json()) {
    json out = {{"Images", {{"Total", images.size()}, {"Active", active_images}, {"Size", image_bytes},
                            {"Reclaimable", image_reclaimable}}},
                {"Containers", {{"Total", containers.size()}, {"Active", running}, {"Size", container_bytes},
                                {"Reclaimable", container_reclaimable}}},
                {"Volumes", {{"Total", volumes.size()}, {"Active", active_volumes}, {"Size", volume_bytes},
                             {"Reclaimable", volume_reclaimable}}},
                {"BuildCache", {{"Size", cache_bytes}}}};
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << format.render(rows);
  }
  return 0;
}

int image_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  return dispatch("image", {{"prune", image_prune}}, g, args);
}
int container_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  return dispatch("container", {{"prune", container_prune}}, g, args);
}
int system_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  return dispatch("system", {{"df", system_df}, {"prune", system_prune}}, g, args);
}

int version_verb(const GlobalOptions&, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("format,f", po::value<std::string>(), "json, or a Go template: '{{.Version}}'");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("version", "strata version [--format FORMAT]", opts, pos, args, vm)) return 0;
  json v = {{"Version", STRATA_VERSION}, {"FuseVersion", STRATA_FUSE_VERSION}, {"Os", "linux"},
            {"Rootless", ::geteuid() != 0}};
  std::string f = format_option(vm);
  if (f == "json")
    std::cout << v.dump(2) << "\n";
  else if (!f.empty())
    std::cout << format_template(f).render(v) << "\n";
  else
    std::cout << "Version:       " << STRATA_VERSION << "\nlibfuse:       " << STRATA_FUSE_VERSION
              << " (stratafs)\nOS:            linux\n";
  return 0;
}

int info_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("format,f", po::value<std::string>(), "json, or a Go template: '{{.StoreRoot}}'");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("info", "strata info [--format FORMAT]", opts, pos, args, vm)) return 0;
  std::string f = format_option(vm);
  std::optional<Template> tmpl;
  if (!f.empty() && f != "json") tmpl.emplace(format_template(f));
  auto store = open_store(g);
  struct statvfs vfs {};
  if (::statvfs(store.root().c_str(), &vfs) != 0) throw_errno("statvfs " + quote(store.root()));
  auto free_bytes = static_cast<std::int64_t>(vfs.f_bavail) * static_cast<std::int64_t>(vfs.f_frsize);
  auto containers = store.containers();
  auto running = std::count_if(containers.begin(), containers.end(), [&](const auto& c) { return store.running(c); });
  json info = {{"Version", STRATA_VERSION},
               {"StoreRoot", store.root()},
               {"FreeSpace", human_size(free_bytes)},
               {"FreeBytes", free_bytes},
               {"Rootless", ::geteuid() != 0},
               {"FuseVersion", STRATA_FUSE_VERSION},
               {"Images", store.images().size()},
               {"Containers", containers.size()},
               {"ContainersRunning", running},
               {"ContainersStopped", static_cast<std::int64_t>(containers.size()) - running}};
  if (f == "json") {
    std::cout << info.dump(2) << "\n";
  } else if (tmpl) {
    std::cout << tmpl->render(info) << "\n";
  } else {
    std::cout << "Store root:    " << store.root() << "\n"
              << "Free space:    " << human_size(free_bytes) << "\n"
              << "Rootless:      " << (::geteuid() != 0 ? "true" : "false") << "\n"
              << "libfuse:       " << STRATA_FUSE_VERSION << " (stratafs)\n"
              << "Images:        " << info["Images"] << "\n"
              << "Containers:    " << containers.size() << " (running " << running << ", stopped "
              << info["ContainersStopped"] << ")\n"
              << "Version:       " << STRATA_VERSION << "\n";
  }
  return 0;
}

const VerbRegistration reg_image("image", "image prune: remove unused images", image_verb);
const VerbRegistration reg_container("container", "container prune: remove stopped containers", container_verb);
const VerbRegistration reg_system("system", "system df, system prune: the store's disk use, and cleaning it",
                                  system_verb);
const VerbRegistration reg_version("version", "show the version of strata and its libfuse", version_verb);
const VerbRegistration reg_info("info", "show the store root, free space, rootless or not, counts", info_verb);

}  // namespace
}  // namespace strata::cli
