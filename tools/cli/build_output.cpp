// strata build --output (see build_output.hpp).
#include "build_output.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <optional>

#include "cli.hpp"
#include "store_common.hpp"
#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/text.hpp"

namespace strata::cli {

namespace {

// The merged tree of an image: a read-only stratafs mount of its layers
// (an empty directory for an image without layers), unmounted at the end
// and with this process (owner=) if it is killed.
class ImageTree {
 public:
  ImageTree(const store::Store& store, const store::Image& img, const std::string& shown)
      : dir_(stream_staging(store, "build-output-mount")) {
    if (img.layer_dirs.empty()) return;
    fs::StratafsMount m;
    m.lowerdirs = img.layer_dirs;
    m.read_only = true;
    m.owner_pid = ::getpid();
    fs::mount_stratafs(mount_program(), m, dir_.path(), shown);
    mounted_ = true;
  }
  ImageTree(const ImageTree&) = delete;
  ImageTree& operator=(const ImageTree&) = delete;
  ~ImageTree() {
    if (mounted_) fs::detach_stratafs(dir_.path());
  }
  const std::string& path() const { return dir_.path(); }

 private:
  TempDir dir_;
  bool mounted_ = false;
};

void write_tree_tar(const std::string& tree, int fd) {
  archive::WriteLayerOptions o;
  o.changeset = false;  // the merged view has no whiteouts to translate
  archive::write_layer(tree, fd, o);
}

}  // namespace

BuildOutput parse_build_output(const std::string& spec) {
  auto bad = [&spec](const std::string& why) { return UsageError("build: --output " + quote(spec) + ": " + why); };
  BuildOutput out;
  if (spec.empty()) throw bad("give a directory, '-' or type=TYPE,dest=PATH");
  if (spec == "-") {
    out.type = "tar";
    out.dest = "-";
  } else if (spec.find('=') == std::string::npos) {
    out.type = "local";
    out.dest = spec;
  } else {
    for (auto field : split(spec, ',')) {
      auto eq = field.find('=');
      std::string key(field.substr(0, eq));
      std::string value = eq == std::string_view::npos ? std::string() : std::string(field.substr(eq + 1));
      if (key == "type") {
        out.type = value;
      } else if (key == "dest") {
        out.dest = value;
      } else {
        throw bad("unknown key " + quote(key) + " (type, dest)");
      }
    }
    if (out.type == "image" || out.type == "registry") {
      throw bad("type=" + out.type + " is not supported: tag the image with -t and use 'strata push'");
    }
    if (out.type != "local" && out.type != "tar" && out.type != "oci" && out.type != "docker") {
      throw bad("type must be local, tar, oci or docker");
    }
    if (out.dest.empty()) throw bad("dest= is missing");
  }
  if (out.type == "local" && out.to_stdout()) throw bad("type=local writes a directory, not standard output");
  if (out.to_stdout() && ::isatty(STDOUT_FILENO) != 0) {
    throw bad("refusing to write an archive to a terminal; give dest=FILE or redirect standard output");
  }
  return out;
}

void write_build_output(store::Store& store, const BuildOutput& out, const std::string& image_id,
                        const std::string& name) {
  if (out.type == "oci" || out.type == "docker") {
    store::SaveFormat format = out.type == "oci" ? store::SaveFormat::oci : store::SaveFormat::docker;
    std::vector<std::string> refs{name.empty() ? image_id : name};
    // Written whole in the store first, then copied: what reaches DEST is
    // the whole archive or nothing.
    TempDir staging = stream_staging(store, "build-output");
    std::string file = staging.path() + "/out.tar";
    store.save(refs, file, format);
    UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
    if (!in) throw SysError(errno, "open " + quote(file));
    if (out.to_stdout()) {
      copy_stream(in.get(), STDOUT_FILENO, quote(file), "standard output");
    } else {
      write_file_staged(
          out.dest, [&](int fd, const std::string& where) { copy_stream(in.get(), fd, quote(file), quote(where)); },
          "build --output");
    }
    return;
  }
  store::Image img = store.image(image_id);
  ImageTree tree(store, img, "image " + quote(image_id));
  if (out.type == "tar") {
    if (out.to_stdout()) {
      write_tree_tar(tree.path(), STDOUT_FILENO);
    } else {
      write_file_staged(out.dest, [&](int fd, const std::string&) { write_tree_tar(tree.path(), fd); }, "build --output");
    }
    return;
  }
  // local: the tree as a tar, staged in the store, then unpacked by the
  // extractor that takes layers (it refuses what would leave DEST).
  TempDir staging = stream_staging(store, "build-output");
  std::string file = staging.path() + "/tree.tar";
  {
    UniqueFd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd) throw SysError(errno, "create " + quote(file));
    write_tree_tar(tree.path(), fd.get());
  }
  std::error_code ec;
  std::filesystem::create_directories(out.dest, ec);
  if (ec) throw Error("build --output: create the directory " + quote(out.dest) + ": " + ec.message());
  UniqueFd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) throw SysError(errno, "open " + quote(file));
  // Files for the user, as BuildKit's local exporter gives them: never the
  // image's owners or device nodes on the host, even run as root (they are
  // recorded in the override_stat xattr of a stand-in instead).
  archive::ExtractOptions xo;
  xo.privileged = false;
  xo.max_size = 0;  // the image's own size, already in the store
  archive::extract_layer(in.get(), out.dest, xo);
}

}  // namespace strata::cli
