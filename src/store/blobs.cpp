// Blobs: content-addressed files under blobs/sha256/, written staged and
// verified against their digest, read back verified.
#include "strata/store.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

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

}  // namespace strata::store
