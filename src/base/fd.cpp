#include "strata/fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>
#include <vector>

#include "strata/error.hpp"

namespace strata {

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_at(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("open " + quote(path));
  return UniqueFd(fd);
}

void write_all(int fd, std::string_view data, std::string_view what) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      throw_errno("write " + std::string(what));
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) {
    if (errno == ENOENT) return out;
    throw_errno("read directory " + quote(dir));
  }
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n != "." && n != "..") out.push_back(std::move(n));
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) throw SysError(err, "read directory " + quote(dir));
  std::sort(out.begin(), out.end());
  return out;
}

TempDir::TempDir(const std::string& parent, const std::string& prefix) {
  std::string tmpl = parent + "/" + prefix + "XXXXXX";
  if (::mkdtemp(tmpl.data()) == nullptr) throw_errno("create temporary directory in " + quote(parent));
  path_ = std::move(tmpl);
}

TempDir::~TempDir() {
  if (path_.empty()) return;
  try {
    remove_tree_at(AT_FDCWD, path_);
  } catch (const Error&) {
    // A destructor cannot report; what is left is under the staging area and
    // is cleaned by the next run that owns it.
  }
}

// Removes the entries of the open directory DIRFD (which lives on device DEV).
static void clear_dir(int dirfd, dev_t dev, const std::string& where) {
  UniqueFd dup(::fcntl(dirfd, F_DUPFD_CLOEXEC, 0));
  if (!dup) throw_errno("dup " + quote(where));
  DIR* d = ::fdopendir(dup.get());
  if (d == nullptr) throw_errno("read directory " + quote(where));
  dup.release();
  std::vector<std::pair<std::string, bool>> entries;
  errno = 0;
  while (dirent* e = ::readdir(d)) {
    std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    entries.emplace_back(std::move(name), e->d_type == DT_DIR || e->d_type == DT_UNKNOWN);
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) throw SysError(err, "read directory " + quote(where));
  for (const auto& [name, maybe_dir] : entries) {
    if (maybe_dir) {
      struct stat st {};
      if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;
        throw_errno("stat " + quote(where + "/" + name));
      }
      if (S_ISDIR(st.st_mode)) {
        if (st.st_dev != dev) throw Error("refusing to remove " + quote(where + "/" + name) + ": it is a mount point");
        // Make sure we may list and unlink inside even if the tree was made read-only.
        ::fchmodat(dirfd, name.c_str(), 0700, 0);
        UniqueFd child(::openat(dirfd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!child) throw_errno("open " + quote(where + "/" + name));
        clear_dir(child.get(), dev, where + "/" + name);
        if (::unlinkat(dirfd, name.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT)
          throw_errno("remove " + quote(where + "/" + name));
        continue;
      }
    }
    if (::unlinkat(dirfd, name.c_str(), 0) != 0 && errno != ENOENT) throw_errno("remove " + quote(where + "/" + name));
  }
}

void remove_tree_at(int dirfd, const std::string& path) {
  struct stat st {};
  if (::fstatat(dirfd, path.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno == ENOENT) return;
    throw_errno("stat " + quote(path));
  }
  if (S_ISDIR(st.st_mode)) {
    ::fchmodat(dirfd, path.c_str(), 0700, 0);
    UniqueFd dir(::openat(dirfd, path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!dir) throw_errno("open " + quote(path));
    clear_dir(dir.get(), st.st_dev, path);
    if (::unlinkat(dirfd, path.c_str(), AT_REMOVEDIR) != 0 && errno != ENOENT) throw_errno("remove " + quote(path));
  } else if (::unlinkat(dirfd, path.c_str(), 0) != 0 && errno != ENOENT) {
    throw_errno("remove " + quote(path));
  }
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + quote(path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

}  // namespace strata
