// src/store: the content-addressed image store: blobs, layers, images, tags
// (an OCI image layout at the root), containers, commit, import/load/save
// and garbage collection. Every write is staged in tmp/, fsynced and renamed.
#include "strata/store.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pwd.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>

#include "strata/error.hpp"
#include "strata/fileio.hpp"

namespace strata::store {

using oci::json;

struct Store::GcLock {
  UniqueFd fd;
  bool shared = false;
};

namespace {

constexpr std::int64_t kPruneGraceSeconds = 3600;

std::string random_hex(std::size_t n) {
  static thread_local std::mt19937_64 rng(std::random_device{}() ^ static_cast<std::uint64_t>(::getpid()));
  static const char hex[] = "0123456789abcdef";
  std::string s;
  for (std::size_t i = 0; i < n; ++i) s += hex[rng() & 15];
  return s;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

void mkdir_if_missing(const std::string& path, mode_t mode) {
  if (::mkdir(path.c_str(), mode) != 0 && errno != EEXIST) throw_errno("create directory " + quote(path));
}

void fsync_dir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::fsync(fd.get());
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

json parse_json(const std::string& text, const std::string& where) {
  try {
    return json::parse(text);
  } catch (const std::exception& e) {
    throw Error("invalid JSON in " + quote(where) + ": " + e.what());
  }
}

// An exclusive flock on PATH for the lifetime of the object.
class FileLock {
 public:
  explicit FileLock(const std::string& path) : fd_(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600)) {
    if (!fd_) throw_errno("open lock " + quote(path));
    while (::flock(fd_.get(), LOCK_EX) != 0)
      if (errno != EINTR) throw_errno("lock " + quote(path));
  }

 private:
  UniqueFd fd_;
};

bool is_hex(std::string_view s) {
  return !s.empty() && s.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

bool is_mount_point(const std::string& path) {
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  char real[PATH_MAX];
  std::string want = ::realpath(path.c_str(), real) != nullptr ? std::string(real) : path;
  while (std::getline(f, line)) {
    std::istringstream ss(line);
    std::string id, parent, dev, root, mnt;
    ss >> id >> parent >> dev >> root >> mnt;
    // Octal escapes (\040 for space) as the kernel writes them.
    std::string un;
    for (std::size_t i = 0; i < mnt.size(); ++i) {
      if (mnt[i] == '\\' && i + 3 < mnt.size()) {
        un += static_cast<char>(std::stoi(mnt.substr(i + 1, 3), nullptr, 8));
        i += 3;
      } else {
        un += mnt[i];
      }
    }
    if (un == want) return true;
  }
  return false;
}

std::string media_type_for(archive::Compression c) {
  switch (c) {
    case archive::Compression::gzip: return oci::kMediaTypeLayerGzip;
    case archive::Compression::zstd: return oci::kMediaTypeLayerZstd;
    default: return oci::kMediaTypeLayer;
  }
}

std::string normalise_name(std::string_view ref) {
  return oci::Reference::parse(ref).str();
}

// The normalised reference of an index entry's name annotation, or "".
std::string entry_name(const json& entry) {
  if (!entry.contains("annotations") || !entry["annotations"].is_object()) return {};
  const auto& a = entry["annotations"];
  if (!a.contains(oci::kAnnotationRefName) || !a[oci::kAnnotationRefName].is_string()) return {};
  auto r = oci::Reference::try_parse(a[oci::kAnnotationRefName].get<std::string>());
  return r ? r->str() : std::string();
}

std::string entry_digest(const json& entry) {
  return entry.is_object() && entry.contains("digest") && entry["digest"].is_string() ? entry["digest"].get<std::string>()
                                                                                     : std::string();
}

// Dockerfile-style word splitting for ENV/LABEL values: quotes and backslashes.
std::vector<std::string> split_words(std::string_view s, std::string_view what) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char q = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (q != 0) {
      if (c == q) {
        q = 0;
      } else if (c == '\\' && q == '"' && i + 1 < s.size()) {
        cur += s[++i];
      } else {
        cur += c;
      }
      continue;
    }
    if (c == '"' || c == '\'') {
      q = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(cur), cur.clear(), in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (q != 0) throw UsageError("unterminated quote in " + quote(what));
  if (in_word) out.push_back(cur);
  return out;
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

// ================================================================ config changes

void apply_config_change(json& config, std::string_view instruction) {
  std::string text = trim(instruction);
  auto sp = text.find_first_of(" \t");
  std::string kw = text.substr(0, sp);
  std::string rest = sp == std::string::npos ? "" : trim(std::string_view(text).substr(sp));
  for (auto& ch : kw) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (!config.contains("config") || !config["config"].is_object()) config["config"] = json::object();
  json& c = config["config"];
  auto bad = [&](const std::string& why) { return UsageError("invalid change " + quote(instruction) + ": " + why); };
  auto exec_form = [&]() -> json {
    if (!rest.empty() && rest[0] == '[') {
      try {
        json j = json::parse(rest);
        if (j.is_array() && std::all_of(j.begin(), j.end(), [](const json& x) { return x.is_string(); })) return j;
      } catch (const std::exception&) {
      }
    }
    if (rest.empty()) throw bad("needs a command");
    return json::array({"/bin/sh", "-c", rest});
  };
  auto key_values = [&]() {
    std::vector<std::pair<std::string, std::string>> kv;
    auto words = split_words(rest, instruction);
    if (words.empty()) throw bad("needs KEY=VALUE");
    if (words[0].find('=') == std::string::npos) {
      // Legacy form: KEY VALUE...
      auto sp2 = rest.find_first_of(" \t");
      if (sp2 == std::string::npos) throw bad("needs a value");
      kv.emplace_back(words[0], trim(std::string_view(rest).substr(sp2)));
      return kv;
    }
    for (const auto& w : words) {
      auto eq = w.find('=');
      if (eq == std::string::npos || eq == 0) throw bad("expected KEY=VALUE, got " + quote(w));
      kv.emplace_back(w.substr(0, eq), w.substr(eq + 1));
    }
    return kv;
  };
  if (kw == "CMD") {
    c["Cmd"] = exec_form();
  } else if (kw == "ENTRYPOINT") {
    c["Entrypoint"] = exec_form();
  } else if (kw == "ENV") {
    json env = c.contains("Env") && c["Env"].is_array() ? c["Env"] : json::array();
    for (const auto& [k, v] : key_values()) {
      json out = json::array();
      for (const auto& e : env)
        if (!(e.is_string() && e.get<std::string>().rfind(k + "=", 0) == 0)) out.push_back(e);
      out.push_back(k + "=" + v);
      env = out;
    }
    c["Env"] = env;
  } else if (kw == "LABEL") {
    if (!c.contains("Labels") || !c["Labels"].is_object()) c["Labels"] = json::object();
    for (const auto& [k, v] : key_values()) c["Labels"][k] = v;
  } else if (kw == "WORKDIR") {
    if (rest.empty()) throw bad("needs a directory");
    c["WorkingDir"] = rest;
  } else if (kw == "USER") {
    if (rest.empty()) throw bad("needs a user");
    c["User"] = rest;
  } else if (kw == "STOPSIGNAL") {
    if (rest.empty()) throw bad("needs a signal");
    c["StopSignal"] = rest;
  } else if (kw == "EXPOSE") {
    auto words = split_words(rest, instruction);
    if (words.empty()) throw bad("needs a port");
    if (!c.contains("ExposedPorts") || !c["ExposedPorts"].is_object()) c["ExposedPorts"] = json::object();
    for (auto w : words) {
      if (w.find('/') == std::string::npos) w += "/tcp";
      std::string port = w.substr(0, w.find('/'));
      if (port.empty() || port.find_first_not_of("0123456789-") != std::string::npos) throw bad("bad port " + quote(w));
      c["ExposedPorts"][w] = json::object();
    }
  } else if (kw == "VOLUME") {
    json vols = json::array();
    if (!rest.empty() && rest[0] == '[') {
      try {
        vols = json::parse(rest);
      } catch (const std::exception&) {
        throw bad("bad JSON list");
      }
    } else {
      for (const auto& w : split_words(rest, instruction)) vols.push_back(w);
    }
    if (vols.empty()) throw bad("needs a path");
    if (!c.contains("Volumes") || !c["Volumes"].is_object()) c["Volumes"] = json::object();
    for (const auto& v : vols) {
      if (!v.is_string()) throw bad("bad path");
      c["Volumes"][v.get<std::string>()] = json::object();
    }
  } else {
    throw bad("only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR can be changed");
  }
}

// ================================================================ basics

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
    if (!out.empty()) out += ':';
    for (char c : d) {
      if (c == ':' || c == '\\') out += '\\';
      out += c;
    }
  }
  return out;
}

namespace {

// Writes DATA to PATH atomically: staged in TMP, fsynced, renamed.
void atomic_write(const std::string& tmp, const std::string& path, std::string_view data) {
  std::string stage = tmp + "/file-" + std::to_string(::getpid()) + "-" + random_hex(8);
  UniqueFd fd(::open(stage.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd) throw_errno("create " + quote(stage));
  try {
    write_all(fd.get(), data, quote(stage));
    if (::fsync(fd.get()) != 0) throw_errno("sync " + quote(stage));
    fd.reset();
    if (::rename(stage.c_str(), path.c_str()) != 0) throw_errno("rename into " + quote(path));
  } catch (...) {
    ::unlink(stage.c_str());
    throw;
  }
  fsync_dir(parent_of(path));
}

// A staging file or directory in tmp/ removed unless committed.
class Staged {
 public:
  Staged(const std::string& tmp, const std::string& kind, bool dir) {
    path_ = tmp + "/" + kind + "-" + std::to_string(::getpid()) + "-" + random_hex(12);
    if (dir) {
      if (::mkdir(path_.c_str(), 0755) != 0) throw_errno("create " + quote(path_));
    } else {
      fd_.reset(::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
      if (!fd_) throw_errno("create " + quote(path_));
    }
  }
  ~Staged() {
    fd_.reset();
    if (!path_.empty()) {
      try {
        remove_tree_at(AT_FDCWD, path_);
      } catch (const Error&) {
      }
    }
  }
  Staged(const Staged&) = delete;
  Staged& operator=(const Staged&) = delete;
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }
  void close() { fd_.reset(); }
  // Renames into TARGET; returns false when TARGET already existed (then the
  // staged copy is dropped).
  bool commit(const std::string& target) {
    fd_.reset();
    if (::rename(path_.c_str(), target.c_str()) != 0) {
      if (errno == EEXIST || errno == ENOTEMPTY) return false;
      throw_errno("rename into " + quote(target));
    }
    path_.clear();
    fsync_dir(parent_of(target));
    return true;
  }

 private:
  std::string path_;
  UniqueFd fd_;
};

void sync_store(const std::string& root) {
  UniqueFd fd(::open(root.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (fd) ::syncfs(fd.get());
}

}  // namespace

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
  for (const char* sub : {"/blobs", "/blobs/sha256", "/layers", "/containers", "/cache", "/tmp"})
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

void Store::hold_gc() {
  if (!gc_ || !gc_->fd || gc_->shared) return;
  while (::flock(gc_->fd.get(), LOCK_SH) != 0)
    if (errno != EINTR) return;
  gc_->shared = true;
}

std::string Store::blob_path(const oci::Digest& digest) const { return root_ + "/blobs/sha256/" + digest.hex(); }

// ================================================================ blobs

std::pair<oci::Digest, std::int64_t> Store::put_blob(int in_fd, const std::optional<oci::Digest>& expected) {
  hold_gc();
  Staged st(tmp_dir(), "blob", false);
  auto d = archive::copy_and_digest(in_fd, st.fd());
  if (expected && !(d.blob_digest == *expected))
    throw Error("blob does not match its digest: expected " + expected->str() + ", got " + d.blob_digest.str());
  if (::fsync(st.fd()) != 0) throw_errno("sync " + quote(st.path()));
  ::fchmod(st.fd(), 0444);
  if (!exists(blob_path(d.blob_digest))) st.commit(blob_path(d.blob_digest));
  return {d.blob_digest, d.blob_size};
}

std::pair<oci::Digest, std::int64_t> Store::put_blob(std::string_view data) {
  hold_gc();
  oci::Digest d = oci::sha256(data);
  std::string path = blob_path(d);
  if (!exists(path)) {
    Staged st(tmp_dir(), "blob", false);
    write_all(st.fd(), data, quote(st.path()));
    if (::fsync(st.fd()) != 0) throw_errno("sync " + quote(st.path()));
    ::fchmod(st.fd(), 0444);
    st.commit(path);
  }
  return {d, static_cast<std::int64_t>(data.size())};
}

std::string Store::read_blob(const oci::Digest& digest) const {
  std::string path = blob_path(digest);
  if (!exists(path)) throw Error("blob " + digest.str() + " is missing from the store " + quote(root_));
  std::string data = read_file(path);
  if (!(oci::sha256(data) == digest)) throw Error("blob " + digest.str() + " is corrupt in the store " + quote(root_));
  return data;
}

// ================================================================ layers

std::optional<Layer> Store::find_layer(const oci::Digest& diff_id) const {
  std::string rec = root_ + "/layers/" + diff_id.hex() + ".json";
  std::string dir = root_ + "/layers/" + diff_id.hex();
  if (!exists(rec) || !exists(dir)) return std::nullopt;
  json j = parse_json(read_file(rec), rec);
  Layer l;
  l.diff_id = diff_id;
  l.blob_digest = oci::Digest::parse(j.value("blob", ""));
  l.media_type = j.value("mediaType", oci::kMediaTypeLayer);
  l.size = j.value("size", std::int64_t{0});
  l.blob_size = j.value("blobSize", std::int64_t{0});
  l.dir = dir;
  return l;
}

Layer Store::layer(const oci::Digest& diff_id) const {
  if (auto l = find_layer(diff_id)) return *l;
  throw Error("no such layer: " + diff_id.str());
}

namespace {
// Puts an extracted layer and its blob into place and writes its record.
Layer install_layer(const Store& s, Staged& blob, Staged& tree, const archive::LayerDigests& d,
                    const std::string& media_type, std::int64_t blob_size) {
  Layer l;
  l.diff_id = d.diff_id;
  l.blob_digest = d.blob_digest;
  l.media_type = media_type;
  l.size = d.size;
  l.blob_size = blob_size;
  l.dir = s.root() + "/layers/" + d.diff_id.hex();
  std::string bp = s.blob_path(d.blob_digest);
  if (!exists(bp)) {
    ::fchmod(blob.fd(), 0444);
    if (blob.fd() >= 0 && ::fsync(blob.fd()) != 0) throw_errno("sync " + quote(blob.path()));
    blob.commit(bp);
  }
  if (auto existing = s.find_layer(d.diff_id)) {
    // The layer is there already (from another blob of the same content).
    if (exists(s.blob_path(existing->blob_digest))) return *existing;
  }
  sync_store(s.root());
  tree.commit(l.dir);  // false: a complete copy is there already
  json rec = {{"diffID", l.diff_id.str()}, {"blob", l.blob_digest.str()}, {"mediaType", l.media_type},
              {"size", l.size}, {"blobSize", l.blob_size}};
  atomic_write(s.tmp_dir(), l.dir + ".json", rec.dump());
  return l;
}
}  // namespace

Layer Store::create_layer(const std::string& dir, const LayerOptions& options) {
  hold_gc();
  Staged blob(tmp_dir(), "layer", false);
  archive::WriteLayerOptions wo;
  wo.changeset = options.changeset;
  wo.clamp_mtime = options.clamp_mtime;
  auto d = archive::write_layer(dir, blob.fd(), wo);
  if (auto existing = find_layer(d.diff_id); existing && exists(blob_path(existing->blob_digest))) {
    if (!exists(blob_path(d.blob_digest))) {
      ::fsync(blob.fd());
      ::fchmod(blob.fd(), 0444);
      blob.commit(blob_path(d.blob_digest));
    }
    return *existing;
  }
  Staged tree(tmp_dir(), "tree", true);
  if (::lseek(blob.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(blob.path()));
  archive::ExtractOptions eo;
  eo.privileged = ::geteuid() == 0;
  archive::extract_layer(blob.fd(), tree.path(), eo);
  return install_layer(*this, blob, tree, d, oci::kMediaTypeLayer, d.size);
}

Layer Store::import_layer(int in_fd, const std::string& media_type, const std::optional<oci::Digest>& expected_blob,
                          const std::optional<oci::Digest>& expected_diff_id) {
  hold_gc();
  Staged raw(tmp_dir(), "blob", false);
  auto c = archive::copy_and_digest(in_fd, raw.fd());
  if (expected_blob && !(c.blob_digest == *expected_blob))
    throw Error("layer blob does not match its digest: expected " + expected_blob->str() + ", got " +
                c.blob_digest.str());
  Staged tree(tmp_dir(), "tree", true);
  if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
  archive::ExtractOptions eo;
  eo.privileged = ::geteuid() == 0;
  auto d = archive::extract_layer(raw.fd(), tree.path(), eo);
  if (expected_diff_id && !(d.diff_id == *expected_diff_id))
    throw Error("layer " + c.blob_digest.str() + " does not match the config's diff_id: expected " +
                expected_diff_id->str() + ", got " + d.diff_id.str());
  std::string mt = media_type;
  if (d.compression == archive::Compression::none && !(d.blob_digest == d.diff_id)) {
    // xz or bzip2: no OCI media type; keep the layer uncompressed.
    Staged plain(tmp_dir(), "blob", false);
    if (::lseek(raw.fd(), 0, SEEK_SET) != 0) throw_errno("rewind " + quote(raw.path()));
    auto p = archive::decompress(raw.fd(), plain.fd());
    archive::LayerDigests pd = d;
    pd.blob_digest = p.diff_id;
    return install_layer(*this, plain, tree, pd, oci::kMediaTypeLayer, p.size);
  }
  if (mt.empty() || mt == oci::kMediaTypeDockerLayer || mt == oci::kMediaTypeDockerLayerGzip)
    mt = media_type_for(d.compression);
  return install_layer(*this, raw, tree, d, mt, d.blob_size);
}

// ================================================================ images

namespace {

json read_index(const std::string& root) {
  std::string path = root + "/index.json";
  json j = parse_json(read_file(path), path);
  if (!j.is_object() || !j.contains("manifests") || !j["manifests"].is_array())
    throw Error(quote(path) + " is not an OCI image index");
  return j;
}

void write_index(const std::string& root, const json& index) {
  atomic_write(root + "/tmp", root + "/index.json", index.dump());
}

// Index update: puts DESC under each of NAMES (taking the names from other
// images, which keep an unnamed entry when it was their last one), or adds
// an unnamed entry when NAMES is empty and the manifest has no entry.
void index_add(json& index, const json& desc, const std::vector<std::string>& names) {
  json& m = index["manifests"];
  std::string digest = desc["digest"].get<std::string>();
  std::set<std::string> norm;
  for (const auto& n : names) norm.insert(normalise_name(n));
  json out = json::array();
  std::set<std::string> lost;  // digests that lost a name
  for (const auto& e : m) {
    std::string n = entry_name(e);
    if (!n.empty() && norm.count(n) != 0) {
      lost.insert(entry_digest(e));
      continue;
    }
    // An unnamed entry of this manifest goes when it gets a name.
    if (n.empty() && entry_digest(e) == digest && !norm.empty()) continue;
    out.push_back(e);
  }
  for (const auto& d : lost) {
    if (d == digest) continue;
    bool still = std::any_of(out.begin(), out.end(), [&](const json& e) { return entry_digest(e) == d; });
    if (!still) {
      for (const auto& e : m)
        if (entry_digest(e) == d) {
          json copy = e;
          copy.erase("annotations");
          out.push_back(copy);
          break;
        }
    }
  }
  if (norm.empty()) {
    bool has = std::any_of(out.begin(), out.end(), [&](const json& e) { return entry_digest(e) == digest; });
    if (!has) out.push_back(desc);
  }
  for (const auto& n : names) {
    json e = desc;
    e["annotations"] = json::object();
    e["annotations"][oci::kAnnotationRefName] = oci::Reference::parse(n).familiar();
    out.push_back(e);
  }
  m = out;
}

}  // namespace

Image Store::image_by_manifest(const oci::Digest& manifest_digest) const {
  Image img;
  img.manifest_digest = manifest_digest;
  std::string mtext = read_blob(manifest_digest);
  json mj = parse_json(mtext, blob_path(manifest_digest));
  img.manifest = oci::Manifest::from_json(mj, "manifest " + manifest_digest.str());
  img.config_digest = img.manifest.config.digest;
  img.config = parse_json(read_blob(img.config_digest), blob_path(img.config_digest));
  img.diff_ids = oci::config_diff_ids(img.config);
  img.created = img.config.value("created", "");
  for (auto it = img.diff_ids.rbegin(); it != img.diff_ids.rend(); ++it) {
    auto l = find_layer(*it);
    if (!l) throw Error("layer " + it->str() + " of image " + img.config_digest.short_id() + " is missing from the store");
    img.layer_dirs.push_back(l->dir);
    img.size += l->size;
  }
  json index = read_index(root_);
  for (const auto& e : index["manifests"]) {
    if (entry_digest(e) != manifest_digest.str()) continue;
    std::string n = entry_name(e);
    if (!n.empty()) img.names.push_back(oci::Reference::parse(n).familiar());
  }
  return img;
}

std::vector<Image> Store::images() const {
  json index = read_index(root_);
  std::vector<std::string> seen;
  std::vector<Image> out;
  for (const auto& e : index["manifests"]) {
    std::string d = entry_digest(e);
    if (d.empty() || std::find(seen.begin(), seen.end(), d) != seen.end()) continue;
    seen.push_back(d);
    auto dig = oci::Digest::try_parse(d);
    if (!dig) continue;
    std::string mt = e.value("mediaType", "");
    if (mt == oci::kMediaTypeIndex || mt == oci::kMediaTypeDockerManifestList) continue;
    out.push_back(image_by_manifest(*dig));
  }
  std::stable_sort(out.begin(), out.end(), [](const Image& a, const Image& b) { return a.created > b.created; });
  return out;
}

std::optional<Image> Store::find_image(std::string_view ref_or_id) const {
  std::string s(ref_or_id);
  if (s.empty()) return std::nullopt;
  json index = read_index(root_);
  // A full digest: manifest digest or image id.
  if (auto d = oci::Digest::try_parse(s)) {
    for (const auto& e : index["manifests"])
      if (entry_digest(e) == d->str()) return image_by_manifest(*d);
    for (const auto& img : images())
      if (img.config_digest == *d) return img;
    if (exists(blob_path(*d))) {
      // An untagged image a container still uses.
      try {
        return image_by_manifest(*d);
      } catch (const Error&) {
      }
    }
    return std::nullopt;
  }
  // A name.
  if (auto r = oci::Reference::try_parse(s)) {
    if (r->digest) {
      bool known = false;
      for (const auto& e : index["manifests"]) known = known || entry_digest(e) == r->digest->str();
      if (known) return image_by_manifest(*r->digest);
    } else {
      std::string want = r->str();
      for (const auto& e : index["manifests"])
        if (entry_name(e) == want) return image_by_manifest(oci::Digest::parse(entry_digest(e)));
    }
  }
  // A short image id.
  if (s.size() >= 4 && s.size() <= 64 && is_hex(s)) {
    std::vector<Image> matches;
    for (auto& img : images())
      if (img.config_digest.hex().rfind(s, 0) == 0) matches.push_back(img);
    if (matches.size() > 1) throw Error("image id " + quote(s) + " is ambiguous");
    if (matches.size() == 1) return matches[0];
  }
  if (!oci::Reference::try_parse(s) && !is_hex(s)) oci::Reference::parse(s);  // throws the reference error
  return std::nullopt;
}

Image Store::image(std::string_view ref_or_id) const {
  if (auto img = find_image(ref_or_id)) return *img;
  throw Error("no such image: " + quote(ref_or_id));
}

Image Store::write_image(const json& config_in, const std::vector<std::string>& names) {
  for (const auto& n : names) oci::Reference::parse(n);
  json config = config_in;
  if (!config.is_object()) throw Error("image config is not an object");
  if (!config.contains("architecture")) config["architecture"] = oci::host_architecture();
  if (!config.contains("os")) config["os"] = "linux";
  auto diff_ids = oci::config_diff_ids(config);
  oci::Manifest m;
  for (const auto& d : diff_ids) {
    Layer l = layer(d);
    if (!exists(blob_path(l.blob_digest))) throw Error("blob of layer " + d.str() + " is missing from the store");
    oci::Descriptor ld;
    ld.media_type = l.media_type;
    ld.digest = l.blob_digest;
    ld.size = l.blob_size;
    m.layers.push_back(ld);
  }
  std::string cfg = config.dump();
  auto [cd, csize] = put_blob(cfg);
  m.config.media_type = oci::kMediaTypeConfig;
  m.config.digest = cd;
  m.config.size = csize;
  return put_image(m.to_json().dump(), cfg, names);
}

Image Store::put_image(const std::string& manifest_json, const std::string& config_json,
                       const std::vector<std::string>& names) {
  for (const auto& n : names) oci::Reference::parse(n);
  json mj = parse_json(manifest_json, "manifest");
  oci::Manifest m = oci::Manifest::from_json(mj, "manifest");
  if (!(oci::sha256(config_json) == m.config.digest))
    throw Error("config does not match the manifest's digest " + m.config.digest.str());
  json config = parse_json(config_json, "config " + m.config.digest.str());
  auto diff_ids = oci::config_diff_ids(config);
  if (diff_ids.size() != m.layers.size())
    throw Error("image config lists " + std::to_string(diff_ids.size()) + " layers but the manifest " +
                std::to_string(m.layers.size()));
  for (std::size_t i = 0; i < diff_ids.size(); ++i) {
    if (!find_layer(diff_ids[i])) throw Error("layer " + diff_ids[i].str() + " is not in the store");
    if (!exists(blob_path(m.layers[i].digest))) throw Error("layer blob " + m.layers[i].digest.str() + " is not in the store");
  }
  if (!exists(blob_path(m.config.digest))) put_blob(config_json);
  auto [md, msize] = put_blob(manifest_json);
  sync_store(root_);
  oci::Descriptor desc;
  desc.media_type = mj.value("mediaType", oci::kMediaTypeManifest);
  desc.digest = md;
  desc.size = msize;
  {
    FileLock lock(root_ + "/lock");
    json index = read_index(root_);
    index_add(index, desc.to_json(), names);
    write_index(root_, index);
  }
  return image_by_manifest(md);
}

void Store::tag(const Image& img, std::string_view ref) {
  oci::Descriptor desc;
  desc.media_type = img.manifest.media_type;
  desc.digest = img.manifest_digest;
  desc.size = static_cast<std::int64_t>(read_blob(img.manifest_digest).size());
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  index_add(index, desc.to_json(), {std::string(ref)});
  write_index(root_, index);
}

void Store::untag(std::string_view ref) {
  std::string want = normalise_name(ref);
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  json out = json::array();
  bool found = false;
  for (const auto& e : index["manifests"]) {
    if (entry_name(e) == want) {
      found = true;
      continue;
    }
    out.push_back(e);
  }
  if (!found) throw Error("no such image: " + quote(ref));
  index["manifests"] = out;
  write_index(root_, index);
}

std::vector<std::string> Store::remove_image(std::string_view ref_or_id, bool force) {
  Image img = image(ref_or_id);
  std::vector<std::string> lines;
  std::string s(ref_or_id);
  auto r = oci::Reference::try_parse(s);
  bool by_name = false;
  if (r && !r->digest) {
    for (const auto& n : img.names)
      if (normalise_name(n) == r->str()) by_name = true;
  }
  // Removing one of several names deletes nothing; otherwise the image goes
  // and a container using it must not be left without a name for it.
  if (!(by_name && img.names.size() > 1)) {
    std::vector<std::string> users;
    for (const auto& c : containers())
      if (c.image == img.manifest_digest) users.push_back(c.name);
    if (!users.empty() && !force)
      throw Error("image " + quote(ref_or_id) + " is used by container " + quote(users[0]) +
                  " (remove it first, or use -f)");
  }
  FileLock lock(root_ + "/lock");
  json index = read_index(root_);
  json out = json::array();
  if (by_name && img.names.size() > 1) {
    for (const auto& e : index["manifests"]) {
      if (entry_name(e) == r->str()) continue;
      out.push_back(e);
    }
    lines.push_back("Untagged: " + r->familiar());
  } else {
    for (const auto& e : index["manifests"]) {
      if (entry_digest(e) == img.manifest_digest.str()) continue;
      out.push_back(e);
    }
    for (const auto& n : img.names) lines.push_back("Untagged: " + n);
    lines.push_back("Deleted: " + img.config_digest.str());
  }
  index["manifests"] = out;
  write_index(root_, index);
  return lines;
}

// ================================================================ containers

namespace {

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
  c.dir = dir;
  c.upper = dir + "/upper";
  c.work = dir + "/work";
  return c;
}

json container_json(const Container& c, const std::vector<std::string>& mounts) {
  json j = {{"id", c.id}, {"name", c.name}, {"image", c.image.str()}, {"imageName", c.image_name}, {"created", c.created}};
  j["mounts"] = mounts;
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

bool valid_container_name(std::string_view n) {
  if (n.empty() || n.size() > 128) return false;
  auto ok = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); };
  if (!ok(n[0])) return false;
  for (char c : n)
    if (!(ok(c) || c == '_' || c == '.' || c == '-')) return false;
  return true;
}

}  // namespace

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

Container Store::create_container(std::string_view image_ref, std::string_view name) {
  hold_gc();
  Image img = image(image_ref);
  if (!name.empty() && !valid_container_name(name))
    throw UsageError("invalid container name " + quote(name) + " (letters, digits, '_', '.', '-')");
  Container c;
  c.id = random_hex(64);
  c.name = name.empty() ? "strata-" + c.id.substr(0, 12) : std::string(name);
  c.image = img.manifest_digest;
  c.image_name = std::string(image_ref);
  c.created = oci::now_rfc3339();
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

namespace {
void unmount_path(const std::string& mnt) {
  pid_t pid = ::fork();
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_WRONLY);
    if (devnull >= 0) ::dup2(devnull, 2);
    ::execlp("fusermount3", "fusermount3", "-u", "-z", mnt.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  if (pid > 0) ::waitpid(pid, &status, 0);
  if (is_mount_point(mnt)) ::umount2(mnt.c_str(), MNT_DETACH);
}
}  // namespace

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

void Store::remove_container(std::string_view name_or_id, bool force) {
  hold_gc();
  Container c = container(name_or_id);
  ContainerLock use = lock_container(c);
  auto mounted = mounted_at(c);
  if (!mounted.empty()) {
    if (!force)
      throw Error("container " + quote(c.name) + " is mounted at " + quote(mounted[0]) + " (unmount it first, or use -f)");
    for (const auto& m : mounted) unmount_path(m);
  }
  std::string trash = tmp_dir() + "/rm-" + std::to_string(::getpid()) + "-" + random_hex(8);
  {
    FileLock lock(root_ + "/lock");
    if (::rename(c.dir.c_str(), trash.c_str()) != 0) throw_errno("remove container " + quote(c.name));
  }
  remove_tree_at(AT_FDCWD, trash);
}

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
  for (const auto& ch : options.changes) apply_config_change(config, ch);
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

// ================================================================ in and out

Image Store::import_rootfs(const std::string& tar_path, std::string_view ref, const CommitOptions& options) {
  if (!ref.empty()) oci::Reference::parse(ref);
  json config = oci::empty_config();
  for (const auto& ch : options.changes) apply_config_change(config, ch);
  UniqueFd in = open_at(AT_FDCWD, tar_path, O_RDONLY);
  report("Importing " + tar_path);
  Layer l;
  try {
    l = import_layer(in.get());
  } catch (const Error& e) {
    throw Error("import " + quote(tar_path) + ": " + e.what());
  }
  std::string now = oci::now_rfc3339();
  config["created"] = now;
  config["rootfs"]["diff_ids"].push_back(l.diff_id.str());
  oci::History h;
  h.created = now;
  h.created_by = options.created_by.empty() ? "strata import " + tar_path.substr(tar_path.rfind('/') + 1)
                                            : options.created_by;
  h.comment = options.message;
  h.author = options.author;
  if (!options.author.empty()) config["author"] = options.author;
  config["history"].push_back(h.to_json());
  std::vector<std::string> names;
  if (!ref.empty()) names.emplace_back(ref);
  return write_image(config, names);
}

std::vector<Image> Store::load(const std::string& path) {
  hold_gc();
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw_errno("load " + quote(path));
  std::optional<Staged> unpacked;
  std::string dir = path;
  if (!S_ISDIR(st.st_mode)) {
    unpacked.emplace(tmp_dir(), "load", true);
    archive::unpack_archive(path, unpacked->path());
    dir = unpacked->path();
  }
  auto archived = archive::read_image_archive(dir);
  std::vector<std::pair<oci::Digest, std::vector<std::string>>> loaded;
  for (const auto& a : archived) {
    json config = parse_json(a.config_json, "config " + a.manifest.config.digest.str());
    auto diff_ids = oci::config_diff_ids(config);
    if (diff_ids.size() != a.manifest.layers.size())
      throw Error("image " + a.manifest.config.digest.short_id() + " in " + quote(path) + ": config lists " +
                  std::to_string(diff_ids.size()) + " layers, manifest " + std::to_string(a.manifest.layers.size()));
    put_blob(a.config_json);
    for (std::size_t i = 0; i < diff_ids.size(); ++i) {
      report("Loading layer " + std::to_string(i + 1) + "/" + std::to_string(diff_ids.size()) + " " +
             a.manifest.layers[i].digest.short_id());
      UniqueFd fd = open_at(AT_FDCWD, a.layer_paths[i], O_RDONLY);
      try {
        import_layer(fd.get(), a.manifest.layers[i].media_type, a.manifest.layers[i].digest, diff_ids[i]);
      } catch (const Error& e) {
        throw Error("load " + quote(path) + ": " + e.what());
      }
    }
    Image img = put_image(a.manifest_json, a.config_json, {});
    std::vector<std::string> names;
    for (const auto& n : a.names)
      if (oci::Reference::try_parse(n)) names.push_back(n);
    loaded.emplace_back(img.manifest_digest, names);
  }
  std::vector<Image> out;
  for (const auto& [d, names] : loaded) {
    Image img = image_by_manifest(d);
    for (const auto& n : names) tag(img, n);
    out.push_back(image_by_manifest(d));
  }
  return out;
}

void Store::save(const std::vector<std::string>& refs, const std::string& out, SaveFormat format) {
  hold_gc();
  if (refs.empty()) throw UsageError("save: no image given");
  std::vector<archive::ExportedImage> ex;
  for (const auto& r : refs) {
    Image img = image(r);
    archive::ExportedImage e;
    e.manifest_digest = img.manifest_digest;
    e.manifest_json = read_blob(img.manifest_digest);
    e.config_json = read_blob(img.config_digest);
    e.manifest = img.manifest;
    e.diff_ids = img.diff_ids;
    auto parsed = oci::Reference::try_parse(r);
    bool by_name = false;
    if (parsed && !parsed->digest)
      for (const auto& n : img.names)
        if (normalise_name(n) == parsed->str()) by_name = true;
    if (by_name) e.names.push_back(parsed->str());
    ex.push_back(std::move(e));
  }
  report("Writing " + std::to_string(ex.size()) + " image(s) to " + out);
  Staged work(tmp_dir(), "save", true);
  std::string layout = work.path() + "/out";
  mkdir_if_missing(layout, 0755);
  std::string scratch = work.path() + "/scratch";
  mkdir_if_missing(scratch, 0700);
  auto blob = [&](const oci::Digest& d) { return blob_path(d); };
  if (format == SaveFormat::oci) {
    archive::write_oci_layout(ex, layout, blob);
  } else {
    auto layer_tar = [&](const oci::Digest& diff_id) -> std::string {
      Layer l = layer(diff_id);
      if (l.blob_digest == l.diff_id) return blob_path(l.blob_digest);
      std::string p = scratch + "/" + diff_id.hex();
      if (!exists(p)) {
        UniqueFd in = open_at(AT_FDCWD, blob_path(l.blob_digest), O_RDONLY);
        UniqueFd o(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
        if (!o) throw_errno("create " + quote(p));
        archive::decompress(in.get(), o.get());
      }
      return p;
    };
    archive::write_docker_archive(ex, layout, layer_tar);
  }
  if (!out.empty() && out.back() == '/') {
    std::string target = out.substr(0, out.size() - 1);
    if (exists(target)) throw Error("save: " + quote(target) + " already exists");
    if (::rename(layout.c_str(), target.c_str()) != 0) {
      if (errno != EXDEV) throw_errno("save to " + quote(target));
      std::string stage = target + ".tmp-" + std::to_string(::getpid());
      mkdir_if_missing(stage, 0755);
      try {
        if (format == SaveFormat::oci)
          archive::write_oci_layout(ex, stage, blob);
        else
          throw Error("save: a directory output is only for --format oci");
        if (::rename(stage.c_str(), target.c_str()) != 0) throw_errno("save to " + quote(target));
      } catch (...) {
        remove_tree_at(AT_FDCWD, stage);
        throw;
      }
    }
    return;
  }
  archive::pack_directory(layout, out);
}

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
    remove_tree_at(AT_FDCWD, tmp_dir() + "/" + n);
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
    if (::rename(p.c_str(), trash.c_str()) == 0) remove_tree_at(AT_FDCWD, trash);
    ++res.layers;
  }
  if (exclusive) {
    ::flock(gc_->fd.get(), LOCK_SH);
    gc_->shared = true;
  }
  return res;
}

}  // namespace strata::store
