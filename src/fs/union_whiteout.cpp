// Names that go: whiteouts and opaque directories in the upper layer, and
// the UNLINK, RMDIR and RENAME ops. Of UnionFs, this file holds those ops and
// the markers they write (make_whiteout, clear_whiteout, set_opaque,
// drop_whiteouts), exists_below_upper, merged_dir_is_empty and
// remove_upper_dir. Like every op that changes the tree (here,
// union_create.cpp, union_copy_up.cpp, union_attr.cpp), they run with
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

}  // namespace strata::fs
