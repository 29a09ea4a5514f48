#include "strata/fd.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"

namespace strata {

void close_descriptors_except(std::span<const int> keep) noexcept {
  // The kept descriptors in increasing order, found one at a time (KEEP is a
  // handful): every gap between them is closed.
  unsigned from = 3;
  while (true) {
    unsigned next = ~0U;
    for (int fd : keep) {
      if (fd >= 0 && static_cast<unsigned>(fd) >= from && static_cast<unsigned>(fd) < next) next = static_cast<unsigned>(fd);
    }
    if (next == ~0U) break;
    if (next > from) ::close_range(from, next - 1, 0);
    from = next + 1;
  }
  ::close_range(from, ~0U, 0);
}

void UniqueFd::reset(int fd) noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = fd;
}

UniqueFd open_at(int dirfd, const std::string& path, int flags, unsigned mode) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) throw_errno("open " + quote(path));
  return UniqueFd(fd);
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
  for (const auto& entry : read_dir_entries(dirfd, where)) {
    const std::string& name = entry.name;
    bool maybe_dir = entry.type == DT_DIR || entry.type == DT_UNKNOWN;
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


}  // namespace strata
