// Commit and diff: a container's upper becomes a layer and a new image; the
// changes an upper holds relative to its image.
#include "strata/store.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <functional>
#include <set>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

Image Store::commit(std::string_view ctr, const CommitOptions& options, std::string_view name) {
  hold_gc();
  if (!name.empty()) oci::Reference::parse(name);
  Container c = container(ctr);
  ContainerLock use = lock_container(c);
  auto mounted = mounted_at(c);
  if (!mounted.empty())
    throw Error("container " + quote(c.name) + " is mounted at " + quote(mounted[0]) +
                "; unmount it before commit so the snapshot is consistent");
  Image base = image_by_manifest(c.image);
  json config = base.config;
  if (options.edit_config) config = options.edit_config(config);
  report("Committing the changes of " + c.name);
  Layer l = create_layer(c.upper);
  std::string now = oci::now_rfc3339();
  config["created"] = now;
  if (!options.author.empty()) config["author"] = options.author;
  if (!config.contains("rootfs") || !config["rootfs"].is_object()) config["rootfs"] = {{"type", "layers"}};
  if (!config["rootfs"].contains("diff_ids") || !config["rootfs"]["diff_ids"].is_array())
    config["rootfs"]["diff_ids"] = json::array();
  config["rootfs"]["type"] = "layers";
  config["rootfs"]["diff_ids"].push_back(l.diff_id.str());
  oci::History h;
  h.created = now;
  h.created_by = options.created_by.empty() ? "strata commit" : options.created_by;
  h.comment = options.message;
  h.author = options.author;
  if (!config.contains("history") || !config["history"].is_array()) config["history"] = json::array();
  config["history"].push_back(h.to_json());
  std::vector<std::string> names;
  if (!name.empty()) names.emplace_back(name);
  Image img = write_image(config, names);
  // The container goes on from the new image with an empty upper.
  Staged fresh_upper(tmp_dir(), "upper", true);
  Staged fresh_work(tmp_dir(), "work", true);
  ::chmod(fresh_work.path().c_str(), 0700);
  {
    FileLock lock(root_ + "/lock");
    Container cur = read_container(root_, c.id);
    cur.image = img.manifest_digest;
    cur.image_name = name.empty() ? img.config_digest.short_id() : std::string(name);
    atomic_write(tmp_dir(), cur.dir + "/container.json", container_json(cur, {}).dump());
  }
  // Swap the fresh directories in atomically; the old ones are left at the
  // staging paths and removed with them.
  if (::renameat2(AT_FDCWD, fresh_upper.path().c_str(), AT_FDCWD, c.upper.c_str(), RENAME_EXCHANGE) != 0)
    throw_errno("replace upper of " + quote(c.name));
  if (::renameat2(AT_FDCWD, fresh_work.path().c_str(), AT_FDCWD, c.work.c_str(), RENAME_EXCHANGE) != 0)
    throw_errno("replace work dir of " + quote(c.name));
  return img;
}

namespace {

// One lower layer's directory at the place a diff walk has reached.
struct LowerDir {
  UniqueFd fd;           // open when the layer has a directory here
  bool blocked = false;  // the layer has something else here: nothing below it shows through
};

bool exists_at(int dirfd, const std::string& name) {
  struct stat st {};
  return ::fstatat(dirfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
}

bool is_opaque_dir(int fd) {
  if (exists_at(fd, ".wh..wh..opq")) return true;
  for (const char* k : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
    char v[2];
    if (::fgetxattr(fd, k, v, sizeof v) == 1 && v[0] == 'y') return true;
  }
  return false;
}

// LOWERS (top layer first), one level down into NAME.
std::vector<LowerDir> descend(const std::vector<LowerDir>& lowers, const std::string& name) {
  std::vector<LowerDir> out(lowers.size());
  for (std::size_t i = 0; i < lowers.size(); ++i) {
    if (!lowers[i].fd) continue;
    struct stat st {};
    if (::fstatat(lowers[i].fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
    if (!S_ISDIR(st.st_mode)) {
      out[i].blocked = true;
      continue;
    }
    out[i].fd.reset(::openat(lowers[i].fd.get(), name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  }
  return out;
}

// Whether NAME, in the directory LOWERS stand for, is visible in the image.
bool in_lower(const std::vector<LowerDir>& lowers, const std::string& name) {
  for (const auto& l : lowers) {
    if (!l.fd) continue;
    if (exists_at(l.fd.get(), ".wh." + name)) return false;
    if (exists_at(l.fd.get(), name)) return true;
  }
  return false;
}

// Names visible in the image in the directory LOWERS stand for.
std::set<std::string> lower_names(const std::vector<LowerDir>& lowers, const std::string& shown) {
  std::set<std::string> names, hidden;
  for (const auto& l : lowers) {
    if (l.blocked) break;
    if (!l.fd) continue;
    for (const auto& n : read_dir_names(l.fd.get(), shown)) {
      if (n.rfind(".wh.", 0) == 0) {
        if (n != ".wh..wh..opq") hidden.insert(n.substr(4));
        continue;
      }
      if (hidden.count(n) == 0) names.insert(n);
    }
    if (is_opaque_dir(l.fd.get())) break;
  }
  return names;
}

}  // namespace

std::vector<Change> Store::diff(std::string_view ctr) const {
  Container c = container(ctr);
  Image img = image_by_manifest(c.image);
  std::vector<Change> out;
  // The walk is relative to open directories (upper and each layer side by
  // side), so paths longer than PATH_MAX are reported like any other.
  std::function<void(int, const std::string&, const std::vector<LowerDir>&)> walk =
      [&](int upper_fd, const std::string& rel, const std::vector<LowerDir>& lowers) {
        for (const auto& n : read_dir_names(upper_fd, "/" + rel)) {
          std::string child = rel.empty() ? n : rel + "/" + n;
          struct stat st {};
          if (::fstatat(upper_fd, n.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
          if (n == ".wh..wh..opq") continue;
          if (n.rfind(".wh.", 0) == 0) {
            out.push_back({'D', "/" + (rel.empty() ? "" : rel + "/") + n.substr(4)});
            continue;
          }
          if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
            out.push_back({'D', "/" + child});
            continue;
          }
          out.push_back({in_lower(lowers, n) ? 'C' : 'A', "/" + child});
          if (!S_ISDIR(st.st_mode)) continue;
          UniqueFd dir(::openat(upper_fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
          if (!dir) throw_errno("read directory " + quote("/" + child) + " of container " + quote(c.name));
          std::vector<LowerDir> below = descend(lowers, n);
          if (is_opaque_dir(dir.get())) {
            // What the lower layers had here is gone unless the upper has it again.
            auto upper_names = read_dir_names(dir.get(), "/" + child);
            std::set<std::string> kept(upper_names.begin(), upper_names.end());
            for (const auto& lower : lower_names(below, "/" + child))
              if (kept.count(lower) == 0) out.push_back({'D', "/" + child + "/" + lower});
          }
          walk(dir.get(), child, below);
        }
      };
  UniqueFd upper = open_at(AT_FDCWD, c.upper, O_RDONLY | O_DIRECTORY);
  std::vector<LowerDir> layers(img.layer_dirs.size());
  for (std::size_t i = 0; i < layers.size(); ++i)
    layers[i].fd.reset(::open(img.layer_dirs[i].c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  walk(upper.get(), "", layers);
  std::sort(out.begin(), out.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
  return out;
}

}  // namespace strata::store
