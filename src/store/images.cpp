// Images and names: index.json is the list of images (manifest
// descriptors, one entry per name); resolving references and ids, writing
// images, tagging, untagging and removing.
#include "strata/store.hpp"

#include <algorithm>
#include <set>

#include "strata/error.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

namespace {

// Index update: puts DESC under each of NAMES (taking the names from other
// images, which keep an unnamed entry when it was their last one), or adds
// an unnamed entry when NAMES is empty and the manifest has no entry.
void index_add(json& index, const json& desc, const std::vector<std::string>& names) {
  json& m = index["manifests"];
  std::string digest = desc["digest"].get<std::string>();
  std::set<std::string> norm;
  for (const auto& n : names) norm.insert(normalise_name(n));
  json out = json::array();
  std::set<std::string> lost;  // digests that lost a name
  for (const auto& e : m) {
    std::string n = entry_name(e);
    if (!n.empty() && norm.count(n) != 0) {
      lost.insert(entry_digest(e));
      continue;
    }
    // An unnamed entry of this manifest goes when it gets a name.
    if (n.empty() && entry_digest(e) == digest && !norm.empty()) continue;
    out.push_back(e);
  }
  for (const auto& d : lost) {
    if (d == digest) continue;
    bool still = std::any_of(out.begin(), out.end(), [&](const json& e) { return entry_digest(e) == d; });
    if (!still) {
      for (const auto& e : m)
        if (entry_digest(e) == d) {
          json copy = e;
          copy.erase("annotations");
          out.push_back(copy);
          break;
        }
    }
  }
  if (norm.empty()) {
    bool has = std::any_of(out.begin(), out.end(), [&](const json& e) { return entry_digest(e) == digest; });
    if (!has) out.push_back(desc);
  }
  for (const auto& n : names) {
    json e = desc;
    e["annotations"] = json::object();
    e["annotations"][oci::kAnnotationRefName] = oci::Reference::parse(n).familiar();
    out.push_back(e);
  }
  m = out;
}

}  // namespace

namespace {

// The short names index.json gives to manifest DIGEST.
std::vector<std::string> names_of(const json& index, const std::string& digest) {
  std::vector<std::string> names;
  for (const auto& e : index["manifests"]) {
    if (entry_digest(e) != digest) continue;
    std::string n = entry_name(e);
    if (!n.empty()) names.push_back(oci::Reference::parse(n).familiar());
  }
  return names;
}

}  // namespace

// Reads the image of MANIFEST_DIGEST with the names INDEX gives it. Layers
// stored only as blobs are extracted (Layers::extract) or left as "" dirs.
// A layer blob in neither form throws with Layers::extract; with
// Layers::as_blobs it is collected in MISSING (when given).
Image Store::read_image(const oci::Digest& manifest_digest, const json& index, Layers layers,
                        std::vector<oci::Digest>* missing) const {
  Image img;
  img.manifest_digest = manifest_digest;
  std::string mtext = read_blob(manifest_digest);
  json mj = parse_json(mtext, blob_path(manifest_digest));
  img.manifest = oci::Manifest::from_json(mj, "manifest " + manifest_digest.str());
  img.config_digest = img.manifest.config.digest;
  img.config = parse_json(read_blob(img.config_digest), blob_path(img.config_digest));
  img.diff_ids = oci::config_diff_ids(img.config);
  // Configs come from other tools and registries: a field of another type is ignored, not fatal.
  if (auto c = img.config.find("created"); c != img.config.end() && c->is_string()) img.created = c->get<std::string>();
  img.names = names_of(index, manifest_digest.str());
  std::string what = "image " + (img.names.empty() ? img.config_digest.short_id() : quote(img.names[0]));
  if (img.diff_ids.size() != img.manifest.layers.size())
    throw Error(what + ": its config lists " + std::to_string(img.diff_ids.size()) + " layers but its manifest " +
                std::to_string(img.manifest.layers.size()));
  for (std::size_t i = img.diff_ids.size(); i-- > 0;) {
    const oci::Digest& diff_id = img.diff_ids[i];
    const oci::Descriptor& blob = img.manifest.layers[i];
    if (auto l = find_layer(diff_id)) {
      img.layer_dirs.push_back(l->dir);
      img.size += l->size;
      continue;
    }
    if (!exists(blob_path(blob.digest))) {
      std::string msg = what + ": layer blob " + blob.digest.str() +
                        " is missing from the store (pull or load the image again, or remove it with rmi)";
      if (layers == Layers::extract) throw Error(msg);
      if (missing != nullptr) missing->push_back(blob.digest);
      img.layer_dirs.emplace_back();
      continue;
    }
    if (layers == Layers::as_blobs) {
      img.layer_dirs.emplace_back();
      img.size += blob.size;
      continue;
    }
    // First use of a layer another tool wrote as a blob: extract it now. The
    // Store handle is a view of the root; a copy extracts through it.
    Store writer = *this;
    try {
      Layer l = writer.layer_from_blob(blob, diff_id);
      img.layer_dirs.push_back(l.dir);
      img.size += l.size;
    } catch (const Error& e) {
      throw Error(what + ": " + e.what(), e.code());
    }
  }
  return img;
}

Image Store::image_by_manifest(const oci::Digest& manifest_digest, Layers layers) const {
  return read_image(manifest_digest, read_index(root_), layers, nullptr);
}

std::vector<Image> Store::images(std::vector<std::string>* problems) const {
  json index = read_index(root_);
  std::set<std::string> seen;
  std::vector<Image> out;
  for (const auto& e : index["manifests"]) {
    std::string d = entry_digest(e);
    if (d.empty() || !seen.insert(d).second) continue;
    auto dig = oci::Digest::try_parse(d);
    if (!dig) continue;
    auto media_type = e.find("mediaType");
    std::string mt = media_type != e.end() && media_type->is_string() ? media_type->get<std::string>() : "";
    if (mt == oci::kMediaTypeIndex || mt == oci::kMediaTypeDockerManifestList) continue;
    std::vector<oci::Digest> missing;
    try {
      out.push_back(read_image(*dig, index, Layers::as_blobs, &missing));
    } catch (const std::exception& err) {
      // One unreadable image (Error, or a JSON document of the wrong shape)
      // does not hide the others.
      if (problems != nullptr) problems->push_back(std::string("manifest ") + d + ": " + err.what());
      continue;
    }
    if (problems != nullptr)
      for (const auto& m : missing)
        problems->push_back("image " + out.back().config_digest.short_id() + ": layer blob " + m.str() +
                            " is missing from the store (pull or load the image again, or remove it with rmi)");
  }
  std::stable_sort(out.begin(), out.end(), [](const Image& a, const Image& b) { return a.created > b.created; });
  return out;
}

std::optional<Image> Store::find_image(std::string_view ref_or_id, Layers layers) const {
  std::string s(ref_or_id);
  if (s.empty()) return std::nullopt;
  json index = read_index(root_);
  auto by_manifest = [&](const oci::Digest& d) { return read_image(d, index, layers, nullptr); };
  // A full digest: manifest digest or image id.
  if (auto d = oci::Digest::try_parse(s)) {
    for (const auto& e : index["manifests"])
      if (entry_digest(e) == d->str()) return by_manifest(*d);
    for (const auto& img : images())
      if (img.config_digest == *d) return by_manifest(img.manifest_digest);
    if (exists(blob_path(*d))) {
      // An untagged image a container still uses.
      try {
        return by_manifest(*d);
      } catch (const Error&) {
      }
    }
    return std::nullopt;
  }
  // A name.
  if (auto r = oci::Reference::try_parse(s)) {
    if (r->digest) {
      bool known = false;
      for (const auto& e : index["manifests"]) known = known || entry_digest(e) == r->digest->str();
      if (known) return by_manifest(*r->digest);
    } else {
      std::string want = r->str();
      for (const auto& e : index["manifests"])
        if (entry_name(e) == want) return by_manifest(oci::Digest::parse(entry_digest(e)));
    }
  }
  // A short image id.
  if (s.size() >= 4 && s.size() <= 64 && is_hex(s)) {
    std::optional<oci::Digest> match;
    for (const auto& img : images()) {
      if (img.config_digest.hex().rfind(s, 0) != 0) continue;
      if (match && !(*match == img.manifest_digest)) throw Error("image id " + quote(s) + " is ambiguous");
      match = img.manifest_digest;
    }
    if (match) return by_manifest(*match);
  }
  if (!oci::Reference::try_parse(s) && !is_hex(s)) oci::Reference::parse(s);  // throws the reference error
  return std::nullopt;
}

Image Store::image(std::string_view ref_or_id, Layers layers) const {
  if (auto img = find_image(ref_or_id, layers)) return *img;
  throw Error("no such image: " + quote(ref_or_id));
}

Image Store::write_image(const json& config_in, const std::vector<std::string>& names) {
  for (const auto& n : names) oci::Reference::parse(n);
  json config = config_in;
  if (!config.is_object()) throw Error("image config is not an object");
  if (!config.contains("architecture")) config["architecture"] = oci::host_architecture();
  if (!config.contains("os")) config["os"] = "linux";
  auto diff_ids = oci::config_diff_ids(config);
  oci::Manifest m;
  for (const auto& d : diff_ids) {
    Layer l = layer(d);
    if (!exists(blob_path(l.blob_digest))) throw Error("blob of layer " + d.str() + " is missing from the store");
    oci::Descriptor ld;
    ld.media_type = l.media_type;
    ld.digest = l.blob_digest;
    ld.size = l.blob_size;
    m.layers.push_back(ld);
  }
  std::string cfg = config.dump();
  auto [cd, csize] = put_blob(cfg);
  m.config.media_type = oci::kMediaTypeConfig;
  m.config.digest = cd;
  m.config.size = csize;
  return put_image(m.to_json().dump(), cfg, names);
}

Image Store::put_image(const std::string& manifest_json, const std::string& config_json,
                       const std::vector<std::string>& names) {
  for (const auto& n : names) oci::Reference::parse(n);
  json mj = parse_json(manifest_json, "manifest");
  oci::Manifest m = oci::Manifest::from_json(mj, "manifest");
  if (!(oci::sha256(config_json) == m.config.digest))
    throw Error("config does not match the manifest's digest " + m.config.digest.str());
  json config = parse_json(config_json, "config " + m.config.digest.str());
  auto diff_ids = oci::config_diff_ids(config);
  if (diff_ids.size() != m.layers.size())
    throw Error("image config lists " + std::to_string(diff_ids.size()) + " layers but the manifest " +
                std::to_string(m.layers.size()));
  for (std::size_t i = 0; i < diff_ids.size(); ++i) {
    if (!find_layer(diff_ids[i])) throw Error("layer " + diff_ids[i].str() + " is not in the store");
    if (!exists(blob_path(m.layers[i].digest))) throw Error("layer blob " + m.layers[i].digest.str() + " is not in the store");
  }
  if (!exists(blob_path(m.config.digest))) put_blob(config_json);
  auto [md, msize] = put_blob(manifest_json);
  sync_store(root_);
  oci::Descriptor desc;
  desc.media_type = mj.value("mediaType", oci::kMediaTypeManifest);
  desc.digest = md;
  desc.size = msize;
  {
    FileLock lock(root_ + "/lock");
    json index = read_index(root_);
    index_add(index, desc.to_json(), names);
    write_index(root_, index);
  }
  return image_by_manifest(md);
}

void Store::tag(const Image& img, std::string_view ref) {
  oci::Descriptor desc;
  desc.media_type = img.manifest.media_type;
  desc.digest = img.manifest_digest;
  desc.size = static_cast<std::int64_t>(read_blob(img.manifest_digest).size());
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  index_add(index, desc.to_json(), {std::string(ref)});
  write_index(root_, index);
}

void Store::untag(std::string_view ref) {
  std::string want = normalise_name(ref);
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  json out = json::array();
  bool found = false;
  for (const auto& e : index["manifests"]) {
    if (entry_name(e) == want) {
      found = true;
      continue;
    }
    out.push_back(e);
  }
  if (!found) throw Error("no such image: " + quote(ref));
  index["manifests"] = out;
  write_index(root_, index);
}

std::vector<std::string> Store::remove_image(std::string_view ref_or_id, bool force) {
  // Names and removal need the manifest, not the layers: an image whose
  // layer blobs are missing can still be untagged and removed.
  Image img = image(ref_or_id, Layers::as_blobs);
  std::vector<std::string> lines;
  std::string s(ref_or_id);
  auto r = oci::Reference::try_parse(s);
  bool by_name = false;
  if (r && !r->digest) {
    for (const auto& n : img.names)
      if (normalise_name(n) == r->str()) by_name = true;
  }
  // Removing one of several names deletes nothing; otherwise the image goes
  // and a container using it must not be left without a name for it.
  if (!(by_name && img.names.size() > 1)) {
    std::vector<std::string> users;
    for (const auto& c : containers())
      if (c.image == img.manifest_digest) users.push_back(c.name);
    if (!users.empty() && !force)
      throw Error("image " + quote(ref_or_id) + " is used by container " + quote(users[0]) +
                  " (remove it first, or use -f)");
  }
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  json out = json::array();
  if (by_name && img.names.size() > 1) {
    for (const auto& e : index["manifests"]) {
      if (entry_name(e) == r->str()) continue;
      out.push_back(e);
    }
    lines.push_back("Untagged: " + r->familiar());
  } else {
    for (const auto& e : index["manifests"]) {
      if (entry_digest(e) == img.manifest_digest.str()) continue;
      out.push_back(e);
    }
    for (const auto& n : img.names) lines.push_back("Untagged: " + n);
    lines.push_back("Deleted: " + img.config_digest.str());
  }
  index["manifests"] = out;
  write_index(root_, index);
  return lines;
}

}  // namespace strata::store
