// Verbs that move files between a container and the host: cp and export.
//
// Both work on the container's merged (union) view. A stopped container is
// mounted writable through stratafs for the duration of the command (or the
// mount of `strata mount` is used). A running container's root is a FUSE
// mount of its own user namespace that the host cannot enter, and a second
// stratafs must never run over its upper: its files are reached through a
// sandbox::ContainerHelper in its user and mount namespaces, and cross
// between it and the host as a tar on a pipe. Whatever comes out of a
// container is extracted by the archive module's hostile-input extractor
// into a staging directory, then placed with the same rules as for a
// stopped container. Every path inside the container is resolved with
// openat2(RESOLVE_IN_ROOT) on the root's fd, so a symlink in the container
// resolves as it would inside it; below the named path nothing is followed
// (O_NOFOLLOW on both sides).
#include <fcntl.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <functional>
#include <iostream>
#include <optional>
#include <string>

#include "../../src/dockerfile/files.hpp"
#include "cli.hpp"
#include "store_common.hpp"
#include "strata/archive.hpp"
#include "strata/container_helper.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/lifecycle.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/tar_entry.hpp"

namespace strata::cli {
namespace {

namespace files = build::files;

// The merged root of a stopped container, open for the life of this object.
class ContainerRoot {
 public:
  // C must not be running (see the top); the lock refuses one being started.
  ContainerRoot(const store::Store& store, const store::Container& c) {
    if (auto mounted = store.mounted_at(c); !mounted.empty()) {
      path_ = mounted[0];  // already mounted by `strata mount`
    } else {
      lock_.emplace(store.lock_container(c));  // refuses a container that is being started
      store::Image img = store.image_by_manifest(c.image);
      if (img.layer_dirs.empty()) throw Error("image of container " + quote(c.name) + " has no layers to mount");
      mnt_.emplace(std::filesystem::temp_directory_path().string(), "strata-cp.");
      fs::StratafsMount m;
      m.lowerdirs = img.layer_dirs;
      m.upperdir = c.upper;
      m.workdir = c.work;
      m.owner_pid = ::getpid();  // a killed strata takes the mount with it
      fs::mount_stratafs(mount_program(), m, mnt_->path(), "container " + quote(c.name));
      mounted_ = true;
      path_ = mnt_->path();
      workdir_ = c.work;
    }
    fd_ = UniqueFd(::open(path_.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
    if (!fd_) {
      int err = errno;
      unmount();
      throw SysError(err, "open the root of container " + quote(c.name));
    }
  }
  ContainerRoot(const ContainerRoot&) = delete;
  ContainerRoot& operator=(const ContainerRoot&) = delete;
  ~ContainerRoot() {
    fd_.reset();
    unmount();
  }

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }

 private:
  void unmount() noexcept {
    if (!mounted_) return;
    mounted_ = false;
    try {
      fs::unmount_stratafs(path_, workdir_);  // returns once the container can be started
    } catch (const Error& e) {
      std::cerr << "strata: " << e.what() << "\n";
    }
  }

  std::optional<store::Store::ContainerLock> lock_;
  std::optional<TempDir> mnt_;
  bool mounted_ = false;
  std::string path_;
  std::string workdir_;  // of the mount this object made
  UniqueFd fd_;
};

// "CONTAINER:PATH" split as docker does: a colon names a container unless
// what comes before it looks like a path (contains '/', or the argument
// starts with '.' or '/').
struct CopyArg {
  std::optional<std::string> container;
  std::string path;
};

CopyArg parse_copy_arg(const std::string& arg) {
  auto colon = arg.find(':');
  if (colon == std::string::npos || colon == 0 || arg[0] == '/' || arg[0] == '.' ||
      arg.substr(0, colon).find('/') != std::string::npos)
    return {std::nullopt, arg};
  return {arg.substr(0, colon), arg.substr(colon + 1)};
}

// What a copy's path says besides the file: "SRC/." copies the contents of
// a directory; a trailing "/" requires a directory.
struct PathForm {
  std::string clean;   // absolute, lexically normal ("/" for the root)
  bool contents = false;
  bool want_dir = false;
};

PathForm path_form(const std::string& path, const std::string& cwd) {
  PathForm f;
  f.contents = path == "." || path.ends_with("/.");
  f.want_dir = path.ends_with("/") || f.contents;
  std::filesystem::path p = path.starts_with("/") ? std::filesystem::path(path) : std::filesystem::path(cwd) / path;
  f.clean = p.lexically_normal().string();
  while (f.clean.size() > 1 && f.clean.ends_with("/")) f.clean.pop_back();
  return f;
}

std::string dir_of(const std::string& clean) {
  auto slash = clean.rfind('/');
  return slash == 0 ? "/" : clean.substr(0, slash);
}
std::string base_of(const std::string& clean) { return clean == "/" ? "" : clean.substr(clean.rfind('/') + 1); }

// The source of a copy, open O_PATH: inside ROOT (a path of the container)
// or the host (ROOT is the host's "/"). A final symlink is followed only with
// FOLLOW (-L). Returns an invalid fd when it does not exist.
UniqueFd open_source(int root, const PathForm& f, bool follow, struct stat& st) {
  UniqueFd fd;
  if (follow || f.clean == "/") {
    fd = files::open_in_root(root, f.clean, O_PATH);
  } else {
    UniqueFd parent = files::open_in_root(root, dir_of(f.clean), O_PATH | O_DIRECTORY);
    if (parent) fd = UniqueFd(::openat(parent.get(), base_of(f.clean).c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  }
  if (!fd) {
    if (errno == ENOENT || errno == ENOTDIR) return fd;
    throw_errno("open " + quote(f.clean));
  }
  if (::fstat(fd.get(), &st) != 0) throw_errno("stat " + quote(f.clean));
  return fd;
}

// Copies SRC (open O_PATH, SST its stat, NAME its name) to the destination
// DEST inside ROOT with docker cp's rules: into an existing directory as
// NAME (its contents with SRC/.), over an existing file, or as DEST when it
// does not exist. DEST's own symlinks are resolved inside ROOT; below it
// nothing is followed. SHOWN names DEST in errors.
void place(int src, const struct stat& sst, const PathForm& from, int root, const PathForm& dest,
           const std::string& shown, const files::CopySpec& spec) {
  if (from.contents && !S_ISDIR(sst.st_mode)) throw Error("cp: " + quote(from.clean) + " is not a directory");
  if (from.want_dir && !from.contents && !S_ISDIR(sst.st_mode))
    throw Error("cp: " + quote(from.clean) + " is not a directory");
  std::string resolved = resolve_in_root(root, dest.clean);
  UniqueFd target = files::open_in_root(root, resolved, O_PATH);
  if (!target && errno != ENOENT) throw_errno("open " + quote(shown));
  struct stat dst {};
  if (target && ::fstat(target.get(), &dst) != 0) throw_errno("stat " + quote(shown));
  bool dest_is_dir = target && S_ISDIR(dst.st_mode);
  if (dest_is_dir && (from.contents || base_of(from.clean).empty())) {
    UniqueFd into = files::open_in_root(root, resolved, O_RDONLY | O_DIRECTORY);
    if (!into) throw_errno("open " + quote(shown));
    UniqueFd in(::openat(src, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!in) throw_errno("open " + quote(from.clean));
    for (const auto& child : read_dir_names(in.get(), from.clean)) {
      UniqueFd c(::openat(in.get(), child.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!c) throw_errno("open " + quote(child));
      struct stat cst {};
      if (::fstat(c.get(), &cst) != 0) throw_errno("stat " + quote(child));
      files::copy_tree(c.get(), cst, into.get(), child, spec);
    }
    return;
  }
  if (dest_is_dir) {
    UniqueFd into = files::open_in_root(root, resolved, O_PATH | O_DIRECTORY);
    if (!into) throw_errno("open " + quote(shown));
    files::copy_tree(src, sst, into.get(), base_of(from.clean), spec);
    return;
  }
  if (target && S_ISDIR(sst.st_mode)) throw Error("cp: cannot copy a directory to the file " + quote(shown));
  if (dest.want_dir) {
    if (target) throw Error("cp: " + quote(shown) + " is not a directory");
    if (!S_ISDIR(sst.st_mode)) throw Error("cp: the destination directory " + quote(shown) + " does not exist");
  }
  UniqueFd parent = files::open_in_root(root, dir_of(resolved), O_PATH | O_DIRECTORY);
  if (!parent) {
    if (errno == ENOENT || errno == ENOTDIR)
      throw Error("cp: the directory of " + quote(shown) + " does not exist");
    throw_errno("open the directory of " + quote(shown));
  }
  if (resolved == "/") throw Error("cp: cannot replace the root " + quote(shown));
  files::copy_tree(src, sst, parent.get(), base_of(resolved), spec);
}

std::string current_dir() {
  std::error_code ec;
  auto p = std::filesystem::current_path(ec);
  if (ec) throw Error("cp: cannot read the current directory: " + ec.message());
  return p.string();
}

UniqueFd host_root() {
  UniqueFd fd(::open("/", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!fd) throw_errno("open /");
  return fd;
}

// ---- a running container ----------------------------------------------------

// The pid 1 of C when it runs, else 0.
pid_t running_pid(const store::Store& store, const store::Container& c) {
  lifecycle::State state = lifecycle::container_state(store, c);
  return state.running() && state.pid > 0 ? state.pid : 0;
}

// A pipe whose ends the host and a helper each keep one of.
struct Pipe {
  UniqueFd read, write;
  Pipe() {
    int p[2];
    if (::pipe2(p, O_CLOEXEC) != 0) throw_errno("pipe");
    read.reset(p[0]);
    write.reset(p[1]);
  }
};

// Writes the source F inside ROOT (a final symlink followed with FOLLOW) as
// a tar to OUT_FD, named by its base name (its contents for the root);
// throws NOT_FOUND when it does not exist.
void write_source_tar(int root, const PathForm& f, bool follow, int out_fd, const std::string& not_found) {
  std::string path = follow && f.clean != "/" ? resolve_in_root(root, f.clean) : f.clean;
  std::string dir = path == "/" ? "/" : dir_of(path);
  std::string name = base_of(path);
  UniqueFd parent = files::open_in_root(root, dir, O_RDONLY | O_DIRECTORY);
  struct stat st {};
  if (!parent || (!name.empty() && ::fstatat(parent.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0)) {
    if (errno == ENOENT || errno == ENOTDIR) throw Error(not_found);
    throw_errno("open " + quote(f.clean));
  }
  archive::write_entry(parent.get(), name, base_of(f.clean), out_fd, dir);
}

// The form of a source staged by name in a staging directory open as a root:
// "/NAME", or "/" (its contents) for a source that is a root.
PathForm staged_form(const PathForm& f) {
  PathForm g = f;
  g.clean = "/" + base_of(f.clean);
  if (f.clean == "/") g.contents = g.want_dir = true;
  return g;
}

// Runs WORK in a helper in the container whose pid 1 is PID while the host
// does HOST_SIDE; throws the helper's error before the host side's, which
// is often only its consequence (a broken pipe, a cut tar).
void with_helper(pid_t pid, const std::function<void(int root)>& work, const std::function<void()>& host_side) {
  sandbox::ContainerHelper helper(pid, sandbox::ContainerHelper::Namespaces::user, work);
  try {
    host_side();
  } catch (const Error&) {
    helper.wait();
    throw;
  }
  helper.wait();
}

// Copies the source F out of the running container with pid 1 PID: a helper
// writes its tar, extracted here into STAGING, which then holds it as
// staged_form(F) names it.
void stage_out_of_running(pid_t pid, const PathForm& f, bool follow, const std::string& container,
                          const TempDir& staging) {
  Pipe p;
  std::string not_found = "Could not find the file " + f.clean + " in container " + container;
  with_helper(
      pid,
      [&](int root) {
        p.read.reset();
        write_source_tar(root, f, follow, p.write.get(), not_found);
      },
      [&] {
        p.write.reset();
        try {
          archive::ExtractOptions eo;
          eo.privileged = ::geteuid() == 0;
          archive::extract_layer(p.read.get(), staging.path(), eo);
        } catch (...) {
          p.read.reset();  // a helper still writing ends (EPIPE) rather than wait
          throw;
        }
      });
}

// Copies a tar into the running container with pid 1 PID: a helper reads it
// from IN (closing WRITER, the host's end, when there is one), extracts it
// into a staging directory of the host (opened before it enters the
// container) and places FROM (a form inside it, see staged_form) at DEST
// with place's rules; with STDIN_TAR, DEST must be an existing directory.
// WRITE_TAR runs on the host meanwhile.
void copy_into_running(pid_t pid, const PathForm& from, const PathForm& dest, const std::string& shown,
                       const files::CopySpec& spec, bool stdin_tar, int in, UniqueFd* writer,
                       const std::function<void()>& write_tar) {
  TempDir staging(std::filesystem::temp_directory_path().string(), "strata-cp.");
  UniqueFd staged = open_at(AT_FDCWD, staging.path(), O_RDONLY | O_DIRECTORY);
  with_helper(
      pid,
      [&](int root) {
        if (writer != nullptr) writer->reset();
        if (stdin_tar && !files::open_in_root(root, dest.clean, O_PATH | O_DIRECTORY))
          throw Error("cp: the destination " + shown + " must be an existing directory");
        // As root of the container's user namespace: other owners stay in
        // the override_stat xattr of the staged files.
        archive::extract_into(in, staged.get(), {});
        struct stat st {};
        UniqueFd src = open_source(staged.get(), from, false, st);
        if (!src) throw Error("cp: nothing to copy into " + shown);
        place(src.get(), st, from, root, dest, shown, spec);
      },
      write_tar);
}

// Copies the source SRC (open O_PATH, ST its stat, F its form) out of a
// container to the host's TO ("-": a tar on stdout), relative to CWD.
void copy_to_host(int src, const struct stat& st, const PathForm& f, const std::string& to, const std::string& cwd,
                  const files::CopySpec& spec) {
  UniqueFd host = host_root();
  if (to == "-") {
    if (::isatty(STDOUT_FILENO) != 0) throw Error("cp: refusing to write a tar to a terminal");
    TempDir staging(std::filesystem::temp_directory_path().string(), "strata-cp.");
    place(src, st, f, host.get(), path_form(staging.path(), "/"), staging.path(), spec);
    archive::WriteLayerOptions o;
    o.changeset = false;
    archive::write_layer(staging.path(), STDOUT_FILENO, o);
    return;
  }
  place(src, st, f, host.get(), path_form(to, cwd), to, spec);
}

int cp_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("archive,a", "keep uid and gid of the copied files")(
      "follow-link,L", "follow a symbolic link named as the source")(
      "src", po::value<std::string>()->required(), "source")("dest", po::value<std::string>()->required(), "destination");
  po::positional_options_description pos;
  pos.add("src", 1).add("dest", 1);
  po::variables_map vm;
  if (!parse_args("cp",
                  "strata cp [-a] [-L] CONTAINER:SRC_PATH DEST_PATH|-\n"
                  "       strata cp [-a] [-L] SRC_PATH|- CONTAINER:DEST_PATH",
                  opts, pos, args, vm))
    return 0;
  bool keep_owner = vm.count("archive") != 0U;
  bool follow = vm.count("follow-link") != 0U;
  const std::string& src_arg = vm["src"].as<std::string>();
  const std::string& dest_arg = vm["dest"].as<std::string>();
  CopyArg from = src_arg == "-" ? CopyArg{std::nullopt, "-"} : parse_copy_arg(src_arg);
  CopyArg to = dest_arg == "-" ? CopyArg{std::nullopt, "-"} : parse_copy_arg(dest_arg);
  if (from.container && to.container) throw UsageError("cp: copying between containers is not supported");
  if (!from.container && !to.container)
    throw UsageError("cp: one of SRC and DEST must be CONTAINER:PATH (see 'strata cp --help')");
  if ((from.container ? from.path : to.path).empty()) throw UsageError("cp: the path inside the container is empty");
  if ((from.container ? to.path : from.path).empty()) throw UsageError("cp: the host path is empty");

  auto store = open_store(g);
  store::Container c = store.container(from.container ? *from.container : *to.container);
  pid_t pid = running_pid(store, c);
  std::optional<ContainerRoot> root;
  if (pid == 0) root.emplace(store, c);
  std::string cwd = current_dir();
  files::CopySpec spec;

  if (from.container) {
    // Out of the container: owned by the caller unless -a.
    if (!keep_owner) spec.owner = build::Owner{::getuid(), ::getgid()};
    PathForm f = path_form(from.path, "/");
    std::string not_found = "Could not find the file " + f.clean + " in container " + c.name;
    struct stat st {};
    if (pid != 0) {
      TempDir staging(std::filesystem::temp_directory_path().string(), "strata-cp.");
      stage_out_of_running(pid, f, follow, c.name, staging);
      UniqueFd staged = open_at(AT_FDCWD, staging.path(), O_PATH | O_DIRECTORY);
      PathForm sf = staged_form(f);
      UniqueFd src = open_source(staged.get(), sf, false, st);
      if (!src) throw Error(not_found);
      copy_to_host(src.get(), st, sf, to.path, cwd, spec);
      return 0;
    }
    UniqueFd src = open_source(root->fd(), f, follow, st);
    if (!src) throw Error(not_found);
    copy_to_host(src.get(), st, f, to.path, cwd, spec);
    return 0;
  }

  // Into the container: owned by root:root of the container unless -a.
  if (!keep_owner) spec.owner = build::Owner{0, 0};
  PathForm dest = path_form(to.path, "/");
  std::string shown = dest.clean + " in container " + c.name;
  if (from.path == "-") {
    // A tar on stdin: extracted by the archive module's hostile-input
    // extractor into a staging directory, whose contents then go into DEST,
    // which must be an existing directory.
    PathForm f = path_form("/.", "/");
    dest.want_dir = true;
    if (pid != 0) {
      copy_into_running(pid, f, dest, shown, spec, true, STDIN_FILENO, nullptr, [] {});
      return 0;
    }
    UniqueFd target = files::open_in_root(root->fd(), dest.clean, O_PATH | O_DIRECTORY);
    if (!target) throw Error("cp: the destination " + shown + " must be an existing directory");
    TempDir staging(std::filesystem::temp_directory_path().string(), "strata-cp.");
    archive::ExtractOptions eo;
    eo.privileged = ::geteuid() == 0;
    archive::extract_layer(STDIN_FILENO, staging.path(), eo);
    UniqueFd staged = open_at(AT_FDCWD, staging.path(), O_PATH | O_DIRECTORY);
    struct stat st {};
    UniqueFd src = open_source(staged.get(), f, false, st);
    if (!src) throw_errno("open " + quote(staging.path()));
    place(src.get(), st, f, root->fd(), dest, shown, spec);
    return 0;
  }
  PathForm f = path_form(from.path, cwd);
  UniqueFd host = host_root();
  std::string not_found = "cp: no such file or directory: " + quote(from.path);
  struct stat st {};
  UniqueFd src = open_source(host.get(), f, follow, st);
  if (!src) throw Error(not_found);
  if (pid != 0) {
    // The source as a tar, written here while the helper reads it; a helper
    // that fails first makes the write fail (EPIPE), not this process end.
    Pipe p;
    struct sigaction ignore {}, old {};
    ignore.sa_handler = SIG_IGN;
    ::sigaction(SIGPIPE, &ignore, &old);
    copy_into_running(pid, staged_form(f), dest, shown, spec, false, p.read.get(), &p.write, [&] {
      p.read.reset();
      try {
        write_source_tar(host.get(), f, follow, p.write.get(), not_found);
      } catch (...) {
        p.write.reset();  // the helper sees the tar end and fails
        throw;
      }
      p.write.reset();
    });
    ::sigaction(SIGPIPE, &old, nullptr);
    return 0;
  }
  place(src.get(), st, f, root->fd(), dest, shown, spec);
  return 0;
}

// Writes the tar of container C's merged root to OUT_FD: of a running one
// (pid 1 PID) through a helper that writes the root mount alone (a clone of
// it without what is mounted below it: /proc, /dev, volumes, ...), else of
// the mount ContainerRoot makes.
void write_root_tar(const store::Store& store, const store::Container& c, pid_t pid, int out_fd) {
  if (pid != 0) {
    sandbox::ContainerHelper helper(pid, sandbox::ContainerHelper::Namespaces::user_and_mount, [&](int) {
      UniqueFd tree(::open_tree(AT_FDCWD, "/", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC));
      if (!tree) throw_errno("open the root of container " + quote(c.name));
      archive::write_entry(tree.get(), "", "", out_fd, "/");
    });
    helper.wait();
    return;
  }
  ContainerRoot root(store, c);
  archive::WriteLayerOptions o;
  o.changeset = false;
  archive::write_layer(root.path(), out_fd, o);
}

int export_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("output,o", po::value<std::string>(), "write to FILE instead of stdout")(
      "container", po::value<std::string>()->required(), "container");
  po::positional_options_description pos;
  pos.add("container", 1);
  po::variables_map vm;
  if (!parse_args("export", "strata export [-o FILE] CONTAINER", opts, pos, args, vm)) return 0;
  std::optional<std::string> out;
  if (vm.count("output") != 0U) {
    out = vm["output"].as<std::string>();
    if (out->empty()) throw UsageError("export: -o needs a file name");
  } else if (::isatty(STDOUT_FILENO) != 0) {
    throw Error("export: refusing to write a tar to a terminal; use -o FILE or redirect stdout");
  }
  auto store = open_store(g);
  store::Container c = store.container(vm["container"].as<std::string>());
  pid_t pid = running_pid(store, c);
  if (!out) {
    write_root_tar(store, c, pid, STDOUT_FILENO);
    return 0;
  }
  // Staged next to FILE and renamed, so a failure leaves no half file; a
  // device or FIFO (-o /dev/null) is written through, never replaced.
  write_file_staged(*out, [&](int fd, const std::string&) { write_root_tar(store, c, pid, fd); }, "export");
  return 0;
}

const VerbRegistration reg_cp("cp", "copy files between a container and the host", cp_verb);
const VerbRegistration reg_export("export", "write a container's file system as a tar", export_verb);

}  // namespace
}  // namespace strata::cli
