// Attributes and extended attributes. Of UnionFs, this file holds what stat
// shows instead of the raw on-disk attributes (present: override_stat
// ownership and types, the owners of upper symlinks kept in their
// directory's xattrs, the id maps), the SETATTR op (chmod and chown go to
// override_stat where the host cannot store them), and the xattr ops
// (GETXATTR, LISTXATTR, SETXATTR, REMOVEXATTR; overlay-private names are
// never shown nor set). The override_stat helpers get_override and
// put_override, shared with copy-up, are here too.
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "union_fs.hpp"

namespace strata::fs {

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

// Applies what the mount shows instead of the raw on-disk attributes: the
// stable inode number, override_stat ownership, the id maps.
void UnionFs::present(struct stat& st, int layer_fd, const char* name, bool) {
  char path[PATH_MAX];
  if (read_override_.load(std::memory_order_relaxed) && proc_path(path, sizeof path, layer_fd, name) == 0) {
    char value[128];
    ssize_t n = name ? ::lgetxattr(path, kOverrideStatXattr, value, sizeof value - 1)
                     : ::getxattr(path, kOverrideStatXattr, value, sizeof value - 1);
    if (n > 0) {
      if (auto o = parse_override_stat(std::string_view(value, static_cast<size_t>(n)))) {
        st.st_uid = o->uid;
        st.st_gid = o->gid;
        if (o->has_type && (o->mode & S_IFMT) != 0) {
          // Only a type the host could not store is taken over: a regular
          // file standing in for a device node, fifo or socket.
          mode_t t = o->mode & S_IFMT;
          if (S_ISREG(st.st_mode) && (S_ISCHR(t) || S_ISBLK(t) || S_ISFIFO(t) || S_ISSOCK(t))) {
            st.st_rdev = o->rdev;
            st.st_size = 0;
          } else {
            t = st.st_mode & S_IFMT;
          }
          st.st_mode = t | (o->mode & 07777);
        } else {
          st.st_mode = (st.st_mode & S_IFMT) | (o->mode & 07777);
        }
      }
    }
  }
  if (name && S_ISLNK(st.st_mode) && read_override_.load(std::memory_order_relaxed)) {
    std::string key = link_owner_key(name);
    char dir_path[64], value[96];
    ssize_t n = -1;
    if (!key.empty() && proc_path(dir_path, sizeof dir_path, layer_fd, nullptr) == 0) {
      n = ::getxattr(dir_path, key.c_str(), value, sizeof value - 1);
    }
    unsigned long long uid = 0, gid = 0, ino = 0;
    if (n > 0) {
      value[n] = '\0';
      if (std::sscanf(value, "%llu:%llu:%llu", &uid, &gid, &ino) == 3 && ino == st.st_ino) {
        st.st_uid = static_cast<uid_t>(uid);
        st.st_gid = static_cast<gid_t>(gid);
      }
    }
  }
  st.st_uid = cfg_.uid_map.to_container(st.st_uid);
  st.st_gid = cfg_.gid_map.to_container(st.st_gid);
}

std::string UnionFs::link_owner_key(const char* name) const {
  if (cfg_.private_xattr_prefix.empty()) return {};
  std::string key = cfg_.private_xattr_prefix + "strata.owner." + name;
  return key.size() > XATTR_NAME_MAX ? std::string() : key;
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

bool UnionFs::is_private_xattr(const char* name) const noexcept {
  return std::strncmp(name, "trusted.overlay.", 16) == 0 || std::strncmp(name, "user.overlay.", 13) == 0 ||
         std::strcmp(name, kOverrideStatXattr) == 0;
}

int UnionFs::object_path(Node& node, char* buf, size_t len, bool& follow) {
  // A name removed since the kernel looked it up reaches nothing any more
  // (or, once reused, another file).
  if (node.unlinked && !node.self) return ENOENT;
  if (!node.parent || node.self) {
    follow = true;
    int fd = node.self ? node.self.get() : dir_fd(node);
    if (fd < 0) return unreachable(errno);
    return proc_path(buf, len, fd, nullptr);
  }
  follow = false;
  int pfd = parent_fd_in(node, node.layer);
  if (pfd < 0) return unreachable(errno);
  return proc_path(buf, len, pfd, node.name.c_str());
}

void UnionFs::getxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  if (is_private_xattr(name)) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  std::shared_lock lk(tree_mu_);
  char path[PATH_MAX];
  bool follow = false;
  int r = object_path(*node_of(ino), path, sizeof path, follow);
  if (r != 0) {
    lk.unlock();
    fuse_reply_err(req, r);
    return;
  }
  std::vector<char> value(size);
  ssize_t n = follow ? ::getxattr(path, name, size ? value.data() : nullptr, size)
                     : ::lgetxattr(path, name, size ? value.data() : nullptr, size);
  int err = n < 0 ? errno : 0;
  lk.unlock();
  if (n < 0) {
    fuse_reply_err(req, err);
  } else if (size == 0) {
    fuse_reply_xattr(req, static_cast<size_t>(n));
  } else {
    fuse_reply_buf(req, value.data(), static_cast<size_t>(n));
  }
}

void UnionFs::listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  std::shared_lock lk(tree_mu_);
  char path[PATH_MAX];
  bool follow = false;
  int r = object_path(*node_of(ino), path, sizeof path, follow);
  if (r != 0) {
    lk.unlock();
    fuse_reply_err(req, r);
    return;
  }
  std::vector<char> raw(65536);
  ssize_t n = follow ? ::listxattr(path, raw.data(), raw.size()) : ::llistxattr(path, raw.data(), raw.size());
  int err = n < 0 ? errno : 0;
  lk.unlock();
  if (n < 0) {
    fuse_reply_err(req, err);
    return;
  }
  std::vector<char> shown;
  for (ssize_t i = 0; i < n;) {
    const char* a = raw.data() + i;
    size_t len = std::strlen(a) + 1;
    if (!is_private_xattr(a)) shown.insert(shown.end(), a, a + len);
    i += static_cast<ssize_t>(len);
  }
  if (size == 0) {
    fuse_reply_xattr(req, shown.size());
  } else if (shown.size() > size) {
    fuse_reply_err(req, ERANGE);
  } else {
    fuse_reply_buf(req, shown.data(), shown.size());
  }
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

}  // namespace strata::fs
