// The gzip stream of every layer blob strata writes (commit, build, squash,
// import of a plain tar, push --compression gzip).
//
// Deterministic: no name, modification time 0, the same bytes for the same
// input with the same zlib. Fast on what layers hold: the input is deflated
// in 128 KiB chunks, each ending a deflate block; a chunk that level 1 could
// not shrink by 3% makes the following chunks stored as they are (deflate's
// stored blocks: a copy and a CRC), with every 8th chunk tried at level 1
// again, so a layer of already-compressed data (archives, media, random
// bytes) costs about what copying it does, and text and binaries are still
// compressed. Blobs are a few per cent bigger than gzip -6 gives, and
// written several times faster.
#pragma once

#include <zlib.h>

#include <cstddef>
#include <functional>
#include <vector>

namespace strata::archive {

class GzipWriter {
 public:
  // SINK receives the compressed bytes; it throws to abort.
  using Sink = std::function<void(const void* data, std::size_t len)>;
  explicit GzipWriter(Sink sink);
  ~GzipWriter();
  GzipWriter(const GzipWriter&) = delete;
  GzipWriter& operator=(const GzipWriter&) = delete;

  void write(const void* data, std::size_t len);
  // Ends the stream (trailer with CRC-32 and length); nothing may follow.
  void finish();

  static constexpr std::size_t kChunk = std::size_t{128} << 10;
  static constexpr unsigned kProbeEvery = 8;

 private:
  void deflate_some(const unsigned char* data, std::size_t len, int flush);
  void end_chunk();

  Sink sink_;
  z_stream zs_{};
  std::vector<unsigned char> out_;
  std::size_t in_chunk_ = 0;      // input bytes of the current chunk so far
  uLong chunk_in_ = 0, chunk_out_ = 0;  // totals when the chunk began
  int level_ = 1;
  unsigned stored_chunks_ = 0;    // chunks stored since the last probe
  bool finished_ = false;
};

}  // namespace strata::archive
