// New names. Of UnionFs, this file holds the CREATE (and O_TMPFILE), MKNOD,
// MKDIR, SYMLINK and LINK ops, create_node (one new upper entry, replacing
// a whiteout), tmpfile, and set_owner (the caller's owner, or override_stat
// where the host cannot store it).
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "union_fs.hpp"

namespace strata::fs {

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

}  // namespace strata::fs
