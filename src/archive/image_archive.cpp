// Whole-image archives: reading an unpacked OCI layout or docker-archive
// (`docker save` output) into ArchivedImage records, with hostile-input
// checks on every path and size, and writing an image store's images out as
// either format.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "archive_internal.hpp"
#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/text.hpp"

namespace strata::archive {

using detail::human_size;
using detail::split_name;

// ---------------------------------------------------------------- image archives

namespace {

oci::json parse_json(const std::string& text, const std::string& where) {
  try {
    return oci::json::parse(text);
  } catch (const std::exception& e) {
    throw Error("invalid JSON in " + where + ": " + e.what());
  }
}

// An unpacked image archive and the name the user gave it: every message
// names a file as "NAME in ARCHIVE", never the staging directory.
struct ArchiveDir {
  std::string dir;
  std::string shown;

  std::string where(const std::string& rel) const { return quote(rel) + " in " + quote(shown); }

  // The real path of REL inside DIR; refuses names and symlinks that lead
  // out of DIR. WHERE names the document that named REL.
  std::string inside(const std::string& rel, const std::string& named_in) const {
    split_name(rel, "path in " + named_in);
    std::string path = dir + "/" + rel;
    char real_dir[PATH_MAX], real_path[PATH_MAX];
    if (::realpath(dir.c_str(), real_dir) == nullptr) throw_errno("resolve " + quote(shown));
    if (::realpath(path.c_str(), real_path) == nullptr) {
      if (errno == ENOENT) throw Error(where(rel) + " is missing (named in " + named_in + ")");
      throw_errno(where(rel));
    }
    std::string rd = real_dir, rp = real_path;
    if (rp.size() <= rd.size() || rp.compare(0, rd.size(), rd) != 0 || rp[rd.size()] != '/')
      throw Error("refusing " + quote(rel) + " named in " + named_in + ": it leads outside the archive");
    return rp;
  }

  // Reads REL (a regular file of at most MAX bytes) whole.
  std::string read(const std::string& rel, std::int64_t max, const std::string& named_in) const {
    std::string path = inside(rel, named_in);
    UniqueFd fd = open_archive_blob(path, where(rel));
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + where(rel));
    if (st.st_size > max)
      throw Error("refusing " + where(rel) + ": " + human_size(st.st_size) + " is more than the " + human_size(max) +
                  " allowed for it");
    std::string text(static_cast<std::size_t>(st.st_size), '\0');
    std::size_t got = 0;
    while (got < text.size()) {
      ssize_t n = ::read(fd.get(), text.data() + got, text.size() - got);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read " + where(rel));
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    text.resize(got);
    return text;
  }

  // A blob named by digest, checked against it.
  std::string read_blob(const oci::Digest& digest, std::int64_t max, const std::string& what,
                        const std::string& named_in) const {
    std::string rel = "blobs/sha256/" + digest.hex();
    std::string text = read(rel, max, named_in);
    oci::Digest got = oci::sha256(text);
    if (!(got == digest))
      throw Error(what + " " + digest.str() + " in " + quote(shown) + " does not match its content (" + got.str() + ")");
    return text;
  }
};

const char* layer_media_type_from_magic(int fd) {
  unsigned char m[4] = {0, 0, 0, 0};
  ssize_t n = ::pread(fd, m, 4, 0);
  if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) return oci::kMediaTypeLayerGzip;
  if (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) return oci::kMediaTypeLayerZstd;
  return oci::kMediaTypeLayer;
}

std::vector<std::string> names_from_annotations(const std::map<std::string, std::string>& ann) {
  std::vector<std::string> out;
  if (auto it = ann.find("io.containerd.image.name"); it != ann.end()) {
    out.push_back(it->second);
    return out;
  }
  if (auto it = ann.find(oci::kAnnotationRefName); it != ann.end()) {
    const std::string& v = it->second;
    if (v.find(':') != std::string::npos || v.find('/') != std::string::npos || v.find('@') != std::string::npos)
      out.push_back(v);
    else
      out.push_back(v + ":latest");
  }
  return out;
}

void add_names(ArchivedImage& img, const std::vector<std::string>& names, const std::string& shown) {
  for (const auto& n : names)
    if (std::find(img.names.begin(), img.names.end(), n) == img.names.end()) img.names.push_back(n);
  if (img.names.size() > kMaxNamesPerImage)
    throw Error("refusing " + quote(shown) + ": it gives image " + img.manifest.config.digest.short_id() + " " +
                std::to_string(img.names.size()) + " names or more; at most " + std::to_string(kMaxNamesPerImage) +
                " are allowed");
}

// A platform field of an index entry; one that is not a string matches no machine.
std::string platform_field(const oci::json& platform, const char* key, const std::string& absent) {
  auto it = platform.find(key);
  if (it == platform.end()) return absent;
  return it->is_string() ? it->get<std::string>() : std::string();
}

// Walks an OCI layout's indexes: each index and manifest is read once
// however many indexes name it (a DAG of shared sub-indexes stays linear),
// and nesting deeper than kMaxIndexDepth is refused.
struct IndexWalk {
  const ArchiveDir& archive;
  std::vector<ArchivedImage>& out;
  std::set<oci::Digest> indexes_seen;
  std::map<oci::Digest, std::size_t> manifest_at;  // position in OUT

  void index(const oci::json& idx, const std::string& where, const std::vector<std::string>& inherited,
             std::size_t depth) {
    if (depth > kMaxIndexDepth)
      throw Error("refusing " + quote(archive.shown) + ": its indexes nest deeper than " +
                  std::to_string(kMaxIndexDepth) + " levels (at " + where + ")");
    if (!idx.is_object() || !idx.contains("manifests") || !idx["manifests"].is_array())
      throw Error("invalid index " + where + ": no manifests");
    std::vector<oci::Descriptor> descs;
    for (const auto& m : idx["manifests"]) descs.push_back(oci::Descriptor::from_json(m, where));
    // A multi-platform index: keep the host's platform only.
    bool any_platform = false;
    for (const auto& d : descs) any_platform = any_platform || d.platform.has_value();
    std::string arch = oci::host_architecture();
    for (const auto& d : descs) {
      if (any_platform && d.platform && d.platform->is_object()) {
        if (platform_field(*d.platform, "architecture", arch) != arch ||
            platform_field(*d.platform, "os", "linux") != "linux")
          continue;
      }
      std::vector<std::string> names = names_from_annotations(d.annotations);
      if (names.empty()) names = inherited;
      if (auto it = manifest_at.find(d.digest); it != manifest_at.end()) {
        add_names(out[it->second], names, archive.shown);
        continue;
      }
      if (indexes_seen.count(d.digest) != 0) continue;
      std::string text = archive.read_blob(d.digest, kMaxManifestSize, "manifest", where);
      std::string blob_where = archive.where("blobs/sha256/" + d.digest.hex());
      oci::json j = parse_json(text, blob_where);
      if (j.is_object() && j.contains("mediaType") && !j["mediaType"].is_string())
        throw Error("invalid " + blob_where + ": mediaType is not a string");
      std::string mt = j.is_object() ? j.value("mediaType", d.media_type) : d.media_type;
      if (mt == oci::kMediaTypeIndex || mt == oci::kMediaTypeDockerManifestList ||
          (j.is_object() && j.contains("manifests"))) {
        indexes_seen.insert(d.digest);
        index(j, blob_where, names, depth + 1);
        continue;
      }
      ArchivedImage img;
      img.manifest = oci::Manifest::from_json(j, blob_where);
      img.manifest_json = text;
      img.config_json = archive.read_blob(img.manifest.config.digest, kMaxConfigSize, "config", blob_where);
      for (const auto& l : img.manifest.layers) {
        std::string lp = archive.inside("blobs/sha256/" + l.digest.hex(), blob_where);
        open_archive_blob(lp, archive.where("blobs/sha256/" + l.digest.hex()));
        img.layer_paths.push_back(lp);
      }
      add_names(img, names, archive.shown);
      manifest_at[d.digest] = out.size();
      out.push_back(std::move(img));
    }
  }
};

}  // namespace

UniqueFd open_archive_blob(const std::string& path, const std::string& shown) {
  // O_NONBLOCK: a FIFO put where a blob belongs must not hang the reader.
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) {
    if (errno == ELOOP) throw Error("refusing " + shown + ": it is a symlink, not a file");
    throw_errno("open " + shown);
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + shown);
  if (!S_ISREG(st.st_mode)) throw Error("refusing " + shown + ": it is not a regular file");
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

std::vector<ArchivedImage> read_image_archive(const std::string& dir, const std::string& shown_as) {
  ArchiveDir archive{dir, shown_as.empty() ? dir : shown_as};
  std::vector<ArchivedImage> out;
  if (::access((dir + "/oci-layout").c_str(), F_OK) == 0 && ::access((dir + "/index.json").c_str(), F_OK) == 0) {
    oci::json layout = parse_json(archive.read("oci-layout", kMaxManifestSize, "the OCI layout"), archive.where("oci-layout"));
    auto version = layout.find("imageLayoutVersion");
    if (!layout.is_object() || version == layout.end() || *version != "1.0.0")
      throw Error("unsupported OCI layout version in " + archive.where("oci-layout") + " (strata reads 1.0.0)");
    IndexWalk walk{archive, out, {}, {}};
    walk.index(parse_json(archive.read("index.json", kMaxManifestSize, "the OCI layout"), archive.where("index.json")),
               archive.where("index.json"), {}, 1);
    if (out.empty()) throw Error("no image for this platform (linux/" + oci::host_architecture() + ") in " + quote(archive.shown));
    return out;
  }
  if (::access((dir + "/manifest.json").c_str(), F_OK) != 0)
    throw Error(quote(archive.shown) +
                " is not an image archive: it has neither oci-layout and index.json (an OCI layout) nor manifest.json "
                "(a docker archive); give the output of `strata save` or `docker save`, or import a root file system "
                "tar with `strata import`");
  std::string mwhere = archive.where("manifest.json");
  oci::json m = parse_json(archive.read("manifest.json", kMaxManifestSize, "the docker archive"), mwhere);
  if (!m.is_array()) throw Error("invalid " + mwhere + ": not an array");
  for (const auto& entry : m) {
    if (!entry.is_object() || !entry.contains("Config") || !entry.contains("Layers") || !entry["Config"].is_string() ||
        !entry["Layers"].is_array())
      throw Error("invalid " + mwhere + ": entry without Config or Layers");
    ArchivedImage img;
    std::string cfg_rel = entry["Config"].get<std::string>();
    img.config_json = archive.read(cfg_rel, kMaxConfigSize, mwhere);
    oci::Digest cdig = oci::sha256(img.config_json);
    std::string base = cfg_rel.substr(cfg_rel.rfind('/') == std::string::npos ? 0 : cfg_rel.rfind('/') + 1);
    if (base.size() >= 64) {
      std::string hex = base.substr(0, 64);
      if (auto want = oci::Digest::try_parse("sha256:" + hex); want && !(*want == cdig))
        throw Error("config " + archive.where(cfg_rel) + " does not match its digest");
    }
    img.manifest.media_type = oci::kMediaTypeManifest;
    img.manifest.config.media_type = oci::kMediaTypeConfig;
    img.manifest.config.digest = cdig;
    img.manifest.config.size = static_cast<std::int64_t>(img.config_json.size());
    for (const auto& l : entry["Layers"]) {
      if (!l.is_string()) throw Error("invalid " + mwhere + ": a layer that is not a path");
      std::string rel = l.get<std::string>();
      std::string lp = archive.inside(rel, mwhere);
      UniqueFd fd = open_archive_blob(lp, archive.where(rel));
      struct stat st {};
      ::fstat(fd.get(), &st);
      oci::Descriptor d;
      d.media_type = layer_media_type_from_magic(fd.get());
      d.digest = oci::sha256_fd(fd.get());
      d.size = st.st_size;
      img.manifest.layers.push_back(d);
      img.layer_paths.push_back(lp);
    }
    std::vector<std::string> names;
    if (entry.contains("RepoTags") && entry["RepoTags"].is_array())
      for (const auto& t : entry["RepoTags"])
        if (t.is_string()) names.push_back(t.get<std::string>());
    add_names(img, names, archive.shown);
    img.manifest_json = img.manifest.to_json().dump();
    out.push_back(std::move(img));
  }
  return out;
}

namespace {
void link_or_copy(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return;
  if (errno == EEXIST) return;
  UniqueFd in = open_at(AT_FDCWD, from, O_RDONLY);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out) throw_errno("create " + quote(to));
  copy_and_digest(in.get(), out.get());
}

void write_text(const std::string& path, const std::string& text) {
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) throw_errno("create " + quote(path));
  write_all(out.get(), text.data(), text.size(), quote(path));
}

void mkdir_p(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create directory " + quote(path));
}
}  // namespace

void write_oci_layout(const std::vector<ExportedImage>& images, const std::string& dir,
                      const std::function<std::string(const oci::Digest&)>& blob_path) {
  mkdir_p(dir + "/blobs");
  mkdir_p(dir + "/blobs/sha256");
  write_text(dir + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  oci::json index;
  index["schemaVersion"] = 2;
  index["mediaType"] = oci::kMediaTypeIndex;
  index["manifests"] = oci::json::array();
  for (const auto& img : images) {
    std::string b = dir + "/blobs/sha256/";
    write_text(b + img.manifest_digest.hex(), img.manifest_json);
    link_or_copy(blob_path(img.manifest.config.digest), b + img.manifest.config.digest.hex());
    for (const auto& l : img.manifest.layers) link_or_copy(blob_path(l.digest), b + l.digest.hex());
    oci::Descriptor d;
    d.media_type = img.manifest.media_type;
    d.digest = img.manifest_digest;
    d.size = static_cast<std::int64_t>(img.manifest_json.size());
    if (img.names.empty()) {
      index["manifests"].push_back(d.to_json());
    }
    for (const auto& n : img.names) {
      oci::Descriptor dn = d;
      auto ref = oci::Reference::parse(n);
      dn.annotations[oci::kAnnotationRefName] = ref.familiar();
      dn.annotations["io.containerd.image.name"] = ref.str();
      index["manifests"].push_back(dn.to_json());
    }
  }
  write_text(dir + "/index.json", index.dump());
}

void write_docker_archive(const std::vector<ExportedImage>& images, const std::string& dir,
                          const std::function<std::string(const oci::Digest& diff_id)>& layer_tar) {
  oci::json manifest = oci::json::array();
  oci::json repositories = oci::json::object();
  for (const auto& img : images) {
    std::string cfg = img.manifest.config.digest.hex() + ".json";
    write_text(dir + "/" + cfg, img.config_json);
    oci::json entry;
    entry["Config"] = cfg;
    entry["RepoTags"] = oci::json::array();
    entry["Layers"] = oci::json::array();
    for (const auto& d : img.diff_ids) {
      mkdir_p(dir + "/" + d.hex());
      link_or_copy(layer_tar(d), dir + "/" + d.hex() + "/layer.tar");
      write_text(dir + "/" + d.hex() + "/VERSION", "1.0");
      entry["Layers"].push_back(d.hex() + "/layer.tar");
    }
    for (const auto& n : img.names) {
      auto ref = oci::Reference::parse(n);
      entry["RepoTags"].push_back(ref.familiar());
      if (!img.diff_ids.empty() && !ref.tag.empty()) repositories[ref.familiar_name()][ref.tag] = img.diff_ids.back().hex();
    }
    manifest.push_back(entry);
  }
  write_text(dir + "/manifest.json", manifest.dump());
  if (!repositories.empty()) write_text(dir + "/repositories", repositories.dump());
}

}  // namespace strata::archive
