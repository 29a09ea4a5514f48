// src/registry/pull: reference -> manifest (an index picks the platform) ->
// config -> the layers the store lacks, several at once -> the image.
#include <sys/stat.h>

#include <set>

#include "client.hpp"
#include "ingest.hpp"
#include "sources.hpp"
#include "strata/registry.hpp"
#include "transfers.hpp"

namespace strata::registry {

using oci::json;

namespace {

// Image configs are small; a larger one is not a config.
constexpr std::int64_t kMaxConfigSize = 64 << 20;

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// The manifest a reference stands for, on this platform.
struct Resolved {
  std::string bytes;
  oci::Digest digest;
  oci::Manifest manifest;
  std::string media_type;
};

// Checks that BYTES are what DIGEST (from the reference, an index or the
// Docker-Content-Digest header) says; returns their digest.
oci::Digest verified(const std::string& bytes, const std::optional<oci::Digest>& want, const std::string& shown) {
  oci::Digest got = oci::sha256(bytes);
  if (want && !(got == *want))
    throw Error(shown + ": the manifest " + want->str() + " does not match its digest (got " + got.str() + ")");
  return got;
}

std::optional<oci::Digest> header_digest(const Client::Fetched& f) {
  if (!f.digest) return std::nullopt;
  return oci::Digest::try_parse(*f.digest);  // another algorithm: nothing to check against
}

std::string platforms_of(const json& index) {
  std::string out;
  for (const auto& e : index["manifests"]) {
    if (!e.is_object() || !e.contains("platform") || !e["platform"].is_object()) continue;
    const json& p = e["platform"];
    // The registry's JSON: a field that is not a string is shown as "?".
    auto field = [&](const char* key) {
      return p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : std::string("?");
    };
    std::string s = field("os") + "/" + field("architecture");
    if (p.contains("variant") && p["variant"].is_string()) s += "/" + p["variant"].get<std::string>();
    if (s == "unknown/unknown") continue;
    out += (out.empty() ? "" : ", ") + s;
  }
  return out.empty() ? "none" : out;
}

Resolved resolve_manifest(Client& client, const oci::Reference& ref, const Platform& platform, const std::string& shown) {
  Client::Fetched f = client.get_manifest(ref.path, ref.digest ? ref.digest->str() : ref.tag, shown);
  oci::Digest digest = verified(f.bytes, ref.digest ? ref.digest : header_digest(f), shown);
  ManifestInfo info = check_manifest(f.bytes, f.content_type, shown + " (" + digest.str() + ")");
  if (info.kind == ManifestKind::index) {
    auto entry = select_platform(info.json, platform);
    if (!entry)
      throw Error(shown + ": the index " + digest.str() + " has no image for " + platform.str() + " (it has " +
                  platforms_of(info.json) + "; see --platform)");
    std::string where = shown + " (" + entry->digest.str() + ")";
    if (entry->size > kMaxManifestSize) throw Error(where + ": the manifest is larger than 4 MiB; refused");
    f = client.get_manifest(ref.path, entry->digest.str(), shown);
    if (static_cast<std::int64_t>(f.bytes.size()) != entry->size)
      throw Error(where + ": the manifest has " + std::to_string(f.bytes.size()) + " bytes, not the " +
                  std::to_string(entry->size) + " the index says");
    digest = verified(f.bytes, entry->digest, shown);
    info = check_manifest(f.bytes, f.content_type, where);
    if (info.kind != ManifestKind::image) throw Error(where + ": an index inside an index is not supported");
  }
  Resolved r;
  r.bytes = std::move(f.bytes);
  r.digest = digest;
  r.manifest = oci::Manifest::from_json(info.json, shown);
  r.media_type = info.media_type;
  return r;
}

// One blob to bring in: its descriptor and the layer it makes.
struct LayerTask {
  oci::Descriptor blob;
  oci::Digest diff_id;
  bool local = false;  // the blob is in the store's layout already; only the layer is missing
};

PullResult pull_resolved(store::Store& store, Client& client, const oci::Reference& ref, Resolved resolved,
                         const PullOptions& options, std::atomic<bool>& failed) {
  const std::string shown = ref.familiar();
  auto say = [&](const std::string& m) {
    if (options.message) options.message(m);
  };
  say((ref.digest ? ref.digest->str() : ref.tag) + ": Pulling from " + ref.familiar_name());

  const oci::Manifest& m = resolved.manifest;
  std::string config_text;
  bool fetched = false;
  if (exists(store.blob_path(m.config.digest))) {
    config_text = store.read_blob(m.config.digest);
  } else {
    config_text = client.get_blob(ref.path, m.config, kMaxConfigSize, shown);
    fetched = true;
  }
  if (static_cast<std::int64_t>(config_text.size()) != m.config.size)
    throw Error(shown + ": the config " + m.config.digest.str() + " has " + std::to_string(config_text.size()) +
                " bytes, not the " + std::to_string(m.config.size) + " the manifest says");
  json config = json::parse(config_text, nullptr, false);
  if (config.is_discarded() || !config.is_object())
    throw Error(shown + ": the config " + m.config.digest.str() + " is not a JSON object");
  std::vector<oci::Digest> diff_ids;
  try {
    diff_ids = oci::config_diff_ids(config);
  } catch (const Error& e) {
    throw Error(shown + ": the config " + m.config.digest.str() + ": " + e.what());
  }
  if (diff_ids.size() != m.layers.size())
    throw Error(shown + ": the config " + m.config.digest.str() + " lists " + std::to_string(diff_ids.size()) +
                " layers but the manifest " + resolved.digest.str() + " " + std::to_string(m.layers.size()));
  // Stored before the layers: this also takes the store's writer lock once,
  // on this thread, before the transfer threads write.
  store.put_blob(config_text);

  Reporter report(options.progress);
  std::vector<LayerTask> tasks;
  std::set<oci::Digest> planned;
  for (std::size_t i = 0; i < m.layers.size(); ++i) {
    const oci::Descriptor& blob = m.layers[i];
    std::string id = blob.digest.short_id();
    bool blob_stored = exists(store.blob_path(blob.digest));
    if (blob_stored && store.find_layer(diff_ids[i])) {
      report(id, ProgressEvent::Kind::exists);
      continue;
    }
    if (!planned.insert(blob.digest).second) continue;  // the same blob twice in one image
    tasks.push_back({blob, diff_ids[i], blob_stored});
    report(id, ProgressEvent::Kind::waiting);
  }

  run_parallel(tasks.size(), options.max_concurrent_downloads, failed, [&](std::size_t i) {
    const LayerTask& t = tasks[i];
    std::string id = t.blob.digest.short_id();
    std::string what = shown + ": layer " + t.blob.digest.str();
    if (t.local) {
      report(id, ProgressEvent::Kind::verifying);
      try {
        store.layer_from_blob(t.blob, t.diff_id);
      } catch (const Error& e) {
        throw Error(what + ": " + e.what());
      }
      report(id, ProgressEvent::Kind::done);
      return;
    }
    LayerIngest ingest(store, t.blob, t.diff_id);
    auto last = std::chrono::steady_clock::time_point{};
    class Watched : public BlobTarget {
     public:
      Watched(LayerIngest& in, std::function<void()> tick) : in_(in), tick_(std::move(tick)) {}
      std::int64_t offset() const override { return in_.offset(); }
      void write(const char* d, std::size_t n) override {
        in_.write(d, n);
        tick_();
      }
      void restart() override { in_.restart(); }

     private:
      LayerIngest& in_;
      std::function<void()> tick_;
    } target(ingest, [&] { report.bytes(id, ingest.offset(), t.blob.size, last); });
    if (ingest.offset() > 0) report(id, ProgressEvent::Kind::transfer, ingest.offset(), t.blob.size, "resuming");
    client.fetch_blob(ref.path, t.blob, target, shown,
                      [&](const std::string& why) { report(id, ProgressEvent::Kind::retrying, 0, 0, why); });
    report(id, ProgressEvent::Kind::verifying, t.blob.size, t.blob.size);
    ingest.finish(what);
    report(id, ProgressEvent::Kind::done);
  });
  if (options.cancelled && options.cancelled()) throw Interrupted("interrupted");

  PullResult result;
  result.reference = ref;
  result.digest = resolved.digest;
  result.downloaded = fetched || !tasks.empty();
  std::vector<std::string> names;
  if (!ref.digest) {
    result.name = shown;
    names.push_back(shown);
    if (!result.downloaded) {
      std::optional<store::Image> before;
      try {
        before = store.find_image(shown);
      } catch (const Error&) {
      }
      result.downloaded = !before || !(before->manifest_digest == resolved.digest);
    }
  } else if (!result.downloaded) {
    std::string digest_path = store.blob_path(resolved.digest);
    result.downloaded = !exists(digest_path);
  }
  try {
    result.image = store.put_image(resolved.bytes, config_text, names);
  } catch (const Error& e) {
    throw Error(shown + " (" + resolved.digest.str() + "): " + e.what());
  }
  // Hints for a later push to another repository of this registry.
  try {
    record_source(store.root(), m.config.digest, ref.name());
    for (const auto& l : m.layers) record_source(store.root(), l.digest, ref.name());
  } catch (const Error&) {
    // Only a hint: a push without it uploads instead of mounting.
  }
  return result;
}

PullResult pull_candidates(store::Store& store, std::string_view text, const PullOptions& options);

}  // namespace

PullResult pull(store::Store& store, std::string_view text, const PullOptions& options) {
  try {
    return pull_candidates(store, text, options);
  } catch (const Interrupted&) {
    throw Interrupted("pull " + std::string(text) + ": interrupted");
  }
}

namespace {

PullResult pull_candidates(store::Store& store, std::string_view text, const PullOptions& options) {
  if (options.max_concurrent_downloads < 1 || options.max_concurrent_downloads > 32)
    throw UsageError("--max-concurrent-downloads must be between 1 and 32");
  RegistriesConf conf = RegistriesConf::load();
  std::vector<oci::Reference> candidates = resolve_reference(text, conf);
  Platform platform = options.platform.value_or(Platform::host());
  std::atomic<bool> failed{false};
  http::Cancelled cancelled = [&failed, user = options.cancelled] { return failed.load() || (user && user()); };
  std::string misses;
  for (const auto& ref : candidates) {
    const std::string shown = ref.familiar();
    if (candidates.size() > 1 && options.message) options.message("Trying to pull " + ref.str() + "...");
    std::unique_ptr<Client> client;
    Resolved resolved;
    try {
      client = connect(ref.name(), conf, options, cancelled);
      resolved = resolve_manifest(*client, ref, platform, shown);
    } catch (const StatusError& e) {
      bool absent = e.status() == 404 || e.status() == 401 || e.status() == 403;
      if (candidates.size() == 1 || !absent) throw;
      misses += (misses.empty() ? "" : "; ") + std::string(e.what());
      continue;
    } catch (const http::TransportError& e) {
      if (candidates.size() == 1) throw Error(shown + ": " + e.what());
      misses += (misses.empty() ? "" : "; ") + shown + ": " + e.what();
      continue;
    }
    return pull_resolved(store, *client, ref, std::move(resolved), options, failed);
  }
  throw Error(quote(text) + " is in none of the search registries: " + misses);
}

}  // namespace

}  // namespace strata::registry
