// Containers: a record, an upper and a work dir per container under
// containers/<id>/; the lock a running container holds; where a container is
// mounted; removal.
#include "strata/store.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

bool valid_name(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!ok(n[0])) return false;
  for (char c : n)
    if (!(ok(c) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

namespace {

// An F_WRLCK over the whole file, as F_OFD_SETLK/F_OFD_GETLK take it.
struct flock whole_file_lock() {
  struct flock l {};
  l.l_type = F_WRLCK;
  l.l_whence = SEEK_SET;
  l.l_start = 0;
  l.l_len = 0;
  l.l_pid = 0;
  return l;
}

[[noreturn]] void throw_running(const Container& c) {
  throw ContainerRunning("container " + quote(c.name) + " is running; stop it first");
}

}  // namespace

Container read_container(const std::string& root, const std::string& id) {
  std::string dir = root + "/containers/" + id;
  std::string path = dir + "/container.json";
  json j = parse_json(read_file(path), path);
  Container c;
  c.id = j.value("id", id);
  c.name = j.value("name", "");
  c.image = oci::Digest::parse(j.value("image", ""));
  c.image_name = j.value("imageName", "");
  c.created = j.value("created", "");
  if (j.contains("volumes") && j["volumes"].is_array())
    for (const auto& v : j["volumes"])
      if (v.is_string()) c.volumes.push_back(v.get<std::string>());
  if (j.contains("anonymousVolumes") && j["anonymousVolumes"].is_array())
    for (const auto& v : j["anonymousVolumes"])
      if (v.is_string() && std::find(c.volumes.begin(), c.volumes.end(), v.get<std::string>()) != c.volumes.end())
        c.anonymous_volumes.push_back(v.get<std::string>());
  c.dir = dir;
  c.upper = dir + "/upper";
  c.work = dir + "/work";
  return c;
}

json container_json(const Container& c, const std::vector<std::string>& mounts) {
  json j = {{"id", c.id}, {"name", c.name}, {"image", c.image.str()}, {"imageName", c.image_name}, {"created", c.created}};
  j["mounts"] = mounts;
  if (!c.volumes.empty()) j["volumes"] = c.volumes;
  if (!c.anonymous_volumes.empty()) j["anonymousVolumes"] = c.anonymous_volumes;
  return j;
}

std::vector<std::string> recorded_mounts(const Container& c) {
  std::vector<std::string> out;
  std::string path = c.dir + "/container.json";
  if (!exists(path)) return out;
  json j = parse_json(read_file(path), path);
  if (j.contains("mounts") && j["mounts"].is_array())
    for (const auto& m : j["mounts"])
      if (m.is_string()) out.push_back(m.get<std::string>());
  return out;
}

std::vector<Container> Store::containers() const {
  std::vector<Container> out;
  for (const auto& id : list_dir(root_ + "/containers")) {
    if (!exists(root_ + "/containers/" + id + "/container.json")) continue;
    try {
      out.push_back(read_container(root_, id));
    } catch (const Error&) {
    }
  }
  std::stable_sort(out.begin(), out.end(), [](const Container& a, const Container& b) { return a.created < b.created; });
  return out;
}

std::optional<Container> Store::find_container(std::string_view name_or_id) const {
  auto all = containers();
  for (const auto& c : all)
    if (c.name == name_or_id || c.id == name_or_id) return c;
  if (name_or_id.size() >= 4 && is_hex(name_or_id)) {
    std::vector<Container> m;
    for (const auto& c : all)
      if (c.id.rfind(name_or_id, 0) == 0) m.push_back(c);
    if (m.size() > 1) throw Error("container id " + quote(name_or_id) + " is ambiguous");
    if (m.size() == 1) return m[0];
  }
  return std::nullopt;
}

Container Store::container(std::string_view name_or_id) const {
  if (auto c = find_container(name_or_id)) return *c;
  throw Error("no such container: " + quote(name_or_id));
}

Container Store::create_container(std::string_view image_ref, std::string_view name,
                                  const std::vector<std::string>& volumes,
                                  const std::vector<std::string>& anonymous) {
  hold_gc();
  Image img = image(image_ref);
  if (!name.empty() && !valid_name(name))
    throw UsageError("invalid container name " + quote(name) + " (letters, digits, '_', '.', '-')");
  for (const auto& v : volumes) volume_data(v);  // checks the name
  for (const auto& v : anonymous) volume_data(v);
  Container c;
  c.id = random_hex(64);
  c.name = name.empty() ? "strata-" + c.id.substr(0, 12) : std::string(name);
  c.image = img.manifest_digest;
  c.image_name = std::string(image_ref);
  c.created = oci::now_rfc3339();
  for (const auto& v : volumes)
    if (std::find(c.volumes.begin(), c.volumes.end(), v) == c.volumes.end()) c.volumes.push_back(v);
  for (const auto& v : anonymous) {
    if (std::find(c.volumes.begin(), c.volumes.end(), v) != c.volumes.end())
      throw UsageError("volume " + quote(v) + " is given twice");
    c.volumes.push_back(v);
    c.anonymous_volumes.push_back(v);
  }
  Staged st(tmp_dir(), "ctr", true);
  mkdir_if_missing(st.path() + "/upper", 0755);
  mkdir_if_missing(st.path() + "/work", 0700);
  c.dir = root_ + "/containers/" + c.id;
  c.upper = c.dir + "/upper";
  c.work = c.dir + "/work";
  {
    UniqueFd fd(::open((st.path() + "/container.json").c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create container record");
    write_all(fd.get(), container_json(c, {}).dump(), "container.json");
    ::fsync(fd.get());
  }
  FileLock lock(root_ + "/lock");
  if (find_container(c.name)) throw Error("container name " + quote(c.name) + " is already in use");
  for (const auto& v : c.volumes) {
    bool anon = std::find(c.anonymous_volumes.begin(), c.anonymous_volumes.end(), v) != c.anonymous_volumes.end();
    ensure_volume(root_, v, anon ? std::map<std::string, std::string>{{kAnonymousVolumeLabel, ""}} : std::map<std::string, std::string>{});
  }
  if (!st.commit(c.dir)) throw Error("container id collision: " + c.id);
  return c;
}

void Store::record_mount(const Container& c, const std::string& mountpoint) {
  FileLock lock(root_ + "/lock");
  Container cur = read_container(root_, c.id);
  auto mounts = recorded_mounts(cur);
  std::vector<std::string> live;
  for (const auto& m : mounts)
    if (m != mountpoint && is_mount_point(m)) live.push_back(m);
  live.push_back(mountpoint);
  atomic_write(tmp_dir(), cur.dir + "/container.json", container_json(cur, live).dump());
}

void Store::forget_mount(const Container& c, const std::string& mountpoint) {
  FileLock lock(root_ + "/lock");
  if (!exists(c.dir + "/container.json")) return;
  Container cur = read_container(root_, c.id);
  std::vector<std::string> live;
  for (const auto& m : recorded_mounts(cur))
    if (m != mountpoint && is_mount_point(m)) live.push_back(m);
  atomic_write(tmp_dir(), cur.dir + "/container.json", container_json(cur, live).dump());
}

std::vector<std::string> Store::mounted_at(const Container& c) const {
  std::vector<std::string> out;
  for (const auto& m : recorded_mounts(c))
    if (is_mount_point(m)) out.push_back(m);
  return out;
}

Store::ContainerLock Store::lock_container(const Container& c) const {
  std::string path = c.dir + "/lock";
  UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("open lock " + quote(path));
  struct flock l = whole_file_lock();
  while (::fcntl(fd.get(), F_OFD_SETLK, &l) != 0) {
    if (errno == EAGAIN || errno == EACCES) throw_running(c);
    if (errno != EINTR) throw_errno("lock " + quote(path));
  }
  return ContainerLock(std::move(fd));
}

bool Store::running(const Container& c) const {
  UniqueFd fd(::open((c.dir + "/lock").c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return false;
  struct flock l = whole_file_lock();
  if (::fcntl(fd.get(), F_OFD_GETLK, &l) != 0) return false;
  return l.l_type != F_UNLCK;
}

void Store::remove_container(std::string_view name_or_id, bool force, bool volumes) {
  hold_gc();
  Container c = container(name_or_id);
  ContainerLock use = lock_container(c);
  auto mounted = mounted_at(c);
  if (!mounted.empty()) {
    if (!force)
      throw Error("container " + quote(c.name) + " is mounted at " + quote(mounted[0]) + " (unmount it first, or use -f)");
    for (const auto& m : mounted) fs::detach_stratafs(m);
  }
  std::vector<std::string> trash{tmp_dir() + "/rm-" + std::to_string(::getpid()) + "-" + random_hex(8)};
  {
    FileLock lock(root_ + "/lock");
    if (::rename(c.dir.c_str(), trash[0].c_str()) != 0) throw_errno("remove container " + quote(c.name));
    // Its anonymous volumes, unless another container names them too.
    for (const auto& name : volumes ? c.anonymous_volumes : std::vector<std::string>{}) {
      auto v = find_volume(name);
      if (v && volume_users(name).empty()) trash.push_back(discard_volume(root_, *v));
    }
  }
  for (const auto& t : trash) remove_tree_at(AT_FDCWD, t);
}

}  // namespace strata::store
