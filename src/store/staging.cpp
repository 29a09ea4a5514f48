// Staging and the small helpers the store's files share (store_internal.hpp).
#include "store_internal.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <random>
#include <set>

#include "strata/error.hpp"
#include "strata/fileio.hpp"

namespace strata::store {

using oci::json;

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<std::uint64_t>(::getpid()));
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += hex[rng() & 15];
  return s;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void mkdir_if_missing(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("create directory " + quote(path));
}

void fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::fsync(fd.get());
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    throw Error("invalid JSON in " + quote(where) + ": " + e.what());
  }
}

FileLock::FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
  if (!fd_) throw_errno("open lock " + quote(path));
  while (::flock(fd_.get(), LOCK_EX) != 0)
    if (errno != EINTR) throw_errno("lock " + quote(path));
}

bool is_hex(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

namespace {
std::int64_t usage_below(int dirfd, const std::string& name, std::set<std::pair<dev_t, ino_t>>& seen) {
  struct stat st {};
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) return 0;
  if (!seen.emplace(st.st_dev, st.st_ino).second) return 0;
  std::int64_t total = static_cast<std::int64_t>(st.st_blocks) * 512;
  if (!S_ISDIR(st.st_mode)) return total;
  UniqueFd dir(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dir) return total;
  for (const auto& child : read_dir_names(dir.get(), name)) total += usage_below(dir.get(), child, seen);
  return total;
}
}  // namespace

std::int64_t disk_usage_at(int dirfd, const std::string& name) {
  std::set<std::pair<dev_t, ino_t>> seen;
  return usage_below(dirfd, name, seen);
}

std::string normalise_name(std::string_view ref) {
  return oci::Reference::parse(ref).str();
}

std::string entry_name(const json& entry) {
  if (!entry.contains("annotations") || !entry["annotations"].is_object()) return {};
  const auto& a = entry["annotations"];
  if (!a.contains(oci::kAnnotationRefName) || !a[oci::kAnnotationRefName].is_string()) return {};
  auto r = oci::Reference::try_parse(a[oci::kAnnotationRefName].get<std::string>());
  return r ? r->str() : std::string();
}

std::string entry_digest(const json& entry) {
  return entry.is_object() && entry.contains("digest") && entry["digest"].is_string() ? entry["digest"].get<std::string>()
                                                                                     : std::string();
}

void atomic_write(const std::string& tmp, const std::string& path, std::string_view data) {
  std::string stage = tmp + "/file-" + std::to_string(::getpid()) + "-" + random_hex(8);
  UniqueFd fd(::open(stage.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + quote(stage));
  try {
    write_all(fd.get(), data, quote(stage));
    if (::fsync(fd.get()) != 0) throw_errno("sync " + quote(stage));
    fd.reset();
    if (::rename(stage.c_str(), path.c_str()) != 0) throw_errno("rename into " + quote(path));
  } catch (...) {
    ::unlink(stage.c_str());
    throw;
  }
  fsync_dir(parent_of(path));
}

Staged::Staged(const std::string& tmp, const std::string& kind, bool dir) {
  path_ = tmp + "/" + kind + "-" + std::to_string(::getpid()) + "-" + random_hex(12);
  if (dir) {
    if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("create " + quote(path_));
  } else {
    fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd_) throw_errno("create " + quote(path_));
  }
}

Staged::~Staged() {
  fd_.reset();
  if (!path_.empty()) {
    try {
      remove_tree_at(AT_FDCWD, path_);
    } catch (const Error&) {
    }
  }
}

bool Staged::commit(const std::string& target) {
  fd_.reset();
  if (::rename(path_.c_str(), target.c_str()) != 0) {
    if (errno == EEXIST || errno == ENOTEMPTY) return false;
    throw_errno("rename into " + quote(target));
  }
  path_.clear();
  fsync_dir(parent_of(target));
  return true;
}

void sync_store(const std::string& root) {
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::syncfs(fd.get());
}

json read_index(const std::string& root) {
  std::string path = root + "/index.json";
  json j = parse_json(read_file(path), path);
  if (!j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
    throw Error(quote(path) + " is not an OCI image index");
  return j;
}

void write_index(const std::string& root, const json& index) {
  atomic_write(root + "/tmp", root + "/index.json", index.dump());
}

}  // namespace strata::store
