// The union's read side: node table, name resolution across layers, whiteout
// and opaque markers in both formats, attributes, readdir, reads, xattrs.
// The write side (copy-up, whiteout creation, every changing op) is in
// union_write.cpp.
#include "union_fs.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <unordered_set>

#include <xxhash.h>

#include "strata/error.hpp"

namespace strata::fs {

namespace {

constexpr std::string_view kOciWhiteoutPrefix = ".wh.";
constexpr const char* kOciOpaqueMarker = ".wh..wh..opq";
constexpr std::uint64_t kRealInoMask = (std::uint64_t{1} << 56) - 1;

bool is_overlay_whiteout(const struct stat& st) noexcept { return S_ISCHR(st.st_mode) && st.st_rdev == 0; }

bool is_marker_name(const char* name) noexcept { return std::strncmp(name, ".wh.", 4) == 0; }

// "/proc/self/fd/N/NAME": reaches NAME inside an open directory fd for the
// xattr calls, which have no *at() form in this glibc. The fd is ours and NAME
// is one component, so nothing outside the layer can be reached.
int proc_path(char* buf, size_t len, int fd, const char* name) noexcept {
  int n = name ? std::snprintf(buf, len, "/proc/self/fd/%d/%s", fd, name) : std::snprintf(buf, len, "/proc/self/fd/%d", fd);
  return (n < 0 || static_cast<size_t>(n) >= len) ? ENAMETOOLONG : 0;
}

UnionFs* fs_of(fuse_req_t req) { return static_cast<UnionFs*>(fuse_req_userdata(req)); }

// The DirLayers pinned by the requests of this thread (see DirCache::PinScope).
thread_local std::vector<std::shared_ptr<DirLayer>> t_pins;

// How many directory fds the daemon keeps open: half of what it may have,
// the rest being for the kernel's open files, libfuse and copy-ups.
std::size_t dir_cache_capacity() {
  struct rlimit rl {};
  rlim_t limit = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  if (limit == RLIM_INFINITY || limit > (rlim_t{1} << 30)) limit = rlim_t{1} << 30;
  return std::max<std::size_t>(16, (static_cast<std::size_t>(limit) - std::min<std::size_t>(limit, 64)) / 2);
}

}  // namespace

DirLayer::~DirLayer() {
  if (cache_) cache_->forget(*this);
  delete names.load(std::memory_order_acquire);
}

void DirLayer::set_names(std::vector<std::uint64_t> hashes) {
  if (layer == 0 || hashes.size() > NameFilter::kMaxNames) return;
  auto* filter = new NameFilter(std::move(hashes));
  const NameFilter* none = nullptr;
  // Two scans may race; both saw the same immutable directory.
  if (!names.compare_exchange_strong(none, filter, std::memory_order_acq_rel)) delete filter;
}

NameFilter::NameFilter(std::vector<std::uint64_t> hashes) noexcept : hashes_(std::move(hashes)) {
  std::sort(hashes_.begin(), hashes_.end());
}

std::uint64_t NameFilter::hash(std::string_view name) noexcept { return XXH3_64bits(name.data(), name.size()); }

bool NameFilter::may_contain(std::string_view name) const noexcept {
  return std::binary_search(hashes_.begin(), hashes_.end(), hash(name));
}

bool NameFilter::may_mention(std::string_view name) const noexcept {
  if (may_contain(name)) return true;
  char marker[NAME_MAX + 8];
  if (name.size() > NAME_MAX) return false;
  std::memcpy(marker, kOciWhiteoutPrefix.data(), kOciWhiteoutPrefix.size());
  std::memcpy(marker + kOciWhiteoutPrefix.size(), name.data(), name.size());
  return may_contain(std::string_view(marker, kOciWhiteoutPrefix.size() + name.size()));
}

void DirCache::set_permanent(DirLayer& dl, UniqueFd fd) {
  std::lock_guard lk(mu_);
  dl.fd_ = fd.release();
  dl.permanent_ = true;
  dl.cache_ = this;
}

void DirCache::forget(DirLayer& dl) noexcept {
  std::lock_guard lk(mu_);
  if (dl.fd_ < 0) return;
  if (!dl.permanent_) lru_.erase(dl.lru_);
  ::close(dl.fd_);
  dl.fd_ = -1;
}

void DirCache::insert_locked(DirLayer& dl, int fd) {
  dl.fd_ = fd;
  dl.cache_ = this;
  lru_.push_front(&dl);
  dl.lru_ = lru_.begin();
}

int DirCache::pin_locked(const std::shared_ptr<DirLayer>& dl) {
  if (!dl->permanent_) {
    t_pins.push_back(dl);
    ++dl->pins_;
    lru_.splice(lru_.begin(), lru_, dl->lru_);
  }
  return dl->fd_;
}

void DirCache::trim_locked(std::vector<int>& to_close) {
  for (auto it = lru_.end(); lru_.size() > capacity_ && it != lru_.begin();) {
    --it;
    DirLayer* dl = *it;
    if (dl->pins_ != 0) continue;
    to_close.push_back(dl->fd_);
    dl->fd_ = -1;
    it = lru_.erase(it);
  }
}

int DirCache::adopt(const std::shared_ptr<DirLayer>& dl, UniqueFd fd) {
  std::vector<int> to_close;
  int pinned;
  {
    std::lock_guard lk(mu_);
    if (dl->fd_ >= 0) {
      to_close.push_back(fd.release());  // another request opened it meanwhile
    } else {
      insert_locked(*dl, fd.release());
    }
    pinned = pin_locked(dl);
    trim_locked(to_close);
  }
  for (int c : to_close) ::close(c);
  return pinned;
}

int DirCache::fd(const std::shared_ptr<DirLayer>& dl) {
  {
    std::lock_guard lk(mu_);
    if (dl->fd_ >= 0) return pin_locked(dl);
  }
  if (!dl->parent) {  // a layer root is always open
    errno = EBADF;
    return -1;
  }
  int parent_fd = fd(dl->parent);
  if (parent_fd < 0) return -1;
  UniqueFd opened(open_retrying(
      [&] { return ::openat(parent_fd, dl->name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!opened) return -1;
  struct stat st {};
  if (::fstat(opened.get(), &st) != 0) return -1;
  if (st.st_dev != dl->dev || st.st_ino != dl->ino) {
    errno = ESTALE;  // the name holds another directory now
    return -1;
  }
  return adopt(dl, std::move(opened));
}

bool DirCache::shed() {
  std::vector<int> to_close;
  {
    std::lock_guard lk(mu_);
    for (auto it = lru_.begin(); it != lru_.end();) {
      DirLayer* dl = *it;
      if (dl->pins_ != 0) {
        ++it;
        continue;
      }
      to_close.push_back(dl->fd_);
      dl->fd_ = -1;
      it = lru_.erase(it);
    }
  }
  for (int c : to_close) ::close(c);
  return !to_close.empty();
}

DirCache::PinScope::PinScope(DirCache& cache) noexcept : cache_(cache), mark_(t_pins.size()) {}

DirCache::PinScope::~PinScope() {
  if (t_pins.size() <= mark_) return;
  {
    std::lock_guard lk(cache_.mu_);
    for (std::size_t i = mark_; i < t_pins.size(); ++i) --t_pins[i]->pins_;
  }
  // Outside the lock: a DirLayer dropped here leaves the cache itself.
  t_pins.resize(mark_);
}

struct Listing {
  std::uint32_t id = 0;          // in the top half of every offset handed out from it
  std::uint64_t generation = 0;  // UnionFs::generation_ when ENTRIES were listed
  std::vector<UnionFs::Entry> entries;
};

Node::~Node() {
  if (link_index) {
    std::lock_guard lk(link_index->mu);
    auto it = link_index->nodes.find(link_key);
    if (it != link_index->nodes.end() && it->second.expired()) {
      link_index->nodes.erase(it);
      link_index->size.store(link_index->nodes.size(), std::memory_order_relaxed);
    }
  }
  if (!parent) return;
  std::lock_guard lk(parent->children_mu);
  auto it = parent->children.find(name);
  if (it != parent->children.end() && it->second.expired()) parent->children.erase(it);
}

UnionFs::UnionFs(std::vector<Layer> layers, UniqueFd workdir, Config config)
    : layers_(std::move(layers)), work_fd_(std::move(workdir)), cfg_(std::move(config)),
      dir_cache_(dir_cache_capacity()) {
  read_override_ = cfg_.read_override_stat;
  root_ = std::make_shared<Node>();
  root_->type = S_IFDIR;
  root_->nlookup = 1;
  struct stat top {};
  for (std::size_t i = 0; i < layers_.size(); ++i) {
    if (!layers_[i].fd) continue;
    UniqueFd fd(::fcntl(layers_[i].fd.get(), F_DUPFD_CLOEXEC, 0));
    struct stat st {};
    if (!fd || ::fstat(fd.get(), &st) != 0) throw SysError(errno, "layer " + quote(layers_[i].path));
    auto dl = std::make_shared<DirLayer>(static_cast<int>(i), nullptr, std::string(), st);
    bool last = i + 1 == layers_.size();
    bool opaque = !last && dir_is_opaque(fd.get());
    dir_cache_.set_permanent(*dl, std::move(fd));
    if (root_->dirs.empty()) {
      root_->layer = dl->layer;
      top = st;
    }
    root_->dirs.push_back(std::move(dl));
    if (opaque) break;
  }
  DirCache::PinScope pins(dir_cache_);
  root_->ino = stable_ino(root_->layer, dir_fd(*root_), nullptr, top.st_ino);
}

UnionFs::~UnionFs() {
  for (auto& s : shards_) s.nodes.clear();
}

Node* UnionFs::node_of(fuse_ino_t ino) const noexcept {
  return ino == FUSE_ROOT_ID ? root_.get() : reinterpret_cast<Node*>(ino);
}

void UnionFs::ref_lookup(const std::shared_ptr<Node>& node) {
  if (node == root_) return;
  Shard& s = shard_of(node.get());
  std::lock_guard lk(s.mu);
  if (node->nlookup++ == 0) s.nodes.emplace(node.get(), node);
}

void UnionFs::forget(fuse_ino_t ino, std::uint64_t n) {
  Node* node = node_of(ino);
  if (node == root_.get()) return;
  std::shared_ptr<Node> drop;
  {
    Shard& s = shard_of(node);
    std::lock_guard lk(s.mu);
    node->nlookup = node->nlookup > n ? node->nlookup - n : 0;
    if (node->nlookup == 0) {
      auto it = s.nodes.find(node);
      if (it != s.nodes.end()) {
        drop = std::move(it->second);
        s.nodes.erase(it);
      }
    }
  }
  // DROP may free the node (and then its parents) here, outside every lock.
}

std::uint64_t UnionFs::stable_ino(int layer, int parent_fd, const char* name, ino_t real_ino) {
  if (layer == 0 && cfg_.writable && !cfg_.private_xattr_prefix.empty()) {
    // A copied-up file keeps the number it had in its lower layer: copy-up
    // records it in a private xattr on the upper copy.
    char path[PATH_MAX];
    if (proc_path(path, sizeof path, parent_fd, name) == 0) {
      char value[32];
      std::string key = cfg_.private_xattr_prefix + "strata.ino";
      ssize_t n = name ? ::lgetxattr(path, key.c_str(), value, sizeof value - 1)
                       : ::getxattr(path, key.c_str(), value, sizeof value - 1);
      if (n > 0) {
        value[n] = '\0';
        std::uint64_t v = std::strtoull(value, nullptr, 10);
        if (v != 0) return v;
      }
    }
  }
  return layer_ino(layer, real_ino);
}

std::uint64_t UnionFs::layer_ino(int layer, ino_t real_ino) noexcept {
  std::uint64_t real = static_cast<std::uint64_t>(real_ino);
  if (real > kRealInoMask) {
    // Rare 64-bit inode numbers: fold them into the 56 available bits.
    real = (real ^ (real >> 56) * 0x9E3779B97F4A7C15ULL) & kRealInoMask;
    if (real == 0) real = 1;
  }
  return (static_cast<std::uint64_t>(layer) << 56) | real;
}

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

int UnionFs::parent_fd_in(const Node& node, int layer) {
  if (node.parent) {
    for (const auto& dl : node.parent->dirs) {
      if (dl->layer == layer) return dir_cache_.fd(dl);
    }
  }
  errno = ENOENT;
  return -1;
}

int UnionFs::dir_fd(Node& node) {
  if (node.dirs.empty()) {
    errno = ENOTDIR;
    return -1;
  }
  return dir_cache_.fd(node.dirs.front());
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

int UnionFs::stat_node(Node& node, struct stat& st) {
  if (node.is_dir()) {
    int dfd = dir_fd(node);
    if (dfd < 0) return unreachable(errno);
    if (::fstat(dfd, &st) != 0) return EIO;
    if (st.st_nlink == 0) return EIO;  // the layer's directory was removed under the mount
    return 0;
  }
  if (node.self) {
    if (::fstatat(node.self.get(), "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) != 0) return EIO;
    return 0;
  }
  int pfd = parent_fd_in(node, node.layer);
  if (pfd < 0) return unreachable(errno);
  if (::fstatat(pfd, node.name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return errno == ENOENT ? EIO : errno;
  return 0;
}

int UnionFs::open_node(const Node& node, int flags) {
  flags = (flags & ~(O_CREAT | O_EXCL | O_NOCTTY)) | O_CLOEXEC;
  if (node.self) {
    // Reopening through /proc is how an O_PATH fd becomes a real one; the
    // magic link is the object itself, so it must be followed.
    char path[64];
    proc_path(path, sizeof path, node.self.get(), nullptr);
    return dir_cache_.open_retrying([&] { return ::open(path, flags & ~O_NOFOLLOW); });
  }
  int pfd = parent_fd_in(node, node.layer);
  if (pfd < 0) {
    errno = unreachable(errno);
    return -1;
  }
  return dir_cache_.open_retrying([&] { return ::openat(pfd, node.name.c_str(), flags | O_NOFOLLOW); });
}

int UnionFs::pin_node(Node& node) {
  if (node.self || node.is_dir()) return 0;
  int pfd = parent_fd_in(node, node.layer);
  if (pfd < 0) return unreachable(errno);
  int fd = dir_cache_.open_retrying([&] { return ::openat(pfd, node.name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC); });
  if (fd < 0) return errno == ENOENT ? EIO : errno;
  node.self = UniqueFd(fd);
  return 0;
}

std::shared_ptr<Node> UnionFs::index_link(const std::shared_ptr<Node>& node, ino_t upper_ino) {
  std::lock_guard lk(links_->mu);
  auto& slot = links_->nodes[upper_ino];
  if (auto existing = slot.lock()) return existing;
  slot = node;
  links_->size.store(links_->nodes.size(), std::memory_order_relaxed);
  node->link_index = links_;
  node->link_key = upper_ino;
  return node;
}

bool UnionFs::named_by(const Node& node, const Node& parent, const char* name) noexcept {
  return !node.unlinked && node.parent.get() == &parent && node.name == name;
}

int UnionFs::node_attr(Node& node, struct stat& st) {
  if (node.unlinked && !node.self) return ENOENT;
  int r = stat_node(node, st);
  if (r != 0) return r;
  if (node.is_dir()) {
    if (node.parent) {
      int pfd = parent_fd_in(node, node.layer);
      if (pfd < 0) return unreachable(errno);
      present(st, pfd, node.name.c_str(), true);
    } else {
      present(st, dir_fd(node), nullptr, true);
    }
    // Like overlayfs: a directory merged from several layers reports one link,
    // so tools do not infer a subdirectory count from it.
    if (node.dirs.size() > 1) st.st_nlink = 1;
  } else if (node.self) {
    present(st, node.self.get(), nullptr, false);
  } else {
    int pfd = parent_fd_in(node, node.layer);
    if (pfd < 0) return unreachable(errno);
    present(st, pfd, node.name.c_str(), false);
  }
  st.st_ino = node.ino;
  return 0;
}

void UnionFs::fill_entry(fuse_entry_param& e, Node& node, const struct stat& st) {
  e.ino = reinterpret_cast<fuse_ino_t>(&node);
  e.generation = 0;
  e.attr = st;
  e.entry_timeout = cfg_.timeout;
  // Hard-linked upper files share data under several node ids: let the kernel
  // re-read their attributes so a change through one name shows in the other.
  e.attr_timeout = (node.layer == 0 && !node.is_dir() && st.st_nlink > 1) ? 0.0 : cfg_.timeout;
}

// The error for a name missing from DIR: EIO when DIR's own layer directory
// was removed under the mount, else ENOENT. The check costs an fstat, so a
// directory found present answers ENOENT without one for the next second:
// a burst of missing names (a compiler's include search, a shell's PATH)
// pays for one check per directory.
int UnionFs::dir_gone_error(Node& dir) {
  constexpr std::int64_t kRecheckNs = 1'000'000'000;
  const std::int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                               std::chrono::steady_clock::now().time_since_epoch()).count();
  const std::int64_t last = dir.alive_checked.load(std::memory_order_relaxed);
  if (last != 0 && now - last < kRecheckNs) return ENOENT;
  struct stat st {};
  int dfd = dir_fd(dir);
  if (dfd < 0) return unreachable(errno);
  if (::fstat(dfd, &st) != 0 || st.st_nlink == 0) return EIO;
  dir.alive_checked.store(now, std::memory_order_relaxed);
  return ENOENT;
}

std::shared_ptr<Node> UnionFs::live_child(Node& parent, const std::string& name) {
  std::shared_ptr<Node> child;
  std::unique_lock lk(parent.children_mu);
  auto it = parent.children.find(name);
  if (it != parent.children.end()) child = it->second.lock();
  lk.unlock();
  return child;
}

std::shared_ptr<Node> UnionFs::child_node(Node& parent, const char* name, int& err, int* hidden_at) {
  err = 0;
  if (!parent.is_dir() || parent.unlinked || is_marker_name(name)) {
    err = ENOENT;
    return nullptr;
  }
  if (std::strlen(name) > NAME_MAX) {
    err = ENAMETOOLONG;
    return nullptr;
  }
  std::string key(name);
  std::shared_ptr<Node> child = live_child(parent, key);
  if (child && named_by(*child, parent, name)) return child;
  Resolved res;
  int r = resolve(parent, name, res);
  if (r != 0) {
    err = r == ENOENT ? dir_gone_error(parent) : r;
    if (hidden_at) *hidden_at = res.whiteout_layer;
    return nullptr;
  }
  // Every name of an upper file with several links is one Node.
  const bool linked_upper = res.layer == 0 && !S_ISDIR(res.st.st_mode) &&
                            (res.st.st_nlink > 1 || links_->size.load(std::memory_order_relaxed) != 0);
  if (linked_upper) {
    std::lock_guard lk(links_->mu);
    auto it = links_->nodes.find(res.st.st_ino);
    if (it != links_->nodes.end()) {
      if (auto same = it->second.lock()) return same;
    }
  }
  auto node = std::make_shared<Node>();
  node->name = key;
  node->type = res.st.st_mode & S_IFMT;
  node->layer = res.layer;
  node->dirs = std::move(res.dirs);
  node->parent = parent.shared_from_this();
  int pfd = parent_fd_in(*node, node->layer);
  if (pfd < 0) {
    node->parent.reset();  // never registered: its destructor must not touch the map
    err = unreachable(errno);
    return nullptr;
  }
  node->ino = stable_ino(node->layer, pfd, name, res.st.st_ino);
  if (linked_upper && res.st.st_nlink > 1) {
    if ((err = pin_node(*node)) != 0) return nullptr;
    auto same = index_link(node, res.st.st_ino);
    if (same != node) {
      node->parent.reset();  // never registered: its destructor must not touch the map
      return same;
    }
  }
  return publish_child(parent, key, std::move(node));
}

std::shared_ptr<Node> UnionFs::publish_child(Node& parent, const std::string& name, std::shared_ptr<Node> node) {
  std::shared_ptr<Node> existing;
  {
    std::unique_lock lk(parent.children_mu);
    auto& slot = parent.children[name];
    existing = slot.lock();
    if (!existing || !named_by(*existing, parent, name.c_str())) {
      slot = node;
      existing.reset();
    }
  }
  if (existing) {
    node->parent.reset();  // never registered: its destructor must not touch the map
    return existing;
  }
  return node;
}

std::shared_ptr<Node> UnionFs::listed_child(Node& parent, const Entry& en, struct stat& st, int& err) {
  err = 0;
  const char* name = en.name.c_str();
  auto fallback = [&]() -> std::shared_ptr<Node> {
    auto node = child_node(parent, name, err);
    if (node && (err = node_attr(*node, st)) != 0) node.reset();
    return node;
  };
  if (en.from < 0 || static_cast<std::size_t>(en.from) >= parent.dirs.size() || en.type == DT_DIR ||
      en.type == DT_UNKNOWN) {
    return fallback();
  }
  if (auto live = live_child(parent, en.name); live && named_by(*live, parent, name)) {
    if ((err = node_attr(*live, st)) != 0) live.reset();
    return live;
  }
  const auto& dlp = parent.dirs[static_cast<std::size_t>(en.from)];
  const DirLayer& dl = *dlp;
  const int dfd = dir_cache_.fd(dlp);
  if (dfd < 0 || ::fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) != 0 || S_ISDIR(st.st_mode) ||
      is_overlay_whiteout(st) ||
      (dl.layer == 0 && (st.st_nlink > 1 || links_->size.load(std::memory_order_relaxed) != 0))) {
    return fallback();
  }
  auto node = std::make_shared<Node>();
  node->name = en.name;
  node->type = st.st_mode & S_IFMT;
  node->layer = dl.layer;
  node->parent = parent.shared_from_this();
  node->ino = en.ino;
  auto published = publish_child(parent, en.name, node);
  if (published != node) {
    if ((err = node_attr(*published, st)) != 0) published.reset();
    return published;
  }
  present(st, dfd, name, false);
  st.st_ino = node->ino;
  return node;
}

int UnionFs::do_lookup(Node& parent, const char* name, fuse_entry_param& e) {
  int err = 0;
  std::shared_ptr<Node> node = child_node(parent, name, err);
  if (!node) return err;
  struct stat st;
  int r = node_attr(*node, st);
  if (r != 0) return r;
  ref_lookup(node);
  fill_entry(e, *node, st);
  return 0;
}

void UnionFs::init(fuse_conn_info* conn) {
  auto want = [conn](unsigned cap) {
    if (conn->capable & cap) conn->want |= cap;
  };
  // Reads the daemon serves (no passthrough: an unprivileged daemon) go from
  // the layer file to the kernel by splice; lower layers are immutable, so
  // the kernel may cache and look up in parallel freely. Listings carry
  // attributes (readdirplus), so a walk costs no lookup per entry; with
  // READDIRPLUS_AUTO the kernel asks for plain listings when it does not
  // look entries up afterwards.
  //
  // Requests are read with read(2), not spliced (no SPLICE_READ): only
  // then does every request pass the session's read hook, which turns the
  // TMPFILE request libfuse 3.14 does not know into one it does (see
  // mount.cpp). The data of a write the daemon serves is copied once more.
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_SPLICE_READ);
  want(FUSE_CAP_SPLICE_WRITE);
  want(FUSE_CAP_SPLICE_MOVE);
  want(FUSE_CAP_PARALLEL_DIROPS);
  want(FUSE_CAP_READDIRPLUS);
  want(FUSE_CAP_READDIRPLUS_AUTO);
  want(FUSE_CAP_CACHE_SYMLINKS);
  // Directories need no handle (listings are kept per node, see readdir):
  // the kernel then opens directories without asking, and caches every
  // listing until a change made through the mount invalidates it. All
  // changes to a mounted union come through the mount.
  if (conn->capable & FUSE_CAP_NO_OPENDIR_SUPPORT) {
    conn->want |= FUSE_CAP_NO_OPENDIR_SUPPORT;
    no_opendir_ = true;
  }
  want(FUSE_CAP_ASYNC_READ);
  if (cfg_.writable) want(FUSE_CAP_ATOMIC_O_TRUNC);
  // The kernel clears setuid/setgid and capabilities on write, truncate and
  // chown itself: the daemon writes as root, which the lower file system
  // would not strip them for.
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_HANDLE_KILLPRIV);
  // Locks stay in the kernel (one mount, local semantics): no lock ops are
  // registered, so FUSE_CAP_POSIX_LOCKS/FLOCK_LOCKS are not requested.
  conn->want &= ~static_cast<unsigned>(FUSE_CAP_POSIX_LOCKS | FUSE_CAP_FLOCK_LOCKS);
}

void UnionFs::lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  std::shared_lock lk(tree_mu_);
  fuse_entry_param e{};
  int r = do_lookup(*node_of(parent), name, e);
  lk.unlock();
  if (r == ENOENT) {
    // A negative entry: the kernel remembers the miss as long as a hit.
    e = fuse_entry_param{};
    e.entry_timeout = cfg_.timeout;
    fuse_reply_entry(req, &e);
    return;
  }
  if (r != 0) {
    fuse_reply_err(req, r);
    return;
  }
  fuse_reply_entry(req, &e);
}

void UnionFs::getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  std::shared_lock lk(tree_mu_);
  Node& node = *node_of(ino);
  struct stat st;
  int r = node_attr(node, st);
  lk.unlock();
  if (r != 0) {
    fuse_reply_err(req, r);
    return;
  }
  bool shared_upper = node.layer == 0 && !node.is_dir() && st.st_nlink > 1;
  fuse_reply_attr(req, &st, shared_upper ? 0.0 : cfg_.timeout);
}

void UnionFs::readlink(fuse_req_t req, fuse_ino_t ino) {
  std::shared_lock lk(tree_mu_);
  Node& node = *node_of(ino);
  int pfd = node.self ? node.self.get() : parent_fd_in(node, node.layer);
  char buf[PATH_MAX + 1];
  ssize_t n = pfd < 0 ? -1 : ::readlinkat(pfd, node.self ? "" : node.name.c_str(), buf, sizeof buf - 1);
  int err = n < 0 ? (pfd < 0 ? unreachable(errno) : errno == ENOENT ? EIO : errno) : 0;
  lk.unlock();
  if (n < 0) {
    fuse_reply_err(req, err);
    return;
  }
  buf[n] = '\0';
  fuse_reply_readlink(req, buf);
}

void UnionFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node& node = *node_of(ino);
  int flags = fi->flags;
  bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (writes && !cfg_.writable) {
    fuse_reply_err(req, EROFS);
    return;
  }
  std::unique_lock<std::shared_mutex> wlk(tree_mu_, std::defer_lock);
  std::shared_lock<std::shared_mutex> rlk(tree_mu_, std::defer_lock);
  if (!writes) {
    rlk.lock();
    if (backing_conflict(node, false)) {
      rlk.unlock();
      wlk.lock();  // to retire the node, below
    }
  } else {
    wlk.lock();
  }
  if (wlk.owns_lock()) {
    generation_.fetch_add(1, std::memory_order_relaxed);
    if (backing_conflict(node, writes && node.layer != 0)) {
      int r = retire_node(node);
      wlk.unlock();
      fuse_reply_err(req, r);
      return;
    }
    if (writes && node.layer != 0) {
      int r = copy_up(node, !(flags & O_TRUNC));
      if (r != 0) {
        fuse_reply_err(req, r);
        return;
      }
    }
  }
  int fd = -1, err = ENOENT;
  if (!node.unlinked || node.self) {
    fd = open_node(node, flags);
    err = fd < 0 ? (errno == ENOENT ? EIO : errno) : 0;
  }
  int backing = 0;
  IoMode mode = fd >= 0 ? choose_io_mode(node, fd, backing) : IoMode::cached;
  bool lower = node.layer != 0;
  if (wlk.owns_lock()) wlk.unlock();
  if (rlk.owns_lock()) rlk.unlock();
  if (fd < 0) {
    fuse_reply_err(req, err);
    return;
  }
  // Lower layers never change: keep the page cache across opens.
  reply_open(req, node, fd, mode, backing, lower, fi, nullptr);
}

bool UnionFs::backing_conflict(Node& node, bool copies_up) {
  std::lock_guard lk(backing_mu_);
  return node.backing_users > 0 && (copies_up || node.backing_layer != node.layer);
}

int UnionFs::retire_node(Node& node) {
  if (int r = pin_node(node); r != 0) return r;
  if (node.link_index) {
    std::lock_guard lk(node.link_index->mu);
    auto it = node.link_index->nodes.find(node.link_key);
    if (it != node.link_index->nodes.end() && it->second.lock().get() == &node) {
      node.link_index->nodes.erase(it);
      node.link_index->size.store(node.link_index->nodes.size(), std::memory_order_relaxed);
    }
    node.link_index.reset();
  }
  detach(node);
  node.retired = true;
  return ESTALE;
}

UnionFs::IoMode UnionFs::choose_io_mode(Node& node, int fd, int& backing) {
  std::lock_guard lk(backing_mu_);
  if (node.backing_users > 0) {  // the same copy: backing_conflict() said so
    ++node.backing_users;
    backing = node.backing_id;
    return IoMode::passthrough;
  }
  if (node.cached_users == 0 && passthrough_.usable()) {
    if (int id = passthrough_.register_backing(fd); id > 0) {
      node.backing_id = backing = id;
      node.backing_layer = node.layer;
      node.backing_users = 1;
      return IoMode::passthrough;
    }
  }
  ++node.cached_users;
  return IoMode::cached;
}

void UnionFs::end_io_mode(Node& node, IoMode mode) {
  std::lock_guard lk(backing_mu_);
  if (mode == IoMode::passthrough && --node.backing_users == 0) {
    // The kernel's handles hold their own references to the backing file.
    passthrough_.release_backing(node.backing_id);
    node.backing_id = 0;
    node.backing_layer = -1;
  } else if (mode == IoMode::cached) {
    --node.cached_users;
  }
}

namespace {

// libfuse's conversion of an entry for the kernel, for the replies that
// libfuse 3.14 cannot build itself (CREATE with a backing id).
abi::EntryOut entry_out(const fuse_entry_param& e) {
  auto seconds = [](double t) -> std::uint64_t { return t <= 0 ? 0 : static_cast<std::uint64_t>(t); };
  auto nanos = [&](double t) -> std::uint32_t {
    if (t <= 0) return 0;
    double frac = t - static_cast<double>(seconds(t));
    return static_cast<std::uint32_t>(std::min(frac * 1e9, 999999999.0));
  };
  abi::EntryOut out{};
  out.nodeid = e.ino;
  out.generation = e.generation;
  out.entry_valid = seconds(e.entry_timeout);
  out.entry_valid_nsec = nanos(e.entry_timeout);
  out.attr_valid = seconds(e.attr_timeout);
  out.attr_valid_nsec = nanos(e.attr_timeout);
  const struct stat& st = e.attr;
  out.attr.ino = st.st_ino;
  out.attr.size = static_cast<std::uint64_t>(st.st_size);
  out.attr.blocks = static_cast<std::uint64_t>(st.st_blocks);
  out.attr.atime = static_cast<std::uint64_t>(st.st_atim.tv_sec);
  out.attr.mtime = static_cast<std::uint64_t>(st.st_mtim.tv_sec);
  out.attr.ctime = static_cast<std::uint64_t>(st.st_ctim.tv_sec);
  out.attr.atimensec = static_cast<std::uint32_t>(st.st_atim.tv_nsec);
  out.attr.mtimensec = static_cast<std::uint32_t>(st.st_mtim.tv_nsec);
  out.attr.ctimensec = static_cast<std::uint32_t>(st.st_ctim.tv_nsec);
  out.attr.mode = st.st_mode;
  out.attr.nlink = static_cast<std::uint32_t>(st.st_nlink);
  out.attr.uid = st.st_uid;
  out.attr.gid = st.st_gid;
  out.attr.rdev = static_cast<std::uint32_t>(st.st_rdev);
  out.attr.blksize = static_cast<std::uint32_t>(st.st_blksize);
  return out;
}

}  // namespace

void UnionFs::reply_open(fuse_req_t req, Node& node, int fd, IoMode mode, int backing, bool keep_cache,
                         fuse_file_info* fi, const fuse_entry_param* entry) {
  fi->fh = make_handle(fd, mode);
  node.open_count.fetch_add(1, std::memory_order_relaxed);
  int r;
  if (mode == IoMode::passthrough) {
    abi::OpenOut open_out{fi->fh, abi::kOpenPassthrough, backing};
    if (entry) {
      char buf[sizeof(abi::EntryOut) + sizeof(abi::OpenOut)];
      abi::EntryOut e = entry_out(*entry);
      std::memcpy(buf, &e, sizeof e);
      std::memcpy(buf + sizeof e, &open_out, sizeof open_out);
      r = fuse_reply_buf(req, buf, sizeof buf);
    } else {
      r = fuse_reply_buf(req, reinterpret_cast<const char*>(&open_out), sizeof open_out);
    }
  } else {
    fi->keep_cache = keep_cache ? 1 : 0;
    r = entry ? fuse_reply_create(req, entry, fi) : fuse_reply_open(req, fi);
  }
  if (r == -ENOENT) {  // the caller was interrupted
    ::close(fd);
    node.open_count.fetch_sub(1, std::memory_order_relaxed);
    end_io_mode(node, mode);
  }
}

void UnionFs::read(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  fuse_bufvec buf{};
  buf.count = 1;
  buf.buf[0].size = size;
  buf.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  buf.buf[0].fd = handle_fd(fi);
  buf.buf[0].pos = off;
  fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

void UnionFs::release(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  ::close(handle_fd(fi));
  Node& node = *node_of(ino);
  node.open_count.fetch_sub(1, std::memory_order_relaxed);
  end_io_mode(node, handle_mode(fi));
  fuse_reply_err(req, 0);
}

void UnionFs::opendir(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node& node = *node_of(ino);
  if (!node.is_dir()) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  // With FUSE_CAP_NO_OPENDIR_SUPPORT the kernel stops asking after this
  // answer: directory opens cost no round trip, and every directory's
  // listing may be cached by the kernel across opens (see readdir).
  if (no_opendir_) {
    fuse_reply_err(req, ENOSYS);
    return;
  }
  // A kernel without it: lower-only directories are cached as above, the
  // others listed afresh on every open.
  std::shared_lock lk(tree_mu_);
  const bool immutable = !cfg_.writable || node.dirs.empty() || node.dirs.front()->layer != 0;
  lk.unlock();
  fi->fh = 0;
  fi->cache_readdir = immutable ? 1 : 0;
  fi->keep_cache = immutable ? 1 : 0;
  fuse_reply_open(req, fi);
}

// The merged listing of NODE (without "." and ".."): names from the top layer
// down, each name decided by the topmost layer that mentions it, markers and
// what they hide left out.
int UnionFs::list_dir(Node& node, std::vector<Entry>& out) {
  std::unordered_set<std::string> seen;
  int from = -1;
  for (const auto& dl : node.dirs) {
    ++from;
    std::vector<std::string> decided;
    const int dfd = dir_cache_.fd(dl);
    if (dfd < 0) return unreachable(errno);
    UniqueFd d(dir_cache_.open_retrying([dfd] { return ::openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
    if (!d) return unreachable(errno);
    struct stat dst {};
    if (::fstat(d.get(), &dst) != 0 || dst.st_nlink == 0) return EIO;
    alignas(8) char buf[32768];
    bool has_markers = false;
    const bool lower = dl->layer != 0;
    std::vector<std::uint64_t> hashes;
    for (;;) {
      long n = ::syscall(SYS_getdents64, d.get(), buf, sizeof buf);
      if (n < 0) return EIO;
      if (n == 0) break;
      for (long p = 0; p < n;) {
        auto* de = reinterpret_cast<struct dirent64*>(buf + p);
        p += de->d_reclen;
        const char* nm = de->d_name;
        if (lower) hashes.push_back(NameFilter::hash(nm));
        if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0'))) continue;
        if (is_marker_name(nm)) {
          if (std::strcmp(nm, kOciOpaqueMarker) != 0) {
            decided.emplace_back(nm + kOciWhiteoutPrefix.size());
            has_markers = true;
          }
          continue;
        }
        if (seen.count(nm)) continue;
        decided.emplace_back(nm);
        unsigned char type = de->d_type;
        if (type == DT_CHR || type == DT_UNKNOWN) {
          struct stat st;
          if (::fstatat(dfd, nm, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
          if (is_overlay_whiteout(st)) continue;
          type = static_cast<unsigned char>(IFTODT(st.st_mode));
        }
        out.push_back({nm, stable_ino(dl->layer, dfd, nm, de->d_ino), type, from});
      }
    }
    dl->oci_markers.store(has_markers ? 1 : 0, std::memory_order_relaxed);
    if (lower && dl->names.load(std::memory_order_relaxed) == nullptr) dl->set_names(std::move(hashes));
    for (auto& s : decided) seen.insert(std::move(s));
  }
  return 0;
}

void UnionFs::releasedir(fuse_req_t req, fuse_ino_t, fuse_file_info*) { fuse_reply_err(req, 0); }

// Directory offsets are (listing id << 32 | index): a pass that started at
// offset 0 continues in the snapshot it started with, so entries made or
// removed meanwhile do not shift the entries of a pass in progress. A node
// keeps the snapshots of its passes in progress (a few; a pass whose
// snapshot is gone continues by index in a new one).
std::shared_ptr<const Listing> UnionFs::listing_for(Node& node, off_t off, int& err) {
  const auto id = static_cast<std::uint32_t>(static_cast<std::uint64_t>(off) >> 32);
  std::mutex& mu = listing_mu_of(node);
  if (off != 0) {
    std::lock_guard ll(mu);
    for (const auto& l : node.listings) {
      if (l->id == id) return l;
    }
  }
  auto fresh = std::make_shared<Listing>();
  fresh->id = static_cast<std::uint32_t>(listing_ids_.fetch_add(1, std::memory_order_relaxed) % 0x7fffffffu) + 1;
  fresh->generation = generation_.load(std::memory_order_relaxed);
  fresh->entries.push_back({".", node.ino, DT_DIR, -1});
  fresh->entries.push_back({"..", node.parent ? node.parent->ino : node.ino, DT_DIR, -1});
  if ((err = list_dir(node, fresh->entries)) != 0) return nullptr;
  std::lock_guard ll(mu);
  if (node.listings.size() >= kListingsPerDir) node.listings.erase(node.listings.begin());
  node.listings.push_back(fresh);
  return fresh;
}

void UnionFs::listing_done(Node& node, const Listing* listing) {
  std::lock_guard ll(listing_mu_of(node));
  std::erase_if(node.listings, [listing](const auto& l) { return l.get() == listing; });
}

void UnionFs::readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*, bool plus) {
  Node& node = *node_of(ino);
  std::shared_lock lk(tree_mu_);
  if (node.unlinked) {
    lk.unlock();
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  int list_err = 0;
  std::shared_ptr<const Listing> listing = listing_for(node, off, list_err);
  if (!listing) {
    lk.unlock();
    fuse_reply_err(req, list_err);
    return;
  }
  std::vector<char> buf(size);
  size_t used = 0;
  // Entries listed since the last change of the tree are still decided: their
  // nodes come from the copy the listing saw, without a new lookup.
  const bool listing_current = listing->generation == generation_.load(std::memory_order_relaxed);
  const std::uint64_t id_bits = static_cast<std::uint64_t>(listing->id) << 32;
  const auto& entries = listing->entries;
  size_t i = static_cast<size_t>(static_cast<std::uint64_t>(off) & 0xffffffffu);
  // The kernel asks past the last entry before it takes the pass as done.
  if (i >= entries.size()) listing_done(node, listing.get());
  for (; i < entries.size(); ++i) {
    const Entry& en = entries[i];
    size_t left = size - used;
    off_t next = static_cast<off_t>(id_bits | (i + 1));
    if (!plus) {
      struct stat st {};
      st.st_ino = en.ino;
      st.st_mode = static_cast<mode_t>(DTTOIF(en.type));
      size_t need = fuse_add_direntry(req, buf.data() + used, left, en.name.c_str(), &st, next);
      if (need > left) break;
      used += need;
      continue;
    }
    if (fuse_add_direntry_plus(req, nullptr, 0, en.name.c_str(), nullptr, 0) > left) break;
    DirCache::PinScope entry_pins(dir_cache_);  // a long listing pins no more than one entry's fds
    fuse_entry_param e{};
    if (i < 2) {
      e.attr.st_ino = en.ino;
      e.attr.st_mode = S_IFDIR;
    } else if (listing_current) {
      int err = 0;
      auto child = listed_child(node, en, e.attr, err);
      if (!child) continue;  // gone since the listing
      ref_lookup(child);
      fill_entry(e, *child, e.attr);
    } else if (do_lookup(node, en.name.c_str(), e) != 0) {
      continue;  // removed since the snapshot
    }
    used += fuse_add_direntry_plus(req, buf.data() + used, left, en.name.c_str(), &e, next);
  }
  lk.unlock();
  fuse_reply_buf(req, buf.data(), used);
}

void UnionFs::statfs(fuse_req_t req, fuse_ino_t) {
  int fd = layers_[0].fd ? layers_[0].fd.get() : layers_[1].fd.get();
  struct statvfs sv {};
  if (::fstatvfs(fd, &sv) != 0) {
    fuse_reply_err(req, errno);
    return;
  }
  sv.f_namemax = NAME_MAX;
  fuse_reply_statfs(req, &sv);
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

// --- C callbacks: unwrap the request and call the member. ---

namespace {

// Whether the request being served on this thread has been answered (see
// note_reply_sent).
thread_local bool t_replied = false;

enum class Reply { one, none };

// Serves one request: the directory fds it takes stay open until it has
// been answered, and an exception escaping the op is one line on stderr and,
// unless the request was answered already, an EIO answer; the daemon goes on.
// FORGET (Reply::none) is never answered: libfuse is told it is done.
template <class Op>
void serve(fuse_req_t req, const char* name, Op&& op, Reply reply = Reply::one) noexcept {
  t_replied = false;
  const char* what = nullptr;
  try {
    UnionFs& fs = *fs_of(req);
    DirCache::PinScope pins(fs.dir_cache());
    op(fs);
  } catch (const std::exception& e) {
    what = e.what();
    std::fprintf(stderr, "stratafs: %s: %s; answered EIO\n", name, what);
  } catch (...) {
    what = "unknown exception";
    std::fprintf(stderr, "stratafs: %s: %s; answered EIO\n", name, what);
  }
  if (reply == Reply::none) {
    fuse_reply_none(req);
  } else if (what && !t_replied) {
    fuse_reply_err(req, EIO);
  }
}

void op_init(void* userdata, fuse_conn_info* conn) {
  try {
    static_cast<UnionFs*>(userdata)->init(conn);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stratafs: init: %s\n", e.what());
  }
}
void op_lookup(fuse_req_t r, fuse_ino_t p, const char* n) {
  serve(r, "lookup", [&](UnionFs& fs) { fs.lookup(r, p, n); });
}
void op_forget(fuse_req_t r, fuse_ino_t i, uint64_t n) {
  serve(r, "forget", [&](UnionFs& fs) { fs.forget(i, n); }, Reply::none);
}
void op_forget_multi(fuse_req_t r, size_t count, fuse_forget_data* f) {
  serve(
      r, "forget_multi",
      [&](UnionFs& fs) {
        for (size_t i = 0; i < count; ++i) fs.forget(f[i].ino, f[i].nlookup);
      },
      Reply::none);
}
void op_getattr(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
  serve(r, "getattr", [&](UnionFs& fs) { fs.getattr(r, i, fi); });
}
void op_readlink(fuse_req_t r, fuse_ino_t i) {
  serve(r, "readlink", [&](UnionFs& fs) { fs.readlink(r, i); });
}
void op_open(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
  serve(r, "open", [&](UnionFs& fs) { fs.open(r, i, fi); });
}
void op_read(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  serve(r, "read", [&](UnionFs& fs) { fs.read(r, i, s, o, fi); });
}
void op_release(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
  serve(r, "release", [&](UnionFs& fs) { fs.release(r, i, fi); });
}
void op_opendir(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
  serve(r, "opendir", [&](UnionFs& fs) { fs.opendir(r, i, fi); });
}
void op_readdir(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  serve(r, "readdir", [&](UnionFs& fs) { fs.readdir(r, i, s, o, fi, false); });
}
void op_readdirplus(fuse_req_t r, fuse_ino_t i, size_t s, off_t o, fuse_file_info* fi) {
  serve(r, "readdirplus", [&](UnionFs& fs) { fs.readdir(r, i, s, o, fi, true); });
}
void op_releasedir(fuse_req_t r, fuse_ino_t i, fuse_file_info* fi) {
  serve(r, "releasedir", [&](UnionFs& fs) { fs.releasedir(r, i, fi); });
}
void op_statfs(fuse_req_t r, fuse_ino_t i) {
  serve(r, "statfs", [&](UnionFs& fs) { fs.statfs(r, i); });
}
void op_getxattr(fuse_req_t r, fuse_ino_t i, const char* n, size_t s) {
  serve(r, "getxattr", [&](UnionFs& fs) { fs.getxattr(r, i, n, s); });
}
void op_listxattr(fuse_req_t r, fuse_ino_t i, size_t s) {
  serve(r, "listxattr", [&](UnionFs& fs) { fs.listxattr(r, i, s); });
}
void op_setattr(fuse_req_t r, fuse_ino_t i, struct stat* a, int t, fuse_file_info* fi) {
  serve(r, "setattr", [&](UnionFs& fs) { fs.setattr(r, i, a, t, fi); });
}
void op_mknod(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, dev_t d) {
  serve(r, "mknod", [&](UnionFs& fs) { fs.mknod(r, p, n, m, d); });
}
void op_mkdir(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m) {
  serve(r, "mkdir", [&](UnionFs& fs) { fs.mkdir(r, p, n, m); });
}
void op_symlink(fuse_req_t r, const char* t, fuse_ino_t p, const char* n) {
  serve(r, "symlink", [&](UnionFs& fs) { fs.symlink(r, t, p, n); });
}
void op_link(fuse_req_t r, fuse_ino_t i, fuse_ino_t p, const char* n) {
  serve(r, "link", [&](UnionFs& fs) { fs.link(r, i, p, n); });
}
void op_unlink(fuse_req_t r, fuse_ino_t p, const char* n) {
  serve(r, "unlink", [&](UnionFs& fs) { fs.unlink(r, p, n, false); });
}
void op_rmdir(fuse_req_t r, fuse_ino_t p, const char* n) {
  serve(r, "rmdir", [&](UnionFs& fs) { fs.unlink(r, p, n, true); });
}
void op_rename(fuse_req_t r, fuse_ino_t p, const char* n, fuse_ino_t np, const char* nn, unsigned f) {
  serve(r, "rename", [&](UnionFs& fs) { fs.rename(r, p, n, np, nn, f); });
}
void op_create(fuse_req_t r, fuse_ino_t p, const char* n, mode_t m, fuse_file_info* fi) {
  serve(r, "create", [&](UnionFs& fs) { fs.create(r, p, n, m, fi); });
}
void op_write_buf(fuse_req_t r, fuse_ino_t i, fuse_bufvec* b, off_t o, fuse_file_info* fi) {
  serve(r, "write_buf", [&](UnionFs& fs) { fs.write_buf(r, i, b, o, fi); });
}
void op_fsync(fuse_req_t r, fuse_ino_t i, int d, fuse_file_info* fi) {
  serve(r, "fsync", [&](UnionFs& fs) { fs.fsync(r, i, d, fi); });
}
void op_fsyncdir(fuse_req_t r, fuse_ino_t i, int d, fuse_file_info* fi) {
  serve(r, "fsyncdir", [&](UnionFs& fs) { fs.fsyncdir(r, i, d, fi); });
}
void op_setxattr(fuse_req_t r, fuse_ino_t i, const char* n, const char* v, size_t s, int f) {
  serve(r, "setxattr", [&](UnionFs& fs) { fs.setxattr(r, i, n, v, s, f); });
}
void op_removexattr(fuse_req_t r, fuse_ino_t i, const char* n) {
  serve(r, "removexattr", [&](UnionFs& fs) { fs.removexattr(r, i, n); });
}
void op_fallocate(fuse_req_t r, fuse_ino_t i, int m, off_t o, off_t l, fuse_file_info* fi) {
  serve(r, "fallocate", [&](UnionFs& fs) { fs.fallocate(r, i, m, o, l, fi); });
}
void op_lseek(fuse_req_t r, fuse_ino_t i, off_t o, int w, fuse_file_info* fi) {
  serve(r, "lseek", [&](UnionFs& fs) { fs.lseek(r, i, o, w, fi); });
}
void op_copy_file_range(fuse_req_t r, fuse_ino_t ii, off_t oi, fuse_file_info* fi, fuse_ino_t io, off_t oo,
                        fuse_file_info* fo, size_t len, int flags) {
  serve(r, "copy_file_range", [&](UnionFs& fs) { fs.copy_file_range(r, ii, oi, fi, io, oo, fo, len, flags); });
}

}  // namespace

void note_reply_sent() noexcept { t_replied = true; }

namespace {

fuse_lowlevel_ops make_ops() {
  fuse_lowlevel_ops o{};
  o.init = op_init;
  o.lookup = op_lookup;
  o.forget = op_forget;
  o.forget_multi = op_forget_multi;
  o.getattr = op_getattr;
  o.readlink = op_readlink;
  o.open = op_open;
  o.read = op_read;
  o.release = op_release;
  o.opendir = op_opendir;
  o.readdir = op_readdir;
  o.readdirplus = op_readdirplus;
  o.releasedir = op_releasedir;
  o.statfs = op_statfs;
  o.getxattr = op_getxattr;
  o.listxattr = op_listxattr;
  o.setattr = op_setattr;
  o.mknod = op_mknod;
  o.mkdir = op_mkdir;
  o.symlink = op_symlink;
  o.link = op_link;
  o.unlink = op_unlink;
  o.rmdir = op_rmdir;
  o.rename = op_rename;
  o.create = op_create;
  o.write_buf = op_write_buf;
  o.fsync = op_fsync;
  o.fsyncdir = op_fsyncdir;
  o.setxattr = op_setxattr;
  o.removexattr = op_removexattr;
  o.fallocate = op_fallocate;
  o.lseek = op_lseek;
  o.copy_file_range = op_copy_file_range;
  return o;
}

}  // namespace

const fuse_lowlevel_ops& UnionFs::ops() {
  static const fuse_lowlevel_ops o = make_ops();
  return o;
}

}  // namespace strata::fs
