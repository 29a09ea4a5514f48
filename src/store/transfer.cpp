// Images in and out: import of a rootfs tarball, load of docker-archive and
// OCI layout archives, save to either.
#include "strata/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "strata/error.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

Image Store::import_rootfs(const std::string& tar_path, std::string_view ref, const CommitOptions& options) {
  if (!ref.empty()) oci::Reference::parse(ref);
  json config = oci::empty_config();
  if (options.edit_config) config = options.edit_config(config);
  UniqueFd in = open_at(AT_FDCWD, tar_path, O_RDONLY);
  report("Importing " + tar_path);
  Layer l;
  try {
    l = import_layer(in.get());
  } catch (const archive::NotATar& e) {
    throw Error("import " + quote(tar_path) + ": " + e.what() +
                "; strata import takes a tar of a root file system (to add an image saved with `strata save` "
                "or `docker save`, use strata load)");
  } catch (const Error& e) {
    throw Error("import " + quote(tar_path) + ": " + e.what());
  }
  std::string now = oci::now_rfc3339();
  config["created"] = now;
  config["rootfs"]["diff_ids"].push_back(l.diff_id.str());
  oci::History h;
  h.created = now;
  h.created_by = options.created_by.empty() ? "strata import " + tar_path.substr(tar_path.rfind('/') + 1)
                                            : options.created_by;
  h.comment = options.message;
  h.author = options.author;
  if (!options.author.empty()) config["author"] = options.author;
  config["history"].push_back(h.to_json());
  std::vector<std::string> names;
  if (!ref.empty()) names.emplace_back(ref);
  return write_image(config, names);
}

std::vector<Image> Store::load(const std::string& path) {
  hold_gc();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("load " + quote(path));
  std::optional<Staged> unpacked;
  std::string dir = path;
  if (!S_ISDIR(st.st_mode)) {
    unpacked.emplace(tmp_dir(), "load", true);
    try {
      archive::unpack_archive(path, unpacked->path());
    } catch (const archive::NotATar& e) {
      throw Error(std::string("load ") + e.what() +
                  "; strata load takes what `strata save` or `docker save` writes (a tar, or an OCI layout "
                  "directory); a root file system tar is added with strata import");
    }
    dir = unpacked->path();
  }
  auto archived = archive::read_image_archive(dir, path);
  std::vector<std::pair<oci::Digest, std::vector<std::string>>> loaded;
  for (const auto& a : archived) {
    json config = parse_json(a.config_json, "config " + a.manifest.config.digest.str());
    auto diff_ids = oci::config_diff_ids(config);
    if (diff_ids.size() != a.manifest.layers.size())
      throw Error("image " + a.manifest.config.digest.short_id() + " in " + quote(path) + ": config lists " +
                  std::to_string(diff_ids.size()) + " layers, manifest " + std::to_string(a.manifest.layers.size()));
    put_blob(a.config_json);
    for (std::size_t i = 0; i < diff_ids.size(); ++i) {
      report("Loading layer " + std::to_string(i + 1) + "/" + std::to_string(diff_ids.size()) + " " +
             a.manifest.layers[i].digest.short_id());
      UniqueFd fd = archive::open_archive_blob(a.layer_paths[i], "layer " + a.manifest.layers[i].digest.str() +
                                                                   " in " + quote(path));
      try {
        import_layer(fd.get(), a.manifest.layers[i].media_type, a.manifest.layers[i].digest, diff_ids[i]);
      } catch (const Error& e) {
        throw Error("load " + quote(path) + ": " + e.what());
      }
    }
    Image img = put_image(a.manifest_json, a.config_json, {});
    std::vector<std::string> names;
    for (const auto& n : a.names)
      if (oci::Reference::try_parse(n)) names.push_back(n);
    loaded.emplace_back(img.manifest_digest, names);
  }
  std::vector<Image> out;
  for (const auto& [d, names] : loaded) {
    Image img = image_by_manifest(d);
    for (const auto& n : names) tag(img, n);
    out.push_back(image_by_manifest(d));
  }
  return out;
}

void Store::save(const std::vector<std::string>& refs, const std::string& out, SaveFormat format) {
  hold_gc();
  if (refs.empty()) throw UsageError("save: no image given");
  std::vector<archive::ExportedImage> ex;
  for (const auto& r : refs) {
    Image img = image(r);
    archive::ExportedImage e;
    e.manifest_digest = img.manifest_digest;
    e.manifest_json = read_blob(img.manifest_digest);
    e.config_json = read_blob(img.config_digest);
    e.manifest = img.manifest;
    e.diff_ids = img.diff_ids;
    auto parsed = oci::Reference::try_parse(r);
    bool by_name = false;
    if (parsed && !parsed->digest)
      for (const auto& n : img.names)
        if (normalise_name(n) == parsed->str()) by_name = true;
    if (by_name) e.names.push_back(parsed->str());
    ex.push_back(std::move(e));
  }
  report("Writing " + std::to_string(ex.size()) + " image(s) to " + out);
  Staged work(tmp_dir(), "save", true);
  std::string layout = work.path() + "/out";
  mkdir_if_missing(layout, 0755);
  std::string scratch = work.path() + "/scratch";
  mkdir_if_missing(scratch, 0700);
  auto blob = [&](const oci::Digest& d) { return blob_path(d); };
  if (format == SaveFormat::oci) {
    archive::write_oci_layout(ex, layout, blob);
  } else {
    auto layer_tar = [&](const oci::Digest& diff_id) -> std::string {
      Layer l = layer(diff_id);
      if (l.blob_digest == l.diff_id) return blob_path(l.blob_digest);
      std::string p = scratch + "/" + diff_id.hex();
      if (!exists(p)) {
        UniqueFd in = open_at(AT_FDCWD, blob_path(l.blob_digest), O_RDONLY);
        UniqueFd o(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!o) throw_errno("create " + quote(p));
        archive::decompress(in.get(), o.get());
      }
      return p;
    };
    archive::write_docker_archive(ex, layout, layer_tar);
  }
  if (!out.empty() && out.back() == '/') {
    std::string target = out.substr(0, out.size() - 1);
    if (exists(target)) throw Error("save: " + quote(target) + " already exists");
    if (::rename(layout.c_str(), target.c_str()) != 0) {
      if (errno != EXDEV) throw_errno("save to " + quote(target));
      std::string stage = target + ".tmp-" + std::to_string(::getpid());
      mkdir_if_missing(stage, 0755);
      try {
        if (format == SaveFormat::oci)
          archive::write_oci_layout(ex, stage, blob);
        else
          throw Error("save: a directory output is only for --format oci");
        if (::rename(stage.c_str(), target.c_str()) != 0) throw_errno("save to " + quote(target));
      } catch (...) {
        remove_tree_at(AT_FDCWD, stage);
        throw;
      }
    }
    return;
  }
  archive::pack_directory(layout, out);
}

}  // namespace strata::store
