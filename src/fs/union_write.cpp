// The union's write side: copy-up, whiteouts and opaque directories in the
// upper layer, and every op that changes the tree. All of them run with
// tree_mu_ held exclusively: they change which layer a node lives in, and
// lookups must never see half of such a change.
//
// On-disk upper format (documented in stratafs(1)):
// - a deleted name that exists below is a whiteout: a 0/0 character device
//   when the daemon may create one (root, or any user on Linux >= 5.8),
//   otherwise an empty regular file `.wh.NAME` (OCI);
// - a directory that must hide what is below (rm -rf d; mkdir d, or a
//   directory renamed over a lower name) carries the opaque xattr
//   (trusted.overlay.opaque=y as root, user.overlay.opaque=y otherwise), or a
//   `.wh..wh..opq` file when no xattr can be set;
// - a renamed directory that merges lower layers is copied up entirely and
//   made opaque (no redirect xattrs), and the whiteouts it held are removed,
//   so the upper reads the same under any overlay implementation;
// - a copied-up object keeps its inode number in the private xattr
//   PREFIX.strata.ino, which overlayfs ignores.
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "union_fs.hpp"

namespace strata::fs {

namespace {

int proc_path(char* buf, size_t len, int fd, const char* name) noexcept {
  int n = name ? std::snprintf(buf, len, "/proc/self/fd/%d/%s", fd, name) : std::snprintf(buf, len, "/proc/self/fd/%d", fd);
  return (n < 0 || static_cast<size_t>(n) >= len) ? ENAMETOOLONG : 0;
}

// The override_stat xattr of PATH, if it has a valid one. FOLLOW: PATH is a
// /proc/self/fd magic link that names the object itself.
std::optional<OverrideStat> get_override(const char* path, bool follow) {
  char value[128];
  ssize_t n = follow ? ::getxattr(path, kOverrideStatXattr, value, sizeof value - 1)
                     : ::lgetxattr(path, kOverrideStatXattr, value, sizeof value - 1);
  if (n <= 0) return std::nullopt;
  return parse_override_stat(std::string_view(value, static_cast<size_t>(n)));
}

int put_override(const char* path, bool follow, const OverrideStat& o) {
  std::string v = format_override_stat(o);
  int rc = follow ? ::setxattr(path, kOverrideStatXattr, v.data(), v.size(), 0)
                  : ::lsetxattr(path, kOverrideStatXattr, v.data(), v.size(), 0);
  return rc == 0 ? 0 : errno;
}

bool is_overlay_private(const char* name) {
  return std::strncmp(name, "trusted.overlay.", 16) == 0 || std::strncmp(name, "user.overlay.", 13) == 0;
}

// Copies LEN bytes of data from IN to OUT at the same offsets, keeping holes:
// only the data segments (SEEK_DATA/SEEK_HOLE) are copied, by
// copy_file_range (which reflinks or copies in the kernel) with a read/write
// fallback across file systems that do not support it.
int copy_data(int in, int out, off_t size) {
  if (size == 0) return 0;
  if (::ioctl(out, FICLONE, in) == 0) return 0;
  off_t pos = 0;
  std::vector<char> buf;
  while (pos < size) {
    off_t data = ::lseek(in, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      data = pos;                 // SEEK_DATA unsupported: copy everything
    }
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    off_t off_in = data, off_out = data;
    while (off_in < hole) {
      ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, static_cast<size_t>(hole - off_in), 0);
      if (n > 0) continue;
      if (n == 0) break;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return errno;
      if (buf.empty()) buf.resize(1 << 20);
      ssize_t r = ::pread(in, buf.data(), std::min<off_t>(static_cast<off_t>(buf.size()), hole - off_in), off_in);
      if (r < 0) return errno;
      if (r == 0) break;
      for (ssize_t done = 0; done < r;) {
        ssize_t w = ::pwrite(out, buf.data() + done, static_cast<size_t>(r - done), off_out);
        if (w < 0) return errno;
        done += w;
        off_out += w;
      }
      off_in += r;
    }
    pos = hole;
  }
  if (::ftruncate(out, size) != 0) return errno;
  return 0;
}

}  // namespace

// A fresh name in the work dir. The work dir belongs to this mount alone (it
// is locked, and emptied at mount), so a counter makes names unique.
std::string UnionFs::work_name() {
  char buf[32];
  std::snprintf(buf, sizeof buf, "#%llu", static_cast<unsigned long long>(work_counter_.fetch_add(1)));
  return buf;
}

int UnionFs::upper_fd(Node& dir) {
  if (!dir.has_upper()) {
    errno = ENOENT;
    return -1;
  }
  return dir_cache_.fd(dir.dirs.front());
}

void UnionFs::detach(Node& node) {
  node.unlinked = true;
  if (!node.parent) return;
  std::lock_guard lk(node.parent->children_mu);
  auto it = node.parent->children.find(node.name);
  if (it != node.parent->children.end()) {
    auto cur = it->second.lock();
    if (!cur || cur.get() == &node) node.parent->children.erase(it);
  }
}

void UnionFs::attach(Node& parent, const std::string& name, const std::shared_ptr<Node>& node) {
  if (node->parent && !node->unlinked) {
    // A file with several names may move by a name other than the one it is
    // filed under: that one stops being its entry.
    std::lock_guard lk(node->parent->children_mu);
    auto it = node->parent->children.find(node->name);
    if (it != node->parent->children.end() && it->second.lock() == node) node->parent->children.erase(it);
  }
  node->parent = parent.shared_from_this();
  node->name = name;
  node->unlinked = false;
  if (node->has_upper()) {
    // The upper copy moved with it: the cache reopens it there.
    DirLayer& upper = *node->dirs.front();
    upper.parent = parent.dirs.front();
    upper.name = name;
  }
  std::lock_guard lk(parent.children_mu);
  parent.children[name] = node;
}

// Copies owner, mode, xattrs (overlay-private ones excepted), the inode
// number and the times of SRC_DIR/SRC_NAME onto work-dir entry TMP.
int UnionFs::copy_metadata(int src_dir, const char* src_name, const char* tmp, const struct stat& st, std::uint64_t ino) {
  bool link = S_ISLNK(st.st_mode);
  // An unprivileged daemon cannot give the copy someone else's ids (EPERM),
  // nor ids its user namespace does not map (EINVAL): the owner is then kept
  // in the override_stat xattr below.
  bool owner_lost = false;
  if (::fchownat(work_fd_.get(), tmp, st.st_uid, st.st_gid, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != EPERM && errno != EINVAL) return errno;
    owner_lost = true;
  }
  if (!link && ::fchmodat(work_fd_.get(), tmp, st.st_mode & 07777, 0) != 0) return errno;
  char src[PATH_MAX], dst[PATH_MAX];
  if (proc_path(src, sizeof src, src_dir, src_name) != 0 || proc_path(dst, sizeof dst, work_fd_.get(), tmp) != 0) {
    return ENAMETOOLONG;
  }
  std::vector<char> names(65536), value(65536);
  ssize_t n = ::llistxattr(src, names.data(), names.size());
  for (ssize_t i = 0; i < n;) {
    const char* key = names.data() + i;
    i += static_cast<ssize_t>(std::strlen(key)) + 1;
    if (is_overlay_private(key)) continue;
    ssize_t len = ::lgetxattr(src, key, value.data(), value.size());
    if (len < 0) continue;
    if (::lsetxattr(dst, key, value.data(), static_cast<size_t>(len), 0) != 0 && errno != EPERM && errno != ENOTSUP) {
      return errno;
    }
  }
  if (!cfg_.private_xattr_prefix.empty()) {
    std::string key = cfg_.private_xattr_prefix + "strata.ino";
    std::string v = std::to_string(ino);
    if (::lsetxattr(dst, key.c_str(), v.data(), v.size(), 0) != 0 && errno != EPERM && errno != ENOTSUP) return errno;
  }
  // An override_stat copied from below already says who owns it. Symlinks
  // cannot carry user.* xattrs: their owner is lost, as with cp -a.
  if (owner_lost && !link && !get_override(dst, false)) {
    OverrideStat o;
    o.uid = st.st_uid;
    o.gid = st.st_gid;
    o.mode = st.st_mode & 07777;
    int e = put_override(dst, false, o);
    if (e != 0 && e != EPERM && e != ENOTSUP) return e;
    if (e == 0) read_override_.store(true, std::memory_order_relaxed);
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::utimensat(work_fd_.get(), tmp, times, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  return 0;
}

void UnionFs::keep_link_owner(int dirfd, const char* name, uid_t uid, gid_t gid, ino_t ino) {
  std::string key = link_owner_key(name);
  char dir[64];
  if (key.empty() || proc_path(dir, sizeof dir, dirfd, nullptr) != 0) return;
  std::string v = std::to_string(uid) + ":" + std::to_string(gid) + ":" + std::to_string(ino);
  if (::setxattr(dir, key.c_str(), v.data(), v.size(), 0) == 0) read_override_.store(true, std::memory_order_relaxed);
}

void UnionFs::move_link_owner(int from_dirfd, const char* from, int to_dirfd, const char* to) {
  std::string from_key = link_owner_key(from), to_key = link_owner_key(to);
  char from_dir[64], to_dir[64], value[96];
  if (from_key.empty() || proc_path(from_dir, sizeof from_dir, from_dirfd, nullptr) != 0) return;
  ssize_t n = ::getxattr(from_dir, from_key.c_str(), value, sizeof value);
  if (n <= 0) return;
  ::removexattr(from_dir, from_key.c_str());
  if (!to_key.empty() && proc_path(to_dir, sizeof to_dir, to_dirfd, nullptr) == 0) {
    ::setxattr(to_dir, to_key.c_str(), value, static_cast<size_t>(n), 0);
  }
}

void UnionFs::drop_link_owner(int dirfd, const char* name) {
  std::string key = link_owner_key(name);
  char dir[64];
  if (!key.empty() && proc_path(dir, sizeof dir, dirfd, nullptr) == 0) ::removexattr(dir, key.c_str());
}

// Gives DIR (and every directory above it) a copy in the upper layer, without
// children: built in the work dir, then renamed into place.
int UnionFs::copy_up_dir_chain(Node& dir) {
  if (dir.has_upper()) return 0;
  if (!dir.parent) return EROFS;
  int r = copy_up_dir_chain(*dir.parent);
  if (r != 0) return r;
  int parent_upper = upper_fd(*dir.parent);
  int dfd = parent_upper < 0 ? -1 : dir_fd(dir);
  int src_parent = dfd < 0 ? -1 : parent_fd_in(dir, dir.layer);
  if (src_parent < 0) return unreachable(errno);
  struct stat st;
  if (::fstat(dfd, &st) != 0) return EIO;
  std::string tmp = work_name();
  if (::mkdirat(work_fd_.get(), tmp.c_str(), 0700) != 0) return errno;
  struct stat made {};
  r = copy_metadata(src_parent, dir.name.c_str(), tmp.c_str(), st, dir.ino);
  if (r == 0 && ::fstatat(work_fd_.get(), tmp.c_str(), &made, AT_SYMLINK_NOFOLLOW) != 0) r = errno;
  if (r == 0 && ::renameat(work_fd_.get(), tmp.c_str(), parent_upper, dir.name.c_str()) != 0) r = errno;
  if (r != 0) {
    ::unlinkat(work_fd_.get(), tmp.c_str(), AT_REMOVEDIR);
    return r;
  }
  auto dl = std::make_shared<DirLayer>(0, dir.parent->dirs.front(), dir.name, made);
  dl->oci_markers = 0;
  // The upper copy goes first (top first); appended and rotated into place.
  dir.dirs.push_back(std::move(dl));
  std::rotate(dir.dirs.begin(), dir.dirs.end() - 1, dir.dirs.end());
  dir.layer = 0;
  return 0;
}

// Copies a non-directory NODE from its lower layer into the upper: data
// (reflink or copy_file_range, holes kept), owner, mode, xattrs, times and
// inode number, built under a temporary name in the work dir and renamed into
// place, so a partial copy is never visible. On failure (ENOSPC, EDQUOT...)
// nothing is left behind and the lower file stays visible.
int UnionFs::copy_up(Node& node, bool with_data) {
  if (node.is_dir()) return copy_up_dir_chain(node);
  if (node.layer == 0) return 0;
  if (node.unlinked) return ENOENT;  // no name left to copy up to
  int r = copy_up_dir_chain(*node.parent);
  if (r != 0) return r;
  int src_dir = parent_fd_in(node, node.layer);
  int dst_dir = src_dir < 0 ? -1 : upper_fd(*node.parent);
  if (dst_dir < 0) return unreachable(errno);
  const char* name = node.name.c_str();
  struct stat st;
  if (::fstatat(src_dir, name, &st, AT_SYMLINK_NOFOLLOW) != 0) return EIO;
  std::string tmp = work_name();
  const char* t = tmp.c_str();
  errno = 0;
  if (S_ISREG(st.st_mode)) {
    UniqueFd out(dir_cache_.open_retrying(
        [&] { return ::openat(work_fd_.get(), t, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600); }));
    if (!out) return errno;
    if (with_data) {
      UniqueFd in(dir_cache_.open_retrying([&] { return ::openat(src_dir, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC); }));
      r = in ? copy_data(in.get(), out.get(), st.st_size) : transient(errno) ? errno : EIO;
      if (r == 0 && ::fdatasync(out.get()) != 0) r = errno;
    }
  } else if (S_ISLNK(st.st_mode)) {
    char target[PATH_MAX + 1];
    ssize_t n = ::readlinkat(src_dir, name, target, sizeof target - 1);
    if (n < 0) return EIO;
    target[n] = '\0';
    if (::symlinkat(target, work_fd_.get(), t) != 0) return errno;
  } else {
    if (::mknodat(work_fd_.get(), t, st.st_mode, st.st_rdev) != 0) return errno;
  }
  if (r == 0) r = copy_metadata(src_dir, name, t, st, node.ino);
  struct stat made {};
  if (r == 0 && ::fstatat(work_fd_.get(), t, &made, AT_SYMLINK_NOFOLLOW) != 0) r = errno;
  if (r == 0 && ::renameat(work_fd_.get(), t, dst_dir, name) != 0) r = errno;
  if (r != 0) {
    ::unlinkat(work_fd_.get(), t, 0);
    return r;
  }
  if (S_ISLNK(st.st_mode) && (made.st_uid != st.st_uid || made.st_gid != st.st_gid)) {
    keep_link_owner(dst_dir, name, st.st_uid, st.st_gid, made.st_ino);
  }
  node.layer = 0;
  return 0;
}

// Copies DIR and everything visible under it into the upper and makes the
// upper copy opaque, so it no longer depends on any lower layer (how
// directories that merge lower layers are renamed).
int UnionFs::copy_up_tree(Node& dir) {
  int r = copy_up_dir_chain(dir);
  if (r != 0) return r;
  if (dir.dirs.size() == 1) return 0;  // upper only already
  std::vector<Entry> entries;
  r = list_dir(dir, entries);
  if (r != 0) return r;
  for (const auto& en : entries) {
    DirCache::PinScope child_pins(dir_cache_);  // a big tree pins one path's fds, not all of them
    int err = 0;
    auto child = child_node(dir, en.name.c_str(), err);
    if (!child) return err == ENOENT ? EIO : err;
    r = child->is_dir() ? copy_up_tree(*child) : copy_up(*child);
    if (r != 0) return r;
  }
  int ufd = upper_fd(dir);
  if (ufd < 0) return unreachable(errno);
  r = set_opaque(ufd, nullptr);
  if (r == 0) r = drop_whiteouts(ufd);
  if (r != 0) return r;
  dir.dirs.resize(1);
  dir.dirs.front()->oci_markers = 0;
  return 0;
}

// Removes every whiteout (both formats) from the upper directory DIRFD, once
// it is opaque: nothing below it shows any more, and overlayfs lists a
// whiteout in a directory that merges nothing as an entry of its own.
int UnionFs::drop_whiteouts(int dirfd) {
  std::vector<DirEntry> entries;
  try {
    entries = read_dir_entries(dirfd, "upper directory");
  } catch (const SysError& e) {
    return e.err();
  }
  for (const auto& en : entries) {
    const char* name = en.name.c_str();
    if (std::strncmp(name, ".wh.", 4) == 0) {
      if (en.name == ".wh..wh..opq") continue;  // the opaque marker itself, where no xattr could be set
    } else {
      struct stat st;
      if (en.type != DT_CHR && en.type != DT_UNKNOWN) continue;
      if (::fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISCHR(st.st_mode) || st.st_rdev != 0) continue;
    }
    if (::unlinkat(dirfd, name, 0) != 0 && errno != ENOENT) return errno;
  }
  return 0;
}

// Marks DIRFD/NAME (or DIRFD itself) opaque, in the best format available.
int UnionFs::set_opaque(int dirfd, const char* name) {
  char path[PATH_MAX];
  if (proc_path(path, sizeof path, dirfd, name) != 0) return ENAMETOOLONG;
  if (!cfg_.private_xattr_prefix.empty()) {
    std::string key = cfg_.private_xattr_prefix + "opaque";
    if (::setxattr(path, key.c_str(), "y", 1, 0) == 0) return 0;
  }
  UniqueFd d(::open(path, O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!d) return errno;
  UniqueFd marker(::openat(d.get(), ".wh..wh..opq", O_CREAT | O_WRONLY | O_CLOEXEC, 0000));
  return marker ? 0 : errno;
}

// Does NAME exist in DIR's layers below the upper (whiteouts there
// respected)? 1 or 0, or a transient error as a negative number.
int UnionFs::exists_below_upper(Node& dir, const char* name, bool* is_dir) {
  Resolved res;
  std::size_t first = dir.has_upper() ? 1 : 0;
  int r = resolve(dir, name, res, first);
  if (is_dir) *is_dir = r == 0 && S_ISDIR(res.st.st_mode);
  if (transient(r)) return -r;
  return r == 0 ? 1 : 0;
}

// Hides NAME of DIR's lower layers. The upper must hold no NAME now.
int UnionFs::make_whiteout(Node& dir, const char* name) {
  int ufd = upper_fd(dir);
  if (ufd < 0) return unreachable(errno);
  if (cfg_.overlay_whiteouts) {
    std::string tmp = work_name();
    if (::mknodat(work_fd_.get(), tmp.c_str(), S_IFCHR | 0, makedev(0, 0)) == 0) {
      if (::renameat(work_fd_.get(), tmp.c_str(), ufd, name) == 0) return 0;
      int e = errno;
      ::unlinkat(work_fd_.get(), tmp.c_str(), 0);
      return e;
    }
  }
  char marker[NAME_MAX + 8];
  std::snprintf(marker, sizeof marker, ".wh.%s", name);
  if (std::strlen(name) > NAME_MAX - 4) return ENAMETOOLONG;
  UniqueFd f(dir_cache_.open_retrying([&] { return ::openat(ufd, marker, O_CREAT | O_WRONLY | O_CLOEXEC, 0000); }));
  if (!f) return errno;
  dir.dirs.front()->oci_markers = 1;
  return 0;
}

// Removes a whiteout for NAME from DIR's upper copy, in either format.
int UnionFs::clear_whiteout(Node& dir, const char* name, bool& had) {
  had = false;
  int ufd = upper_fd(dir);
  if (ufd < 0) return unreachable(errno);
  struct stat st;
  if (::fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == 0) {
    if (::unlinkat(ufd, name, 0) != 0) return errno;
    had = true;
  }
  char marker[NAME_MAX + 8];
  std::snprintf(marker, sizeof marker, ".wh.%s", name);
  if (::unlinkat(ufd, marker, 0) == 0) {
    had = true;
  } else if (errno != ENOENT && errno != ENAMETOOLONG) {
    return errno;
  }
  return 0;
}

// Removes an upper directory that looks empty through the mount but may
// still hold whiteouts: moved into the work dir first, then deleted there.
int UnionFs::remove_upper_dir(int parent_fd, const char* name) {
  if (::unlinkat(parent_fd, name, AT_REMOVEDIR) == 0) return 0;
  if (errno != ENOTEMPTY && errno != EEXIST) return errno;
  std::string tmp = work_name();
  if (::renameat(parent_fd, name, work_fd_.get(), tmp.c_str()) != 0) return errno;
  try {
    remove_tree_at(work_fd_.get(), tmp);
  } catch (const SysError& e) {
    return e.err();
  }
  return 0;
}

int UnionFs::merged_dir_is_empty(Node& dir) {
  std::vector<Entry> entries;
  int r = list_dir(dir, entries);
  if (r != 0) return r;
  return entries.empty() ? 0 : ENOTEMPTY;
}

// Gives a new upper entry the caller's owner (mapped to the host ids); where
// the host refuses (no privilege, unmapped id) the owner is kept in the
// override_stat xattr, as containers/storage does.
int UnionFs::set_owner(int dirfd, const char* name, fuse_req_t req, gid_t parent_gid, mode_t mode, dev_t rdev) {
  const fuse_ctx* ctx = fuse_req_ctx(req);
  // override_stat holds on-disk ids, as a real owner would be: the id maps
  // apply to it on the way out (present) as to any other owner.
  auto huid = cfg_.uid_map.to_host(ctx->uid);
  auto hgid = parent_gid != static_cast<gid_t>(-1) ? std::optional<std::uint32_t>(parent_gid)
                                                     : cfg_.gid_map.to_host(ctx->gid);
  // A caller the maps cannot store (as the kernel answers for an id-mapped
  // mount that does not map the caller).
  if (!huid || !hgid) return EOVERFLOW;
  const int at = AT_SYMLINK_NOFOLLOW | (*name ? 0 : AT_EMPTY_PATH);
  // Only the mknod fallback (a regular file standing in for a device node)
  // stores a type the host could not.
  const bool type_stand_in = S_ISCHR(mode) || S_ISBLK(mode);
  if (!type_stand_in) {
    // The entry was made with the daemon's ids (the group of a setgid
    // parent): when those are the caller's, there is nothing to change.
    gid_t made_gid = parent_gid != static_cast<gid_t>(-1) ? parent_gid : cfg_.daemon_gid;
    if (*huid == cfg_.daemon_uid && *hgid == made_gid) return 0;
    if (::fchownat(dirfd, name, *huid, *hgid, at) == 0) return 0;
  }
  bool stored = type_stand_in && ::fchownat(dirfd, name, *huid, *hgid, at) == 0;
  struct stat st;
  if (::fstatat(dirfd, name, &st, at) != 0) return errno;
  bool type_lost = (mode & S_IFMT) != (st.st_mode & S_IFMT);
  if (stored && !type_lost) return 0;
  if (!stored && st.st_uid == *huid && st.st_gid == *hgid && !type_lost) return 0;
  OverrideStat o;
  o.uid = *huid;
  o.gid = *hgid;
  o.mode = mode;
  o.rdev = rdev;
  o.has_type = true;
  std::string v = format_override_stat(o);
  char path[PATH_MAX];
  if (proc_path(path, sizeof path, dirfd, *name ? name : nullptr) != 0) return ENAMETOOLONG;
  if ((*name ? ::lsetxattr(path, kOverrideStatXattr, v.data(), v.size(), 0)
             : ::setxattr(path, kOverrideStatXattr, v.data(), v.size(), 0)) != 0) {
    // Without the xattr a stand-in would read back as a plain file.
    if (type_lost) return errno == EACCES ? EPERM : errno;
    return stored ? 0 : EPERM;
  }
  read_override_.store(true, std::memory_order_relaxed);
  return 0;
}

// create, mknod, mkdir and symlink: one new upper entry for a name that is
// not visible now (perhaps hidden by a whiteout, which it replaces).
int UnionFs::create_node(fuse_req_t req, Node& parent, const char* name, mode_t mode, dev_t rdev,
                         const char* link_target, fuse_file_info* fi, int hidden_at) {
  if (parent.unlinked) return ENOENT;
  if (std::strlen(name) > NAME_MAX) return ENAMETOOLONG;
  if (std::strncmp(name, ".wh.", 4) == 0) return EINVAL;  // would read back as a marker
  int err = 0;
  if (hidden_at == kUnchecked) {
    if (auto existing = child_node(parent, name, err, &hidden_at)) return EEXIST;
    if (err != ENOENT) return err;
  }
  int r = copy_up_dir_chain(parent);
  if (r != 0) return r;
  int ufd = upper_fd(parent);
  if (ufd < 0) return unreachable(errno);
  // Only a whiteout in the upper itself is in the way (and only then can
  // something below need hiding by an opaque directory).
  bool below = false;
  if (hidden_at == 0) {
    bool had_whiteout = false;
    r = clear_whiteout(parent, name, had_whiteout);
    if (r != 0) return r;
    int found = S_ISDIR(mode) ? exists_below_upper(parent, name) : 0;
    if (found < 0) return -found;
    below = found == 1;
  }
  struct stat pst;
  ::fstat(ufd, &pst);
  gid_t inherit_gid = (pst.st_mode & S_ISGID) ? pst.st_gid : static_cast<gid_t>(-1);
  int fd = -1;
  const mode_t type = mode & S_IFMT;
  errno = 0;
  if (S_ISDIR(type)) {
    if (below) {
      // The new directory must hide what the whiteout hid: made opaque in
      // the work dir, then renamed into place.
      std::string tmp = work_name();
      if (::mkdirat(work_fd_.get(), tmp.c_str(), mode & 07777) != 0) return errno;
      r = set_opaque(work_fd_.get(), tmp.c_str());
      if (r == 0 && ::renameat(work_fd_.get(), tmp.c_str(), ufd, name) != 0) r = errno;
      if (r != 0) {
        ::unlinkat(work_fd_.get(), tmp.c_str(), AT_REMOVEDIR);
        return r;
      }
    } else if (::mkdirat(ufd, name, mode & 07777) != 0) {
      return errno;
    }
    if (inherit_gid != static_cast<gid_t>(-1)) ::fchmodat(ufd, name, (mode & 07777) | S_ISGID, 0);
  } else if (link_target) {
    if (::symlinkat(link_target, ufd, name) != 0) return errno;
  } else if (fi) {
    fd = dir_cache_.open_retrying([&] {
      return ::openat(ufd, name, (fi->flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC) & ~O_NOCTTY, mode & 01777);
    });
    if (fd < 0) return errno;
  } else {
    if (::mknodat(ufd, name, mode & ~static_cast<mode_t>(06000), rdev) != 0) {
      if (errno != EPERM || !(S_ISCHR(type) || S_ISBLK(type))) return errno;
      // No privilege for device nodes: an empty file stands in, and the
      // override_stat xattr says what it is. It is made writable by its
      // owner, without which an unprivileged daemon may not set user.*
      // xattrs on it.
      UniqueFd f(::openat(ufd, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
      if (!f) return errno;
    }
  }
  r = set_owner(ufd, name, req, inherit_gid, mode, rdev);
  // setuid and setgid are set only now: the owner change above clears them,
  // and a file must never carry them for an owner it does not have yet.
  if (r == 0 && !S_ISDIR(type) && !link_target && (mode & 06000) && ::fchmodat(ufd, name, mode & 07777, 0) != 0) {
    r = errno;
  }
  if (r != 0) {
    if (fd >= 0) ::close(fd);
    S_ISDIR(type) ? remove_upper_dir(ufd, name) : ::unlinkat(ufd, name, 0);
    return r;
  }
  fuse_entry_param e{};
  if (S_ISDIR(type)) {
    r = do_lookup(parent, name, e);
  } else {
    // A new non-directory lives in the upper alone: its node is known
    // without a lookup across the layers, and it has no recorded number.
    struct stat st;
    r = (fd >= 0 ? ::fstat(fd, &st) : ::fstatat(ufd, name, &st, AT_SYMLINK_NOFOLLOW)) == 0 ? 0 : errno;
    if (r == 0) {
      auto node = std::make_shared<Node>();
      node->name = name;
      node->type = st.st_mode & S_IFMT;
      node->layer = 0;
      node->parent = parent.shared_from_this();
      node->ino = layer_ino(0, st.st_ino);
      node = publish_child(parent, node->name, node);
      if (node->layer == 0 && !node->self) {
        present(st, ufd, name, false);
        st.st_ino = node->ino;
      } else {
        r = node_attr(*node, st);
      }
      if (r == 0) {
        ref_lookup(node);
        fill_entry(e, *node, st);
      }
    }
  }
  if (r != 0) {
    if (fd >= 0) ::close(fd);
    return r;
  }
  if (fi) {
    Node& created = *node_of(e.ino);
    int backing = 0;
    IoMode io = choose_io_mode(created, fd, backing);
    reply_open(req, created, fd, io, backing, false, fi, &e);
  } else {
    fuse_reply_entry(req, &e);
  }
  return 0;
}

// open(2) with O_TMPFILE: the file is made with O_TMPFILE in the directory's
// upper copy, and its node has no name, only its own fd, until linkat(2)
// gives it one (LINK, as for any node reached by its own fd).
int UnionFs::tmpfile(fuse_req_t req, Node& parent, mode_t mode, fuse_file_info* fi) {
  if (parent.unlinked) return ENOENT;
  if (!parent.is_dir()) return ENOTDIR;
  int r = copy_up_dir_chain(parent);
  if (r != 0) return r;
  int ufd = upper_fd(parent);
  if (ufd < 0) return unreachable(errno);
  // O_EXCL is the kernel's to enforce (it never links such a file); the
  // daemon's own fd stays linkable either way.
  const int flags = O_TMPFILE | (fi->flags & (O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC | O_NOATIME)) | O_CLOEXEC;
  UniqueFd fd(dir_cache_.open_retrying([&] { return ::openat(ufd, ".", flags, mode & 07777); }));
  if (!fd) return errno;
  struct stat pst {};
  ::fstat(ufd, &pst);
  gid_t inherit_gid = (pst.st_mode & S_ISGID) ? pst.st_gid : static_cast<gid_t>(-1);
  if ((r = set_owner(fd.get(), "", req, inherit_gid, S_IFREG | (mode & 07777), 0)) != 0) return r;
  if ((mode & 06000) && ::fchmod(fd.get(), mode & 07777) != 0) return errno;
  char self[64];
  proc_path(self, sizeof self, fd.get(), nullptr);
  UniqueFd pinned(dir_cache_.open_retrying([&] { return ::open(self, O_PATH | O_CLOEXEC); }));
  struct stat st {};
  if (!pinned || ::fstat(fd.get(), &st) != 0) return errno;
  auto node = std::make_shared<Node>();
  node->type = S_IFREG;
  node->layer = 0;
  node->unlinked = true;
  node->self = std::move(pinned);
  node->ino = layer_ino(0, st.st_ino);
  node->parent = parent.shared_from_this();
  fuse_entry_param e{};
  if ((r = node_attr(*node, st)) != 0) return r;
  ref_lookup(node);
  fill_entry(e, *node, st);
  int backing = 0;
  IoMode io = choose_io_mode(*node, fd.get(), backing);
  reply_open(req, *node, fd.release(), io, backing, false, fi, &e);
  return 0;
}

void UnionFs::create(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, fuse_file_info* fi) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  Node& p = *node_of(parent);
  if (std::strcmp(name, kTmpfileName) == 0) {
    int r = tmpfile(req, p, mode, fi);
    if (r != 0) fuse_reply_err(req, r);
    return;
  }
  int err = 0, hidden_at = kUnchecked;
  auto existing = child_node(p, name, err, &hidden_at);
  if (existing && (fi->flags & O_EXCL)) return (void)fuse_reply_err(req, EEXIST);
  if (!existing && err != ENOENT) return (void)fuse_reply_err(req, err);
  if (existing) {
    // The kernel thought NAME missing; open what is there instead.
    if (backing_conflict(*existing, existing->layer != 0)) return (void)fuse_reply_err(req, retire_node(*existing));
    int r = existing->is_dir() ? EISDIR : copy_up(*existing, !(fi->flags & O_TRUNC));
    int fd = r == 0 ? open_node(*existing, fi->flags) : -1;
    if (fd < 0) return (void)fuse_reply_err(req, r ? r : errno);
    fuse_entry_param e{};
    struct stat st;
    if (node_attr(*existing, st) != 0) {
      ::close(fd);
      return (void)fuse_reply_err(req, EIO);
    }
    ref_lookup(existing);
    fill_entry(e, *existing, st);
    int backing = 0;
    IoMode io = choose_io_mode(*existing, fd, backing);
    reply_open(req, *existing, fd, io, backing, false, fi, &e);
    return;
  }
  int r = create_node(req, p, name, S_IFREG | (mode & 07777), 0, nullptr, fi, hidden_at);
  if (r != 0) fuse_reply_err(req, r);
}

void UnionFs::mknod(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode, dev_t rdev) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  int r = create_node(req, *node_of(parent), name, mode, rdev, nullptr, nullptr);
  if (r != 0) fuse_reply_err(req, r);
}

void UnionFs::mkdir(fuse_req_t req, fuse_ino_t parent, const char* name, mode_t mode) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  int r = create_node(req, *node_of(parent), name, S_IFDIR | (mode & 07777), 0, nullptr, nullptr);
  if (r != 0) fuse_reply_err(req, r);
}

void UnionFs::symlink(fuse_req_t req, const char* target, fuse_ino_t parent, const char* name) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  int r = create_node(req, *node_of(parent), name, S_IFLNK | 0777, 0, target, nullptr);
  if (r != 0) fuse_reply_err(req, r);
}

void UnionFs::link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char* newname) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  Node& node = *node_of(ino);
  Node& np = *node_of(newparent);
  auto fail = [&](int e) { fuse_reply_err(req, e); };
  if (node.is_dir()) return fail(EPERM);
  if ((node.unlinked && !node.self) || np.unlinked) return fail(ENOENT);
  if (std::strncmp(newname, ".wh.", 4) == 0) return fail(EINVAL);
  int err = 0;
  if (child_node(np, newname, err)) return fail(EEXIST);
  if (err != ENOENT) return fail(err);
  // Linking to a lower file copies it up first: afterwards both names are
  // one upper inode, and a write through one shows through the other.
  int r = copy_up(node);
  if (r == 0) r = copy_up_dir_chain(np);
  if (r != 0) return fail(r);
  bool had = false;
  r = clear_whiteout(np, newname, had);
  if (r != 0) return fail(r);
  // From now on the node has several names: it is reached through its own
  // fd and found by its upper inode number, whichever name is looked up.
  if ((r = pin_node(node)) != 0) return fail(r);
  char src[64];
  proc_path(src, sizeof src, node.self.get(), nullptr);
  int ufd = upper_fd(np);
  if (ufd < 0) return fail(unreachable(errno));
  if (::linkat(AT_FDCWD, src, ufd, newname, AT_SYMLINK_FOLLOW) != 0) return fail(errno);
  // Reply with the linked node itself: the kernel then knows both names are
  // one inode and refreshes its link count.
  struct stat st;
  if ((r = node_attr(node, st)) != 0) return fail(r);
  auto self = node.shared_from_this();
  if (!node.link_index) {
    struct stat real {};
    if (::fstatat(node.self.get(), "", &real, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) == 0) index_link(self, real.st_ino);
  }
  fuse_entry_param e{};
  ref_lookup(self);
  fill_entry(e, node, st);
  fuse_reply_entry(req, &e);
}

void UnionFs::unlink(fuse_req_t req, fuse_ino_t parent, const char* name, bool dir) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  Node& p = *node_of(parent);
  int err = 0;
  auto child = child_node(p, name, err);
  if (!child) return (void)fuse_reply_err(req, err);
  if (dir && !child->is_dir()) return (void)fuse_reply_err(req, ENOTDIR);
  if (!dir && child->is_dir()) return (void)fuse_reply_err(req, EISDIR);
  if (dir) {
    int r = merged_dir_is_empty(*child);
    if (r != 0) return (void)fuse_reply_err(req, r);
  }
  int r = copy_up_dir_chain(p);
  if (r != 0) return (void)fuse_reply_err(req, r);
  int ufd = upper_fd(p);
  if (ufd < 0) return (void)fuse_reply_err(req, unreachable(errno));
  int found = exists_below_upper(p, name);
  if (found < 0) return (void)fuse_reply_err(req, -found);
  bool below = found == 1;
  // A file still open keeps working after its name is gone, through its own fd.
  if (child->open_count.load(std::memory_order_relaxed) > 0 && (r = pin_node(*child)) != 0) {
    return (void)fuse_reply_err(req, r);
  }
  if (child->layer == 0) {
    r = dir ? remove_upper_dir(ufd, name) : (::unlinkat(ufd, name, 0) == 0 ? 0 : errno);
    if (r != 0) return (void)fuse_reply_err(req, r);
    if (S_ISLNK(child->type)) drop_link_owner(ufd, name);
  }
  // A name that exists below needs a whiteout; one that lived only in the
  // upper leaves nothing behind.
  if (below) {
    r = make_whiteout(p, name);
    if (r != 0) return (void)fuse_reply_err(req, r);
  }
  // Only the name goes; a file with other names stays what they show.
  if (named_by(*child, p, name)) detach(*child);
  fuse_reply_err(req, 0);
}

void UnionFs::rename(fuse_req_t req, fuse_ino_t parent, const char* name, fuse_ino_t newparent, const char* newname,
                     unsigned flags) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  if (flags & ~static_cast<unsigned>(RENAME_NOREPLACE | RENAME_EXCHANGE)) return (void)fuse_reply_err(req, EINVAL);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  Node& p = *node_of(parent);
  Node& np = *node_of(newparent);
  auto fail = [&](int e) { fuse_reply_err(req, e); };
  if (std::strncmp(newname, ".wh.", 4) == 0) return fail(EINVAL);
  int err = 0;
  auto src = child_node(p, name, err);
  if (!src) return fail(err);
  auto dst = child_node(np, newname, err);
  if (!dst && err != ENOENT) return fail(err);
  bool exchange = flags & RENAME_EXCHANGE;
  if (dst && (flags & RENAME_NOREPLACE)) return fail(EEXIST);
  if (!dst && exchange) return fail(ENOENT);
  if (dst == src) return (void)fuse_reply_err(req, 0);
  if (dst && !exchange) {
    if (src->is_dir() && !dst->is_dir()) return fail(ENOTDIR);
    if (!src->is_dir() && dst->is_dir()) return fail(EISDIR);
    if (dst->is_dir()) {
      int r = merged_dir_is_empty(*dst);
      if (r != 0) return fail(r);
    }
  }
  int r = copy_up_dir_chain(p);
  if (r == 0) r = copy_up_dir_chain(np);
  // What moves must live entirely in the upper: a directory that merges
  // lower layers is copied up with its whole tree (and made opaque).
  if (r == 0) r = src->is_dir() ? copy_up_tree(*src) : copy_up(*src);
  if (r == 0 && exchange) r = dst->is_dir() ? copy_up_tree(*dst) : copy_up(*dst);
  if (r != 0) return fail(r);
  int sfd = upper_fd(p);
  int dfd = sfd < 0 ? -1 : upper_fd(np);
  if (dfd < 0) return fail(unreachable(errno));
  int src_found = exists_below_upper(p, name);
  int dst_found = src_found < 0 ? 0 : exists_below_upper(np, newname);
  if (src_found < 0 || dst_found < 0) return fail(-std::min(src_found, dst_found));
  bool src_below = src_found == 1, dst_below = dst_found == 1;
  auto make_opaque = [this](Node& dir) {
    int fd = upper_fd(dir);
    return fd < 0 ? unreachable(errno) : set_opaque(fd, nullptr);
  };
  if (exchange) {
    if (src->is_dir() && dst_below && (r = make_opaque(*src)) != 0) return fail(r);
    if (dst->is_dir() && src_below && (r = make_opaque(*dst)) != 0) return fail(r);
    if (::renameat2(sfd, name, dfd, newname, RENAME_EXCHANGE) != 0) return fail(errno);
    if (named_by(*src, p, name)) detach(*src);
    if (named_by(*dst, np, newname)) detach(*dst);
    attach(np, newname, src);
    attach(p, name, dst);
    return (void)fuse_reply_err(req, 0);
  }
  if (src->is_dir() && dst_below && (r = make_opaque(*src)) != 0) return fail(r);
  if (dst && dst->open_count.load(std::memory_order_relaxed) > 0 && (r = pin_node(*dst)) != 0) return fail(r);
  bool had = false;
  if ((r = clear_whiteout(np, newname, had)) != 0) return fail(r);
  if (dst && dst->layer == 0 && dst->is_dir() && (r = remove_upper_dir(dfd, newname)) != 0) return fail(r);
  if (::renameat2(sfd, name, dfd, newname, (flags & RENAME_NOREPLACE) ? RENAME_NOREPLACE : 0) != 0) return fail(errno);
  if (S_ISLNK(src->type)) move_link_owner(sfd, name, dfd, newname);
  if (src_below && (r = make_whiteout(p, name)) != 0) return fail(r);
  if (dst && named_by(*dst, np, newname)) detach(*dst);
  if (named_by(*src, p, name)) detach(*src);
  attach(np, newname, src);
  fuse_reply_err(req, 0);
}

// A node retired for a copy-up (retire_node) still stands for the file at
// its name, as one overlayfs inode does across its copy-up: a change made
// through a handle opened before goes to the node that name has now (the
// same file: the same inode number). Null with ERR set when the name holds
// no such file any more.
std::shared_ptr<Node> UnionFs::change_target(Node& node, int& err) {
  err = 0;
  if (!node.retired) return node.shared_from_this();
  std::shared_ptr<Node> now = node.parent ? child_node(*node.parent, node.name.c_str(), err) : nullptr;
  if (!now || now->ino != node.ino) {
    err = (now || err == ENOENT || err == 0) ? ENOENT : err;
    return nullptr;
  }
  return now;
}

void UnionFs::setattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  auto fail = [&](int e) { fuse_reply_err(req, e); };
  int err = 0;
  auto target = change_target(*node_of(ino), err);
  if (!target) return fail(err);
  Node& node = *target;
  if (node.unlinked && !node.self) return fail(ENOENT);
  bool truncating = (to_set & FUSE_SET_ATTR_SIZE) && attr->st_size == 0;
  int r = copy_up(node, !truncating);
  if (r != 0) return fail(r);
  // Every change goes to the upper object, reached by path (or its own fd).
  // The caller's open fd is used only for truncation, and only when it is
  // that same object: a file opened before its copy-up still has the lower
  // file open, which must never change.
  char path[PATH_MAX];
  bool follow = false;
  if (node.is_dir()) {
    follow = true;
    int ufd = upper_fd(node);
    r = ufd < 0 ? unreachable(errno) : proc_path(path, sizeof path, ufd, nullptr);
  } else {
    r = object_path(node, path, sizeof path, follow);
  }
  if (r != 0) return fail(r);
  // An object whose owner (or type) lives in the override_stat xattr has its
  // owner and permission bits changed there: the xattr is what the mount shows.
  std::optional<OverrideStat> over;
  // (Only where the mount reads that xattr at all: a root daemon without id
  // maps shows and changes the real owner.)
  if ((to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) && !S_ISLNK(node.type) &&
      read_override_.load(std::memory_order_relaxed)) {
    over = get_override(path, follow);
  }
  if (to_set & FUSE_SET_ATTR_MODE) {
    if (S_ISLNK(node.type)) return fail(EOPNOTSUPP);
    if (::chmod(path, attr->st_mode & 07777) != 0) return fail(errno);
    if (over) over->mode = (over->mode & S_IFMT) | (attr->st_mode & 07777);
  }
  if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
    uid_t uid = static_cast<uid_t>(-1);
    gid_t gid = static_cast<gid_t>(-1);
    if (to_set & FUSE_SET_ATTR_UID) {
      auto h = cfg_.uid_map.to_host(attr->st_uid);
      if (!h) return fail(EINVAL);
      uid = *h;
    }
    if (to_set & FUSE_SET_ATTR_GID) {
      auto h = cfg_.gid_map.to_host(attr->st_gid);
      if (!h) return fail(EINVAL);
      gid = *h;
    }
    if (!over) {
      int rc = follow ? ::chown(path, uid, gid) : ::lchown(path, uid, gid);
      // The host refuses ids that are not the daemon's (EPERM) or that its
      // user namespace does not map (EINVAL): keep them in override_stat.
      if (rc != 0 && (S_ISLNK(node.type) || (errno != EPERM && errno != EINVAL))) return fail(errno);
      if (rc != 0) {
        struct stat cur;
        if ((follow ? ::stat(path, &cur) : ::lstat(path, &cur)) != 0) return fail(errno);
        over = OverrideStat{};
        over->uid = cur.st_uid;
        over->gid = cur.st_gid;
        over->mode = cur.st_mode & 07777;
      }
    }
    if (over) {
      if (uid != static_cast<uid_t>(-1)) over->uid = uid;
      if (gid != static_cast<gid_t>(-1)) over->gid = gid;
    }
  }
  if (over) {
    if (int e = put_override(path, follow, *over); e != 0) return fail(e);
    read_override_.store(true, std::memory_order_relaxed);
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (node.is_dir()) return fail(EISDIR);
    int fd = -1;
    if (fi) {
      struct stat a {}, b {};
      fd = handle_fd(fi);
      if (::fstat(fd, &a) != 0 || stat_node(node, b) != 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) fd = -1;
    }
    int rc;
    if (fd >= 0) {
      rc = ::ftruncate(fd, attr->st_size);
    } else {
      UniqueFd f(::open(path, O_WRONLY | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW)));
      rc = f ? ::ftruncate(f.get(), attr->st_size) : -1;
    }
    if (rc != 0) return fail(errno);
  }
  if (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_ATIME_NOW | FUSE_SET_ATTR_MTIME_NOW)) {
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = 0;
    ts[0].tv_nsec = (to_set & FUSE_SET_ATTR_ATIME_NOW) ? UTIME_NOW : (to_set & FUSE_SET_ATTR_ATIME) ? attr->st_atim.tv_nsec : UTIME_OMIT;
    ts[1].tv_nsec = (to_set & FUSE_SET_ATTR_MTIME_NOW) ? UTIME_NOW : (to_set & FUSE_SET_ATTR_MTIME) ? attr->st_mtim.tv_nsec : UTIME_OMIT;
    if ((to_set & FUSE_SET_ATTR_ATIME) && !(to_set & FUSE_SET_ATTR_ATIME_NOW)) ts[0] = attr->st_atim;
    if ((to_set & FUSE_SET_ATTR_MTIME) && !(to_set & FUSE_SET_ATTR_MTIME_NOW)) ts[1] = attr->st_mtim;
    if (::utimensat(AT_FDCWD, path, ts, follow ? 0 : AT_SYMLINK_NOFOLLOW) != 0) return fail(errno);
  }
  struct stat st;
  if ((r = node_attr(node, st)) != 0) return fail(r);
  fuse_reply_attr(req, &st, (st.st_nlink > 1 && !node.is_dir()) ? 0.0 : cfg_.timeout);
}

void UnionFs::write_buf(fuse_req_t req, fuse_ino_t, fuse_bufvec* in, off_t off, fuse_file_info* fi) {
  fuse_bufvec out{};
  out.count = 1;
  out.buf[0].size = fuse_buf_size(in);
  out.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  out.buf[0].fd = handle_fd(fi);
  out.buf[0].pos = off;
  ssize_t n = fuse_buf_copy(&out, in, static_cast<fuse_buf_copy_flags>(0));
  if (n < 0) {
    fuse_reply_err(req, static_cast<int>(-n));
  } else {
    fuse_reply_write(req, static_cast<size_t>(n));
  }
}

// No flush op: there is nothing to do on close(2) (data goes to the layer
// file on every write), and without the op the kernel stops sending FLUSH
// after the first one, which saves a round trip per close.

void UnionFs::fsync(fuse_req_t req, fuse_ino_t, int datasync, fuse_file_info* fi) {
  int fd = handle_fd(fi);
  int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  std::shared_lock lk(tree_mu_);
  Node& node = *node_of(ino);
  if (!node.has_upper()) return (void)fuse_reply_err(req, 0);  // nothing of it was written
  int ufd = upper_fd(node);
  if (ufd < 0) return (void)fuse_reply_err(req, unreachable(errno));
  UniqueFd d(dir_cache_.open_retrying([ufd] { return ::openat(ufd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  int rc = d ? ::fsync(d.get()) : -1;
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::setxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  if (is_private_xattr(name)) return (void)fuse_reply_err(req, EPERM);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  int err = 0;
  auto target = change_target(*node_of(ino), err);
  if (!target) return (void)fuse_reply_err(req, err);
  Node& node = *target;
  if (node.unlinked && !node.self) return (void)fuse_reply_err(req, ENOENT);
  int r = copy_up(node);
  if (r != 0) return (void)fuse_reply_err(req, r);
  char path[PATH_MAX];
  bool follow = false;
  if ((r = object_path(node, path, sizeof path, follow)) != 0) return (void)fuse_reply_err(req, r);
  int rc = follow ? ::setxattr(path, name, value, size, flags) : ::lsetxattr(path, name, value, size, flags);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::removexattr(fuse_req_t req, fuse_ino_t ino, const char* name) {
  if (!cfg_.writable) return (void)fuse_reply_err(req, EROFS);
  if (is_private_xattr(name)) return (void)fuse_reply_err(req, ENODATA);
  std::unique_lock lk(tree_mu_);
  generation_.fetch_add(1, std::memory_order_relaxed);
  int err = 0;
  auto target = change_target(*node_of(ino), err);
  if (!target) return (void)fuse_reply_err(req, err);
  Node& node = *target;
  if (node.unlinked && !node.self) return (void)fuse_reply_err(req, ENOENT);
  char path[PATH_MAX];
  bool follow = false;
  int r = object_path(node, path, sizeof path, follow);
  if (r != 0) return (void)fuse_reply_err(req, r);
  // Only copy up when there is something to remove.
  if ((follow ? ::getxattr(path, name, nullptr, 0) : ::lgetxattr(path, name, nullptr, 0)) < 0) {
    return (void)fuse_reply_err(req, errno);
  }
  if ((r = copy_up(node)) != 0 || (r = object_path(node, path, sizeof path, follow)) != 0) {
    return (void)fuse_reply_err(req, r);
  }
  int rc = follow ? ::removexattr(path, name) : ::lremovexattr(path, name);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::fallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  int rc = ::fallocate(handle_fd(fi), mode, off, len);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::lseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  off_t r = ::lseek(handle_fd(fi), off, whence);
  if (r < 0) {
    fuse_reply_err(req, errno);
  } else {
    fuse_reply_lseek(req, r);
  }
}

void UnionFs::copy_file_range(fuse_req_t req, fuse_ino_t, off_t off_in, fuse_file_info* fi_in, fuse_ino_t,
                              off_t off_out, fuse_file_info* fi_out, size_t len, int flags) {
  ssize_t n = ::copy_file_range(handle_fd(fi_in), &off_in, handle_fd(fi_out), &off_out, len,
                                static_cast<unsigned>(flags));
  if (n < 0) {
    fuse_reply_err(req, errno);
  } else {
    fuse_reply_write(req, static_cast<size_t>(n));
  }
}

}  // namespace strata::fs
