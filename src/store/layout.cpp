// The store's layout on disk: where the root is, opening (and creating) it
// as an OCI image layout with the directories beside it, and the layer list
// an image gives to stratafs.
#include "strata/store.hpp"

#include <fcntl.h>
#include <pwd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/stratafs_client.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

std::string default_root() {
  if (const char* r = std::getenv("STRATA_ROOT"); r != nullptr && *r != '\0') return r;
  if (::geteuid() == 0) return "/var/lib/strata";
  if (const char* x = std::getenv("XDG_DATA_HOME"); x != nullptr && *x == '/') return std::string(x) + "/strata";
  const char* home = std::getenv("HOME");
  std::string h = home != nullptr && *home != '\0' ? home : "";
  if (h.empty()) {
    if (passwd* pw = ::getpwuid(::geteuid()); pw != nullptr && pw->pw_dir != nullptr) h = pw->pw_dir;
  }
  if (h.empty()) throw Error("cannot find the home directory for the default store; use --root or STRATA_ROOT");
  return h + "/.local/share/strata";
}

std::string Image::lowerdir() const {
  std::string out;
  for (const auto& d : layer_dirs) {
    if (d.empty())
      throw Error("image " + config_digest.short_id() + " has a layer that is not extracted; resolve it with Layers::extract");
    if (!out.empty()) out += ':';
    out += fs::escape_lower_dir(d);
  }
  return out;
}

Store Store::open(const std::string& root_in) {
  if (root_in.empty()) throw UsageError("the store root is empty");
  std::string root = root_in;
  while (root.size() > 1 && root.back() == '/') root.pop_back();
  bool fresh = !exists(root);
  if (fresh) {
    // Parents as needed (e.g. ~/.local/share).
    std::string acc;
    std::size_t pos = 0;
    while ((pos = root.find('/', pos + 1)) != std::string::npos) {
      acc = root.substr(0, pos);
      if (!acc.empty()) mkdir_if_missing(acc, 0755);
    }
    mkdir_if_missing(root, 0700);
  }
  char real[PATH_MAX];
  if (::realpath(root.c_str(), real) == nullptr) throw_errno("open store " + quote(root));
  root = real;
  struct stat st {};
  if (::stat(root.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) throw Error("store root " + quote(root) + " is not a directory");
  for (const char* sub : {"/blobs", "/blobs/sha256", "/layers", "/containers", "/volumes", "/cache", "/tmp"})
    mkdir_if_missing(root + sub, 0700);
  std::string layout = root + "/oci-layout";
  if (!exists(layout)) {
    atomic_write(root + "/tmp", layout, "{\"imageLayoutVersion\":\"1.0.0\"}");
  } else {
    json j = parse_json(read_file(layout), layout);
    if (!j.is_object() || j.value("imageLayoutVersion", "") != "1.0.0")
      throw Error(quote(root) + " is not a strata store: unsupported oci-layout version");
  }
  std::string index = root + "/index.json";
  if (!exists(index)) {
    FileLock lock(root + "/lock");
    if (!exists(index)) {
      json j = {{"schemaVersion", 2}, {"mediaType", oci::kMediaTypeIndex}, {"manifests", json::array()}};
      atomic_write(root + "/tmp", index, j.dump());
    }
  } else {
    json j = parse_json(read_file(index), index);
    if (!j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
      throw Error(quote(index) + " is not an OCI image index");
  }
  Store s(root);
  s.gc_ = std::make_shared<GcLock>();
  s.gc_->fd.reset(::open((root + "/gc.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (s.gc_->fd) s.gc_->shared = ::flock(s.gc_->fd.get(), LOCK_SH | LOCK_NB) == 0;
  return s;
}

}  // namespace strata::store
