// src/registry/push: an image of the store to a registry: each blob asked
// for, mounted from a sibling repository or uploaded, the manifest last.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "client.hpp"
#include "strata/archive.hpp"
#include "sources.hpp"
#include "strata/fd.hpp"
#include "strata/registry.hpp"
#include "transfers.hpp"

namespace strata::registry {

using oci::json;

namespace {

bool is_docker_manifest(std::string_view t) { return t == oci::kMediaTypeDockerManifest; }

// The layer media type of FORMAT (docker or OCI) for COMPRESSION.
std::string layer_type(bool docker, archive::Compression c) {
  switch (c) {
    case archive::Compression::gzip: return docker ? oci::kMediaTypeDockerLayerGzip : oci::kMediaTypeLayerGzip;
    case archive::Compression::zstd:
      if (docker) throw UsageError("the v2s2 format cannot carry zstd layers; use --format oci or --compression gzip");
      return oci::kMediaTypeLayerZstd;
    default: return docker ? oci::kMediaTypeDockerLayer : oci::kMediaTypeLayer;
  }
}

// One blob to push: where its bytes are and what the manifest says of it.
struct PushBlob {
  oci::Descriptor desc;
  std::string path;
  bool stored = true;  // a store blob (false: a recompressed copy in tmp/)
};

// A recompressed layer written to the store's staging area, removed after the push.
class StagedBlob {
 public:
  explicit StagedBlob(const std::string& tmp) {
    path_ = tmp + "/push-" + std::to_string(::getpid()) + "-" + std::to_string(reinterpret_cast<std::uintptr_t>(this));
    fd_ = UniqueFd(::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!fd_) throw_errno("create " + quote(path_));
  }
  ~StagedBlob() { ::unlink(path_.c_str()); }
  StagedBlob(const StagedBlob&) = delete;
  StagedBlob& operator=(const StagedBlob&) = delete;
  const std::string& path() const { return path_; }
  int fd() const { return fd_.get(); }

 private:
  std::string path_;
  UniqueFd fd_;
};

PushResult push_image(store::Store& store, std::string_view image_text, std::string_view destination,
                      const PushOptions& options);

}  // namespace

PushResult push(store::Store& store, std::string_view image_text, std::string_view destination, const PushOptions& options) {
  try {
    return push_image(store, image_text, destination, options);
  } catch (const Interrupted&) {
    throw Interrupted("push " + std::string(destination.empty() ? image_text : destination) + ": interrupted");
  }
}

namespace {

PushResult push_image(store::Store& store, std::string_view image_text, std::string_view destination,
                      const PushOptions& options) {
  if (options.max_concurrent_uploads < 1 || options.max_concurrent_uploads > 32)
    throw UsageError("--max-concurrent-uploads must be between 1 and 32");
  store::Image img = store.image(image_text);
  std::string dest_text(destination.empty() ? image_text : destination);
  if (destination.empty()) {
    // Pushing by id needs a name to push to.
    auto r = oci::Reference::try_parse(image_text);
    bool named = false;
    for (const auto& n : img.names) named = named || (r && oci::Reference::parse(n).str() == r->str());
    if (!named) throw UsageError("push: " + quote(image_text) + " is not a name of the image; give a DESTINATION");
  }
  oci::Reference dest = oci::Reference::parse(dest_text);
  if (dest.digest) throw UsageError("push: the destination " + quote(dest_text) + " has a digest; give a tag");
  const std::string shown = dest.familiar();
  auto say = [&](const std::string& m) {
    if (options.message) options.message(m);
  };

  // The manifest as pushed: the stored bytes, or a converted copy.
  std::string manifest_bytes = store.read_blob(img.manifest_digest);
  json mj = json::parse(manifest_bytes);
  std::string stored_type = mj.value("mediaType", oci::kMediaTypeManifest);
  bool docker = options.format == PushFormat::keep ? is_docker_manifest(stored_type) : options.format == PushFormat::v2s2;
  std::string media_type = docker ? oci::kMediaTypeDockerManifest : oci::kMediaTypeManifest;
  bool changed = media_type != stored_type;

  std::vector<PushBlob> blobs;
  std::vector<std::unique_ptr<StagedBlob>> staged;
  {
    oci::Descriptor config = img.manifest.config;
    std::string config_type = docker ? oci::kMediaTypeDockerConfig : oci::kMediaTypeConfig;
    if (config.media_type != config_type) {
      mj["config"]["mediaType"] = config_type;
      changed = true;
    }
    blobs.push_back({config, store.blob_path(config.digest), true});
  }
  for (std::size_t i = 0; i < img.manifest.layers.size(); ++i) {
    oci::Descriptor layer = img.manifest.layers[i];
    archive::Compression have = archive::layer_compression(layer.media_type);
    archive::Compression want = have;
    if (options.compression == PushCompression::gzip && have != archive::Compression::gzip) want = archive::Compression::gzip;
    if (options.compression == PushCompression::zstd) want = archive::Compression::zstd;
    if (docker && want == archive::Compression::zstd && options.compression == PushCompression::keep)
      throw UsageError("push: layer " + layer.digest.str() +
                       " is zstd-compressed, which v2s2 cannot carry; add --compression gzip");
    PushBlob b{layer, store.blob_path(layer.digest), true};
    if (want != have) {
      say("Compressing layer " + layer.digest.short_id() + (want == archive::Compression::zstd ? " with zstd" : " with gzip"));
      auto out = std::make_unique<StagedBlob>(store.tmp_dir());
      UniqueFd in = open_at(AT_FDCWD, b.path, O_RDONLY);
      auto [digest, size] = archive::recompress(in.get(), out->fd(), want);
      b.desc.digest = digest;
      b.desc.size = size;
      b.path = out->path();
      b.stored = false;
      staged.push_back(std::move(out));
    }
    b.desc.media_type = layer_type(docker, want);
    json& lj = mj["layers"][i];
    if (lj["mediaType"] != b.desc.media_type || lj["digest"] != b.desc.digest.str()) {
      lj["mediaType"] = b.desc.media_type;
      lj["digest"] = b.desc.digest.str();
      lj["size"] = b.desc.size;
      changed = true;
    }
    blobs.push_back(b);
  }
  if (changed) {
    mj["mediaType"] = media_type;
    if (docker) {
      // Fields schema 2 does not have.
      mj.erase("annotations");
      mj.erase("artifactType");
      mj.erase("subject");
    }
    manifest_bytes = mj.dump(3);
  }

  RegistriesConf conf = RegistriesConf::load();
  std::atomic<bool> failed{false};
  http::Cancelled cancelled = [&failed, user = options.cancelled] { return failed.load() || (user && user()); };
  auto client = connect(dest.name(), conf, options, cancelled);
  say("The push refers to repository [" + dest.familiar_name() + "]");
  Reporter report(options.progress);
  for (const auto& b : blobs) report(b.desc.digest.short_id(), ProgressEvent::Kind::waiting);

  run_parallel(blobs.size(), options.max_concurrent_uploads, failed, [&](std::size_t i) {
    const PushBlob& b = blobs[i];
    const std::string id = b.desc.digest.short_id();
    const std::string what = shown + ": blob " + b.desc.digest.str();
    try {
      if (client->has_blob(dest.path, b.desc.digest, shown)) {
        report(id, ProgressEvent::Kind::exists);
        if (b.stored) record_source(store.root(), b.desc.digest, dest.name());
        return;
      }
      std::optional<UploadStart> session;
      if (b.stored) {
        for (const auto& src : blob_sources(store.root(), b.desc.digest)) {
          auto r = oci::Reference::try_parse(src);
          if (!r || r->domain != dest.domain || r->path == dest.path) continue;
          session = client->start_upload(dest.path, shown, &b.desc.digest, r->path);
          if (session->mounted) {
            report(id, ProgressEvent::Kind::mounted, 0, 0, r->path);
            record_source(store.root(), b.desc.digest, dest.name());
            return;
          }
          break;  // the registry opened an upload instead
        }
      }
      if (!session) session = client->start_upload(dest.path, shown);
      UniqueFd fd = open_at(AT_FDCWD, b.path, O_RDONLY);
      struct stat st {};
      if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + quote(b.path));
      if (st.st_size != b.desc.size)
        throw Error(what + " has " + std::to_string(st.st_size) + " bytes in the store, not the " +
                    std::to_string(b.desc.size) + " its descriptor says");
      auto last = std::chrono::steady_clock::time_point{};
      client->upload_blob(dest.path, session->location, b.desc.digest, fd.get(), b.desc.size, shown,
                          [&](std::int64_t sent) { report.bytes(id, sent, b.desc.size, last); });
      report(id, ProgressEvent::Kind::done);
      if (b.stored) record_source(store.root(), b.desc.digest, dest.name());
    } catch (const http::TransportError& e) {
      throw Error(what + ": " + e.what());
    }
  });
  if (options.cancelled && options.cancelled()) throw Interrupted("interrupted");

  PushResult result;
  result.reference = dest;
  result.digest = oci::sha256(manifest_bytes);
  result.size = static_cast<std::int64_t>(manifest_bytes.size());
  std::optional<std::string> echoed;
  try {
    echoed = client->put_manifest(dest.path, dest.tag, manifest_bytes, media_type, shown);
  } catch (const http::TransportError& e) {
    throw Error(shown + ": manifest " + result.digest.str() + ": " + e.what());
  }
  if (echoed && oci::Digest::try_parse(*echoed) && !(oci::Digest::parse(*echoed) == result.digest))
    throw Error(shown + ": the registry stored the manifest " + result.digest.str() + " as " + *echoed);
  return result;
}

}  // namespace

}  // namespace strata::registry
