// src/archive: tar streams in: hostile-input-safe extraction of layers (and
// of ADD's archives and plain image archives) into a directory, with the
// decoder that detects the compression and digests the stream as read and
// as decompressed. Writing layers is in layer_writer.cpp, the limits a
// hostile archive is held to in limits.cpp, whole-image archives (OCI
// layout, docker-archive) in image_archive.cpp.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>

#include "archive_internal.hpp"
#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/idfile.hpp"
#include "strata/override_stat.hpp"
#include "strata/text.hpp"

namespace strata::archive {

using detail::archive_message;
using detail::human_size;
using detail::proc_path;
using detail::size_limit_for;
using detail::SizeLimit;
using detail::split_name;

std::string detail::archive_message(struct archive* a) {
  const char* s = ::archive_error_string(a);
  return s != nullptr ? s : "unknown archive error";
}

// A short path for NAME in the directory open at DIRFD, however deep that
// directory is (for the *xattr calls, which have no *at form).
std::string detail::proc_path(int dirfd, const std::string& name) {
  return "/proc/self/fd/" + std::to_string(dirfd) + "/" + name;
}

namespace {

constexpr const char* kOverrideStat = kOverrideStatXattr;

// The decompressed bytes of a stream, whatever its compression (detected
// from the bytes), with digests of the bytes as read and as decompressed.
// gzip is decoded with zlib rather than libarchive so that each member's
// CRC-32 and length trailer are checked: a corrupt layer fails instead of
// extracting other bytes (where no digest is known, nothing else would
// notice). zstd, xz and bzip2 check their own integrity in libarchive.
// More than LIMIT decompressed bytes fail (a decompression bomb).
class Decoder {
 public:
  Decoder(int fd, SizeLimit limit) : fd_(fd), limit_(std::move(limit)) {
    std::size_t got = 0;
    while (got < 4) {
      ssize_t n = read_raw(raw_buf_.data() + got, raw_buf_.size() - got);
      if (n < 0) throw Error("cannot read archive: " + error_);
      if (n == 0) break;
      got += static_cast<std::size_t>(n);
    }
    if (got == 0) throw Error("cannot read archive: empty input");
    if (got >= 2 && static_cast<unsigned char>(raw_buf_[0]) == 0x1f && static_cast<unsigned char>(raw_buf_[1]) == 0x8b) {
      filter_ = ARCHIVE_FILTER_GZIP;
      if (::inflateInit2(&zs_, 15 + 16) != Z_OK) throw Error("cannot start gzip decoder");
      zs_open_ = true;
      zs_.next_in = reinterpret_cast<Bytef*>(raw_buf_.data());
      zs_.avail_in = static_cast<uInt>(got);
      return;
    }
    pending_ = got;
    la_ = ::archive_read_new();
    try {
      ::archive_read_support_filter_all(la_);
      ::archive_read_support_format_raw(la_);
      if (::archive_read_open(la_, this, nullptr, la_read, nullptr) != ARCHIVE_OK)
        throw Error("cannot read archive: " + (error_.empty() ? archive_message(la_) : error_));
      struct archive_entry* e = nullptr;
      int r = ::archive_read_next_header(la_, &e);
      if (r != ARCHIVE_OK && r != ARCHIVE_WARN) throw Error("cannot read archive: " + archive_message(la_));
      filter_ = ::archive_filter_code(la_, 0);
    } catch (...) {
      // A constructor that throws runs no destructor: free the reader here.
      ::archive_read_free(la_);
      la_ = nullptr;
      throw;
    }
  }
  ~Decoder() {
    if (zs_open_) ::inflateEnd(&zs_);
    if (la_ != nullptr) ::archive_read_free(la_);
  }
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // Up to LEN decompressed bytes into BUF; 0 at the end. On failure -1, and
  // error() says why (no exception: this runs inside libarchive callbacks).
  la_ssize_t read(void* buf, std::size_t len) {
    la_ssize_t n = zs_open_ ? read_gzip(buf, len) : read_libarchive(buf, len);
    if (n <= 0) return n;
    plain_hash_.update(buf, static_cast<std::size_t>(n));
    plain_size_ += n;
    if (limit_.bytes > 0 && plain_size_ > limit_.bytes) {
      error_ = "it inflates to more than " + human_size(limit_.bytes) + " (" + limit_.why + ")";
      return -1;
    }
    return n;
  }
  const std::string& error() const { return error_; }

  // Reads what is left of both streams so the digests cover every byte;
  // throws when the rest is corrupt.
  LayerDigests finish() {
    std::vector<char> buf(1 << 16);
    for (;;) {
      la_ssize_t n = read(buf.data(), buf.size());
      if (n < 0) throw Error(error_);
      if (n == 0) break;
    }
    for (;;) {
      ssize_t n = read_raw(raw_buf_.data(), raw_buf_.size());
      if (n < 0) throw Error("read archive: " + error_);
      if (n == 0) break;
    }
    LayerDigests d;
    d.diff_id = plain_hash_.finish();
    d.size = plain_size_;
    d.blob_digest = raw_hash_.finish();
    d.blob_size = raw_size_;
    d.compression = filter_ == ARCHIVE_FILTER_GZIP   ? Compression::gzip
                    : filter_ == ARCHIVE_FILTER_ZSTD ? Compression::zstd
                                                     : Compression::none;
    return d;
  }

 private:
  // Reads from the file, hashing what it gives.
  ssize_t read_raw(char* buf, std::size_t len) {
    for (;;) {
      ssize_t n = ::read(fd_, buf, len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error_ = std::strerror(errno);
        return -1;
      }
      raw_hash_.update(buf, static_cast<std::size_t>(n));
      raw_size_ += n;
      return n;
    }
  }

  static la_ssize_t la_read(struct archive*, void* data, const void** buffer) {
    auto* self = static_cast<Decoder*>(data);
    *buffer = self->raw_buf_.data();
    if (self->pending_ > 0) return static_cast<la_ssize_t>(std::exchange(self->pending_, 0));
    return self->read_raw(self->raw_buf_.data(), self->raw_buf_.size());
  }

  la_ssize_t read_libarchive(void* buf, std::size_t len) {
    la_ssize_t n = ::archive_read_data(la_, buf, len);
    if (n < 0) error_ = "corrupt or truncated data: " + (error_.empty() ? archive_message(la_) : error_);
    return n;
  }

  la_ssize_t read_gzip(void* buf, std::size_t len) {
    if (gzip_done_) return 0;
    zs_.next_out = static_cast<Bytef*>(buf);
    zs_.avail_out = static_cast<uInt>(std::min<std::size_t>(len, UINT_MAX));
    const uInt room = zs_.avail_out;
    while (zs_.avail_out == room && !gzip_done_) {
      if (zs_.avail_in == 0) {
        ssize_t n = read_raw(raw_buf_.data(), raw_buf_.size());
        if (n < 0) return -1;
        if (n == 0) {
          error_ = "truncated gzip data: the stream ends before its trailer";
          return -1;
        }
        zs_.next_in = reinterpret_cast<Bytef*>(raw_buf_.data());
        zs_.avail_in = static_cast<uInt>(n);
      }
      int r = ::inflate(&zs_, Z_NO_FLUSH);
      if (r == Z_STREAM_END) {
        // zlib has checked this member's CRC-32 and length; another member
        // may follow (concatenated gzip).
        int next = next_member();
        if (next < 0) return -1;
        gzip_done_ = next == 0;
        continue;
      }
      if (r != Z_OK && r != Z_BUF_ERROR) {
        error_ = std::string("corrupt gzip data: ") + (zs_.msg != nullptr ? zs_.msg : "inflate failed");
        return -1;
      }
    }
    return static_cast<la_ssize_t>(room - zs_.avail_out);
  }

  // After a gzip member: 1 when another member follows (the decoder is reset
  // for it), 0 when the data ends (what follows that is not gzip, padding,
  // is part of the blob digest but not of the layer), -1 on a read error.
  int next_member() {
    while (zs_.avail_in < 2) {
      std::size_t have = zs_.avail_in;
      if (have == 1) raw_buf_[0] = static_cast<char>(*zs_.next_in);
      ssize_t n = read_raw(raw_buf_.data() + have, raw_buf_.size() - have);
      if (n < 0) return -1;
      zs_.next_in = reinterpret_cast<Bytef*>(raw_buf_.data());
      zs_.avail_in = static_cast<uInt>(have + static_cast<std::size_t>(n));
      if (n == 0) return 0;
    }
    if (zs_.next_in[0] != 0x1f || zs_.next_in[1] != 0x8b) return 0;
    ::inflateReset(&zs_);
    return 1;
  }

  int fd_;
  SizeLimit limit_;
  oci::Sha256 raw_hash_;
  oci::Sha256 plain_hash_;
  std::int64_t raw_size_ = 0;
  std::int64_t plain_size_ = 0;
  std::vector<char> raw_buf_ = std::vector<char>(1 << 16);
  std::size_t pending_ = 0;  // bytes at the start of raw_buf_ read but not yet given to libarchive
  std::string error_;
  int filter_ = ARCHIVE_FILTER_NONE;
  z_stream zs_{};
  bool zs_open_ = false;
  bool gzip_done_ = false;
  struct archive* la_ = nullptr;
};

std::string not_a_tar_message(const std::string& why) {
  return "not a tar archive, plain or compressed with gzip, zstd, xz or bzip2 (" + why + ")";
}

// A tar reader over the decompressed bytes of a stream.
class ChainReader {
 public:
  ChainReader(int fd, SizeLimit limit) : decoder_(fd, std::move(limit)) {
    tar_ = ::archive_read_new();
    ::archive_read_support_format_tar(tar_);
    if (::archive_read_open(tar_, this, nullptr, plain_read, nullptr) != ARCHIVE_OK) {
      bool decoded = decoder_.error().empty();
      std::string msg = decoded ? archive_message(tar_) : decoder_.error();
      ::archive_read_free(tar_);
      if (!decoded) throw Error(msg);
      throw NotATar(not_a_tar_message(msg));
    }
  }
  ~ChainReader() { ::archive_read_free(tar_); }
  ChainReader(const ChainReader&) = delete;
  ChainReader& operator=(const ChainReader&) = delete;

  struct archive* tar() { return tar_; }
  // Throws for a failed read of the tar: the decoder's reason when it has
  // one (corrupt compression, the size limit), else WHAT and libarchive's.
  [[noreturn]] void fail(const std::string& what) const {
    if (!decoder_.error().empty()) throw Error(decoder_.error());
    throw Error(what + ": " + archive_message(tar_));
  }
  LayerDigests finish() { return decoder_.finish(); }
  // Whether the decompression has not failed (a failure of the tar reader
  // is then the tar's).
  bool decoded_fine() const { return decoder_.error().empty(); }

 private:
  static la_ssize_t plain_read(struct archive*, void* data, const void** buffer) {
    auto* self = static_cast<ChainReader*>(data);
    *buffer = self->plain_buf_.data();
    return self->decoder_.read(self->plain_buf_.data(), self->plain_buf_.size());
  }

  Decoder decoder_;
  std::vector<char> plain_buf_ = std::vector<char>(1 << 16);
  struct archive* tar_ = nullptr;
};

struct Extractor {
  int root = -1;
  bool privileged = false;
  bool plain_only = false;
  // Every entry's owner instead of the archive's (ADD --chown); the parents
  // an entry needs are made with it too.
  std::optional<std::pair<std::uint32_t, std::uint32_t>> owner;
  // The archive's root entry ("./") sets the destination's mode and time.
  bool apply_root = true;
  const ChainReader* reader = nullptr;
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
        if (owner && privileged) ::fchownat(cur.get(), comps[i].c_str(), owner->first, owner->second, AT_SYMLINK_NOFOLLOW);
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

  // Where a regular file's data comes from when it is not the archive: the
  // file NAME in the directory open at DIR, which becomes the entry (see
  // detail::TreeBuilder); no NAME: an empty file (a whiteout marker).
  struct Source {
    int dir = -1;
    const char* name = nullptr;
  };

  // Extracts entry E of archive A, or with FROM, the entry E describes with
  // its data taken from FROM (A is not read).
  void extract_entry(struct archive* a, struct archive_entry* e, const Source* from = nullptr) {
    const char* raw_name = ::archive_entry_pathname(e);
    std::string name = raw_name != nullptr ? raw_name : "";
    auto comps = split_name(name, "entry");
    mode_t type = ::archive_entry_filetype(e);
    const char* hl = ::archive_entry_hardlink(e);
    if (comps.empty()) {
      // The root itself ("./"): only its mode and time apply.
      if (type == AE_IFDIR && !plain_only && apply_root)
        dirs.push_back({comps, static_cast<mode_t>(::archive_entry_perm(e)), ::archive_entry_mtime(e),
                        ::archive_entry_mtime_nsec(e)});
      return;
    }
    if (plain_only && hl == nullptr && type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK)
      throw Error("refusing entry " + quote(name) + ": only files, directories and symlinks are allowed in an image archive");
    if (plain_only && hl != nullptr) throw Error("refusing entry " + quote(name) + ": links are not allowed here");
    // Above idfile::kMaxId is (uid_t)-1, which chown reads as "leave
    // unchanged": the entry would end up owned by whoever extracts it (root).
    // Neither it nor anything chown cannot store is an owner.
    auto owner_id = [&](la_int64_t id, const char* what) {
      if (id < 0 || id > la_int64_t{idfile::kMaxId}) {
        throw Error("refusing " + quote(name) + ": " + what + " " + std::to_string(id) + " is not a valid id (0 to " +
                    std::to_string(idfile::kMaxId) + ")");
      }
      return static_cast<std::uint32_t>(id);
    };
    uid_t uid = owner ? owner->first : owner_id(::archive_entry_uid(e), "owner uid");
    gid_t gid = owner ? owner->second : owner_id(::archive_entry_gid(e), "group gid");
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
        if (from != nullptr) {
          adopt_file(*from, parent.get(), leaf, name, ::archive_entry_size(e));
          break;
        }
        UniqueFd fd(::openat(parent.get(), leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) throw_errno("create " + quote(name));
        const void* buf = nullptr;
        size_t size = 0;
        la_int64_t offset = 0;
        for (;;) {
          int r = ::archive_read_data_block(a, &buf, &size, &offset);
          if (r == ARCHIVE_EOF) break;
          if (r != ARCHIVE_OK && r != ARCHIVE_WARN) reader->fail("read data of " + quote(name));
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

  // Makes PARENT/LEAF the file FROM names: a hardlink to it (its data is not
  // written again) stripped of its xattrs, so that only what the entry
  // carries is set afterwards; a copy where it cannot be linked (another
  // file system, the link limit) or where the link would keep an owner that
  // extraction would not give it (unprivileged, nothing is chowned: only the
  // caller's own files are linked).
  void adopt_file(const Source& from, int parent, const std::string& leaf, const std::string& name,
                  la_int64_t size) const {
    struct stat st {};
    bool linkable = from.name != nullptr && (privileged || (::fstatat(from.dir, from.name, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
                                                            st.st_uid == ::geteuid() && st.st_gid == ::getegid()));
    if (linkable) {
      if (::linkat(from.dir, from.name, parent, leaf.c_str(), 0) == 0) {
        drop_xattrs(parent, leaf, name);
        return;
      }
      if (errno != EXDEV && errno != EMLINK && errno != EPERM) throw_errno("link " + quote(name) + " into the layer");
    }
    UniqueFd fd(::openat(parent, leaf.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!fd) throw_errno("create " + quote(name));
    if (from.name == nullptr) return;
    UniqueFd in(::openat(from.dir, from.name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!in) throw_errno("open " + quote(name));
    if (int err = copy_file_data(in.get(), fd.get(), static_cast<off_t>(size)); err != 0)
      throw SysError(err, "copy " + quote(name) + " into the layer");
  }

  static void drop_xattrs(int parent, const std::string& leaf, const std::string& name) {
    std::string path = proc_path(parent, leaf);
    std::vector<char> names(4096);
    ssize_t n = 0;
    while ((n = ::llistxattr(path.c_str(), names.data(), names.size())) < 0 && errno == ERANGE)
      names.resize(names.size() * 4);
    if (n < 0) {
      if (errno == ENOTSUP || errno == EOPNOTSUPP) return;
      throw_errno("list xattrs of " + quote(name));
    }
    for (ssize_t pos = 0; pos < n;) {
      const char* key = names.data() + pos;
      pos += static_cast<ssize_t>(std::strlen(key)) + 1;
      if (::lremovexattr(path.c_str(), key) != 0 && errno != ENODATA && errno != EPERM && errno != EOPNOTSUPP)
        throw_errno("remove xattr " + quote(key) + " of " + quote(name));
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

// Extracts IN_FD into the directory open at ROOT with X's settings.
LayerDigests extract_stream_at(int in_fd, int root, const std::string& shown, Extractor x,
                               const std::optional<std::int64_t>& max_size) {
  ChainReader reader(in_fd, size_limit_for(max_size, root, shown));
  x.root = root;
  x.reader = &reader;
  struct archive* a = reader.tar();
  for (bool first = true;; first = false) {
    struct archive_entry* e = nullptr;
    int r = ::archive_read_next_header(a, &e);
    if (r == ARCHIVE_EOF) break;
    if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
      if (first && reader.decoded_fine()) throw NotATar(not_a_tar_message(archive_message(a)));
      reader.fail("corrupt or truncated archive");
    }
    x.extract_entry(a, e);
  }
  x.finish();
  return reader.finish();
}

LayerDigests extract_stream(int in_fd, const std::string& dest, bool privileged, bool plain_only,
                            const std::optional<std::int64_t>& max_size) {
  UniqueFd root = open_at(AT_FDCWD, dest, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  Extractor x;
  x.privileged = privileged;
  x.plain_only = plain_only;
  return extract_stream_at(in_fd, root.get(), quote(dest), std::move(x), max_size);
}

}  // namespace

struct detail::TreeBuilder::Impl {
  Extractor x;
};

detail::TreeBuilder::TreeBuilder(int root, bool privileged) : impl_(std::make_unique<Impl>()) {
  impl_->x.root = root;
  impl_->x.privileged = privileged;
}

detail::TreeBuilder::~TreeBuilder() = default;

void detail::TreeBuilder::add(struct archive_entry* e, int dir, const char* name) {
  Extractor::Source from{dir, name};
  impl_->x.extract_entry(nullptr, e, &from);
}

void detail::TreeBuilder::finish() { impl_->x.finish(); }

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
  Decoder decoder(in_fd, {});
  std::vector<char> buf(1 << 16);
  for (;;) {
    la_ssize_t n = decoder.read(buf.data(), buf.size());
    if (n < 0) throw Error(decoder.error());
    if (n == 0) break;
    write_all(out_fd, buf.data(), static_cast<std::size_t>(n), "decompressed data");
  }
  return decoder.finish();
}

void extract_into(int in_fd, int dest_fd, const ExtractIntoOptions& options) {
  UniqueFd root(::fcntl(dest_fd, F_DUPFD_CLOEXEC, 0));
  if (!root) throw_errno("dup");
  Extractor x;
  x.privileged = options.privileged;
  x.owner = options.owner;
  x.apply_root = false;
  extract_stream_at(in_fd, root.get(), "the destination", std::move(x), options.max_size);
}

void unpack_archive(const std::string& archive_path, const std::string& dest) {
  UniqueFd in = open_at(AT_FDCWD, archive_path, O_RDONLY);
  try {
    extract_stream(in.get(), dest, false, true, std::nullopt);
  } catch (const NotATar& e) {
    throw NotATar(quote(archive_path) + ": " + e.what());
  } catch (const Error& e) {
    throw Error(quote(archive_path) + ": " + e.what());
  }
}

}  // namespace strata::archive
