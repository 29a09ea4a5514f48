// strata::archive: tar streams in and out (libarchive).
//
// Layer tars are written deterministically (entries sorted by name, PAX
// headers, xattrs, hardlinks as links, OCI `.wh.` whiteouts, zeroed
// atime/ctime, no user or group names), so the same tree always gives the
// same diff_id. Extraction treats every archive as hostile: names with `..`
// or absolute names are refused, nothing is written through a symlink or
// outside the destination, hardlinks must point at an entry already
// extracted, and device nodes, owners and modes that the process may not
// create are kept in the `user.containers.override_stat` xattr instead.
// Also: whole-image archives (OCI layout directory or tar, docker-archive
// from `docker save`) in and out.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/oci.hpp"

namespace strata::archive {

enum class Compression { none, gzip, zstd };

// What a layer tar hashes to: the diff_id (SHA-256 of the uncompressed tar)
// and the blob digest (SHA-256 of the bytes as stored, equal to the diff_id
// when uncompressed).
struct LayerDigests {
  oci::Digest diff_id;
  std::int64_t size = 0;  // uncompressed tar size
  oci::Digest blob_digest;
  std::int64_t blob_size = 0;
  Compression compression = Compression::none;
};

// Turns an owner as the host numbers it into the owner a layer records
// (see WriteLayerOptions::owner_map).
using OwnerMap = std::function<void(std::uint32_t& uid, std::uint32_t& gid)>;

struct WriteLayerOptions {
  Compression compression = Compression::none;
  // The tree is an overlay-style upper directory (a changeset): character
  // devices 0/0 become `.wh.NAME`, directories with the opaque xattr
  // (trusted.overlay.opaque / user.overlay.opaque = y) get `.wh..wh..opq`,
  // overlay private xattrs are dropped, and the override_stat xattr gives
  // the owner, mode and type recorded for a rootless file. Existing `.wh.`
  // files are written as they are. Without it the tree is taken literally
  // except for override_stat, which is always applied.
  bool changeset = true;
  // When set, every mtime later than this (seconds since the epoch) is
  // clamped to it (SOURCE_DATE_EPOCH).
  std::optional<std::int64_t> clamp_mtime;
  // Applied to the owner of every file without override_stat: a rootless
  // store's files belong to host ids (the user and its subordinate ids)
  // that the containers number otherwise. Unset: owners as on disk.
  OwnerMap owner_map;
};

// Writes the tree under DIR (not including DIR itself; "./" prefixes are
// not used) as a deterministic layer tar to OUT_FD and returns its digests.
// Throws Error naming the file that could not be read.
LayerDigests write_layer(const std::string& dir, int out_fd, const WriteLayerOptions& options = {});

// write_layer, and in the same pass the tree that extract_layer (PRIVILEGED
// as in ExtractOptions) would make of that tar, under TREE: an empty
// directory on DIR's file system. The data is read once and written once
// (as the tar): each regular file of the tree is a hardlink to DIR's file
// (a copy where it cannot be one), whose owner, mode, times and xattrs are
// then set as extraction sets them. So DIR must be thrown away afterwards,
// as a build step's upper is once it is a layer.
LayerDigests write_layer_with_tree(const std::string& dir, int out_fd, const std::string& tree,
                                   const WriteLayerOptions& options, bool privileged);

struct ExtractOptions {
  // Extraction may chown and mknod (running as root in the initial user
  // namespace). When false, owners other than the caller's and device nodes
  // are recorded in the override_stat xattr on a stand-in file.
  bool privileged = false;
  // Largest total of decompressed bytes accepted (0: unlimited); unset:
  // the default limit (below).
  std::optional<std::int64_t> max_size;
};

// The environment variable that sets the default decompressed-size limit of
// a layer or image archive: bytes, or a number with a K, M, G or T suffix
// (powers of 1024).
inline constexpr const char* kSizeLimitEnv = "STRATA_MAX_LAYER_SIZE";

// The default limit for a stream extracted into DIR when kSizeLimitEnv is
// not set: the space free on DIR's file system less a reserve of 5% of its
// size, so that a decompression bomb is refused before it fills the disk.
std::int64_t default_size_limit(const std::string& dir);

// Reads a layer tar (plain, gzip, zstd or xz, detected from the bytes) from
// IN_FD and extracts it into DEST, which must be an existing empty
// directory. Whiteouts stay OCI `.wh.` files (stratafs reads them as
// whiteouts). gzip's CRC-32 and length trailers are checked, so corrupt
// data fails even where no digest is known. Returns the digests of what was
// read: blob_digest over the bytes as read, diff_id over the decompressed
// tar. On any error (a decompressed size over the limit too) throws
// (one line naming the entry) and leaves DEST partly filled: callers extract
// into a staging directory and remove it on failure.
LayerDigests extract_layer(int in_fd, const std::string& dest, const ExtractOptions& options = {});

struct ExtractIntoOptions {
  // As ExtractOptions::privileged.
  bool privileged = false;
  // Owner (uid, gid) of every entry and of every parent made for one, instead
  // of the archive's (Dockerfile ADD --chown).
  std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
  // As ExtractOptions::max_size; the default limit is taken on DEST_FD's file
  // system.
  std::optional<std::int64_t> max_size;
};

// Dockerfile ADD of a local archive: extracts a tar (plain, gzip, bzip2, xz or
// zstd, detected from the bytes) from IN_FD into the directory open at
// DEST_FD, merging with what is there: an entry replaces what has its name,
// except that a directory over a directory merges. The rules and checks are
// extract_layer's (no '..', no absolute name, no path through a symlink,
// hardlinks only to earlier entries, ids up to idfile::kMaxId; owner, then
// mode, then xattrs), except that `.wh.` names are ordinary files here too
// and the archive's root entry ("./") changes nothing of DEST_FD. Throws
// (one line naming the entry); what was extracted before stays.
void extract_into(int in_fd, int dest_fd, const ExtractIntoOptions& options = {});

// What extract_layer and unpack_archive throw when the input is not a tar
// at all (plain or compressed): callers add what the user should give.
class NotATar : public Error {
 public:
  using Error::Error;
};

// Copies IN_FD to OUT_FD as it is, returning the digest and size of the
// stream (blob_digest, blob_size; diff_id is left empty). Used to store a
// blob while checking it.
LayerDigests copy_and_digest(int in_fd, int out_fd);

// Decompresses IN_FD (gzip, zstd, xz, bzip2 or plain, detected from the
// bytes) to OUT_FD. Returns blob_digest/blob_size of the input and
// diff_id/size of the output, and the compression found (none for xz and
// bzip2, which have no OCI media type).
LayerDigests decompress(int in_fd, int out_fd);

// Unpacks a plain or compressed tar of regular files and directories (an
// image archive such as `docker save` output or an OCI layout tar) into the
// empty directory DEST, with the same hostile-input rules as extract_layer.
// Hardlinks and devices are refused; symlinks are kept (read_image_archive
// refuses any that lead outside DIR).
void unpack_archive(const std::string& archive_path, const std::string& dest);

// Writes DIR (regular files and directories only) as a deterministic plain
// tar to OUT_PATH (staged next to it and renamed into place).
void pack_directory(const std::string& dir, const std::string& out_path);

// ---------------------------------------------------------------- image archives

// One image found in an OCI layout or a docker-archive.
struct ArchivedImage {
  std::vector<std::string> names;  // reference strings from the archive (may be empty)
  oci::Manifest manifest;          // for docker-archive: synthesised from manifest.json
  std::string manifest_json;       // the manifest bytes (exact for an OCI layout)
  std::string config_json;         // the config bytes, exactly as stored
  // Path of each layer blob (same order as manifest.layers) and of the config blob.
  std::vector<std::string> layer_paths;
};

// Limits on what an image archive (or a registry) may hand over; anything
// beyond them is refused with an error naming the file and the limit.
// Index nesting (an index naming an index naming ...): levels, index.json
// being the first.
inline constexpr std::size_t kMaxIndexDepth = 16;
// Bytes of one manifest, index, oci-layout or docker manifest.json.
inline constexpr std::int64_t kMaxManifestSize = std::int64_t{4} << 20;
// Bytes of one image config.
inline constexpr std::int64_t kMaxConfigSize = std::int64_t{8} << 20;
// Names (tags) one image may be given.
inline constexpr std::size_t kMaxNamesPerImage = 128;

// Opens PATH, a blob of an image archive, for reading: refuses a symlink
// and anything but a regular file (a FIFO would hang the reader). SHOWN
// names it in errors.
UniqueFd open_archive_blob(const std::string& path, const std::string& shown);

// Reads the images of an unpacked archive directory: an OCI image layout
// (oci-layout + index.json, nested indexes followed, each index and
// manifest read once, the host platform chosen from a multi-platform index)
// or a docker-archive (manifest.json). Checks that every blob exists and is
// a regular file within the limits above, and that config and manifest
// digests match; layer digests are checked when the layers are stored.
// Errors name files as "NAME in SHOWN_AS" (default: DIR), so that a
// staging directory stands for the user's archive file.
std::vector<ArchivedImage> read_image_archive(const std::string& dir, const std::string& shown_as = {});

// One image to write out.
struct ExportedImage {
  std::vector<std::string> names;  // full references, e.g. "docker.io/library/alpine:3.20"
  oci::Digest manifest_digest;
  std::string manifest_json;
  std::string config_json;
  oci::Manifest manifest;
  std::vector<oci::Digest> diff_ids;  // bottom first, same order as manifest.layers
};

// Writes IMAGES as an OCI image layout into the empty directory DIR.
// BLOB_PATH maps a digest to the file holding that blob.
void write_oci_layout(const std::vector<ExportedImage>& images, const std::string& dir,
                      const std::function<std::string(const oci::Digest&)>& blob_path);

// Writes IMAGES in the layout `docker load` reads (manifest.json,
// <config-hex>.json, <diff_id-hex>/layer.tar, repositories) into the empty
// directory DIR. Layers are written uncompressed; LAYER_TAR maps a diff_id to
// a file holding the uncompressed layer tar (decompressed on demand by the
// caller when stored compressed).
void write_docker_archive(const std::vector<ExportedImage>& images, const std::string& dir,
                          const std::function<std::string(const oci::Digest& diff_id)>& layer_tar);

// Reads IN_FD (plain, gzip, zstd, ...: detected from the bytes), writes its
// decompressed content compressed with TARGET (gzip without a timestamp,
// so the same layer gives the same blob; or zstd) to OUT_FD. Returns the
// digest and size of what was written.
std::pair<oci::Digest, std::int64_t> recompress(int in_fd, int out_fd, Compression target);

// The compression a layer media type names (none for a plain tar).
Compression layer_compression(std::string_view media_type);

}  // namespace strata::archive
