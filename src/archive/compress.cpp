// Layer blobs recompressed with libarchive's raw format (one stream through
// a read filter and a write filter): push --compression, and plain tars
// that import stores gzip-compressed.
#include "strata/archive.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <memory>
#include <string>
#include <vector>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"

namespace strata::archive {

namespace {

struct ReadDeleter {
  void operator()(::archive* a) const noexcept { archive_read_free(a); }
};
struct WriteDeleter {
  void operator()(::archive* a) const noexcept { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const noexcept { archive_entry_free(e); }
};

// Where the compressed bytes go: the file, and the hash and count of them.
struct Out {
  int fd;
  oci::Sha256 hash;
  std::int64_t size = 0;
  static la_ssize_t write(::archive*, void* self, const void* data, size_t n) {
    auto* o = static_cast<Out*>(self);
    try {
      write_all(o->fd, std::string_view(static_cast<const char*>(data), n), "the recompressed layer");
    } catch (const Error&) {
      return -1;
    }
    o->hash.update(data, n);
    o->size += static_cast<std::int64_t>(n);
    return static_cast<la_ssize_t>(n);
  }
};

[[noreturn]] void fail(::archive* a, const char* what) {
  const char* e = archive_error_string(a);
  throw Error(std::string("recompress a layer: ") + what + ": " + (e != nullptr ? e : "unknown error"));
}

}  // namespace

Compression layer_compression(std::string_view t) {
  if (t == oci::kMediaTypeLayerGzip || t == oci::kMediaTypeDockerLayerGzip) return Compression::gzip;
  if (t == oci::kMediaTypeLayerZstd) return Compression::zstd;
  return Compression::none;
}

std::pair<oci::Digest, std::int64_t> recompress(int in_fd, int out_fd, Compression target) {
  std::unique_ptr<::archive, ReadDeleter> in(archive_read_new());
  std::unique_ptr<::archive, WriteDeleter> out(archive_write_new());
  if (!in || !out) throw Error("out of memory");
  archive_read_support_filter_all(in.get());
  archive_read_support_format_raw(in.get());
  if (archive_read_open_fd(in.get(), in_fd, 1 << 16) != ARCHIVE_OK) fail(in.get(), "open");
  archive_entry* src = nullptr;
  if (archive_read_next_header(in.get(), &src) != ARCHIVE_OK) fail(in.get(), "read");

  int rc = target == Compression::zstd ? archive_write_add_filter_zstd(out.get())
           : target == Compression::gzip ? archive_write_add_filter_gzip(out.get())
                                                   : archive_write_add_filter_none(out.get());
  if (rc != ARCHIVE_OK) fail(out.get(), "choose the compression");
  if (target == Compression::gzip) archive_write_set_filter_option(out.get(), "gzip", "timestamp", nullptr);
  if (archive_write_set_format_raw(out.get()) != ARCHIVE_OK) fail(out.get(), "raw format");
  archive_write_set_bytes_in_last_block(out.get(), 1);  // no padding after the stream
  Out sink{out_fd, {}, 0};
  if (archive_write_open2(out.get(), &sink, nullptr, &Out::write, nullptr, nullptr) != ARCHIVE_OK)
    fail(out.get(), "open the output");
  std::unique_ptr<archive_entry, EntryDeleter> entry(archive_entry_new());
  archive_entry_set_pathname(entry.get(), "layer.tar");
  archive_entry_set_filetype(entry.get(), AE_IFREG);
  archive_entry_set_perm(entry.get(), 0644);
  if (archive_write_header(out.get(), entry.get()) != ARCHIVE_OK) fail(out.get(), "write");
  std::vector<char> buf(1 << 17);
  for (;;) {
    la_ssize_t n = archive_read_data(in.get(), buf.data(), buf.size());
    if (n < 0) fail(in.get(), "decompress");
    if (n == 0) break;
    if (archive_write_data(out.get(), buf.data(), static_cast<size_t>(n)) != n) fail(out.get(), "compress");
  }
  if (archive_write_close(out.get()) != ARCHIVE_OK) fail(out.get(), "finish");
  return {sink.hash.finish(), sink.size};
}

}  // namespace strata::archive
