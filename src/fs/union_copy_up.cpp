// Copy-up: giving a lower file or directory a copy in the upper layer. Of
// UnionFs, this file holds copy_up (data, holes kept, and metadata, built
// in the work dir and renamed into place), copy_up_dir_chain,
// copy_up_tree, copy_metadata, work_name and upper_fd. Every function here
// runs with tree_mu_ held exclusively.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "strata/fileio.hpp"
#include "union_fs.hpp"

namespace strata::fs {

namespace {

bool is_overlay_private(const char* name) {
  return std::strncmp(name, "trusted.overlay.", 16) == 0 || std::strncmp(name, "user.overlay.", 13) == 0;
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
      r = in ? copy_file_data(in.get(), out.get(), st.st_size) : transient(errno) ? errno : EIO;
      // As overlayfs: a crash must not leave a partial copy that hides the lower file.
      if (r == 0 && cfg_.sync_upper && ::fdatasync(out.get()) != 0) r = errno;
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

}  // namespace strata::fs
