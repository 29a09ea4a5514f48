// Image verbs: images, tag, rmi, history, inspect, import, load, save, prune.
#include <iostream>

#include "cli.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/lifecycle.hpp"

namespace strata::cli {
namespace {

using oci::json;

void print_table(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> w;
  for (const auto& r : rows)
    for (std::size_t i = 0; i < r.size(); ++i) {
      if (w.size() <= i) w.push_back(0);
      w[i] = std::max(w[i], r[i].size());
    }
  for (const auto& r : rows) {
    std::string line;
    for (std::size_t i = 0; i < r.size(); ++i) line += i + 1 == r.size() ? r[i] : pad(r[i], w[i] + 2);
    while (!line.empty() && line.back() == ' ') line.pop_back();
    std::cout << line << "\n";
  }
}

bool json_format(const po::variables_map& vm) {
  if (vm.count("format") == 0U) return false;
  std::string f = vm["format"].as<std::string>();
  if (f == "json") return true;
  if (f == "table") return false;
  throw UsageError("unknown --format " + quote(f) + " (table or json)");
}

std::pair<std::string, std::string> split_name(const std::string& familiar) {
  auto r = oci::Reference::parse(familiar);
  return {r.familiar_name(), r.tag.empty() ? "<none>" : r.tag};
}

int images_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("quiet,q", "only show image ids")("no-trunc", "show full ids")(
      "format", po::value<std::string>(), "table (default) or json")("repository", po::value<std::string>(),
                                                                      "only images of this repository");
  po::positional_options_description pos;
  pos.add("repository", 1);
  po::variables_map vm;
  if (!parse_args("images", "strata images [OPTIONS] [REPOSITORY[:TAG]]", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  bool js = json_format(vm);
  std::string filter;
  std::string filter_tag;
  if (vm.count("repository") != 0U) {
    std::string f = vm["repository"].as<std::string>();
    auto r = oci::Reference::parse(f);
    filter = r.familiar_name();
    if (f.find(':', f.rfind('/') == std::string::npos ? 0 : f.rfind('/')) != std::string::npos) filter_tag = r.tag;
  }
  bool no_trunc = vm.count("no-trunc") != 0U;
  std::vector<std::vector<std::string>> rows{{"REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"}};
  json out = json::array();
  std::vector<std::string> ids;
  std::vector<std::string> problems;
  auto images = store.images(&problems);
  // A broken image is reported and the others listed (exit 0: the listing is complete for what can be read).
  for (const auto& p : problems) std::cerr << "strata: warning: " << p << "\n";
  for (const auto& img : images) {
    std::vector<std::pair<std::string, std::string>> names;
    for (const auto& n : img.names) names.push_back(split_name(n));
    if (names.empty()) names.emplace_back("<none>", "<none>");
    for (const auto& [repo, tag] : names) {
      if (!filter.empty() && (repo != filter || (!filter_tag.empty() && tag != filter_tag))) continue;
      std::string id = no_trunc ? img.config_digest.str() : img.config_digest.short_id();
      rows.push_back({repo, tag, id, human_ago(img.created), human_size(img.size)});
      out.push_back({{"Repository", repo},
                     {"Tag", tag},
                     {"ID", img.config_digest.str()},
                     {"Digest", img.manifest_digest.str()},
                     {"Created", img.created},
                     {"Size", img.size}});
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  if (js) {
    std::cout << out.dump(2) << "\n";
  } else if (vm.count("quiet") != 0U) {
    for (const auto& id : ids) std::cout << id << "\n";
  } else {
    print_table(rows);
  }
  return 0;
}

int tag_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("source", po::value<std::string>()->required(), "image")("target", po::value<std::string>()->required(),
                                                                             "new name");
  po::positional_options_description pos;
  pos.add("source", 1).add("target", 1);
  po::variables_map vm;
  if (!parse_args("tag", "strata tag SOURCE_IMAGE TARGET_IMAGE[:TAG]", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  oci::Reference::parse(vm["target"].as<std::string>());
  store.tag(store.image(vm["source"].as<std::string>(), store::Layers::as_blobs), vm["target"].as<std::string>());
  return 0;
}

int rmi_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("force,f", "remove even if a container uses it")(
      "images", po::value<std::vector<std::string>>()->required(), "images");
  po::positional_options_description pos;
  pos.add("images", -1);
  po::variables_map vm;
  if (!parse_args("rmi", "strata rmi [-f] IMAGE...", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  int rc = 0;
  for (const auto& i : vm["images"].as<std::vector<std::string>>()) {
    try {
      for (const auto& line : store.remove_image(i, vm.count("force") != 0U)) std::cout << line << "\n";
    } catch (const Error& e) {
      std::cerr << "strata: " << e.what() << "\n";
      rc = static_cast<int>(e.code());
    }
  }
  return rc;
}

int history_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("no-trunc", "do not truncate output")("quiet,q", "only show image ids")(
      "format", po::value<std::string>(), "table (default) or json")("image", po::value<std::string>()->required(),
                                                                      "image");
  po::positional_options_description pos;
  pos.add("image", 1);
  po::variables_map vm;
  if (!parse_args("history", "strata history [OPTIONS] IMAGE", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  auto img = store.image(vm["image"].as<std::string>());
  bool no_trunc = vm.count("no-trunc") != 0U;
  auto hist = img.history();
  // Sizes: the non-empty entries map to the layers in order.
  std::vector<std::int64_t> sizes(hist.size(), 0);
  std::size_t li = 0;
  for (std::size_t i = 0; i < hist.size(); ++i) {
    if (hist[i].empty_layer) continue;
    if (li < img.diff_ids.size()) {
      if (auto l = store.find_layer(img.diff_ids[li])) sizes[i] = l->size;
    }
    ++li;
  }
  json out = json::array();
  std::vector<std::vector<std::string>> rows{{"IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"}};
  for (std::size_t k = hist.size(); k-- > 0;) {
    const auto& h = hist[k];
    std::string id = k + 1 == hist.size() ? (no_trunc ? img.config_digest.str() : img.config_digest.short_id()) : "<missing>";
    std::string by = h.created_by;
    if (!no_trunc && by.size() > 45) by = by.substr(0, 44) + "…";
    std::string comment = h.comment;
    if (!no_trunc && comment.size() > 40) comment = comment.substr(0, 39) + "…";
    rows.push_back({id, human_ago(h.created), by, human_size(sizes[k]), comment});
    out.push_back({{"ID", k + 1 == hist.size() ? img.config_digest.str() : "<missing>"},
                   {"Created", h.created},
                   {"CreatedBy", h.created_by},
                   {"Size", sizes[k]},
                   {"Comment", h.comment},
                   {"Author", h.author},
                   {"EmptyLayer", h.empty_layer}});
  }
  if (json_format(vm))
    std::cout << out.dump(2) << "\n";
  else if (vm.count("quiet") != 0U)
    for (std::size_t i = 1; i < rows.size(); ++i) std::cout << rows[i][0] << "\n";
  else
    print_table(rows);
  return 0;
}

json image_json(const store::Store& store, const store::Image& img) {
  json j;
  j["Id"] = img.config_digest.str();
  j["Digest"] = img.manifest_digest.str();
  j["RepoTags"] = img.names;
  j["Created"] = img.created;
  j["Author"] = img.config.value("author", "");
  j["Architecture"] = img.config.value("architecture", "");
  j["Os"] = img.config.value("os", "");
  j["Config"] = img.config.contains("config") ? img.config["config"] : json::object();
  j["RootFS"] = {{"Type", "layers"}, {"Layers", json::array()}};
  for (const auto& d : img.diff_ids) j["RootFS"]["Layers"].push_back(d.str());
  j["Size"] = img.size;
  j["History"] = json::array();
  for (const auto& h : img.history()) j["History"].push_back(h.to_json());
  j["GraphDriver"] = {{"Name", "stratafs"}, {"Data", {{"LowerDir", img.lowerdir()}}}};
  j["Store"] = store.root();
  return j;
}

int inspect_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("type", po::value<std::string>(), "image or container (default: either)")(
      "names", po::value<std::vector<std::string>>()->required(), "images or containers");
  po::positional_options_description pos;
  pos.add("names", -1);
  po::variables_map vm;
  if (!parse_args("inspect", "strata inspect [--type image|container] NAME...", opts, pos, args, vm)) return 0;
  std::string type = vm.count("type") != 0U ? vm["type"].as<std::string>() : "";
  if (!type.empty() && type != "image" && type != "container")
    throw UsageError("inspect: unknown --type " + quote(type) + " (image or container)");
  auto store = open_store(g);
  json out = json::array();
  int rc = 0;
  for (const auto& n : vm["names"].as<std::vector<std::string>>()) {
    std::optional<store::Image> img;
    std::optional<store::Container> ctr;
    if (type != "container") {
      try {
        img = store.find_image(n);
      } catch (const UsageError&) {
        if (type == "image") throw;
      }
    }
    if (!img && type != "image") ctr = store.find_container(n);
    if (img) {
      out.push_back(image_json(store, *img));
    } else if (ctr) {
      out.push_back(sandbox::inspect_container(store, *ctr));
    } else {
      std::cerr << "strata: no such " << (type.empty() ? "image or container" : type) << ": " << quote(n) << "\n";
      rc = 1;
    }
  }
  std::cout << out.dump(2) << "\n";
  return rc;
}

int import_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("message,m", po::value<std::string>(), "history comment")(
      "change,c", po::value<std::vector<std::string>>(), "Dockerfile instruction applied to the config (repeatable)")(
      "file", po::value<std::string>()->required(), "rootfs tarball")("name", po::value<std::string>(), "name");
  po::positional_options_description pos;
  pos.add("file", 1).add("name", 1);
  po::variables_map vm;
  if (!parse_args("import", "strata import [-m MSG] [-c INSTR]... ROOTFS.tar[.gz|.xz|.zst] [NAME[:TAG]]", opts, pos,
                  args, vm))
    return 0;
  std::string name = vm.count("name") != 0U ? vm["name"].as<std::string>() : "";
  if (!name.empty()) oci::Reference::parse(name);
  auto o = commit_options(vm);
  auto store = open_store(g);
  auto img = store.import_rootfs(vm["file"].as<std::string>(), name, o);
  std::cout << img.config_digest.str() << "\n";
  return 0;
}

int load_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("input,i", po::value<std::string>()->required(),
                     "docker-archive or OCI layout (directory or tar, plain or compressed)")("quiet,q",
                                                                                           "print nothing");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("load", "strata load -i FILE|DIR", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  auto imgs = store.load(vm["input"].as<std::string>());
  if (vm.count("quiet") == 0U) {
    for (const auto& img : imgs) {
      if (img.names.empty())
        std::cout << "Loaded image ID: " << img.config_digest.str() << "\n";
      for (const auto& n : img.names) std::cout << "Loaded image: " << n << "\n";
    }
  }
  return 0;
}

int save_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("output,o", po::value<std::string>()->required(),
                     "output tar file (or DIR/ for an OCI layout directory)")(
      "format", po::value<std::string>()->default_value("docker"), "docker (docker load) or oci (OCI layout)")(
      "images", po::value<std::vector<std::string>>()->required(), "images");
  po::positional_options_description pos;
  pos.add("images", -1);
  po::variables_map vm;
  if (!parse_args("save", "strata save [--format docker|oci] -o FILE IMAGE...", opts, pos, args, vm)) return 0;
  std::string f = vm["format"].as<std::string>();
  store::SaveFormat fmt;
  if (f == "docker" || f == "docker-archive")
    fmt = store::SaveFormat::docker;
  else if (f == "oci" || f == "oci-archive")
    fmt = store::SaveFormat::oci;
  else
    throw UsageError("save: unknown --format " + quote(f) + " (docker or oci)");
  auto store = open_store(g);
  store.save(vm["images"].as<std::vector<std::string>>(), vm["output"].as<std::string>(), fmt);
  return 0;
}

int prune_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("prune", "strata prune", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  auto r = store.prune();
  std::cout << "Removed " << r.blobs << " blobs, " << r.layers << " layers, " << r.staging
            << " staging leftovers; reclaimed " << human_size(r.bytes) << "\n";
  return 0;
}

const VerbRegistration reg_images("images", "list images", images_verb);
const VerbRegistration reg_tag("tag", "give an image another name", tag_verb);
const VerbRegistration reg_rmi("rmi", "remove images", rmi_verb);
const VerbRegistration reg_history("history", "show the history of an image", history_verb);
const VerbRegistration reg_inspect("inspect", "show images or containers as JSON", inspect_verb);
const VerbRegistration reg_import("import", "make a one-layer image from a rootfs tarball", import_verb);
const VerbRegistration reg_load("load", "load images from a docker-archive or OCI layout", load_verb);
const VerbRegistration reg_save("save", "write images as a docker-archive or OCI layout", save_verb);
const VerbRegistration reg_prune("prune", "remove what no image or container references", prune_verb);

}  // namespace
}  // namespace strata::cli
