// Layers: each stored once as its blob (the distribution form) and once
// extracted under layers/<diff_id hex>/ with a record beside it; made from
// a directory of changes (create_layer) or a tar stream (import_layer).
#include "strata/store.hpp"

#include <sys/stat.h>
#include <unistd.h>

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

// Puts an extracted layer and its blob into place and writes its record.
Layer install_layer(const Store& s, Staged& blob, Staged& tree, const archive::LayerDigests& d,
                    const std::string& media_type, std::int64_t blob_size) {
  Layer l;
  l.diff_id = d.diff_id;
  l.blob_digest = d.blob_digest;
  l.media_type = media_type;
  l.size = d.size;
  l.blob_size = blob_size;
  l.dir = s.root() + "/layers/" + d.diff_id.hex();
  std::string bp = s.blob_path(d.blob_digest);
  if (!exists(bp)) {
    ::fchmod(blob.fd(), 0444);
    if (blob.fd() >= 0 && ::fsync(blob.fd()) != 0) throw_errno("sync " + quote(blob.path()));
    blob.commit(bp);
  }
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
  auto d = archive::write_layer(dir, blob.fd(), wo);
  if (auto existing = find_layer(d.diff_id); existing && exists(blob_path(existing->blob_digest))) {
    if (!exists(blob_path(d.blob_digest))) {
      ::fsync(blob.fd());
      ::fchmod(blob.fd(), 0444);
      blob.commit(blob_path(d.blob_digest));
    }
    return *existing;
  }
  Staged tree(tmp_dir(), "tree", true);
  if (::lseek(blob.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(blob.path()));
  archive::ExtractOptions eo;
  eo.privileged = ::geteuid() == 0;
  archive::extract_layer(blob.fd(), tree.path(), eo);
  return install_layer(*this, blob, tree, d, oci::kMediaTypeLayer, d.size);
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
  archive::ExtractOptions eo;
  eo.privileged = ::geteuid() == 0;
  auto d = archive::extract_layer(raw.fd(), tree.path(), eo);
  if (expected_diff_id && !(d.diff_id == *expected_diff_id))
    throw Error("layer " + c.blob_digest.str() + " does not match the config's diff_id: expected " +
                expected_diff_id->str() + ", got " + d.diff_id.str());
  std::string mt = media_type;
  if (d.compression == archive::Compression::none && !(d.blob_digest == d.diff_id)) {
    // xz or bzip2: no OCI media type; keep the layer uncompressed.
    Staged plain(tmp_dir(), "blob", false);
    if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
    auto p = archive::decompress(raw.fd(), plain.fd());
    archive::LayerDigests pd = d;
    pd.blob_digest = p.diff_id;
    return install_layer(*this, plain, tree, pd, oci::kMediaTypeLayer, p.size);
  }
  if (mt.empty() || mt == oci::kMediaTypeDockerLayer || mt == oci::kMediaTypeDockerLayerGzip)
    mt = media_type_for(d.compression);
  return install_layer(*this, raw, tree, d, mt, d.blob_size);
}

}  // namespace strata::store
