// Volumes, named and anonymous: volumes/<name>/ holds volume.json and _data/, the directory
// containers bind-mount. A volume is staged in tmp/ whole and renamed into
// place under ROOT/lock; removal renames it back into tmp/ under the same
// lock after checking the container records, so a container being created
// with a volume and the volume's removal never interleave.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/store.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

namespace {

void check_volume_name(std::string_view name) {
  if (!valid_name(name))
    throw UsageError("invalid volume name " + quote(name) +
                     " (1 to 128 letters, digits, '_', '.', '-', starting with a letter or digit)");
}

Volume read_volume(const std::string& root, const std::string& name) {
  Volume v;
  v.name = name;
  v.dir = root + "/volumes/" + name;
  v.data = v.dir + "/_data";
  std::string path = v.dir + "/volume.json";
  json j = parse_json(read_file(path), path);
  v.created = j.value("created", "");
  if (j.contains("labels") && j["labels"].is_object())
    for (auto it = j["labels"].begin(); it != j["labels"].end(); ++it)
      if (it.value().is_string()) v.labels[it.key()] = it.value().get<std::string>();
  return v;
}

}  // namespace

std::string new_volume_name() { return random_hex(64); }

std::string discard_volume(const std::string& root, const Volume& v) {
  std::string to = root + "/tmp/rm-" + std::to_string(::getpid()) + "-" + random_hex(8);
  if (::rename(v.dir.c_str(), to.c_str()) != 0) throw_errno("remove volume " + quote(v.name));
  return to;
}

Volume ensure_volume(const std::string& root, std::string_view name_in, const std::map<std::string, std::string>& labels) {
  std::string name(name_in);
  std::string dir = root + "/volumes/" + name;
  if (exists(dir + "/volume.json")) return read_volume(root, name);
  Staged st(root + "/tmp", "vol", true);
  mkdir_if_missing(st.path() + "/_data", 0755);
  json j = {{"name", name}, {"created", oci::now_rfc3339()}, {"driver", "local"}, {"labels", labels}};
  {
    UniqueFd fd(::open((st.path() + "/volume.json").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create the record of volume " + quote(name));
    write_all(fd.get(), j.dump(), "volume.json");
    if (::fsync(fd.get()) != 0) throw_errno("sync the record of volume " + quote(name));
  }
  fsync_dir(st.path());
  if (!st.commit(dir)) throw Error("volume " + quote(name) + " exists but has no volume.json in " + quote(dir));
  return read_volume(root, name);
}

Volume Store::create_volume(std::string_view name, const std::map<std::string, std::string>& labels) {
  std::string n = name.empty() ? new_volume_name() : std::string(name);
  check_volume_name(n);
  hold_gc();
  FileLock lock(root_ + "/lock");
  return ensure_volume(root_, n, labels);
}

std::string Store::volume_data(std::string_view name) const {
  check_volume_name(name);
  return root_ + "/volumes/" + std::string(name) + "/_data";
}

std::optional<Volume> Store::find_volume(std::string_view name) const {
  if (!valid_name(name)) return std::nullopt;
  std::string n(name);
  if (!exists(root_ + "/volumes/" + n + "/volume.json")) return std::nullopt;
  return read_volume(root_, n);
}

Volume Store::volume(std::string_view name) const {
  if (auto v = find_volume(name)) return *v;
  throw Error("no such volume: " + quote(name));
}

std::vector<Volume> Store::volumes() const {
  std::vector<Volume> out;
  for (const auto& name : list_dir(root_ + "/volumes")) {
    try {
      if (auto v = find_volume(name)) out.push_back(*v);
    } catch (const Error&) {
      // A record that does not parse: not a volume strata made.
    }
  }
  std::sort(out.begin(), out.end(), [](const Volume& a, const Volume& b) { return a.name < b.name; });
  return out;
}

std::vector<Container> Store::volume_users(std::string_view name) const {
  std::vector<Container> out;
  for (const auto& c : containers())
    if (std::find(c.volumes.begin(), c.volumes.end(), name) != c.volumes.end()) out.push_back(c);
  return out;
}

void Store::remove_volume(std::string_view name, bool force) {
  hold_gc();
  std::string trash;
  {
    FileLock lock(root_ + "/lock");
    Volume v = volume(name);
    auto users = volume_users(v.name);
    for (const auto& c : users)
      if (running(c)) throw Error("volume " + quote(v.name) + " is in use by running container " + quote(c.name));
    if (!users.empty() && !force)
      throw Error("volume " + quote(v.name) + " is in use by container " + quote(users[0].name) +
                  " (remove the container first, or use -f)");
    trash = discard_volume(root_, v);
  }
  remove_tree_at(AT_FDCWD, trash);
}

std::vector<std::string> Store::prune_volumes(std::int64_t& bytes, bool all) {
  hold_gc();
  std::vector<std::string> removed, trash;
  {
    FileLock lock(root_ + "/lock");
    std::vector<std::string> used;
    for (const auto& c : containers()) used.insert(used.end(), c.volumes.begin(), c.volumes.end());
    for (const auto& v : volumes()) {
      if (std::find(used.begin(), used.end(), v.name) != used.end() || (!all && !v.anonymous())) continue;
      std::int64_t size = disk_usage_at(AT_FDCWD, v.dir);
      trash.push_back(discard_volume(root_, v));
      bytes += size;
      removed.push_back(v.name);
    }
  }
  for (const auto& t : trash) remove_tree_at(AT_FDCWD, t);
  return removed;
}

}  // namespace strata::store
