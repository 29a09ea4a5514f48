// Store::squash_layers: several stored layers merged into one.
//
// The extracted layer directories (OCI form: `.wh.NAME` whiteouts,
// `.wh..wh..opq` opaque markers, override_stat xattrs for rootless owners)
// are applied bottom first onto a staging directory in ROOT/tmp, which is
// then stored with create_layer. Files, symlinks and special files are hard
// links to the stored layers (same file system, never written again), so
// their contents, owners, modes, times and xattrs are kept exactly;
// directories are created with the metadata of the topmost layer that has
// them. Every step works relative to directory fds and never follows a
// symlink.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <string>
#include <vector>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"
#include "strata/store.hpp"

namespace strata::store {

namespace {

constexpr std::string_view kWhiteout = ".wh.";
constexpr const char* kOpaque = ".wh..wh..opq";

// lstat of NAME in DIRFD; false when it does not exist.
bool stat_at(int dirfd, const std::string& name, struct stat& st, const std::string& shown) {
  if (::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) return true;
  if (errno == ENOENT) return false;
  throw_errno("stat " + quote(shown));
}

void remove_entry(int dirfd, const std::string& name, const std::string& shown) {
  struct stat st {};
  if (!stat_at(dirfd, name, st, shown)) return;
  if (S_ISDIR(st.st_mode)) {
    remove_tree_at(dirfd, name);
  } else if (::unlinkat(dirfd, name.c_str(), 0) != 0) {
    throw_errno("remove " + quote(shown));
  }
}

// Gives the directory TO the owner, mode, xattrs and times of FROM. The
// mode is returned: without privilege the directory is kept writable for
// the layers still to come and gets its mode at the end.
mode_t copy_dir_metadata(int from, int to, const std::string& shown) {
  struct stat st {};
  if (::fstat(from, &st) != 0) throw_errno("stat " + quote(shown));
  struct stat cur {};
  if (::fstat(to, &cur) != 0) throw_errno("stat " + quote(shown));
  if ((cur.st_uid != st.st_uid || cur.st_gid != st.st_gid) && ::fchown(to, st.st_uid, st.st_gid) != 0) {
    throw_errno("set the owner of " + quote(shown));
  }
  mode_t mode = st.st_mode & 07777;
  if (::fchmod(to, ::geteuid() == 0 ? mode : (mode | S_IRWXU)) != 0) throw_errno("set the mode of " + quote(shown));
  auto names_of = [&](int fd) {
    std::vector<std::string> out;
    ssize_t n = ::flistxattr(fd, nullptr, 0);
    if (n < 0) throw_errno("list the xattrs of " + quote(shown));
    std::string buf(static_cast<size_t>(n), '\0');
    n = ::flistxattr(fd, buf.data(), buf.size());
    if (n < 0) throw_errno("list the xattrs of " + quote(shown));
    for (size_t i = 0; i < static_cast<size_t>(n);) {
      std::string name(buf.c_str() + i);
      i += name.size() + 1;
      if (!name.empty()) out.push_back(name);
    }
    return out;
  };
  for (const auto& name : names_of(to)) {
    if (::fremovexattr(to, name.c_str()) != 0 && errno != ENODATA) throw_errno("remove xattr " + name + " of " + quote(shown));
  }
  for (const auto& name : names_of(from)) {
    ssize_t n = ::fgetxattr(from, name.c_str(), nullptr, 0);
    if (n < 0) throw_errno("read xattr " + name + " of " + quote(shown));
    std::string value(static_cast<size_t>(n), '\0');
    n = ::fgetxattr(from, name.c_str(), value.data(), value.size());
    if (n < 0) throw_errno("read xattr " + name + " of " + quote(shown));
    if (::fsetxattr(to, name.c_str(), value.data(), static_cast<size_t>(n), 0) != 0) {
      throw_errno("set xattr " + name + " of " + quote(shown));
    }
  }
  struct timespec times[2] = {st.st_atim, st.st_mtim};
  if (::futimens(to, times) != 0) throw_errno("set the times of " + quote(shown));
  return mode;
}

using Modes = std::map<std::string, mode_t>;  // directory (relative) -> its final mode

void link_entry(int from_dir, int to_dir, const std::string& name, const std::string& shown) {
  if (::linkat(from_dir, name.c_str(), to_dir, name.c_str(), 0) != 0) throw_errno("link " + quote(shown));
}

// Applies the layer directory FROM onto the merged directory TO (REL names
// it in messages). OPAQUE: TO must hide whatever lies beneath the merged
// layer (it replaced a whiteout or a non-directory).
void merge_dir(int from, int to, const std::string& rel, bool opaque, Modes& modes) {
  std::vector<std::string> names = read_dir_names(from, rel);
  auto path_of = [&](const std::string& n) { return rel.empty() ? n : rel + "/" + n; };
  bool from_opaque = std::find(names.begin(), names.end(), kOpaque) != names.end();
  if (from_opaque) {
    // An opaque directory drops what the layers below put in it.
    for (const auto& n : read_dir_names(to, rel)) remove_entry(to, n, path_of(n));
  }
  struct stat mst {};
  if (from_opaque) {
    link_entry(from, to, kOpaque, path_of(kOpaque));
  } else if (opaque && !stat_at(to, kOpaque, mst, path_of(kOpaque))) {
    // A marker of our own, with the directory's time (the layer's bytes
    // depend only on the layers merged).
    struct stat dst {};
    if (::fstat(from, &dst) != 0) throw_errno("stat " + quote(rel));
    UniqueFd marker(::openat(to, kOpaque, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!marker) throw_errno("create " + quote(path_of(kOpaque)));
    if (::fchmod(marker.get(), 0644) != 0) throw_errno("set the mode of " + quote(path_of(kOpaque)));
    struct timespec times[2] = {dst.st_mtim, dst.st_mtim};
    if (::futimens(marker.get(), times) != 0) throw_errno("set the times of " + quote(path_of(kOpaque)));
  }
  for (const auto& name : names) {
    const std::string shown = path_of(name);
    if (name.rfind(kWhiteout, 0) == 0) {
      std::string target = name.substr(kWhiteout.size());
      if (target.rfind(kWhiteout, 0) == 0) continue;  // .wh..wh.* markers (opaque handled above)
      if (target.empty() || target == "." || target == ".." || target.find('/') != std::string::npos) {
        throw Error("bad whiteout " + quote(shown) + " in a layer");
      }
      // A whiteout removes what the layers below added and stays, for the
      // base beneath the merged layer.
      remove_entry(to, target, path_of(target));
      struct stat st {};
      if (!stat_at(to, name, st, shown)) link_entry(from, to, name, shown);
      continue;
    }
    struct stat src {};
    if (!stat_at(from, name, src, shown)) continue;
    struct stat dst {};
    bool have = stat_at(to, name, dst, shown);
    // A name re-created after a whiteout of an earlier layer.
    std::string wh = std::string(kWhiteout) + name;
    struct stat wst {};
    bool was_whiteout = stat_at(to, wh, wst, path_of(wh));
    if (was_whiteout && ::unlinkat(to, wh.c_str(), 0) != 0) throw_errno("remove " + quote(path_of(wh)));
    if (!S_ISDIR(src.st_mode)) {
      if (have) remove_entry(to, name, shown);
      link_entry(from, to, name, shown);
      continue;
    }
    bool sub_opaque = was_whiteout;
    if (have && !S_ISDIR(dst.st_mode)) {
      // A directory replacing a file: nothing beneath may show through.
      remove_entry(to, name, shown);
      have = false;
      sub_opaque = true;
    }
    if (!have && ::mkdirat(to, name.c_str(), 0700) != 0) throw_errno("create " + quote(shown));
    UniqueFd sub_from(::openat(from, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub_from) throw_errno("open " + quote(shown));
    UniqueFd sub_to(::openat(to, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (!sub_to) throw_errno("open " + quote(shown));
    merge_dir(sub_from.get(), sub_to.get(), shown, sub_opaque, modes);
    modes[shown] = copy_dir_metadata(sub_from.get(), sub_to.get(), shown);
  }
}

}  // namespace

Layer Store::squash_layers(const std::vector<oci::Digest>& diff_ids) {
  if (diff_ids.size() == 1) return layer(diff_ids.front());
  std::vector<Layer> layers;
  for (const auto& d : diff_ids) layers.push_back(layer(d));
  TempDir staging(tmp_dir(), "squash.");
  UniqueFd merged = open_at(AT_FDCWD, staging.path(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  Modes modes;
  for (const auto& l : layers) {
    UniqueFd from = open_at(AT_FDCWD, l.dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
    try {
      merge_dir(from.get(), merged.get(), {}, false, modes);
    } catch (const Error& e) {
      throw Error("squash layer " + l.diff_id.str() + ": " + e.what());
    }
  }
  // Final modes, deepest first (a directory may lose its write or search
  // permission only once nothing more goes into it). Directories removed by
  // a later layer are gone and skipped.
  std::vector<std::pair<std::string, mode_t>> order(modes.begin(), modes.end());
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return std::count(a.first.begin(), a.first.end(), '/') > std::count(b.first.begin(), b.first.end(), '/');
  });
  for (const auto& [rel, mode] : order) {
    UniqueFd dir;
    int at = merged.get();
    std::size_t start = 0;
    bool found = true;
    while (start <= rel.size()) {
      std::size_t slash = rel.find('/', start);
      std::string comp = rel.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
      UniqueFd next(::openat(at, comp.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (!next) {
        if (errno == ENOENT || errno == ENOTDIR) {
          found = false;
          break;
        }
        throw_errno("open " + quote(rel));
      }
      dir = std::move(next);
      at = dir.get();
      if (slash == std::string::npos) break;
      start = slash + 1;
    }
    if (found && ::fchmod(dir.get(), mode) != 0) throw_errno("set the mode of " + quote(rel));
  }
  merged.reset();
  LayerOptions options;
  options.changeset = false;  // the merged tree is already in OCI form
  return create_layer(staging.path(), options);
}

}  // namespace strata::store
