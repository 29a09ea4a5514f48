// Directory listings. Of UnionFs, this file holds the OPENDIR, READDIR,
// READDIRPLUS and RELEASEDIR ops, the merged listing of a directory
// (list_dir), the per-node snapshots a pass continues in (listing_for,
// listing_done) and the nodes of listed entries (listed_child).
#include <dirent.h>
#include <fcntl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <unordered_set>

#include "union_fs.hpp"

namespace strata::fs {

struct Listing {
  std::uint32_t id = 0;          // in the top half of every offset handed out from it
  std::uint64_t generation = 0;  // UnionFs::generation_ when ENTRIES were listed
  std::vector<UnionFs::Entry> entries;
};

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
  auto& mu = listing_mu_of(node);
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

}  // namespace strata::fs
