// src/registry/ingest: resumable layer downloads into the store. A download
// is written to ROOT/tmp (so that a dropped connection or a killed pull
// resumes from what arrived) and, once its digest is checked, extracted and
// renamed into blobs/ by Store::adopt_layer_blob: the bytes are written once.
#include "ingest.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <vector>

#include "strata/error.hpp"
#include "strata/fileio.hpp"

namespace strata::registry {

namespace {

// The partial download of HEX left by a process that is gone, if any.
std::string orphaned_partial(const std::string& tmp, const std::string& hex) {
  DIR* d = ::opendir(tmp.c_str());
  if (d == nullptr) return {};
  std::string found;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n.rfind("pull-", 0) != 0 || n.size() < 5 + 64 || n.substr(n.size() - 64) != hex) continue;
    pid_t pid = static_cast<pid_t>(std::atol(n.substr(5, n.size() - 5 - 65).c_str()));
    if (pid > 0 && ::kill(pid, 0) != 0 && errno == ESRCH) {
      found = tmp + "/" + n;
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace

LayerIngest::LayerIngest(store::Store& store, const oci::Descriptor& blob, const oci::Digest& diff_id)
    : store_(store), blob_(blob), diff_id_(diff_id) {
  hash_.emplace();
  path_ = store.tmp_dir() + "/pull-" + std::to_string(::getpid()) + "-" + blob.digest.hex();
  if (std::string old = orphaned_partial(store.tmp_dir(), blob.digest.hex()); !old.empty())
    ::rename(old.c_str(), path_.c_str());  // claim it; losing a race just means starting afresh
  fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!fd_) throw_errno("create " + quote(path_));
  // Re-hash what an earlier attempt left, so the digest covers every byte.
  std::vector<char> buf(1 << 16);
  for (;;) {
    ssize_t n = ::read(fd_.get(), buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw_errno("read " + quote(path_));
    if (n == 0) break;
    hash_->update(buf.data(), static_cast<std::size_t>(n));
    offset_ += n;
  }
  if (offset_ > blob_.size) restart();
}

LayerIngest::~LayerIngest() {
  if (done_) ::unlink(path_.c_str());
}

void LayerIngest::write(const char* data, std::size_t size) {
  write_all(fd_.get(), std::string_view(data, size), quote(path_));
  hash_->update(data, size);
  offset_ += static_cast<std::int64_t>(size);
}

void LayerIngest::restart() {
  if (::ftruncate(fd_.get(), 0) != 0 || ::lseek(fd_.get(), 0, SEEK_SET) != 0) throw_errno("truncate " + quote(path_));
  hash_.emplace();
  offset_ = 0;
}

store::Layer LayerIngest::finish(const std::string& what) {
  // A download that is complete but wrong is of no use to a later pull.
  done_ = true;
  if (offset_ != blob_.size)
    throw Error(what + " has " + std::to_string(offset_) + " bytes, not the " + std::to_string(blob_.size) +
                " its descriptor says");
  oci::Digest got = hash_->finish();
  if (!(got == blob_.digest)) throw Error(what + " does not match its digest (got " + got.str() + ")");
  if (::fsync(fd_.get()) != 0) throw_errno("sync " + quote(path_));
  try {
    return store_.adopt_layer_blob(path_, blob_, diff_id_);
  } catch (const Error& e) {
    throw Error(what + ": " + e.what());
  }
}

}  // namespace strata::registry
