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

std::vector<Change> Store::diff(std::string_view ctr) const {
  Container c = container(ctr);
  Image img = image_by_manifest(c.image);
  std::vector<Change> out;
  auto in_lower = [&](const std::string& rel) {
    for (const auto& dir : img.layer_dirs) {
      auto slash = rel.rfind('/');
      std::string wh = slash == std::string::npos ? ".wh." + rel : rel.substr(0, slash + 1) + ".wh." + rel.substr(slash + 1);
      if (exists(dir + "/" + wh)) return false;
      if (exists(dir + "/" + rel)) return true;
    }
    return false;
  };
  auto is_opaque = [](const std::string& path) {
    if (exists(path + "/.wh..wh..opq")) return true;
    for (const char* k : {"trusted.overlay.opaque", "user.overlay.opaque"}) {
      char v[2];
      if (::lgetxattr(path.c_str(), k, v, sizeof v) == 1 && v[0] == 'y') return true;
    }
    return false;
  };
  // Names visible below the upper in directory REL, merged over the layers.
  auto lower_names = [&](const std::string& rel) {
    std::set<std::string> names, hidden;
    for (const auto& dir : img.layer_dirs) {
      std::string p = dir + "/" + rel;
      struct stat st {};
      if (::lstat(p.c_str(), &st) != 0) continue;
      if (!S_ISDIR(st.st_mode)) break;
      for (const auto& n : list_dir(p)) {
        if (n.rfind(".wh.", 0) == 0) {
          if (n != ".wh..wh..opq") hidden.insert(n.substr(4));
          continue;
        }
        if (hidden.count(n) == 0) names.insert(n);
      }
      if (is_opaque(p)) break;
    }
    return names;
  };
  std::function<void(const std::string&)> walk = [&](const std::string& rel) {
    std::string dir = rel.empty() ? c.upper : c.upper + "/" + rel;
    for (const auto& n : list_dir(dir)) {
      std::string child = rel.empty() ? n : rel + "/" + n;
      struct stat st {};
      if (::lstat((c.upper + "/" + child).c_str(), &st) != 0) continue;
      if (n == ".wh..wh..opq") continue;
      if (n.rfind(".wh.", 0) == 0) {
        out.push_back({'D', "/" + (rel.empty() ? "" : rel + "/") + n.substr(4)});
        continue;
      }
      if (S_ISCHR(st.st_mode) && st.st_rdev == makedev(0, 0)) {
        out.push_back({'D', "/" + child});
        continue;
      }
      out.push_back({in_lower(child) ? 'C' : 'A', "/" + child});
      if (S_ISDIR(st.st_mode)) {
        if (is_opaque(c.upper + "/" + child)) {
          // What the lower layers had here is gone unless the upper has it again.
          auto upper_names = list_dir(c.upper + "/" + child);
          std::set<std::string> kept(upper_names.begin(), upper_names.end());
          for (const auto& lower : lower_names(child))
            if (kept.count(lower) == 0) out.push_back({'D', "/" + child + "/" + lower});
        }
        walk(child);
      }
    }
  };
  walk("");
  std::sort(out.begin(), out.end(), [](const Change& a, const Change& b) { return a.path < b.path; });
  return out;
}

}  // namespace strata::store
