// src/archive: tar streams in and out with libarchive: deterministic layer
// tars from a directory (overlay changesets become OCI whiteouts), hostile-
// input-safe extraction into a staging directory, and whole-image archives
// (OCI layout, docker-archive).
#include "strata/archive.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/override_stat.hpp"

namespace strata::archive {

namespace {

constexpr const char* kOverrideStat = kOverrideStatXattr;
constexpr std::string_view kWhiteoutPrefix = ".wh.";
constexpr const char* kOpaqueMarker = ".wh..wh..opq";

std::string archive_message(struct archive* a) {
  const char* s = ::archive_error_string(a);
  return s != nullptr ? s : "unknown archive error";
}

// xattrs of PATH (not followed), sorted by name.
std::map<std::string, std::string> read_xattrs(const std::string& path) {
  std::map<std::string, std::string> out;
  ssize_t n = ::llistxattr(path.c_str(), nullptr, 0);
  if (n <= 0) return out;
  std::string names(static_cast<std::size_t>(n), '\0');
  n = ::llistxattr(path.c_str(), names.data(), names.size());
  if (n <= 0) return out;
  names.resize(static_cast<std::size_t>(n));
  for (std::size_t pos = 0; pos < names.size();) {
    std::string key = names.c_str() + pos;
    pos += key.size() + 1;
    if (key.empty()) continue;
    ssize_t len = ::lgetxattr(path.c_str(), key.c_str(), nullptr, 0);
    if (len < 0) continue;
    std::string value(static_cast<std::size_t>(len), '\0');
    len = ::lgetxattr(path.c_str(), key.c_str(), value.data(), value.size());
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

// ---------------------------------------------------------------- writing

// A libarchive writer whose output is hashed and sent to a file descriptor,
// optionally through a second (compressing) writer.
struct HashSink {
  int fd = -1;
  oci::Sha256 raw;       // what reaches FD
  oci::Sha256 plain;     // the uncompressed tar
  std::int64_t raw_size = 0;
  std::int64_t plain_size = 0;
  struct archive* compressor = nullptr;
};

la_ssize_t sink_raw_write(struct archive*, void* data, const void* buf, size_t len) {
  auto* s = static_cast<HashSink*>(data);
  try {
    write_all(s->fd, buf, len, "layer");
  } catch (const Error&) {
    return -1;
  }
  s->raw.update(buf, len);
  s->raw_size += static_cast<std::int64_t>(len);
  return static_cast<la_ssize_t>(len);
}

la_ssize_t sink_tar_write(struct archive* a, void* data, const void* buf, size_t len) {
  auto* s = static_cast<HashSink*>(data);
  s->plain.update(buf, len);
  s->plain_size += static_cast<std::int64_t>(len);
  if (s->compressor == nullptr) return sink_raw_write(a, data, buf, len);
  la_ssize_t n = ::archive_write_data(s->compressor, buf, len);
  return n < 0 ? -1 : static_cast<la_ssize_t>(len);
}

int sink_close(struct archive*, void*) { return ARCHIVE_OK; }

struct Walker {
  struct archive* a = nullptr;
  bool changeset = true;
  bool plain_owner = false;  // pack_directory: owners 0, mtime 0
  std::optional<std::int64_t> clamp;
  std::map<std::pair<dev_t, ino_t>, std::string> links;

  void write_header(struct archive_entry* e, const std::string& name) {
    if (::archive_write_header(a, e) != ARCHIVE_OK)
      throw Error("write tar entry " + quote(name) + ": " + archive_message(a));
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

  void walk(const std::string& base, const std::string& rel) {
    std::string dirpath = rel.empty() ? base : base + "/" + rel;
    UniqueFd dir(::open(dirpath.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC | (rel.empty() ? 0 : O_NOFOLLOW)));
    if (!dir) throw_errno("read directory " + quote(dirpath));
    std::vector<std::string> names = read_dir_names(dir.get(), dirpath);
    // An opaque directory written by overlayfs: add the OCI marker.
    if (changeset) {
      auto xs = read_xattrs(dirpath);
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
      add(base, child);
    }
  }

  void add(const std::string& base, const std::string& rel) {
    std::string path = base + "/" + rel;
    struct stat st {};
    if (::lstat(path.c_str(), &st) != 0) throw_errno("stat " + quote(path));
    auto xs = read_xattrs(path);
    uid_t uid = st.st_uid;
    gid_t gid = st.st_gid;
    mode_t type = st.st_mode & S_IFMT;
    mode_t perm = st.st_mode & 07777;
    dev_t rdev = st.st_rdev;
    if (auto it = xs.find(kOverrideStat); it != xs.end()) {
      if (auto o = parse_override_stat(it->second)) {
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
        walk(base, rel);
        return;
      case S_IFLNK: {
        std::string target(static_cast<std::size_t>(st.st_size) + 1, '\0');
        ssize_t n = ::readlink(path.c_str(), target.data(), target.size());
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
    UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) throw_errno("open " + quote(path));
    write_header(e, rel);
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

LayerDigests write_tree(const std::string& dir, int out_fd, Compression compression, bool changeset, bool plain,
                        std::optional<std::int64_t> clamp) {
  HashSink sink;
  sink.fd = out_fd;
  struct archive* comp = nullptr;
  if (compression != Compression::none) {
    comp = ::archive_write_new();
    ::archive_write_set_format_raw(comp);
    if (compression == Compression::gzip) {
      ::archive_write_add_filter_gzip(comp);
      ::archive_write_set_filter_option(comp, "gzip", "timestamp", nullptr);
    } else {
      ::archive_write_add_filter_zstd(comp);
    }
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
    w.walk(dir, "");
    if (::archive_write_close(a) != ARCHIVE_OK) throw Error("finish layer tar: " + archive_message(a));
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

// ---------------------------------------------------------------- reading

// Two chained readers: RAW decompresses whatever filter the bytes use (and
// hashes the bytes as read), TAR parses the decompressed stream (hashing it).
struct ChainSource {
  int fd = -1;
  oci::Sha256 raw_hash;
  oci::Sha256 plain_hash;
  std::int64_t raw_size = 0;
  std::int64_t plain_size = 0;
  std::vector<char> raw_buf = std::vector<char>(1 << 16);
  std::vector<char> plain_buf = std::vector<char>(1 << 16);
  struct archive* raw = nullptr;
  std::string error;
  int filter = ARCHIVE_FILTER_NONE;

  // Once the decompressed stream is read to its end: hashes what is left of
  // the raw input (padding after the compressed stream) and gives the digests.
  LayerDigests digests() {
    for (;;) {
      ssize_t n = ::read(fd, raw_buf.data(), raw_buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw_errno("read archive");
      if (n == 0) break;
      raw_hash.update(raw_buf.data(), static_cast<std::size_t>(n));
      raw_size += n;
    }
    LayerDigests d;
    d.diff_id = plain_hash.finish();
    d.size = plain_size;
    d.blob_digest = raw_hash.finish();
    d.blob_size = raw_size;
    d.compression = filter == ARCHIVE_FILTER_GZIP   ? Compression::gzip
                    : filter == ARCHIVE_FILTER_ZSTD ? Compression::zstd
                                                    : Compression::none;
    return d;
  }
};

la_ssize_t chain_fd_read(struct archive*, void* data, const void** buffer) {
  auto* s = static_cast<ChainSource*>(data);
  for (;;) {
    ssize_t n = ::read(s->fd, s->raw_buf.data(), s->raw_buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      s->error = std::strerror(errno);
      return -1;
    }
    s->raw_hash.update(s->raw_buf.data(), static_cast<std::size_t>(n));
    s->raw_size += n;
    *buffer = s->raw_buf.data();
    return n;
  }
}

la_ssize_t chain_plain_read(struct archive*, void* data, const void** buffer) {
  auto* s = static_cast<ChainSource*>(data);
  la_ssize_t n = ::archive_read_data(s->raw, s->plain_buf.data(), s->plain_buf.size());
  if (n < 0) {
    s->error = archive_message(s->raw);
    return -1;
  }
  s->plain_hash.update(s->plain_buf.data(), static_cast<std::size_t>(n));
  s->plain_size += n;
  *buffer = s->plain_buf.data();
  return n;
}

class ChainReader {
 public:
  explicit ChainReader(int fd) {
    src_.fd = fd;
    src_.raw = ::archive_read_new();
    ::archive_read_support_filter_all(src_.raw);
    ::archive_read_support_format_raw(src_.raw);
    if (::archive_read_open(src_.raw, &src_, nullptr, chain_fd_read, nullptr) != ARCHIVE_OK) {
      std::string msg = src_.error.empty() ? archive_message(src_.raw) : src_.error;
      ::archive_read_free(src_.raw);
      throw Error("cannot read archive: " + msg);
    }
    struct archive_entry* e = nullptr;
    int r = ::archive_read_next_header(src_.raw, &e);
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      std::string msg = archive_message(src_.raw);
      ::archive_read_free(src_.raw);
      throw Error("cannot read archive: " + (r == ARCHIVE_EOF ? std::string("empty input") : msg));
    }
    src_.filter = ::archive_filter_code(src_.raw, 0);
    tar_ = ::archive_read_new();
    ::archive_read_support_format_tar(tar_);
    if (::archive_read_open(tar_, &src_, nullptr, chain_plain_read, nullptr) != ARCHIVE_OK) {
      std::string msg = src_.error.empty() ? archive_message(tar_) : src_.error;
      ::archive_read_free(tar_);
      ::archive_read_free(src_.raw);
      throw Error("not a tar archive: " + msg);
    }
  }
  ~ChainReader() {
    ::archive_read_free(tar_);
    ::archive_read_free(src_.raw);
  }
  ChainReader(const ChainReader&) = delete;
  ChainReader& operator=(const ChainReader&) = delete;

  struct archive* tar() { return tar_; }
  std::string error() const { return src_.error.empty() ? archive_message(tar_) : src_.error; }

  // Reads the rest of the streams so the digests cover every byte.
  LayerDigests finish() {
    std::vector<char> buf(1 << 16);
    for (;;) {
      la_ssize_t n = ::archive_read_data(src_.raw, buf.data(), buf.size());
      if (n < 0) throw Error("corrupt archive: " + archive_message(src_.raw));
      if (n == 0) break;
      src_.plain_hash.update(buf.data(), static_cast<std::size_t>(n));
      src_.plain_size += n;
    }
    return src_.digests();
  }
  int filter() const { return src_.filter; }

 private:
  ChainSource src_;
  struct archive* tar_ = nullptr;
};

// Splits an entry name into safe components; throws on `..` and absolute names.
std::vector<std::string> split_name(std::string_view name, std::string_view what) {
  if (!name.empty() && name[0] == '/')
    throw Error("refusing " + std::string(what) + " " + quote(name) + ": absolute path");
  std::vector<std::string> out;
  std::size_t start = 0;
  while (start <= name.size()) {
    auto end = name.find('/', start);
    if (end == std::string_view::npos) end = name.size();
    std::string_view c = name.substr(start, end - start);
    if (c == "..") throw Error("refusing " + std::string(what) + " " + quote(name) + ": path contains '..'");
    if (!c.empty() && c != ".") out.emplace_back(c);
    start = end + 1;
  }
  return out;
}

struct Extractor {
  int root = -1;
  bool privileged = false;
  bool plain_only = false;
  std::int64_t max_size = 0;
  std::int64_t total = 0;
  struct Deferred {
    std::vector<std::string> comps;
    mode_t perm;
    time_t mtime;
    long mtime_nsec;
  };
  std::vector<Deferred> dirs;

  // Opens the directory holding COMPS' last component, creating missing
  // parents (0755) when CREATE. Never follows a symlink.
  UniqueFd open_parent(const std::vector<std::string>& comps, bool create, const std::string& entry) {
    UniqueFd cur(::fcntl(root, F_DUPFD_CLOEXEC, 0));
    if (!cur) throw_errno("dup");
    for (std::size_t i = 0; i + 1 < comps.size(); ++i) {
      int fd = ::openat(cur.get(), comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      if (fd < 0 && errno == ENOENT && create) {
        if (::mkdirat(cur.get(), comps[i].c_str(), 0755) != 0 && errno != EEXIST)
          throw_errno("create directory for " + quote(entry));
        fd = ::openat(cur.get(), comps[i].c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
      }
      if (fd < 0) {
        if (errno == ELOOP || errno == ENOTDIR)
          throw Error("refusing entry " + quote(entry) + ": " + quote(comps[i]) +
                      " on its path is a symlink or not a directory");
        throw_errno("open parent of " + quote(entry));
      }
      cur.reset(fd);
    }
    return cur;
  }

  static std::string proc_path(int dirfd, const std::string& name) {
    return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
  }

  void extract_entry(struct archive* a, struct archive_entry* e) {
    const char* raw_name = ::archive_entry_pathname(e);
    std::string name = raw_name != nullptr ? raw_name : "";
    auto comps = split_name(name, "entry");
    mode_t type = ::archive_entry_filetype(e);
    const char* hl = ::archive_entry_hardlink(e);
    if (comps.empty()) {
      // The root itself ("./"): only its mode and time apply.
      if (type == AE_IFDIR && !plain_only)
        dirs.push_back({comps, static_cast<mode_t>(::archive_entry_perm(e)), ::archive_entry_mtime(e),
                        ::archive_entry_mtime_nsec(e)});
      return;
    }
    if (plain_only && hl == nullptr && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
      throw Error("refusing entry " + quote(name) + ": only files, directories and symlinks are allowed in an image archive");
    if (plain_only && hl != nullptr) throw Error("refusing entry " + quote(name) + ": links are not allowed here");
    UniqueFd parent = open_parent(comps, true, name);
    const std::string& leaf = comps.back();
    struct stat old {};
    bool exists = ::fstatat(parent.get(), leaf.c_str(), &old, AT_SYMLINK_NOFOLLOW) == 0;
    bool want_dir = hl == nullptr && type == AE_IFDIR;
    if (exists && !(want_dir && S_ISDIR(old.st_mode))) {
      if (S_ISDIR(old.st_mode))
        remove_tree_at(parent.get(), leaf);
      else if (::unlinkat(parent.get(), leaf.c_str(), 0) != 0)
        throw_errno("replace " + quote(name));
      exists = false;
    }
    uid_t uid = static_cast<uid_t>(::archive_entry_uid(e));
    gid_t gid = static_cast<gid_t>(::archive_entry_gid(e));
    mode_t perm = static_cast<mode_t>(::archive_entry_perm(e)) & 07777;
    if (hl != nullptr) {
      auto tcomps = split_name(hl, "hardlink target");
      if (tcomps.empty()) throw Error("refusing hardlink " + quote(name) + ": empty target");
      UniqueFd tparent = open_parent(tcomps, false, name);
      struct stat tst {};
      if (::fstatat(tparent.get(), tcomps.back().c_str(), &tst, AT_SYMLINK_NOFOLLOW) != 0)
        throw Error("refusing hardlink " + quote(name) + ": target " + quote(hl) + " is not in the archive before it");
      if (S_ISDIR(tst.st_mode)) throw Error("refusing hardlink " + quote(name) + ": target " + quote(hl) + " is a directory");
      if (::linkat(tparent.get(), tcomps.back().c_str(), parent.get(), leaf.c_str(), 0) != 0)
        throw_errno("link " + quote(name));
      return;
    }
    bool need_override = !privileged && (uid != 0 || gid != 0);
    switch (type) {
      case AE_IFDIR:
        if (!exists && ::mkdirat(parent.get(), leaf.c_str(), 0700) != 0) throw_errno("create directory " + quote(name));
        if (!privileged) ::fchmodat(parent.get(), leaf.c_str(), 0700, 0);
        dirs.push_back({comps, perm, ::archive_entry_mtime(e), ::archive_entry_mtime_nsec(e)});
        break;
      case AE_IFLNK: {
        const char* target = ::archive_entry_symlink(e);
        if (target == nullptr) throw Error("refusing symlink " + quote(name) + ": no target");
        if (::symlinkat(target, parent.get(), leaf.c_str()) != 0) throw_errno("create symlink " + quote(name));
        break;
      }
      case AE_IFREG: {
        UniqueFd fd(::openat(parent.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) throw_errno("create " + quote(name));
        const void* buf = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        for (;;) {
          int r = ::archive_read_data_block(a, &buf, &size, &offset);
          if (r == ARCHIVE_EOF) break;
          if (r != ARCHIVE_OK && r != ARCHIVE_WARN) throw Error("read data of " + quote(name) + ": " + archive_message(a));
          total += static_cast<std::int64_t>(size);
          if (max_size > 0 && total > max_size) throw Error("archive is larger than the limit at " + quote(name));
          const char* p = static_cast<const char*>(buf);
          while (size > 0) {
            ssize_t n = ::pwrite(fd.get(), p, size, offset);
            if (n < 0) {
              if (errno == EINTR) continue;
              throw_errno("write " + quote(name));
            }
            p += n;
            size -= static_cast<size_t>(n);
            offset += n;
          }
        }
        if (::ftruncate(fd.get(), ::archive_entry_size(e)) != 0) throw_errno("size " + quote(name));
        break;
      }
      case AE_IFCHR:
      case AE_IFBLK: {
        dev_t rdev = makedev(::archive_entry_rdevmajor(e), ::archive_entry_rdevminor(e));
        mode_t t = type == AE_IFCHR ? S_IFCHR : S_IFBLK;
        if (privileged && ::mknodat(parent.get(), leaf.c_str(), t | perm, rdev) == 0) break;
        if (privileged && errno != EPERM) throw_errno("create device " + quote(name));
        // No privilege for a device node: an empty file stands in, and the
        // override_stat xattr says what it is.
        UniqueFd fd(::openat(parent.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) throw_errno("create " + quote(name));
        std::string v = format_override_stat({uid, gid, t | perm, rdev, true});
        if (::fsetxattr(fd.get(), kOverrideStat, v.data(), v.size(), 0) != 0)
          throw_errno("record device " + quote(name) + " (no privilege for device nodes and no user xattrs)");
        need_override = false;
        type = AE_IFREG;
        break;
      }
      case AE_IFIFO:
        if (::mkfifoat(parent.get(), leaf.c_str(), 0600) != 0) throw_errno("create fifo " + quote(name));
        break;
      default:
        return;  // sockets and unknown types are skipped
    }
    // Owner, then mode, then xattrs, as tar implementations do: chown clears
    // security.capability (and the set-id bits), so neither may come first.
    if (privileged) {
      if (::fchownat(parent.get(), leaf.c_str(), uid, gid, AT_SYMLINK_NOFOLLOW) != 0 && errno != EPERM &&
          errno != EINVAL)
        throw_errno("set owner of " + quote(name));
    } else if (need_override && type != AE_IFLNK) {
      std::string v = format_override_stat({uid, gid, type | perm, 0, true});
      ::lsetxattr(proc_path(parent.get(), leaf).c_str(), kOverrideStat, v.data(), v.size(), 0);
    }
    if (type != AE_IFLNK && type != AE_IFDIR && ::fchmodat(parent.get(), leaf.c_str(), perm, 0) != 0)
      throw_errno("set mode of " + quote(name));
    apply_xattrs(e, parent.get(), leaf, name);
    if (type != AE_IFDIR) {
      timespec ts[2];
      ts[0].tv_sec = ::archive_entry_mtime(e);
      ts[0].tv_nsec = ::archive_entry_mtime_nsec(e);
      ts[1] = ts[0];
      ::utimensat(parent.get(), leaf.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }

  void apply_xattrs(struct archive_entry* e, int parent, const std::string& leaf, const std::string& name) {
    if (::archive_entry_xattr_reset(e) == 0) return;
    const char* key = nullptr;
    const void* value = nullptr;
    size_t size = 0;
    std::string path = proc_path(parent, leaf);
    while (::archive_entry_xattr_next(e, &key, &value, &size) == ARCHIVE_OK) {
      std::string k = key;
      // Nothing in a layer may pose as a marker of the store's own.
      if (k == kOverrideStat || k.rfind("trusted.overlay.", 0) == 0 || k.rfind("user.overlay.", 0) == 0) continue;
      if (::lsetxattr(path.c_str(), key, value, size, 0) != 0 && errno != EPERM && errno != ENOTSUP &&
          errno != EOPNOTSUPP && errno != EACCES)
        throw_errno("set xattr " + quote(k) + " on " + quote(name));
    }
  }

  void finish() {
    std::stable_sort(dirs.begin(), dirs.end(), [](const Deferred& a, const Deferred& b) { return a.comps.size() > b.comps.size(); });
    for (const auto& d : dirs) {
      if (d.comps.empty()) {
        ::fchmod(root, d.perm);
        timespec ts[2] = {{d.mtime, d.mtime_nsec}, {d.mtime, d.mtime_nsec}};
        ::futimens(root, ts);
        continue;
      }
      // A directory that a later entry replaced is gone: nothing to apply.
      UniqueFd parent;
      try {
        parent = open_parent(d.comps, false, d.comps.back());
      } catch (const Error&) {
        continue;
      }
      const std::string& leaf = d.comps.back();
      struct stat st {};
      if (::fstatat(parent.get(), leaf.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISDIR(st.st_mode)) continue;
      ::fchmodat(parent.get(), leaf.c_str(), d.perm, 0);
      timespec ts[2] = {{d.mtime, d.mtime_nsec}, {d.mtime, d.mtime_nsec}};
      ::utimensat(parent.get(), leaf.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }
};

LayerDigests extract_stream(int in_fd, const std::string& dest, bool privileged, bool plain_only, std::int64_t max_size) {
  UniqueFd root = open_at(AT_FDCWD, dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  ChainReader reader(in_fd);
  Extractor x;
  x.root = root.get();
  x.privileged = privileged;
  x.plain_only = plain_only;
  x.max_size = max_size;
  struct archive* a = reader.tar();
  for (;;) {
    struct archive_entry* e = nullptr;
    int r = ::archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) throw Error("corrupt or truncated archive: " + reader.error());
    x.extract_entry(a, e);
  }
  x.finish();
  return reader.finish();
}

}  // namespace

LayerDigests write_layer(const std::string& dir, int out_fd, const WriteLayerOptions& options) {
  return write_tree(dir, out_fd, options.compression, options.changeset, false, options.clamp_mtime);
}

LayerDigests extract_layer(int in_fd, const std::string& dest, const ExtractOptions& options) {
  return extract_stream(in_fd, dest, options.privileged, false, options.max_size);
}

LayerDigests copy_and_digest(int in_fd, int out_fd) {
  oci::Sha256 h;
  std::vector<char> buf(1 << 16);
  std::int64_t total = 0;
  for (;;) {
    ssize_t n = ::read(in_fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read blob");
    if (n == 0) break;
    h.update(buf.data(), static_cast<std::size_t>(n));
    write_all(out_fd, buf.data(), static_cast<std::size_t>(n), "blob");
    total += n;
  }
  LayerDigests d;
  d.blob_digest = h.finish();
  d.blob_size = total;
  return d;
}

LayerDigests decompress(int in_fd, int out_fd) {
  ChainSource src;
  src.fd = in_fd;
  src.raw = ::archive_read_new();
  struct Free {
    struct archive* a;
    ~Free() { ::archive_read_free(a); }
  } guard{src.raw};
  ::archive_read_support_filter_all(src.raw);
  ::archive_read_support_format_raw(src.raw);
  if (::archive_read_open(src.raw, &src, nullptr, chain_fd_read, nullptr) != ARCHIVE_OK)
    throw Error("cannot read archive: " + (src.error.empty() ? archive_message(src.raw) : src.error));
  struct archive_entry* e = nullptr;
  int r = ::archive_read_next_header(src.raw, &e);
  if (r != ARCHIVE_OK && r != ARCHIVE_WARN)
    throw Error("cannot read archive: " + (r == ARCHIVE_EOF ? std::string("empty input") : archive_message(src.raw)));
  src.filter = ::archive_filter_code(src.raw, 0);
  std::vector<char> buf(1 << 16);
  for (;;) {
    la_ssize_t n = ::archive_read_data(src.raw, buf.data(), buf.size());
    if (n < 0) throw Error("corrupt or truncated compressed data: " + archive_message(src.raw));
    if (n == 0) break;
    src.plain_hash.update(buf.data(), static_cast<std::size_t>(n));
    src.plain_size += n;
    write_all(out_fd, buf.data(), static_cast<std::size_t>(n), "decompressed data");
  }
  return src.digests();
}

void unpack_archive(const std::string& archive_path, const std::string& dest) {
  UniqueFd in = open_at(AT_FDCWD, archive_path, O_RDONLY);
  try {
    extract_stream(in.get(), dest, false, true, 0);
  } catch (const Error& e) {
    throw Error(quote(archive_path) + ": " + e.what());
  }
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

// ---------------------------------------------------------------- image archives

namespace {

oci::json parse_json(const std::string& text, const std::string& where) {
  try {
    return oci::json::parse(text);
  } catch (const std::exception& e) {
    throw Error("invalid JSON in " + quote(where) + ": " + e.what());
  }
}

// A path inside DIR named by an archive document; refuses names and
// symlinks that lead out of DIR.
std::string inside(const std::string& dir, const std::string& rel, const std::string& where) {
  split_name(rel, "path in " + where);
  std::string path = dir + "/" + rel;
  char real_dir[PATH_MAX], real_path[PATH_MAX];
  if (::realpath(dir.c_str(), real_dir) == nullptr) throw_errno("resolve " + quote(dir));
  if (::realpath(path.c_str(), real_path) == nullptr) throw_errno(quote(rel) + " named in " + quote(where));
  std::string rd = real_dir, rp = real_path;
  if (rp.size() <= rd.size() || rp.compare(0, rd.size(), rd) != 0 || rp[rd.size()] != '/')
    throw Error("refusing " + quote(rel) + " named in " + quote(where) + ": it leads outside the archive");
  return rp;
}

void check_digest(const std::string& path, const oci::Digest& want, const std::string& what) {
  UniqueFd fd = open_at(AT_FDCWD, path, O_RDONLY);
  oci::Digest got = oci::sha256_fd(fd.get());
  if (!(got == want)) throw Error(what + " " + want.str() + " does not match its content (" + got.str() + ")");
}

const char* layer_media_type_from_magic(const std::string& path) {
  UniqueFd fd = open_at(AT_FDCWD, path, O_RDONLY);
  unsigned char m[4] = {0, 0, 0, 0};
  ssize_t n = ::read(fd.get(), m, 4);
  if (n >= 2 && m[0] == 0x1f && m[1] == 0x8b) return oci::kMediaTypeLayerGzip;
  if (n == 4 && m[0] == 0x28 && m[1] == 0xb5 && m[2] == 0x2f && m[3] == 0xfd) return oci::kMediaTypeLayerZstd;
  return oci::kMediaTypeLayer;
}

std::vector<std::string> names_from_annotations(const std::map<std::string, std::string>& ann) {
  std::vector<std::string> out;
  if (auto it = ann.find("io.containerd.image.name"); it != ann.end()) {
    out.push_back(it->second);
    return out;
  }
  if (auto it = ann.find(oci::kAnnotationRefName); it != ann.end()) {
    const std::string& v = it->second;
    if (v.find(':') != std::string::npos || v.find('/') != std::string::npos || v.find('@') != std::string::npos)
      out.push_back(v);
    else
      out.push_back(v + ":latest");
  }
  return out;
}

void read_oci_index(const std::string& dir, const oci::json& index, const std::string& where,
                    const std::vector<std::string>& inherited, std::vector<ArchivedImage>& out) {
  if (!index.is_object() || !index.contains("manifests") || !index["manifests"].is_array())
    throw Error("invalid index in " + quote(where) + ": no manifests");
  std::vector<oci::Descriptor> descs;
  for (const auto& m : index["manifests"]) descs.push_back(oci::Descriptor::from_json(m, where));
  // A multi-platform index: keep the host's platform only.
  bool any_platform = false;
  for (const auto& d : descs) any_platform = any_platform || d.platform.has_value();
  std::string arch = oci::host_architecture();
  for (const auto& d : descs) {
    if (any_platform && d.platform && d.platform->is_object()) {
      if (d.platform->value("architecture", arch) != arch || d.platform->value("os", "linux") != "linux") continue;
    }
    std::string path = inside(dir, "blobs/sha256/" + d.digest.hex(), where);
    check_digest(path, d.digest, "manifest");
    std::string text = read_file(path);
    oci::json j = parse_json(text, path);
    std::vector<std::string> names = names_from_annotations(d.annotations);
    if (names.empty()) names = inherited;
    std::string mt = j.value("mediaType", d.media_type);
    if (mt == oci::kMediaTypeIndex || mt == oci::kMediaTypeDockerManifestList || j.contains("manifests")) {
      read_oci_index(dir, j, path, names, out);
      continue;
    }
    ArchivedImage img;
    img.manifest = oci::Manifest::from_json(j, path);
    img.manifest_json = text;
    img.names = names;
    std::string cpath = inside(dir, "blobs/sha256/" + img.manifest.config.digest.hex(), path);
    check_digest(cpath, img.manifest.config.digest, "config");
    img.config_json = read_file(cpath);
    for (const auto& l : img.manifest.layers) {
      std::string lp = dir + "/blobs/sha256/" + l.digest.hex();
      if (::access(lp.c_str(), R_OK) != 0) throw Error("layer blob " + l.digest.str() + " is missing from " + quote(dir));
      lp = inside(dir, "blobs/sha256/" + l.digest.hex(), path);
      img.layer_paths.push_back(lp);
    }
    out.push_back(std::move(img));
  }
}

}  // namespace

std::vector<ArchivedImage> read_image_archive(const std::string& dir) {
  std::vector<ArchivedImage> out;
  if (::access((dir + "/oci-layout").c_str(), F_OK) == 0 && ::access((dir + "/index.json").c_str(), F_OK) == 0) {
    oci::json layout = parse_json(read_file(dir + "/oci-layout"), dir + "/oci-layout");
    if (!layout.is_object() || layout.value("imageLayoutVersion", "") != "1.0.0")
      throw Error("unsupported OCI layout version in " + quote(dir));
    std::string ipath = dir + "/index.json";
    read_oci_index(dir, parse_json(read_file(ipath), ipath), ipath, {}, out);
    if (out.empty()) throw Error("no image for this platform in " + quote(dir));
    return out;
  }
  std::string mpath = dir + "/manifest.json";
  if (::access(mpath.c_str(), F_OK) != 0)
    throw Error(quote(dir) + " is neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)");
  oci::json m = parse_json(read_file(mpath), mpath);
  if (!m.is_array()) throw Error("invalid " + quote(mpath) + ": not an array");
  for (const auto& entry : m) {
    if (!entry.is_object() || !entry.contains("Config") || !entry.contains("Layers"))
      throw Error("invalid " + quote(mpath) + ": entry without Config or Layers");
    ArchivedImage img;
    std::string cfg_rel = entry["Config"].get<std::string>();
    std::string cpath = inside(dir, cfg_rel, mpath);
    img.config_json = read_file(cpath);
    oci::Digest cdig = oci::sha256(img.config_json);
    std::string base = cfg_rel.substr(cfg_rel.rfind('/') == std::string::npos ? 0 : cfg_rel.rfind('/') + 1);
    if (base.size() >= 64) {
      std::string hex = base.substr(0, 64);
      if (auto want = oci::Digest::try_parse("sha256:" + hex); want && !(*want == cdig))
        throw Error("config " + quote(cfg_rel) + " does not match its digest");
    }
    img.manifest.media_type = oci::kMediaTypeManifest;
    img.manifest.config.media_type = oci::kMediaTypeConfig;
    img.manifest.config.digest = cdig;
    img.manifest.config.size = static_cast<std::int64_t>(img.config_json.size());
    for (const auto& l : entry["Layers"]) {
      std::string lp = inside(dir, l.get<std::string>(), mpath);
      UniqueFd fd = open_at(AT_FDCWD, lp, O_RDONLY);
      struct stat st {};
      ::fstat(fd.get(), &st);
      oci::Descriptor d;
      d.media_type = layer_media_type_from_magic(lp);
      d.digest = oci::sha256_fd(fd.get());
      d.size = st.st_size;
      img.manifest.layers.push_back(d);
      img.layer_paths.push_back(lp);
    }
    if (entry.contains("RepoTags") && entry["RepoTags"].is_array())
      for (const auto& t : entry["RepoTags"])
        if (t.is_string()) img.names.push_back(t.get<std::string>());
    img.manifest_json = img.manifest.to_json().dump();
    out.push_back(std::move(img));
  }
  return out;
}

namespace {
void link_or_copy(const std::string& from, const std::string& to) {
  if (::link(from.c_str(), to.c_str()) == 0) return;
  if (errno == EEXIST) return;
  UniqueFd in = open_at(AT_FDCWD, from, O_RDONLY);
  UniqueFd out(::open(to.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!out) throw_errno("create " + quote(to));
  copy_and_digest(in.get(), out.get());
}

void write_text(const std::string& path, const std::string& text) {
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!out) throw_errno("create " + quote(path));
  write_all(out.get(), text.data(), text.size(), quote(path));
}

void mkdir_p(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create directory " + quote(path));
}
}  // namespace

void write_oci_layout(const std::vector<ExportedImage>& images, const std::string& dir,
                      const std::function<std::string(const oci::Digest&)>& blob_path) {
  mkdir_p(dir + "/blobs");
  mkdir_p(dir + "/blobs/sha256");
  write_text(dir + "/oci-layout", "{\"imageLayoutVersion\":\"1.0.0\"}");
  oci::json index;
  index["schemaVersion"] = 2;
  index["mediaType"] = oci::kMediaTypeIndex;
  index["manifests"] = oci::json::array();
  for (const auto& img : images) {
    std::string b = dir + "/blobs/sha256/";
    write_text(b + img.manifest_digest.hex(), img.manifest_json);
    link_or_copy(blob_path(img.manifest.config.digest), b + img.manifest.config.digest.hex());
    for (const auto& l : img.manifest.layers) link_or_copy(blob_path(l.digest), b + l.digest.hex());
    oci::Descriptor d;
    d.media_type = img.manifest.media_type;
    d.digest = img.manifest_digest;
    d.size = static_cast<std::int64_t>(img.manifest_json.size());
    if (img.names.empty()) {
      index["manifests"].push_back(d.to_json());
    }
    for (const auto& n : img.names) {
      oci::Descriptor dn = d;
      auto ref = oci::Reference::parse(n);
      dn.annotations[oci::kAnnotationRefName] = ref.familiar();
      dn.annotations["io.containerd.image.name"] = ref.str();
      index["manifests"].push_back(dn.to_json());
    }
  }
  write_text(dir + "/index.json", index.dump());
}

void write_docker_archive(const std::vector<ExportedImage>& images, const std::string& dir,
                          const std::function<std::string(const oci::Digest& diff_id)>& layer_tar) {
  oci::json manifest = oci::json::array();
  oci::json repositories = oci::json::object();
  for (const auto& img : images) {
    std::string cfg = img.manifest.config.digest.hex() + ".json";
    write_text(dir + "/" + cfg, img.config_json);
    oci::json entry;
    entry["Config"] = cfg;
    entry["RepoTags"] = oci::json::array();
    entry["Layers"] = oci::json::array();
    for (const auto& d : img.diff_ids) {
      mkdir_p(dir + "/" + d.hex());
      link_or_copy(layer_tar(d), dir + "/" + d.hex() + "/layer.tar");
      write_text(dir + "/" + d.hex() + "/VERSION", "1.0");
      entry["Layers"].push_back(d.hex() + "/layer.tar");
    }
    for (const auto& n : img.names) {
      auto ref = oci::Reference::parse(n);
      entry["RepoTags"].push_back(ref.familiar());
      if (!img.diff_ids.empty() && !ref.tag.empty()) repositories[ref.familiar_name()][ref.tag] = img.diff_ids.back().hex();
    }
    manifest.push_back(entry);
  }
  write_text(dir + "/manifest.json", manifest.dump());
  if (!repositories.empty()) write_text(dir + "/repositories", repositories.dump());
}

}  // namespace strata::archive
