// Image verbs: images, tag, rmi, history, inspect, import, load, save, prune.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <iostream>

#include "cli.hpp"
#include "format.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/lifecycle.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"

namespace strata::cli {
namespace {

using oci::json;

std::pair<std::string, std::string> split_name(const std::string& familiar) {
  auto r = oci::Reference::parse(familiar);
  return {r.familiar_name(), r.tag.empty() ? "<none>" : r.tag};
}

// What --filter leaves of the images listing (docker's keys and meanings).
class ImageFilter {
 public:
  ImageFilter(const store::Store& store, const po::variables_map& vm) {
    for (const auto& [key, value] : filters(vm, "images", {"dangling", "reference", "label", "before", "since"})) {
      if (key == "dangling") {
        if (value != "true" && value != "false" && value != "1" && value != "0")
          throw UsageError("images: --filter dangling=" + value + ": true or false");
        dangling_ = value == "true" || value == "1";
      } else if (key == "reference") {
        references_.push_back(value);
      } else if (key == "label") {
        labels_.push_back(value);
      } else {
        // before/since: compared by creation time, as docker does.
        std::string created = store.image(value, store::Layers::as_blobs).created;
        auto t = oci::parse_rfc3339(created);
        if (!t) throw Error("images: --filter " + key + "=" + value + ": the image has no creation time");
        (key == "before" ? before_ : since_) = *t;
      }
    }
  }

  // Whether IMG is listed at all (before the names are looked at).
  bool image(const store::Image& img) const {
    if (dangling_ && *dangling_ != img.names.empty()) return false;
    for (const auto& l : labels_) {
      auto eq = l.find('=');
      std::string key = l.substr(0, eq);
      const oci::json* labels = nullptr;
      if (img.config.contains("config") && img.config["config"].is_object() && img.config["config"].contains("Labels"))
        labels = &img.config["config"]["Labels"];
      if (labels == nullptr || !labels->is_object() || !labels->contains(key)) return false;
      if (eq != std::string::npos && (*labels)[key] != l.substr(eq + 1)) return false;
    }
    if (before_ || since_) {
      auto t = oci::parse_rfc3339(img.created);
      if (!t || (before_ && *t >= *before_) || (since_ && *t <= *since_)) return false;
    }
    return true;
  }

  // Whether the row REPO:TAG of an image is listed (reference=: any pattern
  // matches; a pattern with a tag matches REPO:TAG, one without REPO).
  bool name(const std::string& repo, const std::string& tag) const {
    if (references_.empty()) return true;
    if (repo == "<none>") return false;  // an untagged image has no reference to match
    for (const auto& pattern : references_) {
      bool with_tag = pattern.find(':', pattern.rfind('/') == std::string::npos ? 0 : pattern.rfind('/')) !=
                      std::string::npos;
      if (glob_match(pattern, with_tag ? repo + ":" + tag : repo)) return true;
    }
    return false;
  }

 private:
  std::optional<bool> dangling_;
  std::vector<std::string> references_;
  std::vector<std::string> labels_;
  std::optional<std::int64_t> before_;
  std::optional<std::int64_t> since_;
};

int images_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("quiet,q", "only show image ids")("no-trunc", "show full ids")(
      "format", po::value<std::string>(), "table (default), json, or a Go template: 'table {{.Repository}}\\t{{.ID}}'")(
      "filter,f", po::value<std::vector<std::string>>(),
      "dangling=true|false, reference=GLOB, label=KEY[=VALUE], before=IMAGE, since=IMAGE (repeatable)")(
      "repository", po::value<std::string>(), "only images of this repository");
  po::positional_options_description pos;
  pos.add("repository", 1);
  po::variables_map vm;
  if (!parse_args("images", "strata images [OPTIONS] [REPOSITORY[:TAG]]", opts, pos, args, vm)) return 0;
  Format format(format_option(vm), "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.CreatedSince}}\\t{{.Size}}",
                {{"ID", "IMAGE ID"},
                 {"Repository", "REPOSITORY"},
                 {"Tag", "TAG"},
                 {"Digest", "DIGEST"},
                 {"CreatedSince", "CREATED"},
                 {"CreatedAt", "CREATED AT"},
                 {"Size", "SIZE"}});
  auto store = open_store(g);
  ImageFilter filter(store, vm);
  std::string repository;
  std::string repository_tag;
  if (vm.count("repository") != 0U) {
    std::string f = vm["repository"].as<std::string>();
    auto r = oci::Reference::parse(f);
    repository = r.familiar_name();
    if (f.find(':', f.rfind('/') == std::string::npos ? 0 : f.rfind('/')) != std::string::npos) repository_tag = r.tag;
  }
  bool no_trunc = vm.count("no-trunc") != 0U;
  std::vector<json> rows;
  json out = json::array();
  std::vector<std::string> ids;
  std::vector<std::string> problems;
  auto images = store.images(&problems);
  // A broken image is reported and the others listed (exit 0: the listing is complete for what can be read).
  for (const auto& p : problems) std::cerr << "strata: warning: " << p << "\n";
  for (const auto& img : images) {
    if (!filter.image(img)) continue;
    std::vector<std::pair<std::string, std::string>> names;
    for (const auto& n : img.names) names.push_back(split_name(n));
    if (names.empty()) names.emplace_back("<none>", "<none>");
    for (const auto& [repo, tag] : names) {
      if (!repository.empty() && (repo != repository || (!repository_tag.empty() && tag != repository_tag))) continue;
      if (!filter.name(repo, tag)) continue;
      std::string id = no_trunc ? img.config_digest.str() : img.config_digest.short_id();
      rows.push_back({{"ID", id},
                      {"Repository", repo},
                      {"Tag", tag},
                      {"Digest", img.manifest_digest.str()},
                      {"CreatedSince", human_ago(img.created)},
                      {"CreatedAt", local_time(img.created)},
                      {"Size", human_size(img.size)}});
      out.push_back({{"Repository", repo},
                     {"Tag", tag},
                     {"ID", img.config_digest.str()},
                     {"Digest", img.manifest_digest.str()},
                     {"Created", img.created},
                     {"Size", img.size}});
      if (std::find(ids.begin(), ids.end(), id) == ids.end()) ids.push_back(id);
    }
  }
  if (vm.count("quiet") != 0U) {
    for (const auto& id : ids) std::cout << id << "\n";
  } else if (format.is_json()) {
    std::cout << out.dump(2) << "\n";
  } else {
    std::cout << format.render(rows);
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
  std::string target = vm["target"].as<std::string>();
  if (oci::Reference::parse(target).digest)
    throw UsageError("tag: " + quote(target) +
                     " holds a digest; a new name is NAME[:TAG] (a digest names content, it cannot be given)");
  auto store = open_store(g);
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
      "format", po::value<std::string>(), "table (default), json, or a Go template: '{{.CreatedBy}}'")(
      "image", po::value<std::string>()->required(), "image");
  po::positional_options_description pos;
  pos.add("image", 1);
  po::variables_map vm;
  if (!parse_args("history", "strata history [OPTIONS] IMAGE", opts, pos, args, vm)) return 0;
  Format format(format_option(vm), "table {{.ID}}\t{{.CreatedSince}}\t{{.CreatedBy}}\t{{.Size}}\t{{.Comment}}",
                {{"ID", "IMAGE"},
                 {"CreatedSince", "CREATED"},
                 {"CreatedAt", "CREATED AT"},
                 {"CreatedBy", "CREATED BY"},
                 {"Size", "SIZE"},
                 {"Comment", "COMMENT"}});
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
  std::vector<json> rows;
  for (std::size_t k = hist.size(); k-- > 0;) {
    const auto& h = hist[k];
    std::string id = k + 1 == hist.size() ? (no_trunc ? img.config_digest.str() : img.config_digest.short_id()) : "<missing>";
    rows.push_back({{"ID", id},
                    {"CreatedSince", human_ago(h.created)},
                    {"CreatedAt", local_time(h.created)},
                    {"CreatedBy", ellipsis(h.created_by, 45, no_trunc)},
                    {"Size", human_size(sizes[k])},
                    {"Comment", ellipsis(h.comment, 40, no_trunc)}});
    out.push_back({{"ID", k + 1 == hist.size() ? img.config_digest.str() : "<missing>"},
                   {"Created", h.created},
                   {"CreatedBy", h.created_by},
                   {"Size", sizes[k]},
                   {"Comment", h.comment},
                   {"Author", h.author},
                   {"EmptyLayer", h.empty_layer}});
  }
  if (vm.count("quiet") != 0U)
    for (const auto& r : rows) std::cout << r["ID"].get<std::string>() << "\n";
  else if (format.is_json())
    std::cout << out.dump(2) << "\n";
  else
    std::cout << format.render(rows);
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
  j["Config"] = img.config.contains("config") && img.config["config"].is_object() ? img.config["config"] : json::object();
  // Every field docker shows is there, null when the image does not set it,
  // so that --format '{{.Config.Cmd}}' works on any image.
  for (const char* field : {"User", "ExposedPorts", "Env", "Entrypoint", "Cmd", "Volumes", "WorkingDir", "Labels"})
    if (!j["Config"].contains(field)) j["Config"][field] = nullptr;
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
      "format,f", po::value<std::string>(), "json (default) or a Go template: '{{.Config.Cmd}}', '{{json .RootFS}}'")(
      "names", po::value<std::vector<std::string>>()->required(), "images or containers");
  po::positional_options_description pos;
  pos.add("names", -1);
  po::variables_map vm;
  if (!parse_args("inspect", "strata inspect [--type image|container] [-f FORMAT] NAME...", opts, pos, args, vm))
    return 0;
  std::string type = vm.count("type") != 0U ? vm["type"].as<std::string>() : "";
  if (!type.empty() && type != "image" && type != "container")
    throw UsageError("inspect: unknown --type " + quote(type) + " (image or container)");
  std::string format = format_option(vm);
  std::optional<Template> tmpl;
  if (!format.empty() && format != "json") tmpl.emplace(format_template(format));
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
  if (!tmpl) {
    std::cout << out.dump(2) << "\n";
    return rc;
  }
  // Every object is rendered before anything is printed: a field missing
  // from one of them is an error without half an answer.
  std::string text;
  for (const auto& j : out) text += tmpl->render(j) + "\n";
  std::cout << text;
  return rc;
}



// Standard input saved as the file STAGING/stdin (an archive reader may need
// to seek); refuses a terminal and an empty stream, saying what to give.
std::string stdin_to_file(const TempDir& staging, const std::string& verb, const std::string& what) {
  if (::isatty(0) != 0)
    throw UsageError(verb + ": standard input is a terminal; pipe " + what + " in (strata " + verb + " < FILE)" +
                     (verb == "load" ? " or give -i FILE" : " or give a file name"));
  std::string path = staging.path() + "/stdin";
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!out) throw_errno("create " + quote(path));
  if (copy_stream(0, out.get(), "standard input", quote(path)) == 0)
    throw Error(verb + ": standard input is empty (expected " + what + ")");
  return path;
}

int import_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("message,m", po::value<std::string>(), "history comment")(
      "change,c", po::value<std::vector<std::string>>(), "Dockerfile instruction applied to the config (repeatable)")(
      "file", po::value<std::string>()->required(), "rootfs tarball")("name", po::value<std::string>(), "name");
  po::positional_options_description pos;
  pos.add("file", 1).add("name", 1);
  po::variables_map vm;
  if (!parse_args("import", "strata import [-m MSG] [-c INSTR]... ROOTFS.tar[.gz|.xz|.zst]|- [NAME[:TAG]]", opts, pos,
                  args, vm))
    return 0;
  std::string name = vm.count("name") != 0U ? vm["name"].as<std::string>() : "";
  if (!name.empty()) oci::Reference::parse(name);
  auto o = commit_options(vm);
  auto store = open_store(g);
  std::string file = vm["file"].as<std::string>();
  std::optional<TempDir> staging;
  if (file == "-") {
    staging.emplace(stream_staging(store, "import"));
    file = stdin_to_file(*staging, "import", "a root file system tar");
    if (o.created_by.empty()) o.created_by = "strata import -";
  }
  auto img = store.import_rootfs(file, name, o);
  std::cout << img.config_digest.str() << "\n";
  return 0;
}

int load_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("input,i", po::value<std::string>(),
                     "docker-archive or OCI layout (directory or tar, plain or compressed); default: standard input")(
      "quiet,q", "print nothing");
  po::positional_options_description pos;
  po::variables_map vm;
  if (!parse_args("load", "strata load [-i FILE|DIR] [-q]   (or: strata load < FILE)", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  std::optional<TempDir> staging;
  std::string input;
  if (vm.count("input") != 0U) {
    input = vm["input"].as<std::string>();
  } else {
    staging.emplace(stream_staging(store, "load"));
    input = stdin_to_file(*staging, "load", "a docker-archive or OCI layout tar");
  }
  auto imgs = store.load(input);
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
  opts.add_options()("output,o", po::value<std::string>(),
                     "output tar file (or DIR/ for an OCI layout directory); default: standard output")(
      "format", po::value<std::string>()->default_value("docker"), "docker (docker load) or oci (OCI layout)")(
      "images", po::value<std::vector<std::string>>()->required(), "images");
  po::positional_options_description pos;
  pos.add("images", -1);
  po::variables_map vm;
  if (!parse_args("save", "strata save [--format docker|oci] [-o FILE] IMAGE...   (or: strata save IMAGE > FILE)", opts,
                  pos, args, vm))
    return 0;
  std::string f = vm["format"].as<std::string>();
  store::SaveFormat fmt;
  if (f == "docker" || f == "docker-archive")
    fmt = store::SaveFormat::docker;
  else if (f == "oci" || f == "oci-archive")
    fmt = store::SaveFormat::oci;
  else
    throw UsageError("save: unknown --format " + quote(f) + " (docker or oci)");
  if (vm.count("output") != 0U) {
    auto store = open_store(g);
    store.save(vm["images"].as<std::vector<std::string>>(), vm["output"].as<std::string>(), fmt);
    return 0;
  }
  if (::isatty(1) != 0)
    throw UsageError("save: refusing to write an archive to a terminal; give -o FILE or redirect standard output");
  auto store = open_store(g);
  // Written whole first: a failure leaves nothing half-written on the pipe.
  TempDir staging = stream_staging(store, "save");
  std::string file = staging.path() + "/out.tar";
  store.save(vm["images"].as<std::vector<std::string>>(), file, fmt);
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw_errno("open " + quote(file));
  copy_stream(in.get(), 1, quote(file), "standard output");
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
