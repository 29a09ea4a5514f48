// What the files of the store module share and nothing outside it uses:
// staging (every write is made in ROOT/tmp, fsynced and renamed into place),
// the index lock, index.json and container.json access, and small helpers.
// Lock order: ROOT/lock (FileLock, index and container records) is taken
// after a container's lock (Store::lock_container) and never the other way;
// the gc lock (ROOT/gc.lock, shared) is taken before either.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "strata/fd.hpp"
#include "strata/oci.hpp"
#include "strata/store.hpp"
#include "strata/stratafs_client.hpp"

namespace strata::store {

// The gc lock: a shared flock on ROOT/gc.lock while the store is open (see
// Store::gc_).
struct Store::GcLock {
  UniqueFd fd;
  bool shared = false;
};

// Unreferenced blobs and layers younger than this are kept by a prune that
// shares the store with other processes (they may be about to be referenced).
inline constexpr std::int64_t kPruneGraceSeconds = 3600;

std::string random_hex(std::size_t n);
bool exists(const std::string& path);  // lstat succeeds
void mkdir_if_missing(const std::string& path, mode_t mode);
void fsync_dir(const std::string& dir);
std::string parent_of(const std::string& path);
// Parses TEXT; throws Error naming WHERE when it is not JSON.
oci::json parse_json(const std::string& text, const std::string& where);
bool is_hex(std::string_view s);
// Space that NAME (in the directory open at DIRFD) and everything below it
// take on disk, each inode counted once; 0 when it is missing. The walk is
// relative to each open parent, so any depth is measured.
std::int64_t disk_usage_at(int dirfd, const std::string& name);
// Whether PATH (resolved) is a mount point: strata/stratafs_client.hpp.
using fs::is_mount_point;

// An exclusive flock on PATH for the lifetime of the object.
class FileLock {
 public:
  explicit FileLock(const std::string& path);

 private:
  UniqueFd fd_;
};

// Writes DATA to PATH atomically: staged in TMP, fsynced, renamed.
void atomic_write(const std::string& tmp, const std::string& path, std::string_view data);

// A staging file or directory in tmp/ ("KIND-PID-RANDOM", so that prune can
// tell whose it is), removed unless committed.
class Staged {
 public:
  Staged(const std::string& tmp, const std::string& kind, bool dir);
  ~Staged();
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }
  // Renames into TARGET; returns false when TARGET already existed (then the
  // staged copy is dropped).
  bool commit(const std::string& target);

 private:
  std::string path_;
  UniqueFd fd_;
};

// syncfs of the store's file system: what was renamed into place is durable
// before anything refers to it.
void sync_store(const std::string& root);

// index.json.
std::string normalise_name(std::string_view ref);
// The normalised reference of an index entry's name annotation, or "".
std::string entry_name(const oci::json& entry);
std::string entry_digest(const oci::json& entry);
oci::json read_index(const std::string& root);
void write_index(const std::string& root, const oci::json& index);

// containers/<id>/container.json.
Container read_container(const std::string& root, const std::string& id);
oci::json container_json(const Container& c, const std::vector<std::string>& mounts);

// volumes/<name>: the volume NAME, created when missing (call under ROOT/lock).
Volume ensure_volume(const std::string& root, std::string_view name, const std::map<std::string, std::string>& labels);
// Renames the volume V's directory to a fresh name in ROOT/tmp (call under
// ROOT/lock) and returns that path, for remove_tree_at once unlocked.
std::string discard_volume(const std::string& root, const Volume& v);
std::vector<std::string> recorded_mounts(const Container& c);

}  // namespace strata::store
