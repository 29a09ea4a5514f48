// Garbage collection: the shared gc lock every open store holds while it
// may write, and prune, which removes what nothing refers to.
#include "strata/store.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <ctime>
#include <set>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

void Store::hold_gc() {
  if (!gc_ || !gc_->fd || gc_->shared) return;
  while (::flock(gc_->fd.get(), LOCK_SH) != 0)
    if (errno != EINTR) return;
  gc_->shared = true;
}

namespace {

// Unmounts what a killed process left mounted in its staging directory DIR
// (a build step mounts its union on DIR/mnt, a COPY --from source on
// DIR/from), so that DIR can be removed.
// Unmounts what a dead owner left mounted in its staging directory DIR (a
// build step's union); staging files (a pull's partial download) hold none.
void unmount_leftovers(const std::string& dir) {
  struct stat st {};
  if (::lstat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return;
  for (const auto& n : list_dir(dir)) {
    if (is_mount_point(dir + "/" + n)) fs::detach_stratafs(dir + "/" + n);
  }
}

}  // namespace

std::string Store::blob_path(const oci::Digest& digest) const { return root_ + "/blobs/sha256/" + digest.hex(); }

PruneResult Store::prune() {
  PruneResult res;
  // Exclusive use of the store if nobody else has it open.
  bool exclusive = false;
  if (gc_ && gc_->fd) {
    ::flock(gc_->fd.get(), LOCK_UN);
    gc_->shared = false;
    exclusive = ::flock(gc_->fd.get(), LOCK_EX | LOCK_NB) == 0;
    if (!exclusive) hold_gc();
  }
  FileLock lock(root_ + "/lock");
  std::int64_t now = static_cast<std::int64_t>(std::time(nullptr));
  auto old_enough = [&](const std::string& p) {
    if (exclusive) return true;
    struct stat st {};
    if (::lstat(p.c_str(), &st) != 0) return false;
    return now - static_cast<std::int64_t>(st.st_mtim.tv_sec) > kPruneGraceSeconds;
  };
  // Staging leftovers of processes that are gone.
  for (const auto& n : list_dir(tmp_dir())) {
    auto d1 = n.find('-');
    auto d2 = d1 == std::string::npos ? std::string::npos : n.find('-', d1 + 1);
    if (d2 == std::string::npos) continue;
    pid_t pid = static_cast<pid_t>(std::atoi(n.substr(d1 + 1, d2 - d1 - 1).c_str()));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno == EPERM) {
      if (!old_enough(tmp_dir() + "/" + n)) continue;
      if (!exclusive) continue;
    }
    unmount_leftovers(tmp_dir() + "/" + n);
    std::int64_t size = disk_usage_at(AT_FDCWD, tmp_dir() + "/" + n);
    try {
      remove_tree_at(AT_FDCWD, tmp_dir() + "/" + n);
    } catch (const Error&) {
      continue;  // a mount that could not be detached: the next prune tries again
    }
    res.bytes += size;
    ++res.staging;
  }
  // What is referenced.
  std::set<std::string> blobs, layers;
  std::vector<oci::Digest> roots;
  json index = read_index(root_);
  for (const auto& e : index["manifests"])
    if (auto d = oci::Digest::try_parse(entry_digest(e))) roots.push_back(*d);
  for (const auto& c : containers()) roots.push_back(c.image);
  for (const auto& r : roots) {
    blobs.insert(r.hex());
    try {
      json mj = parse_json(read_blob(r), blob_path(r));
      oci::Manifest m = oci::Manifest::from_json(mj, r.str());
      blobs.insert(m.config.digest.hex());
      for (const auto& l : m.layers) blobs.insert(l.digest.hex());
      json config = parse_json(read_blob(m.config.digest), blob_path(m.config.digest));
      for (const auto& d : oci::config_diff_ids(config)) {
        layers.insert(d.hex());
        if (auto l = find_layer(d)) blobs.insert(l->blob_digest.hex());
      }
    } catch (const Error&) {
      // A broken image keeps what it still has; nothing of it is removed.
    }
  }
  for (const auto& n : list_dir(root_ + "/blobs/sha256")) {
    if (blobs.count(n) != 0) continue;
    std::string p = root_ + "/blobs/sha256/" + n;
    if (!old_enough(p)) continue;
    struct stat st {};
    if (::lstat(p.c_str(), &st) == 0) res.bytes += st.st_size;
    ::unlink(p.c_str());
    ++res.blobs;
  }
  for (const auto& n : list_dir(root_ + "/layers")) {
    std::string hex = n.size() > 5 && n.substr(n.size() - 5) == ".json" ? n.substr(0, n.size() - 5) : n;
    if (layers.count(hex) != 0) continue;
    std::string p = root_ + "/layers/" + n;
    if (!old_enough(p)) continue;
    if (n.size() > 5 && n.substr(n.size() - 5) == ".json") {
      ::unlink(p.c_str());
      continue;
    }
    // Retire the record first so the layer is never seen half removed.
    ::unlink((p + ".json").c_str());
    std::string trash = tmp_dir() + "/gc-" + std::to_string(::getpid()) + "-" + random_hex(8);
    if (::rename(p.c_str(), trash.c_str()) == 0) {
      res.bytes += disk_usage_at(AT_FDCWD, trash);
      remove_tree_at(AT_FDCWD, trash);
    }
    ++res.layers;
  }
  if (exclusive) {
    ::flock(gc_->fd.get(), LOCK_SH);
    gc_->shared = true;
  }
  return res;
}

}  // namespace strata::store
