// The union file system served to the kernel: layers, the node table, name
// resolution across layers, whiteouts, copy-up, and the FUSE low-level ops.
// The private header of src/fs/union_*.cpp (and mount.cpp); which file
// holds which part of UnionFs is listed above the class.
//
// Model (DESIGN.md "The union"):
// - A Layer is an open directory fd. Index 0 is the upper (when there is one),
//   lowers are 1..N topmost first. The index is also the high byte of every
//   inode number, so numbers are unique across layers and stable.
// - A Node is one merged name that the kernel has looked up: parent, name, the
//   layer of the visible copy and, for directories, one DirLayer per layer
//   that contributes (top first, stopping at an opaque one). Every access is a
//   single-component *at() call relative to a DirLayer's O_PATH fd, with
//   O_NOFOLLOW or AT_SYMLINK_NOFOLLOW, so no name from the merged view can
//   leave a layer.
// - A DirLayer holds no fd of its own: it knows its parent's copy in the same
//   layer, its name there and its identity (device, inode), and the DirCache
//   opens it when a request needs it, keeping a bounded number open. The
//   kernel may hold more directories than the daemon may have fds; a
//   request that meets EMFILE closes what no request uses and tries again,
//   and never changes a node because of it.
// - A Node is also the kernel's inode: names and identity are kept apart.
//   A non-directory that has no single name it can be reached by (an upper
//   file with several hard links, or one whose name was removed while it is
//   still open) holds an O_PATH fd to the object itself, and every access
//   goes through that fd. Upper files with several links are found by their
//   upper inode number, so every name of one file is one Node, as overlayfs
//   makes every name of one upper file one inode.
// - The FUSE nodeid is the Node's address; the node table owns a strong
//   reference for as long as the kernel's lookup count is non-zero.
#pragma once

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "lock_order.hpp"
#include "passthrough.hpp"
#include "request_stats.hpp"
#include "strata/fd.hpp"
#include "strata/fs.hpp"

namespace strata::fs {

// Whether E, from opening a layer directory or file, says nothing about the
// layer: the daemon is short of fds or memory for a moment. Such an error
// goes back to the caller as it is and changes nothing, so the next request
// may succeed.
inline bool transient(int e) noexcept { return e == EMFILE || e == ENFILE || e == ENOMEM; }

// The answer for a layer directory that could not be opened: the transient
// errors as they are; anything else means the layer changed under the mount.
inline int unreachable(int e) noexcept { return transient(e) ? e : EIO; }

struct Layer {
  UniqueFd fd;  // O_PATH | O_DIRECTORY
  std::string path;
  dev_t dev = 0;
};

class DirCache;

// The names in one lower layer's copy of a directory, kept as sorted 64-bit
// hashes: a name whose hash is absent is not in that copy, so looking it up
// there costs no system call, and a miss costs the same in a 100-layer image
// as in a 2-layer one (kernel overlayfs looks in every layer). A present hash
// is confirmed by the usual fstatat. Lower layers do not change under a mount
// (stratafs(1)), so a filter built once stays true; upper copies get none.
class NameFilter {
 public:
  // Directories with more names than this get no filter (8 bytes a name).
  static constexpr std::size_t kMaxNames = std::size_t{1} << 20;
  explicit NameFilter(std::vector<std::uint64_t> hashes) noexcept;
  static std::uint64_t hash(std::string_view name) noexcept;
  bool may_contain(std::string_view name) const noexcept;
  // Whether NAME or its OCI whiteout marker `.wh.NAME` may be here.
  bool may_mention(std::string_view name) const noexcept;

 private:
  std::vector<std::uint64_t> hashes_;
};

// One layer's copy of a merged directory: where it is and which directory it
// is. Its fd is opened on demand by a DirCache (see DirCache::fd).
struct DirLayer {
  DirLayer(int layer_index, std::shared_ptr<DirLayer> parent_copy, std::string name_in_parent, const struct stat& st)
      : layer(layer_index), parent(std::move(parent_copy)), name(std::move(name_in_parent)), dev(st.st_dev), ino(st.st_ino) {}
  ~DirLayer();
  DirLayer(const DirLayer&) = delete;
  DirLayer& operator=(const DirLayer&) = delete;

  const int layer;
  // The copy of the parent directory in the same layer, null for a layer
  // root, and the name in it. An upper copy moves with its directory
  // (UnionFs::attach); both are read and changed under UnionFs::tree_mu_.
  std::shared_ptr<DirLayer> parent;
  std::string name;
  // The directory itself: a reopened fd that finds another is not used.
  const dev_t dev;
  const ino_t ino;
  // Whether this directory holds OCI `.wh.` markers: -1 not yet known, 0 no,
  // 1 yes. Learned from one scan so that a missing name costs one stat per
  // layer instead of two.
  std::atomic<int> oci_markers{-1};
  // A lower copy's NameFilter once a full scan has read it (owned; set once).
  std::atomic<const NameFilter*> names{nullptr};
  void set_names(std::vector<std::uint64_t> hashes);

 private:
  friend class DirCache;
  // Guarded by the cache's mutex.
  DirCache* cache_ = nullptr;  // set while FD_ is open
  int fd_ = -1;                // O_PATH | O_DIRECTORY | O_NOFOLLOW
  unsigned pins_ = 0;          // requests using FD_ now: it is not closed under them
  bool permanent_ = false;     // a layer root: open for the mount's life
  std::list<DirLayer*>::iterator lru_;
};

// The open fds of DirLayers: at most CAPACITY of them (layer roots aside),
// the least recently used closed first, never one a request is using.
//
// A request takes fds with fd(); each stays open (pinned) until the PinScope
// around the request ends, so a raw fd number is safe to use for the whole
// request. Every FUSE op runs in a PinScope; loops over many directories
// take one per iteration so that pins do not pile up.
class DirCache {
 public:
  explicit DirCache(std::size_t capacity) : capacity_(capacity) {}
  DirCache(const DirCache&) = delete;
  DirCache& operator=(const DirCache&) = delete;

  // A layer root, open for the mount's life (FD is taken over).
  void set_permanent(DirLayer& dl, UniqueFd fd);
  // Takes an fd just opened for DL (a lookup opens it to read its markers);
  // returns DL's fd, pinned as by fd().
  int adopt(const std::shared_ptr<DirLayer>& dl, UniqueFd fd);
  // DL's fd, opened (through its parent's, one component at a time, without
  // following symlinks) if it is not open: -1 with errno set when it cannot
  // be opened (EMFILE when even closing every unused fd did not help,
  // ESTALE when DL's name now holds another directory).
  int fd(const std::shared_ptr<DirLayer>& dl);
  // Runs OPEN (which returns an fd or -1 with errno); after EMFILE or ENFILE
  // closes the fds no request uses and runs it once more.
  template <class Open>
  int open_retrying(Open open) {
    int fd = open();
    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && shed()) fd = open();
    return fd;
  }
  // Closes every open fd no request uses; false when there was none.
  bool shed();
  void forget(DirLayer& dl) noexcept;

  // Marks the pins of the calling thread; ~PinScope releases those taken since.
  class PinScope {
   public:
    explicit PinScope(DirCache& cache) noexcept;
    ~PinScope();
    PinScope(const PinScope&) = delete;
    PinScope& operator=(const PinScope&) = delete;

   private:
    DirCache& cache_;
    std::size_t mark_;
  };

 private:
  void insert_locked(DirLayer& dl, int fd);
  void trim_locked(std::vector<int>& to_close);
  int pin_locked(const std::shared_ptr<DirLayer>& dl);

  Ranked<Lock::dir_cache> mu_;  // a leaf: see the lock order above UnionFs::backing_mu_
  std::list<DirLayer*> lru_;  // open and not permanent, most recent first
  const std::size_t capacity_;
};

struct Node;
struct Listing;

// Upper non-directories with more than one name, by upper inode number: one
// Node per file, whichever name the kernel looks it up by.
struct LinkIndex {
  Ranked<Lock::link_index> mu;  // a leaf
  std::unordered_map<ino_t, std::weak_ptr<Node>> nodes;
  std::atomic<std::size_t> size{0};
};

struct Node : std::enable_shared_from_this<Node> {
  // Everything below except nlookup and children is guarded by UnionFs::tree_mu_.
  std::shared_ptr<Node> parent;  // null for the root
  std::string name;
  std::uint64_t ino = 0;  // the stable number shown in stat and readdir
  mode_t type = 0;        // S_IFMT bits
  int layer = 0;          // layer of the visible copy
  bool unlinked = false;  // PARENT/NAME no longer names it; alive until forgotten
  bool retired = false;   // unlinked by retire_node: PARENT/NAME names its successor
  // Directories: when a missing name last found this directory still present
  // in its layer (steady clock, ns). See UnionFs::dir_gone_error.
  std::atomic<std::int64_t> alive_checked{0};
  std::vector<std::shared_ptr<DirLayer>> dirs;  // directories only, top first
  // Non-directories only: O_PATH | O_NOFOLLOW fd of the object itself, set
  // when PARENT/NAME cannot be relied on to reach it (see above). Set under
  // tree_mu_ held exclusively, or before the node is published.
  UniqueFd self;
  std::shared_ptr<LinkIndex> link_index;  // set when the node is in the index,
  ino_t link_key = 0;                      // under this upper inode number
  std::atomic<int> open_count{0};          // open file handles of the kernel
  // Directories: snapshots of the merged listing for passes in progress
  // (see UnionFs::readdir), guarded by UnionFs::listing_mu_.
  std::vector<std::shared_ptr<const Listing>> listings;
  // FUSE passthrough (guarded by UnionFs::backing_mu_). The kernel keeps
  // one I/O mode per inode: either every open handle uses one backing file,
  // or none does. BACKING_USERS handles use BACKING_ID, registered for the
  // copy in BACKING_LAYER; CACHED_USERS handles go through the page cache.
  int backing_id = 0;
  int backing_layer = -1;
  unsigned backing_users = 0;
  unsigned cached_users = 0;

  std::uint64_t nlookup = 0;  // guarded by the node table shard
  Ranked<Lock::children> children_mu;  // a leaf
  std::unordered_map<std::string, std::weak_ptr<Node>> children;

  ~Node();
  bool is_dir() const noexcept { return S_ISDIR(type); }
  // Whether this directory has a copy in the upper layer.
  bool has_upper() const noexcept { return !dirs.empty() && dirs.front()->layer == 0; }
};

struct Config {
  bool writable = false;
  bool overlay_whiteouts = false;  // 0/0 char devices can be created in the upper
  std::string private_xattr_prefix;  // "trusted.overlay." or "user.overlay." ("" = OCI markers only)
  IdMap uid_map;
  IdMap gid_map;
  double timeout = 86400.0;
  // Owners kept in the override_stat xattr are read only where they can
  // exist: the daemon cannot chown (not root, or root of a user namespace
  // that maps only some ids) or ids are mapped. Elsewhere that is one
  // failing lgetxattr per lookup saved.
  bool read_override_stat = false;
  // The daemon may register backing files for FUSE passthrough (root of the
  // initial user namespace, and the mount did not say nopassthrough).
  bool passthrough = false;
  bool sync_upper = true;  // false with -o volatile: copy-up, fsync and fsyncdir do not sync
  uid_t daemon_uid = 0;  // the owner the daemon's new files get without a chown
  gid_t daemon_gid = 0;
};

// Called by the session's I/O hooks when a reply is written: the request
// being served on this thread has been answered (no second answer after an
// exception, see the op callbacks). Defined in union_ops.cpp.
void note_reply_sent() noexcept;

// --- Helpers of the union_*.cpp files ---

// OCI markers: `.wh.NAME` hides NAME of the layers below; `.wh..wh..opq`
// makes its directory opaque.
inline constexpr std::string_view kOciWhiteoutPrefix = ".wh.";
inline constexpr const char* kOciOpaqueMarker = ".wh..wh..opq";

// An overlayfs whiteout: a 0/0 character device.
inline bool is_overlay_whiteout(const struct stat& st) noexcept { return S_ISCHR(st.st_mode) && st.st_rdev == 0; }

inline bool is_marker_name(const char* name) noexcept { return std::strncmp(name, ".wh.", 4) == 0; }

// "/proc/self/fd/N/NAME": reaches NAME inside an open directory fd for the
// xattr calls, which have no *at() form in this glibc. The fd is ours and NAME
// is one component, so nothing outside the layer can be reached.
inline int proc_path(char* buf, size_t len, int fd, const char* name) noexcept {
  int n = name ? std::snprintf(buf, len, "/proc/self/fd/%d/%s", fd, name) : std::snprintf(buf, len, "/proc/self/fd/%d", fd);
  return (n < 0 || static_cast<size_t>(n) >= len) ? ENAMETOOLONG : 0;
}

// The override_stat xattr of PATH, if it has a valid one. FOLLOW: PATH is a
// /proc/self/fd magic link that names the object itself. (union_attr.cpp)
std::optional<OverrideStat> get_override(const char* path, bool follow);
// Sets PATH's override_stat xattr to O; 0 or an errno. (union_attr.cpp)
int put_override(const char* path, bool follow, const OverrideStat& o);

// The union. Its members are defined in several files, one job each; the
// private members below are grouped by the file that defines them:
//   union_fs.cpp         construction, the node table, lookup, getattr, readlink
//   union_resolve.cpp    resolution across layers, markers read in every layer
//   union_readdir.cpp    opendir, readdir (snapshots), releasedir
//   union_attr.cpp       what stat shows (override_stat), setattr, xattr ops
//   union_io.cpp         open, I/O modes (passthrough), ops on open handles
//   union_copy_up.cpp    copy-up into the upper layer
//   union_whiteout.cpp   whiteouts and opaque dirs written, unlink, rmdir, rename
//   union_create.cpp     create (and O_TMPFILE), mknod, mkdir, symlink, link
//   union_ops.cpp        init, statfs, the C callback table (ops())
class UnionFs {
 public:
  UnionFs(std::vector<Layer> layers, UniqueFd workdir, Config config);
  ~UnionFs();
  UnionFs(const UnionFs&) = delete;
  UnionFs& operator=(const UnionFs&) = delete;

  static const fuse_lowlevel_ops& ops();
  DirCache& dir_cache() noexcept { return dir_cache_; }
  void set_session(fuse_session* se) noexcept { session_ = se; }
  Passthrough& passthrough() noexcept { return passthrough_; }
  // Request statistics of the session's I/O hooks (null: not kept).
  void set_request_stats(RequestStats* stats) noexcept { request_stats_ = stats; }
  RequestStats* request_stats() const noexcept { return request_stats_; }

  // Op implementations (public so the C callbacks can reach them).
  void init(fuse_conn_info* conn);
  void lookup(fuse_req_t req, fuse_ino_t parent, const char* name);
  void forget(fuse_ino_t ino, std::uint64_t n);
  void getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readlink(fuse_req_t req, fuse_ino_t ino);
  void open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
  void release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi, bool plus);
  void releasedir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
  void statfs(fuse_req_t req, fuse_ino_t ino);
  void getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
  void listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
  // Writing ops.
  void setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
  void mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev);
  void mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode);
  void symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name);
  void link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname);
  void unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir);
  void rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
              unsigned flags);
  // Also O_TMPFILE: the kernel's TMPFILE request arrives as a CREATE of the
  // name kTmpfileName, which no real name can be (see mount.cpp).
  void create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi);
  static constexpr const char* kTmpfileName = "/";
  void write_buf(fuse_req_t req, fuse_ino_t ino, fuse_bufvec* in, off_t off, fuse_file_info* fi);
  void fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
  void setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
  void removexattr(fuse_req_t req, fuse_ino_t ino, const char* name);
  void fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info* fi);
  void lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);
  void copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, fuse_file_info* fi_in, fuse_ino_t ino_out,
                       off_t off_out, fuse_file_info* fi_out, size_t len, int flags);

 private:
  // The kernel opens directories without asking (FUSE_CAP_NO_OPENDIR_SUPPORT).
  bool no_opendir_ = false;
  static constexpr int kListingLocks = 64;
  static constexpr std::size_t kListingsPerDir = 4;
  Ranked<Lock::listing> listing_mu_[kListingLocks];  // leaves
  Ranked<Lock::listing>& listing_mu_of(const Node& n) noexcept {
    return listing_mu_[(reinterpret_cast<std::uintptr_t>(&n) >> 6) % kListingLocks];
  }
  std::atomic<std::uint64_t> listing_ids_{0};

 public:
  struct Resolved {
    bool found = false;
    int layer = 0;
    int whiteout_layer = -1;  // when not found: the layer whose whiteout hid NAME
    struct stat st {};
    std::vector<std::shared_ptr<DirLayer>> dirs;
  };
  struct Entry {
    std::string name;
    std::uint64_t ino;
    unsigned char type;
    int from = -1;  // index into the directory's dirs of the copy listed (-1: "." or "..")
  };

 private:
  // --- union_fs.cpp: the node table and lookup ---
  Node* node_of(fuse_ino_t ino) const noexcept;
  void ref_lookup(const std::shared_ptr<Node>& node);
  // Lookup of NAME in PARENT (tree_mu_ held shared or unique). Fills E and
  // counts one kernel lookup on success; returns 0 or an errno.
  int do_lookup(Node& parent, const char* name, fuse_entry_param& e);
  // The node for NAME in PARENT: the live one or a new one (not counted as a
  // kernel lookup); null with ERR set when NAME is not visible.
  // HIDDEN_AT (if given) receives Resolved::whiteout_layer when NAME is not visible.
  std::shared_ptr<Node> child_node(Node& parent, const char* name, int& err, int* hidden_at = nullptr);
  // Publishes NODE as PARENT's child NAME unless a live one is there already.
  std::shared_ptr<Node> publish_child(Node& parent, const std::string& name, std::shared_ptr<Node> node);
  std::shared_ptr<Node> live_child(Node& parent, const std::string& name);
  // Changes of the tree (tree_mu_ held unique): NODE's name no longer names
  // it; NODE is PARENT's child NAME.
  void detach(Node& node);
  void attach(Node& parent, const std::string& name, const std::shared_ptr<Node>& node);
  std::uint64_t stable_ino(int layer, int parent_fd, const char* name, ino_t real_ino);
  // The number of a file with no recorded number: the layer in the top bits.
  static std::uint64_t layer_ino(int layer, ino_t real_ino) noexcept;
  // The fd of NODE's parent's copy in LAYER; -1 (errno set) when it has none
  // or it cannot be opened.
  int parent_fd_in(const Node& node, int layer);
  // The fd of directory NODE's topmost copy; -1 with errno set on failure.
  int dir_fd(Node& node);
  int stat_node(Node& node, struct stat& st);
  // Opens NODE's object (non-directories) with FLAGS; -1 with errno set.
  int open_node(const Node& node, int flags);
  // Gives NODE its own O_PATH fd (before its name changes); 0 or an errno.
  int pin_node(Node& node);
  // Records NODE (an upper non-directory, pinned) as the one Node of its inode.
  std::shared_ptr<Node> index_link(const std::shared_ptr<Node>& node, ino_t upper_ino);
  // Whether PARENT/NAME is the name NODE is reached by.
  static bool named_by(const Node& node, const Node& parent, const char* name) noexcept;
  int node_attr(Node& node, struct stat& st);
  int dir_gone_error(Node& dir);
  void fill_entry(fuse_entry_param& e, Node& node, const struct stat& st);

  // --- union_resolve.cpp: resolution across layers ---
  // FIRST skips the parent's layers above it (1 = ignore the upper copy).
  int resolve(Node& parent, const char* name, Resolved& out, std::size_t first = 0);
  // 1 when DL holds an OCI whiteout for NAME, 0 when not, -1 with errno set
  // when DL cannot be opened.
  int oci_whiteout_in(const std::shared_ptr<DirLayer>& dl, const char* name);
  // Whether DIRFD hides the layers below; REDIRECT (if given) receives
  // overlayfs's redirect of a renamed directory, when it has one.
  bool dir_is_opaque(int dirfd, std::string* redirect = nullptr);
  int follow_redirect(Resolved& out, int above, const std::string& path);
  // Opens directory NAME (ST: what fstatat found there) of PARENT, whose fd
  // is PARENT_FD, as a copy in PARENT's layer; null with errno set on failure.
  std::shared_ptr<DirLayer> open_dir_layer(const std::shared_ptr<DirLayer>& parent, int parent_fd, const char* name,
                                           const struct stat& st, int& fd);

  // --- union_readdir.cpp: listings ---
  // The node for a non-directory entry that readdir found in PARENT.dirs[FROM]:
  // what is visible there is already decided, so only that copy is looked at.
  std::shared_ptr<Node> listed_child(Node& parent, const Entry& en, struct stat& st, int& err);
  int list_dir(Node& node, std::vector<Entry>& out);
  // The snapshot a readdir at OFF continues in (tree_mu_ held shared, NODE
  // not unlinked): the one OFF was handed out from, or a new one; null with
  // ERR set on failure.
  std::shared_ptr<const Listing> listing_for(Node& node, off_t off, int& err);
  void listing_done(Node& node, const Listing* listing);

  // --- union_attr.cpp: attributes and xattrs ---
  void present(struct stat& st, int layer_fd, const char* name, bool is_dir_fd);
  // Path of NODE's object for the calls that take a path: FOLLOW says whether
  // the path's last component must be followed (a /proc/self/fd link).
  int object_path(Node& node, char* buf, size_t len, bool& follow);
  bool is_private_xattr(const char* name) const noexcept;
  // The node a change made through NODE (setattr, xattrs) goes to.
  std::shared_ptr<Node> change_target(Node& node, int& err);
  // Symbolic links cannot carry user.* xattrs, so not override_stat: the
  // owner a copy-up could not give an upper symlink is kept in an xattr of
  // its directory named after it (PREFIX.strata.owner.NAME = "UID:GID:INO"),
  // which holds while NAME there is a symlink with inode number INO.
  std::string link_owner_key(const char* name) const;  // "" where there can be none
  void keep_link_owner(int dirfd, const char* name, uid_t uid, gid_t gid, ino_t ino);
  void move_link_owner(int from_dirfd, const char* from, int to_dirfd, const char* to);
  void drop_link_owner(int dirfd, const char* name);

  // --- union_io.cpp: open handles ---
  // How the kernel does I/O on an open handle; kept in the handle's top bits.
  enum class IoMode : std::uint64_t { cached = 0, passthrough = 1 };
  static std::uint64_t make_handle(int fd, IoMode mode) noexcept {
    return (static_cast<std::uint64_t>(mode) << 32) | static_cast<std::uint32_t>(fd);
  }
  static int handle_fd(const fuse_file_info* fi) noexcept { return static_cast<int>(fi->fh & 0xffffffffu); }
  static IoMode handle_mode(const fuse_file_info* fi) noexcept { return static_cast<IoMode>(fi->fh >> 32); }
  // Whether a new handle on NODE cannot be opened on its kernel inode: the
  // inode's handles pass through to another copy than the one the new handle
  // would use (a lower copy opened before a copy-up, or COPIES_UP now), and
  // the kernel keeps one backing file per inode (tree_mu_ held).
  bool backing_conflict(Node& node, bool copies_up);
  // Ends NODE's tie to its name for such a conflict (tree_mu_ held unique):
  // NODE keeps serving the handles it has, pinned to its copy, and the
  // name gets a new node at the kernel's next lookup. Returns ESTALE, on
  // which the kernel looks the name up again and retries the open once.
  int retire_node(Node& node);
  // Picks the I/O mode of a new handle FD on NODE (tree_mu_ held, so the
  // node's layer is stable, and no backing_conflict()); BACKING receives the
  // backing id for passthrough.
  IoMode choose_io_mode(Node& node, int fd, int& backing);
  void end_io_mode(Node& node, IoMode mode);
  // Replies to OPEN (ENTRY null) or CREATE with the handle FD in MODE;
  // on a reply the kernel no longer waits for, closes FD again.
  void reply_open(fuse_req_t req, Node& node, int fd, IoMode mode, int backing, bool keep_cache, fuse_file_info* fi,
                  const fuse_entry_param* entry);

  // Writing helpers, below (tree_mu_ held unique).
  // --- union_copy_up.cpp: copy-up ---
  int copy_up(Node& node, bool with_data = true);
  int copy_up_dir_chain(Node& dir);
  int copy_up_tree(Node& dir);
  int copy_metadata(int src_dir, const char* src_name, const char* tmp, const struct stat& st, std::uint64_t ino);
  std::string work_name();
  int upper_fd(Node& dir);  // the fd of the dir's upper copy, or -1 (errno set)

  // --- union_whiteout.cpp: whiteouts and opaque directories written ---
  int exists_below_upper(Node& dir, const char* name, bool* is_dir = nullptr);
  int make_whiteout(Node& dir, const char* name);
  int clear_whiteout(Node& dir, const char* name, bool& had_whiteout);
  int set_opaque(int dirfd, const char* name);
  int drop_whiteouts(int dirfd);
  int merged_dir_is_empty(Node& dir);
  int remove_upper_dir(int parent_fd, const char* name);

  // --- union_create.cpp: new names ---
  // HIDDEN_AT: kUnchecked, or what child_node() just said about NAME
  // (Resolved::whiteout_layer), which saves looking NAME up again.
  static constexpr int kUnchecked = -2;
  int create_node(fuse_req_t req, Node& parent, const char* name, mode_t mode, dev_t rdev, const char* link_target,
                  fuse_file_info* fi, int hidden_at = kUnchecked);
  int tmpfile(fuse_req_t req, Node& parent, mode_t mode, fuse_file_info* fi);
  int set_owner(int dirfd, const char* name, fuse_req_t req, gid_t parent_gid_if_setgid, mode_t mode, dev_t rdev);

  // --- Data ---
  std::vector<Layer> layers_;  // [0] = upper (fd empty when read-only)
  UniqueFd work_fd_;
  Config cfg_;
  Passthrough passthrough_{cfg_.passthrough};
  RequestStats* request_stats_ = nullptr;
  // Lock order, the one place it is written (debug builds check it:
  // lock_order.hpp; every mutex below is a Ranked<Lock::X>):
  // 1. tree_mu_ first: every op that reads or changes the tree takes it once,
  //    shared or exclusive, before any other lock, and never again under
  //    itself (an op that needs it exclusive after shared lets go first).
  // 2. Then at most one leaf, alone or under tree_mu_; nothing at all is
  //    taken while a leaf is held, not even another lock of the same kind:
  //    - backing_mu_ (passthrough backing ids and I/O mode counts),
  //    - links_->mu (LinkIndex::mu: upper files with several names),
  //    - a Node's children_mu (its children by name),
  //    - a listing_mu_ (a directory's readdir snapshots),
  //    - a Shard::mu (the kernel's lookup counts),
  //    - DirCache::mu_ (the open directory fds, their pins and LRU),
  //    - a RequestStats::Stripe::mu (taken by the session's write hook: a
  //      reply sent under tree_mu_ takes it there).
  // So no Node or DirLayer may be freed while a leaf is held: a Node's
  // destructor takes its link index's mu, then its parent's children_mu,
  // and its DirLayers' destructors DirCache::mu_, one after the other.
  // forget drops its reference after the Shard::mu, DirCache::PinScope its
  // pins after DirCache::mu_, and a node reference taken from a weak_ptr
  // under children_mu or LinkIndex::mu goes after that lock.
  Ranked<Lock::backing> backing_mu_;
  std::shared_ptr<LinkIndex> links_ = std::make_shared<LinkIndex>();
  // Config::read_override_stat, switched on for good once this mount has
  // written an override_stat xattr itself.
  std::atomic<bool> read_override_{false};
  // Counts the times tree_mu_ was taken exclusively: a readdir listing made
  // at one count is still exact while the count has not moved.
  std::atomic<std::uint64_t> generation_{0};
  // Before every Node: their DirLayers leave it when they go.
  DirCache dir_cache_;
  std::shared_ptr<Node> root_;
  fuse_session* session_ = nullptr;
  Ranked<Lock::tree, std::shared_mutex> tree_mu_;  // taken first: see the lock order above backing_mu_
  std::atomic<std::uint64_t> work_counter_{0};

  static constexpr int kShards = 64;
  struct Shard {
    Ranked<Lock::shard> mu;  // a leaf
    std::unordered_map<Node*, std::shared_ptr<Node>> nodes;
  };
  Shard shards_[kShards];
  Shard& shard_of(Node* n) noexcept { return shards_[(reinterpret_cast<std::uintptr_t>(n) >> 6) % kShards]; }
};

}  // namespace strata::fs
