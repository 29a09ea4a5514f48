// The FUSE session side of the union: the INIT op (which capabilities the
// daemon asks for), STATFS, and the table of C callbacks, each of which
// serves one request through serve(): an exception escaping an op is one
// log line and an EIO answer, never the end of the daemon.
#include <sys/statvfs.h>

#include <cerrno>
#include <cstdio>

#include "union_fs.hpp"

namespace strata::fs {

namespace {

UnionFs* fs_of(fuse_req_t req) { return static_cast<UnionFs*>(fuse_req_userdata(req)); }

}  // namespace

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

// INIT is answered by libfuse with what init() asked for (nothing more
// after an exception); like every op, it never lets one escape.
void op_init(void* userdata, fuse_conn_info* conn) noexcept {
  try {
    static_cast<UnionFs*>(userdata)->init(conn);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stratafs: init: %s\n", e.what());
  } catch (...) {
    std::fprintf(stderr, "stratafs: init: unknown exception\n");
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
