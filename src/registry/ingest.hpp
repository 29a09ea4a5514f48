// src/registry/ingest: the seam between a blob download and the store. A
// layer blob streams in through a LayerIngest, which counts and hashes it,
// keeps it resumable, and on finish() checks it and stores the layer.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "client.hpp"
#include "strata/fd.hpp"
#include "strata/oci.hpp"
#include "strata/store.hpp"

namespace strata::registry {

class LayerIngest : public BlobTarget {
 public:
  // Picks up the partial download of BLOB that an earlier pull left in
  // ROOT/tmp (pull-PID-HEX of a process that is gone), else starts one.
  LayerIngest(store::Store& store, const oci::Descriptor& blob, const oci::Digest& diff_id);
  // Unfinished: the partial download stays for the next pull (prune removes it).
  ~LayerIngest() override;
  LayerIngest(const LayerIngest&) = delete;
  LayerIngest& operator=(const LayerIngest&) = delete;

  std::int64_t offset() const override { return offset_; }
  void write(const char* data, std::size_t size) override;
  void restart() override;

  // Checks size and digest (WHAT names the blob in errors; a mismatch drops
  // the download) and stores the layer (import_layer, which checks the
  // diff_id).
  store::Layer finish(const std::string& what);

 private:
  store::Store& store_;
  oci::Descriptor blob_;
  oci::Digest diff_id_;
  std::string path_;
  UniqueFd fd_;
  std::int64_t offset_ = 0;
  std::optional<oci::Sha256> hash_;
  bool done_ = false;
};

}  // namespace strata::registry
