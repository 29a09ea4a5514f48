// Layer compression: the gzip writer of every blob strata writes
// (gzip_writer.hpp), and blobs recompressed with libarchive's raw format
// (one stream through a read filter and a write filter): push --compression,
// and plain tars that import stores gzip-compressed.
#include "strata/archive.hpp"
#include "gzip_writer.hpp"

#include <archive.h>
#include <archive_entry.h>

#include <algorithm>
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

GzipWriter::GzipWriter(Sink sink) : sink_(std::move(sink)), out_(kChunk + 4096) {
  // windowBits 15 + 16: a gzip wrapper; its header has no name and time 0.
  if (deflateInit2(&zs_, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw Error("cannot start the gzip compressor");
}

GzipWriter::~GzipWriter() { deflateEnd(&zs_); }

void GzipWriter::deflate_some(const unsigned char* data, std::size_t len, int flush) {
  zs_.next_in = const_cast<unsigned char*>(data);
  zs_.avail_in = static_cast<uInt>(len);
  for (;;) {
    zs_.next_out = out_.data();
    zs_.avail_out = static_cast<uInt>(out_.size());
    int rc = deflate(&zs_, flush);
    if (rc == Z_STREAM_ERROR) throw Error("gzip compression failed");
    if (std::size_t n = out_.size() - zs_.avail_out; n > 0) sink_(out_.data(), n);
    if (rc == Z_STREAM_END) return;
    // Done once every input byte is taken and deflate had room to spare.
    if (zs_.avail_in == 0 && zs_.avail_out != 0) return;
  }
}

// Ends a deflate block at the chunk's end, so that the bytes it gave are
// exactly its own, and picks the level of the next chunk from them.
void GzipWriter::end_chunk() {
  deflate_some(nullptr, 0, Z_BLOCK);
  const uLong in = zs_.total_in - chunk_in_;
  const uLong out = zs_.total_out - chunk_out_;
  int next;
  if (level_ == 1) {
    next = out * 100 > in * 97 ? 0 : 1;
    stored_chunks_ = 0;
  } else {
    next = ++stored_chunks_ % kProbeEvery == 0 ? 1 : 0;
  }
  if (next != level_) {
    // The pending input is all compressed (Z_BLOCK above): nothing to flush.
    zs_.next_out = out_.data();
    zs_.avail_out = static_cast<uInt>(out_.size());
    if (deflateParams(&zs_, next, Z_DEFAULT_STRATEGY) != Z_OK) throw Error("gzip compression failed");
    if (std::size_t n = out_.size() - zs_.avail_out; n > 0) sink_(out_.data(), n);
    level_ = next;
  }
  in_chunk_ = 0;
  chunk_in_ = zs_.total_in;
  chunk_out_ = zs_.total_out;
}

void GzipWriter::write(const void* data, std::size_t len) {
  auto* p = static_cast<const unsigned char*>(data);
  while (len > 0) {
    const std::size_t take = std::min(len, kChunk - in_chunk_);
    deflate_some(p, take, Z_NO_FLUSH);
    p += take;
    len -= take;
    in_chunk_ += take;
    if (in_chunk_ == kChunk) end_chunk();
  }
}

void GzipWriter::finish() {
  if (finished_) return;
  deflate_some(nullptr, 0, Z_FINISH);
  finished_ = true;
}

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

  std::vector<char> buf(1 << 17);
  if (target == Compression::gzip) {
    Out sink{out_fd, {}, 0};
    GzipWriter gz([&sink](const void* data, std::size_t n) {
      if (Out::write(nullptr, &sink, data, n) < 0) throw Error("recompress a layer: cannot write it");
    });
    for (;;) {
      la_ssize_t n = archive_read_data(in.get(), buf.data(), buf.size());
      if (n < 0) fail(in.get(), "decompress");
      if (n == 0) break;
      gz.write(buf.data(), static_cast<std::size_t>(n));
    }
    gz.finish();
    return {sink.hash.finish(), sink.size};
  }
  int rc = target == Compression::zstd ? archive_write_add_filter_zstd(out.get())
                                        : archive_write_add_filter_none(out.get());
  if (rc != ARCHIVE_OK) fail(out.get(), "choose the compression");
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
