// Layers: each stored once as its blob (the distribution form) and once
// extracted under layers/<diff_id hex>/ with a record beside it; made from
// a directory of changes (create_layer) or a tar stream (import_layer).
#include "strata/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <functional>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

namespace {

std::string media_type_for(archive::Compression c) {
  switch (c) {
    case archive::Compression::gzip: return oci::kMediaTypeLayerGzip;
    case archive::Compression::zstd: return oci::kMediaTypeLayerZstd;
    default: return oci::kMediaTypeLayer;
  }
}

// Puts an extracted layer into place beside its blob and writes its record.
// PLACE_BLOB puts the blob into blobs/ when it is not there yet (the blob
// goes first: a layer record never names a blob that is not stored).
Layer install_layer(const Store& s, const std::function<void(const std::string&)>& place_blob, Staged& tree,
                    const archive::LayerDigests& d, const std::string& media_type, std::int64_t blob_size) {
  Layer l;
  l.diff_id = d.diff_id;
  l.blob_digest = d.blob_digest;
  l.media_type = media_type;
  l.size = d.size;
  l.blob_size = blob_size;
  l.dir = s.root() + "/layers/" + d.diff_id.hex();
  std::string bp = s.blob_path(d.blob_digest);
  if (!exists(bp)) place_blob(bp);
  if (auto existing = s.find_layer(d.diff_id)) {
    // The layer is there already (from another blob of the same content).
    if (exists(s.blob_path(existing->blob_digest))) return *existing;
  }
  sync_store(s.root());
  tree.commit(l.dir);  // false: a complete copy is there already
  json rec = {{"diffID", l.diff_id.str()}, {"blob", l.blob_digest.str()}, {"mediaType", l.media_type},
              {"size", l.size}, {"blobSize", l.blob_size}};
  atomic_write(s.tmp_dir(), l.dir + ".json", rec.dump());
  return l;
}

// Places a staged blob file: read-only, durable, renamed into blobs/.
std::function<void(const std::string&)> place_staged(Staged& blob) {
  return [&blob](const std::string& target) {
    ::fchmod(blob.fd(), 0444);
    if (::fsync(blob.fd()) != 0) throw_errno("sync " + quote(blob.path()));
    blob.commit(target);
  };
}

// Extracts the layer blob open at FD into a staged tree and checks it
// against the digests it must have.
archive::LayerDigests extract_checked(int fd, Staged& tree, const std::optional<oci::Digest>& expected_blob,
                                      const std::optional<oci::Digest>& expected_diff_id) {
  archive::ExtractOptions eo;
  eo.privileged = ::geteuid() == 0;
  auto d = archive::extract_layer(fd, tree.path(), eo);
  if (expected_blob && !(d.blob_digest == *expected_blob))
    throw Error("layer blob does not match its digest: expected " + expected_blob->str() + ", got " +
                d.blob_digest.str());
  if (expected_diff_id && !(d.diff_id == *expected_diff_id))
    throw Error("layer " + d.blob_digest.str() + " does not match the config's diff_id: expected " +
                expected_diff_id->str() + ", got " + d.diff_id.str());
  return d;
}

// The media type a layer blob is recorded with: the one it came with when
// that is an OCI layer type, else the one its compression gives.
std::string layer_media_type(const std::string& given, archive::Compression c) {
  if (given.empty() || given == oci::kMediaTypeDockerLayer || given == oci::kMediaTypeDockerLayerGzip)
    return media_type_for(c);
  return given;
}

// Opens a stored blob for reading: a regular file, never a FIFO or a link.
UniqueFd open_blob(const std::string& path, const oci::Digest& digest) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK));
  if (!fd) {
    if (errno == ENOENT) throw Error("layer blob " + digest.str() + " is missing from the store");
    throw_errno("open layer blob " + quote(path));
  }
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + quote(path));
  if (!S_ISREG(st.st_mode)) throw Error("layer blob " + quote(path) + " is not a regular file");
  int flags = ::fcntl(fd.get(), F_GETFL);
  if (flags >= 0) ::fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  return fd;
}

}  // namespace

std::optional<Layer> Store::find_layer(const oci::Digest& diff_id) const {
  std::string rec = root_ + "/layers/" + diff_id.hex() + ".json";
  std::string dir = root_ + "/layers/" + diff_id.hex();
  if (!exists(rec) || !exists(dir)) return std::nullopt;
  json j = parse_json(read_file(rec), rec);
  Layer l;
  l.diff_id = diff_id;
  l.blob_digest = oci::Digest::parse(j.value("blob", ""));
  l.media_type = j.value("mediaType", oci::kMediaTypeLayer);
  l.size = j.value("size", std::int64_t{0});
  l.blob_size = j.value("blobSize", std::int64_t{0});
  l.dir = dir;
  return l;
}

Layer Store::layer(const oci::Digest& diff_id) const {
  if (auto l = find_layer(diff_id)) return *l;
  throw Error("no such layer: " + diff_id.str());
}

Layer Store::create_layer(const std::string& dir, const LayerOptions& options) {
  hold_gc();
  Staged blob(tmp_dir(), "layer", false);
  archive::WriteLayerOptions wo;
  wo.changeset = options.changeset;
  wo.clamp_mtime = options.clamp_mtime;
  wo.owner_map = owner_map_;
  wo.compression = archive::Compression::gzip;
  Staged tree(tmp_dir(), "tree", true);
  archive::LayerDigests written =
      options.adopt_files ? archive::write_layer_with_tree(dir, blob.fd(), tree.path(), wo, ::geteuid() == 0)
                          : archive::write_layer(dir, blob.fd(), wo);
  if (auto existing = find_layer(written.diff_id); existing && exists(blob_path(existing->blob_digest)))
    return *existing;
  if (!options.adopt_files) {
    if (::lseek(blob.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(blob.path()));
    written = extract_checked(blob.fd(), tree, written.blob_digest, written.diff_id);
  }
  return install_layer(*this, place_staged(blob), tree, written, oci::kMediaTypeLayerGzip, written.blob_size);
}

Layer Store::layer_from_blob(const oci::Descriptor& blob, const oci::Digest& diff_id) {
  if (auto l = find_layer(diff_id)) return *l;
  hold_gc();
  UniqueFd fd = open_blob(blob_path(blob.digest), blob.digest);
  report("Extracting layer " + blob.digest.short_id());
  try {
    Staged tree(tmp_dir(), "tree", true);
    auto d = extract_checked(fd.get(), tree, blob.digest, diff_id);
    if (d.compression == archive::Compression::none && !(d.blob_digest == d.diff_id))
      throw Error("it is compressed with a method OCI layers do not use");
    auto in_place = [](const std::string&) {};
    return install_layer(*this, in_place, tree, d, layer_media_type(blob.media_type, d.compression), d.blob_size);
  } catch (const Error& e) {
    throw Error("layer blob " + blob.digest.str() + ": " + e.what(), e.code());
  }
}

Layer Store::adopt_layer_blob(const std::string& path, const oci::Descriptor& blob, const oci::Digest& diff_id) {
  hold_gc();
  UniqueFd fd = open_blob(path, blob.digest);
  Staged tree(tmp_dir(), "tree", true);
  auto d = extract_checked(fd.get(), tree, blob.digest, diff_id);
  if (d.compression == archive::Compression::none && !(d.blob_digest == d.diff_id)) {
    // xz or bzip2: no OCI media type; import_layer keeps it uncompressed.
    if (::lseek(fd.get(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(path));
    return import_layer(fd.get(), blob.media_type, blob.digest, diff_id);
  }
  auto rename_in = [&](const std::string& target) {
    ::fchmod(fd.get(), 0444);
    if (::fsync(fd.get()) != 0) throw_errno("sync " + quote(path));
    if (::rename(path.c_str(), target.c_str()) != 0) throw_errno("rename " + quote(path) + " to " + quote(target));
  };
  return install_layer(*this, rename_in, tree, d, layer_media_type(blob.media_type, d.compression), d.blob_size);
}

Layer Store::import_layer(int in_fd, const std::string& media_type, const std::optional<oci::Digest>& expected_blob,
                          const std::optional<oci::Digest>& expected_diff_id) {
  hold_gc();
  Staged raw(tmp_dir(), "blob", false);
  auto c = archive::copy_and_digest(in_fd, raw.fd());
  if (expected_blob && !(c.blob_digest == *expected_blob))
    throw Error("layer blob does not match its digest: expected " + expected_blob->str() + ", got " +
                c.blob_digest.str());
  Staged tree(tmp_dir(), "tree", true);
  if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
  auto d = extract_checked(raw.fd(), tree, std::nullopt, expected_diff_id);
  if (d.compression == archive::Compression::none && !(d.blob_digest == d.diff_id)) {
    // xz or bzip2: no OCI media type; keep the layer uncompressed.
    Staged plain(tmp_dir(), "blob", false);
    if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
    auto p = archive::decompress(raw.fd(), plain.fd());
    archive::LayerDigests pd = d;
    pd.blob_digest = p.diff_id;
    return install_layer(*this, place_staged(plain), tree, pd, oci::kMediaTypeLayer, p.size);
  }
  if (d.compression == archive::Compression::none && !expected_blob && !expected_diff_id) {
    // A plain tar nobody's manifest names (import): its distribution form is
    // ours to choose, and gzip keeps the one stored copy small.
    Staged packed(tmp_dir(), "blob", false);
    if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
    auto [digest, size] = archive::recompress(raw.fd(), packed.fd(), archive::Compression::gzip);
    archive::LayerDigests gd = d;
    gd.blob_digest = digest;
    gd.blob_size = size;
    gd.compression = archive::Compression::gzip;
    return install_layer(*this, place_staged(packed), tree, gd, oci::kMediaTypeLayerGzip, size);
  }
  return install_layer(*this, place_staged(raw), tree, d, layer_media_type(media_type, d.compression), d.blob_size);
}

}  // namespace strata::store
