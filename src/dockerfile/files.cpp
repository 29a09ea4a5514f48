// The file work of COPY and ADD: sources in a context, copies into a
// container root, tar archives unpacked beneath a directory, downloads.
#include "files.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <linux/openat2.h>
#include <openssl/evp.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <memory>
#include <sstream>

#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/idfile.hpp"

namespace strata::build {

namespace files {

namespace {

std::string relative(const std::string& path) {
  size_t i = 0;
  while (i < path.size() && path[i] == '/') ++i;
  std::string rel = path.substr(i);
  return rel.empty() ? "." : rel;
}

// Reopens an O_PATH fd for reading.
UniqueFd reopen(int opath, int flags, const std::string& what) {
  std::string proc = "/proc/self/fd/" + std::to_string(opath);
  int fd = ::open(proc.c_str(), flags | O_CLOEXEC);
  if (fd < 0) throw_errno("open " + quote(what));
  return UniqueFd(fd);
}

void copy_data(int from, int to, const std::string& what) {
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(from, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("read " + quote(what));
    }
    if (n == 0) return;
    write_all(to, buf, static_cast<size_t>(n), quote(what));
  }
}

// Removes NAME in DIR unless it is a directory and KEEP_DIR is set; returns
// true when a directory is left there.
bool clear_name(int dir, const std::string& name, bool keep_dir) {
  struct stat st {};
  if (::fstatat(dir, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return false;
  if (S_ISDIR(st.st_mode)) {
    if (keep_dir) return true;
    remove_tree_at(dir, name);
    return false;
  }
  if (::unlinkat(dir, name.c_str(), 0) != 0) throw_errno("remove " + quote(name));
  return false;
}

void set_owner_mode_times(int dir, const std::string& name, const Owner& owner, std::optional<mode_t> mode,
                          const struct timespec* times, bool symlink) {
  if (::fchownat(dir, name.c_str(), owner.uid, owner.gid, AT_SYMLINK_NOFOLLOW) != 0) throw_errno("chown " + quote(name));
  if (!symlink && mode && ::fchmodat(dir, name.c_str(), *mode, 0) != 0) throw_errno("chmod " + quote(name));
  if (times != nullptr && ::utimensat(dir, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    throw_errno("set times of " + quote(name));
  }
}

}  // namespace

UniqueFd open_in_root(int root, const std::string& path, int flags) {
  struct open_how how {};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  std::string rel = relative(path);
  long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
  return UniqueFd(fd < 0 ? -1 : static_cast<int>(fd));
}

UniqueFd make_dirs(int root, const std::string& path, const std::optional<Owner>& owner) {
  // A dangling symlink on the way is followed, as the container would: its
  // target is made, beneath the root.
  std::string rel = relative(resolve_in_root(root, path));
  UniqueFd cur(::openat(root, ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!cur) throw_errno("open the container root");
  if (rel == ".") return cur;
  std::string prefix;
  std::stringstream parts(rel);
  std::string comp;
  while (std::getline(parts, comp, '/')) {
    if (comp.empty() || comp == ".") continue;
    prefix += "/" + comp;
    UniqueFd next = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
    if (!next) {
      if (errno == ENOTDIR) throw Error("cannot create directory " + quote(prefix) + ": a file is in the way");
      if (errno != ENOENT) throw_errno("open " + quote(prefix));
      if (::mkdirat(cur.get(), comp.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create directory " + quote(prefix));
      if (owner && ::fchownat(cur.get(), comp.c_str(), owner->uid, owner->gid, AT_SYMLINK_NOFOLLOW) != 0) {
        throw_errno("chown " + quote(prefix));
      }
      next = open_in_root(root, prefix, O_PATH | O_DIRECTORY);
      if (!next) throw_errno("open " + quote(prefix));
    }
    cur = std::move(next);
  }
  return cur;
}

void copy_tree(int src, const struct stat& st, int dest_dir, const std::string& name, const CopySpec& spec) {
  Owner owner = spec.owner ? *spec.owner : Owner{st.st_uid, st.st_gid};
  mode_t perm = spec.mode ? spec.mode->apply(st.st_mode & 07777, S_ISDIR(st.st_mode)) : (st.st_mode & 07777);
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (S_ISDIR(st.st_mode)) {
    if (!clear_name(dest_dir, name, true)) {
      if (::mkdirat(dest_dir, name.c_str(), 0700) != 0) throw_errno("create directory " + quote(name));
    }
    UniqueFd out(::openat(dest_dir, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!out) throw_errno("open " + quote(name));
    UniqueFd in = reopen(src, O_RDONLY | O_DIRECTORY, name);
    for (const auto& child : read_dir_names(in.get(), name)) {
      CopySpec sub = spec;
      if (spec.ignore != nullptr || spec.exclude != nullptr) {
        sub.ignore_prefix = spec.ignore_prefix == "." || spec.ignore_prefix.empty() ? child : spec.ignore_prefix + "/" + child;
        sub.exclude_prefix = spec.exclude_prefix.empty() ? child : spec.exclude_prefix + "/" + child;
        if (sub.skipped()) continue;
      }
      UniqueFd c(::openat(in.get(), child.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!c) throw_errno("open " + quote(child));
      struct stat cst {};
      if (::fstat(c.get(), &cst) != 0) throw_errno("stat " + quote(child));
      copy_tree(c.get(), cst, out.get(), child, sub);
    }
    set_owner_mode_times(dest_dir, name, owner, perm, times, false);
    return;
  }
  clear_name(dest_dir, name, false);
  if (S_ISREG(st.st_mode)) {
    UniqueFd in = reopen(src, O_RDONLY, name);
    UniqueFd out(::openat(dest_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (!out) throw_errno("create " + quote(name));
    copy_data(in.get(), out.get(), name);
    if (::fchown(out.get(), owner.uid, owner.gid) != 0) throw_errno("chown " + quote(name));
    if (::fchmod(out.get(), perm) != 0) throw_errno("chmod " + quote(name));
    if (::futimens(out.get(), times) != 0) throw_errno("set times of " + quote(name));
  } else if (S_ISLNK(st.st_mode)) {
    std::string target(static_cast<size_t>(st.st_size > 0 ? st.st_size : 4096) + 1, '\0');
    ssize_t n = ::readlinkat(src, "", target.data(), target.size());
    if (n < 0) throw_errno("read link " + quote(name));
    target.resize(static_cast<size_t>(n));
    if (::symlinkat(target.c_str(), dest_dir, name.c_str()) != 0) throw_errno("create symlink " + quote(name));
    set_owner_mode_times(dest_dir, name, owner, std::nullopt, times, true);
  } else if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode)) {
    if (::mknodat(dest_dir, name.c_str(), st.st_mode, st.st_rdev) != 0) throw_errno("create " + quote(name));
    set_owner_mode_times(dest_dir, name, owner, perm, times, false);
  }
  // Sockets are not copied, as docker does not copy them.
}

void write_file(int dest_dir, const std::string& name, const std::string& content, mode_t mode, const Owner& owner) {
  clear_name(dest_dir, name, false);
  UniqueFd out(::openat(dest_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) throw_errno("create " + quote(name));
  write_all(out.get(), content, quote(name));
  if (::fchown(out.get(), owner.uid, owner.gid) != 0) throw_errno("chown " + quote(name));
  if (::fchmod(out.get(), mode) != 0) throw_errno("chmod " + quote(name));
}

std::string read_small_file(int root, const std::string& path) {
  UniqueFd fd = open_in_root(root, path, O_RDONLY);
  if (!fd) return {};
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > (1U << 24)) break;
  }
  return out;
}

std::string url_file_name(const std::string& url) {
  std::string path = url;
  if (auto scheme = path.find("://"); scheme != std::string::npos) path = path.substr(scheme + 3);
  for (char stop : {'?', '#'}) {
    if (auto p = path.find(stop); p != std::string::npos) path.resize(p);
  }
  auto slash = path.find('/');
  if (slash == std::string::npos) return {};
  path = path.substr(slash);
  while (!path.empty() && path.back() == '/') path.pop_back();
  auto last = path.rfind('/');
  std::string name = last == std::string::npos ? path : path.substr(last + 1);
  if (name == "." || name == "..") return {};
  return name;
}

namespace {

// Owners of the C handles a download uses.
struct CurlFree {
  void operator()(CURL* c) const noexcept { curl_easy_cleanup(c); }
};
struct XxhFree {
  void operator()(XXH3_state_t* x) const noexcept { XXH3_freeState(x); }
};
struct EvpFree {
  void operator()(EVP_MD_CTX* c) const noexcept { EVP_MD_CTX_free(c); }
};

struct Download {
  int fd = -1;
  std::unique_ptr<XXH3_state_t, XxhFree> xxh{XXH3_createState()};
  std::unique_ptr<EVP_MD_CTX, EvpFree> sha{EVP_MD_CTX_new()};
  bool write_failed = false;
};

// libcurl's write callback: never throws (a C caller), reports by returning 0.
size_t on_data(char* data, size_t size, size_t count, void* user) {
  auto* d = static_cast<Download*>(user);
  size_t n = size * count;
  try {
    write_all(d->fd, data, n, "download");
  } catch (const Error&) {
    d->write_failed = true;
    return 0;
  }
  XXH3_128bits_update(d->xxh.get(), data, n);
  EVP_DigestUpdate(d->sha.get(), data, n);
  return n;
}

std::string hex(const unsigned char* p, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < n; ++i) {
    out += digits[p[i] >> 4];
    out += digits[p[i] & 15];
  }
  return out;
}

}  // namespace

std::string download(const std::string& url, int dest_dir, const std::string& name, const std::string& checksum) {
  static const bool initialised = [] { return curl_global_init(CURL_GLOBAL_DEFAULT) == 0; }();
  if (!initialised) throw Error("cannot initialise libcurl");
  clear_name(dest_dir, name, false);
  UniqueFd out(::openat(dest_dir, name.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
  if (!out) throw_errno("create " + quote(name));
  Download d;
  d.fd = out.get();
  std::unique_ptr<CURL, CurlFree> handle(curl_easy_init());
  if (!d.xxh || !d.sha || !handle) throw Error("out of memory downloading " + quote(url));
  CURL* curl = handle.get();
  XXH3_128bits_reset(d.xxh.get());
  EVP_DigestInit_ex(d.sha.get(), EVP_sha256(), nullptr);
  char errbuf[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 1L);
  curl_easy_setopt(curl, CURLOPT_MAXREDIRS, 10L);
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FAILONERROR, 1L);
  curl_easy_setopt(curl, CURLOPT_FILETIME, 1L);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, errbuf);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_data);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &d);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, "strata-build");
  CURLcode rc = curl_easy_perform(curl);
  long filetime = -1;
  curl_easy_getinfo(curl, CURLINFO_FILETIME, &filetime);
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(d.xxh.get()));
  unsigned char sha[EVP_MAX_MD_SIZE];
  unsigned int sha_len = 0;
  EVP_DigestFinal_ex(d.sha.get(), sha, &sha_len);
  if (rc != CURLE_OK) {
    ::unlinkat(dest_dir, name.c_str(), 0);
    throw Error("download " + quote(url) + ": " + (errbuf[0] != '\0' ? std::string(errbuf) : curl_easy_strerror(rc)));
  }
  if (d.write_failed) throw Error("download " + quote(url) + ": writing " + quote(name) + " failed");
  std::string got = "sha256:" + hex(sha, sha_len);
  if (!checksum.empty() && got != checksum) {
    ::unlinkat(dest_dir, name.c_str(), 0);
    throw Error("download " + quote(url) + ": checksum mismatch: expected " + checksum + ", got " + got);
  }
  if (filetime >= 0) {
    struct timespec t[2] = {{filetime, 0}, {filetime, 0}};
    ::futimens(out.get(), t);
  }
  return hex(canon.digest, sizeof canon.digest);
}

}  // namespace files

// ---- public helpers ----

Owner resolve_chown(const std::string& spec, const std::string& passwd, const std::string& group,
                    bool primary_group) {
  auto colon = spec.find(':');
  std::string user = spec.substr(0, colon);
  std::string grp = colon == std::string::npos ? std::string() : spec.substr(colon + 1);
  if (user.empty()) throw Error("invalid --chown " + quote(spec) + ": no user");
  auto users = idfile::parse_passwd(passwd);
  Owner o;
  auto uid = idfile::parse_id(user);
  const idfile::PasswdEntry* entry = uid ? nullptr : idfile::find_user(users, user);
  if (uid) {
    o.uid = *uid;
  } else if (entry != nullptr) {
    o.uid = entry->uid;
  } else {
    idfile::refuse_unusable_entry(passwd, user, true, ExitCode::failure);
    throw Error("--chown " + quote(spec) + ": no user " + quote(user) + " in the image's /etc/passwd");
  }
  // docker: a user without a group gets the same number as its group.
  o.gid = o.uid;
  if (primary_group) o.gid = entry != nullptr ? entry->gid : 0;
  auto groups = idfile::parse_group(group);
  if (!grp.empty()) {
    if (auto gid = idfile::parse_id(grp)) {
      o.gid = *gid;
    } else if (const auto* g = idfile::find_group(groups, grp)) {
      o.gid = g->gid;
    } else {
      idfile::refuse_unusable_entry(group, grp, false, ExitCode::failure);
      throw Error("--chown " + quote(spec) + ": no group " + quote(grp) + " in the image's /etc/group");
    }
  }
  return o;
}

std::vector<std::string> expand_sources(int root_fd, const std::string& source, const IgnoreMatcher& ignore) {
  std::string cleaned = clean_path(source);
  while (cleaned.rfind("/", 0) == 0) cleaned = clean_path(cleaned.substr(1));
  if (cleaned == ".." || cleaned.rfind("../", 0) == 0) {
    throw Error("forbidden path outside the build context: " + quote(source));
  }
  if (cleaned.find_first_of("*?[") == std::string::npos) return {cleaned};
  std::vector<std::string> parts;
  std::stringstream ss(cleaned);
  std::string part;
  while (std::getline(ss, part, '/')) parts.push_back(part);
  std::vector<std::string> current = {"."};
  for (const auto& pat : parts) {
    std::vector<std::string> next;
    bool glob = pat.find_first_of("*?[") != std::string::npos;
    for (const auto& dir : current) {
      if (!glob) {
        next.push_back(dir == "." ? pat : dir + "/" + pat);
        continue;
      }
      UniqueFd d = files::open_in_root(root_fd, dir, O_RDONLY | O_DIRECTORY);
      if (!d) continue;
      for (const auto& name : read_dir_names(d.get(), dir)) {
        if (::fnmatch(pat.c_str(), name.c_str(), 0) != 0) continue;
        std::string path = dir == "." ? name : dir + "/" + name;
        if (ignore.excluded(path)) continue;
        next.push_back(path);
      }
    }
    current = std::move(next);
  }
  std::vector<std::string> out;
  for (const auto& p : current) {
    struct stat st {};
    UniqueFd fd = files::open_in_root(root_fd, p, O_PATH);
    if (fd && ::fstat(fd.get(), &st) == 0) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

namespace {

void hash_field(XXH3_state_t* h, std::string_view s) {
  std::uint64_t n = s.size();
  XXH3_128bits_update(h, &n, sizeof n);
  XXH3_128bits_update(h, s.data(), s.size());
}

void hash_tree(XXH3_state_t* h, int fd, const struct stat& st, const std::string& rel, const IgnoreMatcher& ignore) {
  hash_field(h, rel);
  hash_field(h, std::to_string(st.st_mode));
  if (S_ISREG(st.st_mode)) {
    hash_field(h, std::to_string(st.st_size));
    UniqueFd in = files::reopen(fd, O_RDONLY, rel);
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(in.get(), buf, sizeof buf);
      if (n < 0) {
        if (errno == EINTR) continue;
        throw_errno("read " + quote(rel));
      }
      if (n == 0) break;
      XXH3_128bits_update(h, buf, static_cast<size_t>(n));
    }
  } else if (S_ISLNK(st.st_mode)) {
    char target[4096];
    ssize_t n = ::readlinkat(fd, "", target, sizeof target);
    if (n < 0) throw_errno("read link " + quote(rel));
    hash_field(h, std::string_view(target, static_cast<size_t>(n)));
  } else if (S_ISDIR(st.st_mode)) {
    UniqueFd in = files::reopen(fd, O_RDONLY | O_DIRECTORY, rel);
    for (const auto& name : read_dir_names(in.get(), rel)) {
      std::string child = rel == "." ? name : rel + "/" + name;
      if (ignore.excluded(child)) continue;
      UniqueFd c(::openat(in.get(), name.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!c) throw_errno("open " + quote(child));
      struct stat cst {};
      if (::fstat(c.get(), &cst) != 0) throw_errno("stat " + quote(child));
      hash_tree(h, c.get(), cst, child, ignore);
    }
    hash_field(h, "end-of-directory");
  } else {
    hash_field(h, std::to_string(st.st_rdev));
  }
}

}  // namespace

std::string digest_sources(int root_fd, const std::vector<std::string>& paths, const IgnoreMatcher& ignore) {
  XXH3_state_t* h = XXH3_createState();
  if (h == nullptr) throw Error("out of memory creating a hash state");
  XXH3_128bits_reset(h);
  try {
    for (const auto& p : paths) {
      UniqueFd fd = files::open_in_root(root_fd, p, O_PATH);
      if (!fd) {
        hash_field(h, "missing:" + p);
        continue;
      }
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + quote(p));
      hash_tree(h, fd.get(), st, p, ignore);
    }
  } catch (...) {
    XXH3_freeState(h);
    throw;
  }
  XXH128_canonical_t canon;
  XXH128_canonicalFromHash(&canon, XXH3_128bits_digest(h));
  XXH3_freeState(h);
  return files::hex(canon.digest, sizeof canon.digest);
}

// ---- tar archives ----

namespace {

struct ArchiveReader {
  struct ::archive* a = archive_read_new();
  ~ArchiveReader() { archive_read_free(a); }
  ArchiveReader() = default;
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;
};

void open_tar(ArchiveReader& r, int fd) {
  if (r.a == nullptr) throw Error("out of memory opening an archive");
  archive_read_support_format_tar(r.a);
  archive_read_support_format_gnutar(r.a);
  archive_read_support_filter_gzip(r.a);
  archive_read_support_filter_bzip2(r.a);
  archive_read_support_filter_xz(r.a);
  archive_read_support_filter_zstd(r.a);
  archive_read_support_filter_none(r.a);
  if (::lseek(fd, 0, SEEK_SET) != 0) throw_errno("seek");
}

}  // namespace

bool is_tar_archive(int fd) {
  ArchiveReader r;
  open_tar(r, fd);
  bool tar = false;
  if (archive_read_open_fd(r.a, fd, 65536) == ARCHIVE_OK) {
    archive_entry* e = nullptr;
    tar = archive_read_next_header(r.a, &e) == ARCHIVE_OK;
  }
  ::lseek(fd, 0, SEEK_SET);
  return tar;
}

void extract_tar_beneath(int archive_fd, int dest_fd, const std::string& origin, const std::optional<Owner>& owner) {
  archive::ExtractIntoOptions o;
  o.privileged = ::geteuid() == 0;
  if (owner) o.owner = std::make_pair(std::uint32_t{owner->uid}, std::uint32_t{owner->gid});
  if (::lseek(archive_fd, 0, SEEK_SET) != 0) throw_errno("seek " + origin);
  try {
    archive::extract_into(archive_fd, dest_fd, o);
  } catch (const Error& e) {
    throw Error(origin + ": " + e.what(), e.code());
  }
}

}  // namespace strata::build
