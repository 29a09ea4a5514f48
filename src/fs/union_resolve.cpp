// Name resolution across the layers. Of UnionFs, this file holds resolve
// (which copy of a name is visible, and which directories merge under it),
// the markers it reads in every layer (dir_is_opaque, oci_whiteout_in:
// whiteouts and opaque directories in both formats), follow_redirect for
// overlayfs's redirect xattr, and open_dir_layer.
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "union_fs.hpp"

namespace strata::fs {

bool UnionFs::dir_is_opaque(int dirfd, std::string* redirect) {
  struct stat st {};
  if (::fstatat(dirfd, kOciOpaqueMarker, &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  char path[64];
  proc_path(path, sizeof path, dirfd, nullptr);
  char list[4096];
  ssize_t n = ::listxattr(path, list, sizeof list);
  bool all = false;
  if (n < 0) {
    if (errno != ERANGE) return false;
    all = true;  // too many to list: ask for each marker
    n = 0;
  }
  auto listed = [&](const char* key) {
    if (all) return true;
    for (ssize_t i = 0; i < n;) {
      const char* a = list + i;
      if (std::strcmp(a, key) == 0) return true;
      i += static_cast<ssize_t>(std::strlen(a)) + 1;
    }
    return false;
  };
  char v[4];
  for (const char* key : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
    if (listed(key) && ::getxattr(path, key, v, sizeof v) == 1 && v[0] == 'y') return true;
  }
  if (redirect) {
    // overlayfs's redirect_dir: a directory renamed by the kernel names where
    // its lower copies are, as "/PATH" from the layer root or as a NAME in
    // the same parent.
    for (const char* key : {"trusted.overlay.redirect", "user.overlay.redirect"}) {
      if (!listed(key)) continue;
      char value[PATH_MAX];
      ssize_t len = ::getxattr(path, key, value, sizeof value);
      if (len > 0) {
        redirect->assign(value, static_cast<size_t>(len));
        break;
      }
    }
  }
  return false;
}

int UnionFs::oci_whiteout_in(const std::shared_ptr<DirLayer>& dl, const char* name) {
  const int dfd = dir_cache_.fd(dl);
  if (dfd < 0) return -1;
  int state = dl->oci_markers.load(std::memory_order_relaxed);
  if (state < 0) {
    // One scan: an upper copy stops at the first marker; a lower copy is read
    // whole, and its names become the copy's NameFilter (see resolve).
    const bool lower = dl->layer != 0;
    std::vector<std::uint64_t> hashes;
    bool complete = false;
    state = 0;
    UniqueFd d(dir_cache_.open_retrying([dfd] { return ::openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
    if (d) {
      alignas(8) char buf[32768];
      for (;;) {
        long n = ::syscall(SYS_getdents64, d.get(), buf, sizeof buf);
        if (n <= 0) {
          complete = n == 0;
          break;
        }
        for (long off = 0; off < n;) {
          auto* e = reinterpret_cast<struct dirent64*>(buf + off);
          if (is_marker_name(e->d_name) && std::strcmp(e->d_name, kOciOpaqueMarker) != 0) state = 1;
          if (lower) hashes.push_back(NameFilter::hash(e->d_name));
          off += e->d_reclen;
        }
        if (state == 1 && !lower) break;
      }
    } else {
      state = 1;  // cannot scan: fall back to asking per name
    }
    dl->oci_markers.store(state, std::memory_order_relaxed);
    if (lower && complete) dl->set_names(std::move(hashes));
  }
  if (state == 0) return 0;
  char marker[NAME_MAX + 8];
  std::snprintf(marker, sizeof marker, ".wh.%s", name);
  struct stat st {};
  return ::fstatat(dfd, marker, &st, AT_SYMLINK_NOFOLLOW) == 0 ? 1 : 0;
}

std::shared_ptr<DirLayer> UnionFs::open_dir_layer(const std::shared_ptr<DirLayer>& parent, int parent_fd,
                                                  const char* name, const struct stat& st, int& fd) {
  UniqueFd opened(dir_cache_.open_retrying(
      [&] { return ::openat(parent_fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!opened) return nullptr;
  auto dl = std::make_shared<DirLayer>(parent->layer, parent, name, st);
  fd = dir_cache_.adopt(dl, std::move(opened));
  return dl;
}

// Finds the visible copy of NAME in the directory PARENT: the topmost layer
// that has it wins; a whiteout (either format) hides everything below; a
// directory merges the directories below it until an opaque one. A directory
// that overlayfs renamed (redirect_dir) continues at the name or path its
// redirect names.
int UnionFs::resolve(Node& parent, const char* name, Resolved& out, std::size_t first) {
  const std::size_t n = parent.dirs.size();
  std::string renamed;  // a relative redirect: the name in the layers below
  const char* cur = name;
  for (std::size_t i = first; i < n; ++i) {
    const auto& dlp = parent.dirs[i];
    const DirLayer& dl = *dlp;
    const int dfd = dir_cache_.fd(dlp);
    if (dfd < 0) return unreachable(errno);
    // Neither the name nor its marker in this lower copy: nothing to ask.
    if (const NameFilter* names = dl.names.load(std::memory_order_acquire); names && !names->may_mention(cur)) {
      continue;
    }
    struct stat st;
    if (::fstatat(dfd, cur, &st, AT_SYMLINK_NOFOLLOW) == 0) {
      if (is_overlay_whiteout(st)) {
        if (!out.found) out.whiteout_layer = dl.layer;
        break;
      }
      bool more_below = i + 1 < n;
      if (!out.found) {
        out.found = true;
        out.layer = dl.layer;
        out.st = st;
        if (!S_ISDIR(st.st_mode)) break;
        more_below = dl.layer + 1 < static_cast<int>(layers_.size());
      } else if (!S_ISDIR(st.st_mode)) {
        break;  // a non-directory below a directory contributes nothing, nor does anything under it
      }
      int subfd = -1;
      auto sub = open_dir_layer(dlp, dfd, cur, st, subfd);
      if (!sub) {
        if (transient(errno)) return errno;  // never a node with copies missing
        if (out.dirs.empty()) return errno == ENOENT ? EIO : errno;
        break;
      }
      out.dirs.push_back(std::move(sub));
      if (!more_below) continue;
      std::string redirect;
      if (dir_is_opaque(subfd, &redirect)) break;
      if (redirect.empty()) continue;
      if (redirect.front() == '/') {
        if (int r = follow_redirect(out, dl.layer, redirect); r != 0) return r;
        break;
      }
      if (redirect.find('/') != std::string::npos || redirect.size() > NAME_MAX) break;
      renamed = std::move(redirect);
      cur = renamed.c_str();
      continue;
    }
    if (errno != ENOENT && errno != ENOTDIR) return errno == ENAMETOOLONG ? ENAMETOOLONG : EIO;
    int marked = oci_whiteout_in(dlp, cur);
    if (marked < 0) return unreachable(errno);
    if (marked) {
      if (!out.found) out.whiteout_layer = dl.layer;
      break;
    }
  }
  return out.found ? 0 : ENOENT;
}

// The lower copies of a directory with an absolute redirect: PATH is looked
// up from the root of every layer below ABOVE, one component at a time, as
// overlayfs does; a whiteout, a non-directory or an opaque directory on the
// way ends the search. Returns 0, or a transient error (nothing is known then).
int UnionFs::follow_redirect(Resolved& out, int above, const std::string& path) {
  std::vector<std::string> comps;
  auto split = [&comps](const std::string& p) {
    comps.clear();
    for (std::size_t pos = 0; pos < p.size();) {
      std::size_t end = p.find('/', pos);
      if (end == std::string::npos) end = p.size();
      if (end > pos) comps.emplace_back(p, pos, end - pos);
      pos = end + 1;
    }
  };
  split(path);
  for (const auto& rd : root_->dirs) {
    if (rd->layer <= above) continue;
    if (comps.empty()) return 0;
    std::shared_ptr<DirLayer> held = rd;
    int fd = dir_cache_.fd(rd);
    if (fd < 0) return unreachable(errno);
    bool found = false, stop = false;
    for (std::size_t k = 0; k < comps.size(); ++k) {
      const char* c = comps[k].c_str();
      struct stat st;
      if (comps[k].size() > NAME_MAX || ::fstatat(fd, c, &st, AT_SYMLINK_NOFOLLOW) != 0) {
        char marker[NAME_MAX + 8];
        std::snprintf(marker, sizeof marker, ".wh.%s", c);
        stop = comps[k].size() <= NAME_MAX - 4 && ::fstatat(fd, marker, &st, AT_SYMLINK_NOFOLLOW) == 0;
        break;  // not in this layer
      }
      if (!S_ISDIR(st.st_mode)) {
        stop = true;
        break;
      }
      auto next = open_dir_layer(held, fd, c, st, fd);
      if (!next) {
        if (transient(errno)) return errno;
        stop = true;
        break;
      }
      held = std::move(next);
      if (k + 1 == comps.size()) {
        found = true;
      } else if (dir_is_opaque(fd)) {
        stop = true;
        break;
      }
    }
    if (stop) return 0;
    if (!found) continue;
    out.dirs.push_back(std::move(held));
    std::string redirect;
    if (dir_is_opaque(fd, &redirect)) return 0;
    if (redirect.empty()) continue;
    if (redirect.front() == '/') {
      split(redirect);
    } else if (redirect.find('/') == std::string::npos) {
      comps.back() = redirect;
    } else {
      return 0;
    }
  }
  return 0;
}

}  // namespace strata::fs
