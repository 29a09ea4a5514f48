// The union's node table and name lookup. Of UnionFs, this file holds the
// constructor, the kernel's lookup counts (ref_lookup, forget), inode
// numbers (stable_ino, layer_ino), reaching a node's object (parent_fd_in,
// dir_fd, stat_node, open_node, pin_node, index_link, node_attr), the
// children of a directory (live_child, child_node, publish_child, detach,
// attach) and the LOOKUP, GETATTR and READLINK ops. Node's destructor is
// here too. Where the rest of UnionFs lives: union_fs.hpp.
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "strata/error.hpp"
#include "union_fs.hpp"

namespace strata::fs {

namespace {

constexpr std::uint64_t kRealInoMask = (std::uint64_t{1} << 56) - 1;

// How many directory fds the daemon keeps open: half of what it may have,
// the rest being for the kernel's open files, libfuse and copy-ups.
std::size_t dir_cache_capacity() {
  struct rlimit rl {};
  rlim_t limit = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
  if (limit == RLIM_INFINITY || limit > (rlim_t{1} << 30)) limit = rlim_t{1} << 30;
  return std::max<std::size_t>(16, (static_cast<std::size_t>(limit) - std::min<std::size_t>(limit, 64)) / 2);
}

}  // namespace

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
  std::shared_ptr<Node> existing, replaced;  // REPLACED is dropped after the lock
  {
    std::unique_lock lk(parent.children_mu);
    auto& slot = parent.children[name];
    existing = slot.lock();
    if (!existing || !named_by(*existing, parent, name.c_str())) {
      slot = node;
      replaced = std::move(existing);
    }
  }
  if (existing) {
    node->parent.reset();  // never registered: its destructor must not touch the map
    return existing;
  }
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

void UnionFs::detach(Node& node) {
  node.unlinked = true;
  if (!node.parent) return;
  std::shared_ptr<Node> cur;  // dropped after the lock (see the lock order)
  std::lock_guard lk(node.parent->children_mu);
  auto it = node.parent->children.find(node.name);
  if (it != node.parent->children.end()) {
    cur = it->second.lock();
    if (!cur || cur.get() == &node) node.parent->children.erase(it);
  }
}

void UnionFs::attach(Node& parent, const std::string& name, const std::shared_ptr<Node>& node) {
  if (node->parent && !node->unlinked) {
    // A file with several names may move by a name other than the one it is
    // filed under: that one stops being its entry.
    std::shared_ptr<Node> filed;  // dropped after the lock (see the lock order)
    std::lock_guard lk(node->parent->children_mu);
    auto it = node->parent->children.find(node->name);
    if (it != node->parent->children.end() && (filed = it->second.lock()) == node) node->parent->children.erase(it);
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

}  // namespace strata::fs
