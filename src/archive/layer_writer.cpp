// src/archive: tar streams out: deterministic layer tars from a directory
// (with `changeset`, an overlay upper's whiteouts and opaque directories
// become OCI markers and override_stat is applied), gzip or zstd
// compressed as they are written, with both digests; and pack_directory.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <functional>
#include <map>
#include <set>

#include "archive_internal.hpp"
#include "gzip_writer.hpp"
#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/override_stat.hpp"
#include "strata/tar_entry.hpp"
#include "strata/text.hpp"

namespace strata::archive {

using detail::archive_message;
using detail::proc_path;

namespace {

constexpr const char* kOverrideStat = kOverrideStatXattr;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr const char* kOpaqueMarker = ".wh..wh..opq";

// xattrs of NAME in the directory open at DIRFD (not followed), or of that
// directory itself when NAME is empty, sorted by name.
std::map<std::string, std::string> read_xattrs_at(int dirfd, const std::string& name) {
  std::string path = name.empty() ? std::string() : proc_path(dirfd, name);
  auto list = [&](char* buf, std::size_t size) {
    return name.empty() ? ::flistxattr(dirfd, buf, size) : ::llistxattr(path.c_str(), buf, size);
  };
  auto get = [&](const char* key, void* buf, std::size_t size) {
    return name.empty() ? ::fgetxattr(dirfd, key, buf, size) : ::lgetxattr(path.c_str(), key, buf, size);
  };
  std::map<std::string, std::string> out;
  ssize_t n = list(nullptr, 0);
  if (n <= 0) return out;
  std::string names(static_cast<std::size_t>(n), '\0');
  n = list(names.data(), names.size());
  if (n <= 0) return out;
  names.resize(static_cast<std::size_t>(n));
  for (std::size_t pos = 0; pos < names.size();) {
    std::string key = names.c_str() + pos;
    pos += key.size() + 1;
    if (key.empty()) continue;
    ssize_t len = get(key.c_str(), nullptr, 0);
    if (len < 0) continue;
    std::string value(static_cast<std::size_t>(len), '\0');
    len = get(key.c_str(), value.data(), value.size());
    if (len < 0) continue;
    value.resize(static_cast<std::size_t>(len));
    out[key] = value;
  }
  return out;
}

bool is_private_xattr(const std::string& key) {
  return key.rfind("trusted.overlay.", 0) == 0 || key.rfind("user.overlay.", 0) == 0 || key == kOverrideStat ||
         key == "security.selinux";
}

// A libarchive writer whose output is hashed and sent to a file descriptor,
// optionally through a second (compressing) writer.
struct HashSink {
  int fd = -1;
  oci::Sha256 raw;       // what reaches FD
  oci::Sha256 plain;     // the uncompressed tar
  std::int64_t raw_size = 0;
  std::int64_t plain_size = 0;
  struct archive* compressor = nullptr;  // zstd
  GzipWriter* gzip = nullptr;

  // Bytes as they reach FD; throws when they cannot be written.
  void emit(const void* buf, size_t len) {
    write_all(fd, buf, len, "layer");
    raw.update(buf, len);
    raw_size += static_cast<std::int64_t>(len);
  }
};

la_ssize_t sink_raw_write(struct archive*, void* data, const void* buf, size_t len) {
  try {
    static_cast<HashSink*>(data)->emit(buf, len);
  } catch (const Error&) {
    return -1;
  }
  return static_cast<la_ssize_t>(len);
}

la_ssize_t sink_tar_write(struct archive* a, void* data, const void* buf, size_t len) {
  auto* s = static_cast<HashSink*>(data);
  s->plain.update(buf, len);
  s->plain_size += static_cast<std::int64_t>(len);
  if (s->gzip != nullptr) {
    try {
      s->gzip->write(buf, len);
    } catch (const Error&) {
      return -1;
    }
    return static_cast<la_ssize_t>(len);
  }
  if (s->compressor == nullptr) return sink_raw_write(a, data, buf, len);
  la_ssize_t n = ::archive_write_data(s->compressor, buf, len);
  return n < 0 ? -1 : static_cast<la_ssize_t>(len);
}

int sink_close(struct archive*, void*) { return ARCHIVE_OK; }

// Whether the directory open at FD is on a file system of the kernel's
// (proc, sysfs, cgroup) rather than of files.
bool pseudo_fs(int fd) {
  struct statfs sf {};
  if (::fstatfs(fd, &sf) != 0) return false;
  return sf.f_type == PROC_SUPER_MAGIC || sf.f_type == SYSFS_MAGIC || sf.f_type == CGROUP_SUPER_MAGIC ||
         sf.f_type == CGROUP2_SUPER_MAGIC;
}

struct Walker {
  struct archive* a = nullptr;
  bool changeset = true;
  bool plain_owner = false;  // pack_directory: owners 0, mtime 0
  bool skip_pseudo = false;  // write_entry: the contents of proc, sysfs and cgroup mounts are left out
  std::optional<std::int64_t> clamp;
  OwnerMap owner_map;  // for owners not recorded in override_stat
  std::map<std::pair<dev_t, ino_t>, std::string> links;
  detail::TreeBuilder* tree = nullptr;  // write_layer_with_tree: gets every entry written

  // Writes E's header; a regular file's data, which the caller writes next,
  // is the file SRC_NAME in the directory open at SRC_DIR.
  void write_header(struct archive_entry* e, const std::string& name, int src_dir = -1,
                    const char* src_name = nullptr) {
    int r = ::archive_write_header(a, e);
    // A name that is not UTF-8 (file names are bytes) is written as it is,
    // marked hdrcharset=BINARY; libarchive says so with a warning.
    bool binary_name = r == ARCHIVE_WARN && archive_message(a).rfind("Can't translate", 0) == 0;
    if (r != ARCHIVE_OK && !binary_name) throw Error("write tar entry " + quote(name) + ": " + archive_message(a));
    if (tree != nullptr) tree->add(e, src_dir, src_name);
  }

  void add_marker(const std::string& name) {
    struct archive_entry* e = ::archive_entry_new();
    ::archive_entry_set_pathname(e, name.c_str());
    ::archive_entry_set_filetype(e, AE_IFREG);
    ::archive_entry_set_perm(e, 0);
    ::archive_entry_set_size(e, 0);
    ::archive_entry_set_mtime(e, 0, 0);
    try {
      write_header(e, name);
    } catch (...) {
      ::archive_entry_free(e);
      throw;
    }
    ::archive_entry_free(e);
  }

  // Every walk is relative to the open parent directory, so a tree deeper
  // than PATH_MAX is written whole. BASE/REL only names files in errors.
  void walk(int dirfd, const std::string& base, const std::string& rel) {
    std::string shown = rel.empty() ? base : base + "/" + rel;
    std::vector<std::string> names = read_dir_names(dirfd, shown);
    // An opaque directory written by overlayfs: add the OCI marker.
    if (changeset) {
      auto xs = read_xattrs_at(dirfd, "");
      bool opaque = false;
      for (const char* k : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
        auto it = xs.find(k);
        if (it != xs.end() && it->second == "y") opaque = true;
      }
      if (opaque && !std::binary_search(names.begin(), names.end(), std::string(kOpaqueMarker))) {
        names.push_back(kOpaqueMarker);
        std::sort(names.begin(), names.end());
        add_marker_later_.insert(rel.empty() ? std::string(kOpaqueMarker) : rel + "/" + kOpaqueMarker);
      }
    }
    for (const auto& n : names) {
      std::string child = rel.empty() ? n : rel + "/" + n;
      if (add_marker_later_.erase(child) != 0) {
        add_marker(child);
        continue;
      }
      add(dirfd, n, base, child);
    }
  }

  void add(int dirfd, const std::string& name, const std::string& base, const std::string& rel) {
    std::string path = base + "/" + rel;
    struct stat st {};
    if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("stat " + quote(path));
    auto xs = read_xattrs_at(dirfd, name);
    uid_t uid = st.st_uid;
    gid_t gid = st.st_gid;
    mode_t type = st.st_mode & S_IFMT;
    mode_t perm = st.st_mode & 07777;
    dev_t rdev = st.st_rdev;
    auto recorded_owner = xs.find(kOverrideStat);
    if (recorded_owner == xs.end() && owner_map) {
      std::uint32_t u = uid, g = gid;
      owner_map(u, g);
      uid = u;
      gid = g;
    }
    if (recorded_owner != xs.end()) {
      if (auto o = parse_override_stat(recorded_owner->second)) {
        uid = o->uid;
        gid = o->gid;
        perm = o->mode & 07777;
        mode_t recorded = o->mode & S_IFMT;
        if ((recorded == S_IFCHR || recorded == S_IFBLK) && type == S_IFREG && st.st_size == 0) {
          type = recorded;
          rdev = o->rdev;
        }
      }
    }
    std::string slash = rel.find('/') == std::string::npos ? std::string() : rel.substr(0, rel.rfind('/') + 1);
    std::string leaf = rel.substr(slash.size());
    if (changeset && type == S_IFCHR && rdev == makedev(0, 0)) {
      add_marker(slash + std::string(kWhiteoutPrefix) + leaf);
      return;
    }
    if (plain_owner) uid = 0, gid = 0;
    struct archive_entry* e = ::archive_entry_new();
    struct Free {
      struct archive_entry* e;
      ~Free() { ::archive_entry_free(e); }
    } guard{e};
    ::archive_entry_set_pathname(e, rel.c_str());
    ::archive_entry_set_uid(e, uid);
    ::archive_entry_set_gid(e, gid);
    ::archive_entry_set_perm(e, perm);
    std::int64_t mtime = plain_owner ? 0 : static_cast<std::int64_t>(st.st_mtim.tv_sec);
    if (clamp && mtime > *clamp) mtime = *clamp;
    ::archive_entry_set_mtime(e, static_cast<time_t>(mtime), 0);
    if (!plain_owner)
      for (const auto& [k, v] : xs)
        if (!is_private_xattr(k)) ::archive_entry_xattr_add_entry(e, k.c_str(), v.data(), v.size());
    switch (type) {
      case S_IFDIR:
        ::archive_entry_set_filetype(e, AE_IFDIR);
        write_header(e, rel);
        {
          UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
          if (!child) throw_errno("read directory " + quote(path));
          if (skip_pseudo && pseudo_fs(child.get())) return;
          walk(child.get(), base, rel);
        }
        return;
      case S_IFLNK: {
        std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlinkat(dirfd, name.c_str(), target.data(), target.size());
        if (n < 0) throw_errno("read link " + quote(path));
        target.resize(static_cast<std::size_t>(n));
        ::archive_entry_set_filetype(e, AE_IFLNK);
        ::archive_entry_set_symlink(e, target.c_str());
        write_header(e, rel);
        return;
      }
      case S_IFCHR:
      case S_IFBLK:
        ::archive_entry_set_filetype(e, type == S_IFCHR ? AE_IFCHR : AE_IFBLK);
        ::archive_entry_set_rdevmajor(e, major(rdev));
        ::archive_entry_set_rdevminor(e, minor(rdev));
        write_header(e, rel);
        return;
      case S_IFIFO:
        ::archive_entry_set_filetype(e, AE_IFIFO);
        write_header(e, rel);
        return;
      case S_IFSOCK:
        return;  // sockets are not part of an image
      case S_IFREG:
        break;
      default:
        return;
    }
    if (st.st_nlink > 1) {
      auto key = std::make_pair(st.st_dev, st.st_ino);
      auto it = links.find(key);
      if (it != links.end()) {
        ::archive_entry_set_filetype(e, AE_IFREG);
        ::archive_entry_set_hardlink(e, it->second.c_str());
        ::archive_entry_set_size(e, 0);
        write_header(e, rel);
        return;
      }
      links.emplace(key, rel);
    }
    ::archive_entry_set_filetype(e, AE_IFREG);
    ::archive_entry_set_size(e, st.st_size);
    UniqueFd fd(::openat(dirfd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno("open " + quote(path));
    write_header(e, rel, dirfd, name.c_str());
    std::vector<char> buf(1 << 16);
    std::int64_t left = st.st_size;
    while (left > 0) {
      ssize_t n = ::read(fd.get(), buf.data(), static_cast<std::size_t>(std::min<std::int64_t>(left, static_cast<std::int64_t>(buf.size()))));
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("read " + quote(path));
      }
      if (n == 0) {
        // The file shrank while being read: pad so the tar stays well formed.
        std::fill(buf.begin(), buf.end(), '\0');
        n = static_cast<ssize_t>(std::min<std::int64_t>(left, static_cast<std::int64_t>(buf.size())));
      }
      if (::archive_write_data(a, buf.data(), static_cast<std::size_t>(n)) < 0)
        throw Error("write tar data of " + quote(rel) + ": " + archive_message(a));
      left -= n;
    }
  }

  std::set<std::string> add_marker_later_;
};

// Writes a tar of what BODY gives the walker to OUT_FD.
LayerDigests write_tar(int out_fd, Compression compression, bool changeset, bool plain,
                       std::optional<std::int64_t> clamp, const std::function<void(Walker&)>& body) {
  HashSink sink;
  sink.fd = out_fd;
  struct archive* comp = nullptr;
  std::optional<GzipWriter> gzip;
  if (compression == Compression::gzip) {
    gzip.emplace([&sink](const void* data, std::size_t len) { sink.emit(data, len); });
    sink.gzip = &*gzip;
  } else if (compression == Compression::zstd) {
    comp = ::archive_write_new();
    ::archive_write_set_format_raw(comp);
    ::archive_write_add_filter_zstd(comp);
    ::archive_write_set_bytes_per_block(comp, 0);
    if (::archive_write_open2(comp, &sink, nullptr, sink_raw_write, sink_close, nullptr) != ARCHIVE_OK) {
      std::string msg = archive_message(comp);
      ::archive_write_free(comp);
      throw Error("start compressed layer: " + msg);
    }
    struct archive_entry* e = ::archive_entry_new();
    ::archive_entry_set_pathname(e, "layer");
    ::archive_entry_set_filetype(e, AE_IFREG);
    ::archive_write_header(comp, e);
    ::archive_entry_free(e);
    sink.compressor = comp;
  }
  struct archive* a = ::archive_write_new();
  ::archive_write_set_format_pax_restricted(a);
  ::archive_write_set_format_option(a, "pax", "xattrheader", "SCHILY");
  ::archive_write_set_bytes_per_block(a, 10240);
  if (::archive_write_open2(a, &sink, nullptr, sink_tar_write, sink_close, nullptr) != ARCHIVE_OK) {
    std::string msg = archive_message(a);
    ::archive_write_free(a);
    if (comp != nullptr) ::archive_write_free(comp);
    throw Error("start layer tar: " + msg);
  }
  try {
    Walker w;
    w.a = a;
    w.changeset = changeset;
    w.plain_owner = plain;
    w.clamp = clamp;
    body(w);
    if (::archive_write_close(a) != ARCHIVE_OK) throw Error("finish layer tar: " + archive_message(a));
    if (gzip) gzip->finish();
    if (comp != nullptr && ::archive_write_close(comp) != ARCHIVE_OK)
      throw Error("finish compressed layer: " + archive_message(comp));
  } catch (...) {
    ::archive_write_free(a);
    if (comp != nullptr) ::archive_write_free(comp);
    throw;
  }
  ::archive_write_free(a);
  if (comp != nullptr) ::archive_write_free(comp);
  LayerDigests out;
  out.diff_id = sink.plain.finish();
  out.size = sink.plain_size;
  out.compression = compression;
  if (compression == Compression::none) {
    out.blob_digest = out.diff_id;
    out.blob_size = out.size;
    (void)sink.raw.finish();
  } else {
    out.blob_digest = sink.raw.finish();
    out.blob_size = sink.raw_size;
  }
  return out;
}

LayerDigests write_tree(const std::string& dir, int out_fd, Compression compression, bool changeset, bool plain,
                        std::optional<std::int64_t> clamp, const OwnerMap& owner_map = {},
                        detail::TreeBuilder* tree = nullptr) {
  return write_tar(out_fd, compression, changeset, plain, clamp, [&](Walker& w) {
    w.owner_map = owner_map;
    w.tree = tree;
    UniqueFd root(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root) throw_errno("read directory " + quote(dir));
    w.walk(root.get(), dir, "");
  });
}

}  // namespace

void write_entry(int dirfd, const std::string& name, const std::string& as, int out_fd, const std::string& shown) {
  write_tar(out_fd, Compression::none, false, false, std::nullopt, [&](Walker& w) {
    w.skip_pseudo = true;
    if (name.empty()) {
      UniqueFd dir(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!dir) throw_errno("read directory " + quote(shown));
      w.walk(dir.get(), shown == "/" ? "" : shown, as);  // below AS/ (no entry of its own) when given
      return;
    }
    w.add(dirfd, name, shown, as);
  });
}

LayerDigests write_layer(const std::string& dir, int out_fd, const WriteLayerOptions& options) {
  return write_tree(dir, out_fd, options.compression, options.changeset, false, options.clamp_mtime, options.owner_map);
}

LayerDigests write_layer_with_tree(const std::string& dir, int out_fd, const std::string& tree,
                                   const WriteLayerOptions& options, bool privileged) {
  UniqueFd root = open_at(AT_FDCWD, tree, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  detail::TreeBuilder builder(root.get(), privileged);
  auto digests = write_tree(dir, out_fd, options.compression, options.changeset, false, options.clamp_mtime,
                            options.owner_map, &builder);
  builder.finish();
  return digests;
}

void pack_directory(const std::string& dir, const std::string& out_path) {
  std::string tmp = out_path + ".tmp-" + std::to_string(::getpid());
  UniqueFd out(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) throw_errno("create " + quote(tmp));
  try {
    write_tree(dir, out.get(), Compression::none, false, true, std::nullopt);
    if (::fsync(out.get()) != 0) throw_errno("sync " + quote(tmp));
    if (::rename(tmp.c_str(), out_path.c_str()) != 0) throw_errno("rename to " + quote(out_path));
  } catch (...) {
    ::unlink(tmp.c_str());
    throw;
  }
}

}  // namespace strata::archive
