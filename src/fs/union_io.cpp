// Open files. Of UnionFs, this file holds the OPEN op (a copy-up for a
// handle that writes), the I/O mode of a handle (FUSE passthrough or the
// page cache: backing_conflict, retire_node, choose_io_mode, end_io_mode),
// reply_open, and the ops on a handle: READ (spliced from the layer fd),
// WRITE_BUF, RELEASE, FSYNC, FSYNCDIR, FALLOCATE, LSEEK, COPY_FILE_RANGE.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "union_fs.hpp"

namespace strata::fs {

void UnionFs::open(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  Node& node = *node_of(ino);
  int flags = fi->flags;
  bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
  if (writes && !cfg_.writable) {
    fuse_reply_err(req, EROFS);
    return;
  }
  std::unique_lock wlk(tree_mu_, std::defer_lock);
  std::shared_lock rlk(tree_mu_, std::defer_lock);
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
    std::shared_ptr<Node> indexed;  // dropped after the lock (see the lock order)
    std::lock_guard lk(node.link_index->mu);
    auto it = node.link_index->nodes.find(node.link_key);
    if (it != node.link_index->nodes.end() && (indexed = it->second.lock()).get() == &node) {
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
  if (!cfg_.sync_upper) return (void)fuse_reply_err(req, 0);  // -o volatile
  int fd = handle_fd(fi);
  int rc = datasync ? ::fdatasync(fd) : ::fsync(fd);
  fuse_reply_err(req, rc == 0 ? 0 : errno);
}

void UnionFs::fsyncdir(fuse_req_t req, fuse_ino_t ino, int, fuse_file_info*) {
  if (!cfg_.sync_upper) return (void)fuse_reply_err(req, 0);  // -o volatile
  std::shared_lock lk(tree_mu_);
  Node& node = *node_of(ino);
  if (!node.has_upper()) return (void)fuse_reply_err(req, 0);  // nothing of it was written
  int ufd = upper_fd(node);
  if (ufd < 0) return (void)fuse_reply_err(req, unreachable(errno));
  UniqueFd d(dir_cache_.open_retrying([ufd] { return ::openat(ufd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC); }));
  int rc = d ? ::fsync(d.get()) : -1;
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
