// strata::store: the content-addressed image store.
//
// On disk (ROOT is the store root):
//   ROOT/oci-layout, ROOT/index.json, ROOT/blobs/sha256/<hex>
//       a valid OCI image layout: skopeo and umoci read it as `oci:ROOT:NAME`.
//       Every image is an index.json entry (a manifest descriptor); a tagged
//       image carries its name, in docker's short form ("alpine:3.20",
//       "team/app:1", "localhost:5000/x:y"), in the
//       org.opencontainers.image.ref.name annotation, one entry per name.
//       Untagged images have an entry without the annotation.
//   ROOT/layers/<hex>/      a layer extracted once (hex of its diff_id), used
//                           as a lower directory and never written again
//   ROOT/layers/<hex>.json  the layer's record: blob digest, media type, sizes
//       Each layer is kept once in its distribution form (the blob as pulled
//       or loaded, or gzip-compressed for layers strata makes, which push
//       sends as they are) plus its extracted directory; no uncompressed tar
//       beside them. A layer whose blob another tool wrote into the layout
//       (skopeo, umoci, buildah) is extracted the first time an image that
//       uses it is resolved with Layers::extract.
//   ROOT/containers/<id>/   container.json, upper/, work/, lock (held by the
//                           process that runs the container, see
//                           lock_container)
//   ROOT/volumes/<name>/    a volume: volume.json (name, created, labels)
//                           and _data/, the directory containers mount;
//                           created by rename from tmp/ as a whole. An
//                           anonymous volume (`-v /path`, an image's VOLUME)
//                           has a random 64-hex name and the label
//                           com.docker.volume.anonymous (kAnonymousVolumeLabel)
//   ROOT/cache/             the build cache (owned by the build module)
//   ROOT/tmp/               staging: everything is written here, fsynced and
//                           renamed into place
//   ROOT/lock               flock(2)ed by writers while they update an index
//
// A crash leaves the old state or the new one: blobs and layers are renamed
// into place before anything refers to them, and index.json and
// container.json are replaced by rename. Readers take no lock. Leftovers
// (staging directories, blobs nothing refers to) are removed by prune().
//
// Every call throws strata::Error (one line: what and where) on failure.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/oci.hpp"

namespace strata::store {

// The store root used when none is given: $STRATA_ROOT if set, else
// /var/lib/strata for root, else $XDG_DATA_HOME/strata, else
// ~/.local/share/strata.
std::string default_root();

// A stored layer.
struct Layer {
  oci::Digest diff_id;       // SHA-256 of the uncompressed tar
  oci::Digest blob_digest;   // SHA-256 of the stored blob (== diff_id when uncompressed)
  std::string media_type;    // of the stored blob
  std::int64_t size = 0;     // uncompressed tar size
  std::int64_t blob_size = 0;
  std::string dir;           // ROOT/layers/<hex>: the extracted tree (read-only use)
};

// What resolving an image does with a layer that is stored only as a blob
// (written into the layout by another tool, not extracted yet).
enum class Layers {
  extract,   // extract it now (from its blob, checked against both digests)
  as_blobs,  // leave it: its layer_dirs entry is "" and size counts its blob size;
             // a layer blob missing altogether is not an error either
};

// A stored image.
struct Image {
  oci::Digest manifest_digest;
  oci::Digest config_digest;     // the image id (what `strata images` shows)
  oci::Manifest manifest;
  oci::json config;              // the parsed image config
  std::vector<oci::Digest> diff_ids;    // bottom first, as config.rootfs.diff_ids
  std::vector<std::string> layer_dirs;  // TOP FIRST: ready for lowerdir= ("" when not extracted, see Layers)
  std::vector<std::string> names;       // short names tagged to it ("alpine:3.20"); may be empty
  std::int64_t size = 0;                // sum of the uncompressed layer sizes
  std::string created;                  // config.created

  std::string id() const { return config_digest.hex(); }
  // layer_dirs joined for stratafs/overlayfs `lowerdir=` (":" and "\" escaped).
  // Throws when a layer is not extracted (resolved with Layers::as_blobs).
  std::string lowerdir() const;
  std::vector<oci::History> history() const { return oci::config_history(config); }
};

// A container: a writable upper (and the work dir stratafs needs) on top of
// an image.
// Thrown when a container that is running is asked for exclusive use.
class ContainerRunning : public Error {
 public:
  using Error::Error;
};

struct Container {
  std::string id;           // 64 hex characters
  std::string name;         // unique; generated when not given
  oci::Digest image;        // manifest digest of the image it runs from
  std::string image_name;   // what it was created from, as the user wrote it
  std::string created;      // RFC 3339
  std::string dir;          // ROOT/containers/<id>
  std::string upper;        // ROOT/containers/<id>/upper
  std::string work;         // ROOT/containers/<id>/work
  std::vector<std::string> volumes;  // names of the volumes it mounts
  // Those of VOLUMES made for it as anonymous volumes (`-v /path`, the
  // image's VOLUMEs): `rm -v` and `run --rm` remove them with it.
  std::vector<std::string> anonymous_volumes;
};

// The label that marks an anonymous volume (docker's name; value "").
inline constexpr const char* kAnonymousVolumeLabel = "com.docker.volume.anonymous";

// A volume (`strata volume`, `run -v NAME:/path`, or an anonymous one): a
// directory of the store that containers bind-mount and that outlives them.
struct Volume {
  std::string name;     // [a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128 characters
  std::string dir;      // ROOT/volumes/<name>
  std::string data;     // ROOT/volumes/<name>/_data: what containers mount
  std::string created;  // RFC 3339
  std::map<std::string, std::string> labels;

  bool anonymous() const { return labels.count(kAnonymousVolumeLabel) != 0U; }
};

// A random 64-hex-digit volume name: what an anonymous volume is called.
std::string new_volume_name();

// Whether NAME may name a container or a volume: [a-zA-Z0-9][a-zA-Z0-9_.-]*,
// 1 to 128 characters (so never "", ".", ".." or anything with a '/').
bool valid_name(std::string_view name);

// Options of Store::commit.
struct CommitOptions {
  std::string message;               // history comment (`-m`)
  std::string author;                // history and config author (`-a`)
  // Applied to the image config before anything is written (`-c`: the
  // Dockerfile front end's build::apply_config_changes); may throw to refuse.
  std::function<oci::json(const oci::json&)> edit_config;
  std::string created_by;            // history created_by; empty: "strata commit"
};

// Options of Store::create_layer.
struct LayerOptions {
  // The directory is an overlay-style upper (see archive::WriteLayerOptions).
  bool changeset = true;
  std::optional<std::int64_t> clamp_mtime;  // SOURCE_DATE_EPOCH
  // The directory is thrown away afterwards and nothing writes to it
  // meanwhile, even if this process dies (a build step's upper in a staging
  // directory): its files become the layer's own instead of being written
  // again (see archive::write_layer_with_tree), which changes their owner,
  // mode, times and xattrs to the layer's. Not for a container's upper: a
  // container restarted after a commit died half-way would write into the
  // stored layer through the shared files.
  bool adopt_files = false;
};

// One line of `strata diff`.
struct Change {
  char kind;         // 'A' added, 'C' changed, 'D' deleted
  std::string path;  // absolute inside the container ("/etc/hosts")
};

enum class SaveFormat { docker, oci };

struct PruneResult {
  std::size_t blobs = 0;
  std::size_t layers = 0;
  std::size_t staging = 0;
  std::int64_t bytes = 0;  // approximate space freed
};

class Store {
 public:
  // Opens the store at ROOT, creating the layout (mode 0700 root directory
  // when new) if it does not exist. Throws when ROOT exists but is not a
  // store (an oci-layout file of another version, an index.json that does
  // not parse).
  static Store open(const std::string& root);
  // open(default_root()).
  static Store open_default() { return open(default_root()); }

  const std::string& root() const noexcept { return root_; }
  // ROOT/tmp: where callers make their own staging directories (same file
  // system as the store, so they can be renamed in).
  std::string tmp_dir() const { return root_ + "/tmp"; }
  // ROOT/blobs/sha256/<hex>: the file of a blob (may not exist).
  std::string blob_path(const oci::Digest& digest) const;

  // ------------------------------------------------------------ images

  // Resolves an image by reference ("alpine", "alpine:3.20",
  // "docker.io/library/alpine:3.20", "name@sha256:..."), by id (config
  // digest, "sha256:HEX", or a unique prefix of at least 4 hex digits), or by
  // manifest digest. nullopt when nothing matches; throws when a short id is
  // ambiguous or the image's blobs are missing or corrupt (naming the image
  // and the blob). LAYERS: see Layers.
  std::optional<Image> find_image(std::string_view ref_or_id, Layers layers = Layers::extract) const;
  // find_image() or throws Error "no such image: 'X'".
  Image image(std::string_view ref_or_id, Layers layers = Layers::extract) const;
  // The image with this manifest digest (tagged or not); throws when absent.
  Image image_by_manifest(const oci::Digest& manifest_digest, Layers layers = Layers::extract) const;
  // Every image in the store, one per manifest, newest first, resolved with
  // Layers::as_blobs (a listing extracts nothing). An image that cannot be
  // read (its manifest or config blob missing or corrupt, a layer blob
  // missing) does not stop the listing: it is left out when its manifest or
  // config cannot be read, kept otherwise, and each problem is one line in
  // PROBLEMS when given.
  std::vector<Image> images(std::vector<std::string>* problems = nullptr) const;

  // Writes a new image: CONFIG is a full image config; its rootfs.diff_ids
  // (bottom first) must all be stored layers (create_layer, import_layer)
  // and its history should have one non-empty_layer entry per layer. The
  // manifest lists each layer's stored blob. NAMES (references) are tagged
  // to it, moving each name from whatever image had it. Returns the image.
  Image write_image(const oci::json& config, const std::vector<std::string>& names = {});
  // Adds an image from exact manifest and config bytes (load, pull): the
  // config and every layer blob must already be stored (put_blob,
  // import_layer). The manifest is stored byte for byte (its digest kept).
  Image put_image(const std::string& manifest_json, const std::string& config_json,
                  const std::vector<std::string>& names = {});

  // Gives the image the name REF (moving it from any other image).
  void tag(const Image& image, std::string_view ref);
  // Removes a name; throws when no image has it.
  void untag(std::string_view ref);
  // `rmi`: REF_OR_ID names an image. A name is removed; the image itself is
  // removed when it has no names left, or when given by id (all names go).
  // Refuses (Error) when a container uses the image, unless FORCE. Returns
  // the lines docker prints ("Untagged: x", "Deleted: sha256:...").
  std::vector<std::string> remove_image(std::string_view ref_or_id, bool force);

  // ------------------------------------------------------------ blobs and layers

  // Stores the stream IN_FD as a blob; when EXPECTED is given the content
  // must hash to it (else Error, nothing stored). Returns the digest and size.
  std::pair<oci::Digest, std::int64_t> put_blob(int in_fd, const std::optional<oci::Digest>& expected = std::nullopt);
  std::pair<oci::Digest, std::int64_t> put_blob(std::string_view data);
  // Reads a stored blob (small ones: manifests, configs).
  std::string read_blob(const oci::Digest& digest) const;

  // The stored layer with this diff_id, or nullopt.
  std::optional<Layer> find_layer(const oci::Digest& diff_id) const;
  // find_layer() or throws.
  Layer layer(const oci::Digest& diff_id) const;

  // Turns DIR (a directory of changes, normally an overlay-style upper: char
  // 0/0 or `.wh.` whiteouts, opaque xattrs or `.wh..wh..opq`, override_stat
  // owners) into a stored layer: writes the deterministic tar, gzip-compressed
  // (fast level, no timestamp: the same tree gives the same blob), as its
  // blob and extracts it into layers/. DIR is only read. An empty DIR gives
  // the empty layer.
  Layer create_layer(const std::string& dir, const LayerOptions& options = {});
  // Merges stored layers DIFF_IDS (bottom first) into one stored layer: the
  // tree that applying them in order gives, as a change on top of whatever
  // lies beneath the first. Later files replace earlier ones; a whiteout
  // removes what an earlier one of them added and stays (for the layers
  // beneath); an opaque directory drops what earlier ones put in it and
  // stays opaque; a directory that replaces a whiteout or a non-directory is
  // made opaque. Staged in tmp/; the given layers are not changed. One
  // layer gives that layer.
  Layer squash_layers(const std::vector<oci::Digest>& diff_ids);
  // The layer DIFF_ID whose distribution form is BLOB: the stored layer, or,
  // when only the blob is in the store, the layer extracted from it now
  // (both digests checked; a blob that does not match is an Error naming it,
  // and nothing is stored). Throws when the blob is missing.
  Layer layer_from_blob(const oci::Descriptor& blob, const oci::Digest& diff_id);
  // Stores the layer whose blob (BLOB) has been written to PATH, a file in
  // tmp_dir(): extracts it, checks both digests and renames the file into
  // blobs/ (one copy of the bytes; used by pull). PATH is left in place when
  // anything fails.
  Layer adopt_layer_blob(const std::string& path, const oci::Descriptor& blob, const oci::Digest& diff_id);
  // Stores a layer from a tar stream (plain, gzip, zstd or xz). The blob is
  // kept as read when it is gzip or zstd, or plain with an expected digest
  // (MEDIA_TYPE, or derived from the compression when empty); a plain tar
  // without expected digests (import) is stored gzip-compressed; xz is
  // stored decompressed. EXPECTED_BLOB
  // and EXPECTED_DIFF_ID, when given, must match (else Error, nothing stored).
  Layer import_layer(int in_fd, const std::string& media_type = {},
                     const std::optional<oci::Digest>& expected_blob = std::nullopt,
                     const std::optional<oci::Digest>& expected_diff_id = std::nullopt);

  // ------------------------------------------------------------ containers

  // Creates a container from an image: a fresh empty upper and work dir.
  // NAME must be unique ([a-zA-Z0-9][a-zA-Z0-9_.-]*); empty: a generated one.
  // VOLUMES (names) are recorded as the container's; those that do not exist
  // are created (under the same lock, so no volume prune or rm comes between).
  // ANONYMOUS (names, also recorded) are created as anonymous volumes.
  Container create_container(std::string_view image_ref, std::string_view name = {},
                             const std::vector<std::string>& volumes = {},
                             const std::vector<std::string>& anonymous = {});
  // By name, full id or unique id prefix; nullopt when nothing matches.
  std::optional<Container> find_container(std::string_view name_or_id) const;
  // find_container() or throws Error "no such container: 'X'".
  Container container(std::string_view name_or_id) const;
  std::vector<Container> containers() const;  // oldest first
  // Removes the container and its upper. Refuses when it is mounted (see
  // mounted_at) unless FORCE, which unmounts first. Refuses when it is
  // running (see lock_container), with or without FORCE. With VOLUMES its
  // anonymous volumes go too (`rm -v`), except those another container
  // uses; named volumes never do.
  void remove_container(std::string_view name_or_id, bool force = false, bool volumes = false);

  // Exclusive use of a container: an open file description lock (fcntl
  // F_OFD_SETLK) on ROOT/containers/<id>/lock, held until the returned handle
  // is destroyed, and released by the kernel when the holding process dies
  // (the descriptor is close-on-exec, so the container's processes do not
  // keep it). `strata run` and `strata start` hold it for the container's
  // life; commit, remove_container and `strata mount` of a container take it
  // for their work. Throws ContainerRunning "container 'NAME' is running;
  // ..." (exit 1) when another holder has it.
  class ContainerLock {
   public:
    explicit ContainerLock(UniqueFd fd) : fd_(std::move(fd)) {}

   private:
    UniqueFd fd_;
  };
  ContainerLock lock_container(const Container& container) const;
  // Whether another process holds the container's lock (it is running).
  bool running(const Container& container) const;

  // Records that the container's union is mounted at MOUNTPOINT (by `strata
  // mount`, `strata run`, ...) so that commit and rm can refuse while it is
  // in use; forget_mount undoes it. Stale records (no longer a mount point)
  // are ignored.
  void record_mount(const Container& container, const std::string& mountpoint);
  void forget_mount(const Container& container, const std::string& mountpoint);
  // Mount points where the container is mounted right now.
  std::vector<std::string> mounted_at(const Container& container) const;

  // `strata commit`: the container's upper becomes a new layer on top of its
  // image, with a history entry and CHANGES applied to the config; NAME
  // (optional) is tagged. The container then goes on from the new image with
  // an empty upper. Refused while the container is mounted or running
  // (consistent snapshots need a quiet upper).
  Image commit(std::string_view container, const CommitOptions& options, std::string_view name = {});

  // `strata diff`: what the container changed, sorted by path.
  std::vector<Change> diff(std::string_view container) const;

  // ------------------------------------------------------------ volumes

  // Creates the volume NAME (empty: a random 64-hex name) with LABELS; a
  // volume of that name that exists already is returned as it is (docker's
  // `volume create` of an existing name). Throws UsageError for a bad name.
  Volume create_volume(std::string_view name = {}, const std::map<std::string, std::string>& labels = {});
  // The volume NAME, or nullopt (also for a name that is not valid).
  std::optional<Volume> find_volume(std::string_view name) const;
  // find_volume() or throws Error "no such volume: 'X'".
  Volume volume(std::string_view name) const;
  // Every volume, sorted by name.
  std::vector<Volume> volumes() const;
  // ROOT/volumes/<name>/_data (whether or not it exists); throws UsageError
  // for a bad name.
  std::string volume_data(std::string_view name) const;
  // The containers whose record names the volume, oldest first.
  std::vector<Container> volume_users(std::string_view name) const;
  // Removes the volume and its data. Refuses (Error naming the container)
  // one that a container uses, running or not; with FORCE one that only
  // stopped containers use goes anyway, one a running container uses never.
  void remove_volume(std::string_view name, bool force = false);
  // Removes the anonymous volumes no container names, or with ALL every
  // volume no container names. Returns the names removed and adds the space
  // they took to BYTES.
  std::vector<std::string> prune_volumes(std::int64_t& bytes, bool all = false);

  // ------------------------------------------------------------ in and out

  // `strata import`: a rootfs tarball (plain, gzip, xz, zstd) becomes a
  // one-layer image named REF (may be empty), its config edited as in commit.
  Image import_rootfs(const std::string& tar_path, std::string_view ref, const CommitOptions& options = {});
  // `strata load`: a docker-archive or OCI layout (directory or tar, plain or
  // compressed). Every digest is checked; on any error nothing is tagged.
  std::vector<Image> load(const std::string& path);
  // `strata save`: IMAGES (references or ids) written to OUT (a tar file, or
  // a directory for the OCI format when OUT ends with '/'), staged and
  // renamed into place.
  void save(const std::vector<std::string>& images, const std::string& out, SaveFormat format);

  // Reports progress of long operations (load, import, save, commit) as
  // one-line messages ("Loading layer 2/5 sha256:..."); none by default.
  void set_progress(std::function<void(const std::string&)> fn) { progress_ = std::move(fn); }
  // How the layers create_layer writes number the owners of the files on
  // disk (archive::WriteLayerOptions::owner_map); unset: as on disk.
  void set_owner_map(archive::OwnerMap map) { owner_map_ = std::move(map); }

  // Removes what nothing references: blobs not reachable from index.json or
  // a container's image, layer directories no stored image uses, staging
  // leftovers of processes that are gone. Never removes anything an image or
  // container refers to. While another strata process has the store open,
  // unreferenced blobs and layers younger than an hour are kept (they may be
  // about to be referenced).
  PruneResult prune();

 private:
  explicit Store(std::string root) : root_(std::move(root)) {}
  std::string root_;
  // A shared flock on ROOT/gc.lock held while this Store is open (taken
  // without waiting; writers wait for it before their first write), so that
  // prune knows whether other processes may be between writing a blob and
  // referring to it, and readers never wait for a prune.
  struct GcLock;
  std::shared_ptr<GcLock> gc_;
  void hold_gc();
  void report(const std::string& message) const {
    if (progress_) progress_(message);
  }
  std::function<void(const std::string&)> progress_;
  archive::OwnerMap owner_map_;
  Image read_image(const oci::Digest& manifest_digest, const oci::json& index, Layers layers,
                   std::vector<oci::Digest>* missing) const;
};


}  // namespace strata::store
