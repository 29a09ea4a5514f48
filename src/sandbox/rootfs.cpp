// The container's root file system, built by its pid 1 (see sandbox.cpp)
// before it pivots into it: the union mount (stratafs), /proc with docker's
// masks, /dev, /sys, the host's name resolution files, volumes, --tmpfs
// mounts and a read-only root; and parse_tmpfs for --tmpfs. Every path inside
// the root is resolved with openat2(RESOLVE_IN_ROOT), so symlinks in the image
// cannot point a mount or a new file outside the root.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <iostream>

#include "sandbox_internal.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/idfile.hpp"
#include "strata/sandbox.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/text.hpp"

namespace strata::sandbox {

namespace {

std::string fd_path(int fd) { return "/proc/self/fd/" + std::to_string(fd); }

// Opens PATH relative to ROOT as if ROOT were "/": symlinks and ".." cannot
// leave it. Returns -1 with errno set on failure.
int open_in_root(int root, const std::string& path, int flags, mode_t mode = 0) {
  open_how how{};
  how.flags = static_cast<std::uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) != 0 ? mode : 0;
  how.resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
  return static_cast<int>(::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how));
}

std::vector<std::string> components(const std::string& path) {
  std::vector<std::string> out;
  std::string cur;
  for (char c : path + "/") {
    if (c == '/') {
      if (!cur.empty() && cur != ".") out.push_back(cur);
      cur.clear();
    } else {
      cur += c;
    }
  }
  return out;
}

}  // namespace

// The directory PATH inside ROOT as an O_PATH fd, created (mode 0755) with its
// parents when missing; a dangling symlink's target is created inside ROOT.
UniqueFd ensure_dir(int root, const std::string& given) {
  std::string path = resolve_in_root(root, given);
  std::string cur = ".";
  UniqueFd fd(open_in_root(root, cur, O_PATH | O_DIRECTORY));
  if (!fd) throw_errno("open the container root");
  for (const auto& comp : components(path)) {
    std::string next = cur + "/" + comp;
    int n = open_in_root(root, next, O_PATH | O_DIRECTORY);
    if (n < 0 && errno == ENOENT) {
      if (::mkdirat(fd.get(), comp.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create " + quote("/" + path) + " in the container");
      n = open_in_root(root, next, O_PATH | O_DIRECTORY);
    }
    if (n < 0) throw_errno("open " + quote("/" + next.substr(2)) + " in the container");
    fd.reset(n);
    cur = std::move(next);
  }
  return fd;
}

namespace {

// The file PATH inside ROOT as an O_PATH fd, created empty when missing
// (through a dangling symlink: its target, inside ROOT).
UniqueFd ensure_file(int root, const std::string& given) {
  std::string path = resolve_in_root(root, given);
  auto comps = components(path);
  if (comps.empty()) throw Error("bad path " + quote(path) + " in the container");
  std::string parent;
  for (std::size_t i = 0; i + 1 < comps.size(); ++i) parent += "/" + comps[i];
  ensure_dir(root, parent);
  int n = open_in_root(root, path, O_PATH);
  if (n < 0 && errno == ENOENT) {
    int c = open_in_root(root, path, O_CREAT | O_RDONLY | O_NOCTTY, 0644);
    if (c < 0) throw_errno("create " + quote(path) + " in the container");
    ::close(c);
    n = open_in_root(root, path, O_PATH);
  }
  if (n < 0) throw_errno("open " + quote(path) + " in the container");
  return UniqueFd(n);
}

void do_mount(const char* source, const std::string& target, const char* type, unsigned long flags,
              const char* data, const std::string& what) {
  if (::mount(source, target.c_str(), type, flags, data) != 0) throw_errno("mount " + what);
}

// Makes the mount at FD (and, when RECURSIVE, every mount below it) read-only.
void make_read_only(int fd, bool recursive, const std::string& what) {
  mount_attr attr{};
  attr.attr_set = MOUNT_ATTR_RDONLY;
  unsigned flags = AT_EMPTY_PATH | (recursive ? static_cast<unsigned>(AT_RECURSIVE) : 0U);
  if (::mount_setattr(fd, "", flags, &attr, sizeof attr) != 0) throw_errno("make " + what + " read-only");
}

// Binds the host path SOURCE onto PATH inside ROOT (a file or a directory,
// created to match), optionally read-only.
void bind_into(int root, const std::string& source, const std::string& path, bool read_only, bool recursive) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) throw_errno("stat " + quote(source));
  UniqueFd target = S_ISDIR(st.st_mode) ? ensure_dir(root, path) : ensure_file(root, path);
  std::string what = quote(source) + " on " + quote(path);
  do_mount(source.c_str(), fd_path(target.get()), nullptr, MS_BIND | (recursive ? static_cast<unsigned long>(MS_REC) : 0UL), nullptr, what);
  if (read_only) {
    // Reopen: the old fd names the directory under the new mount.
    UniqueFd mounted(open_in_root(root, path, O_PATH));
    if (!mounted) throw_errno("open " + quote(path) + " in the container");
    make_read_only(mounted.get(), recursive, what);
  }
}

// Hides what docker hides in /proc: kernel memory and keys behind /dev/null
// (or an empty read-only tmpfs for directories), and the files that act on
// the whole machine (sysrq-trigger, sysctls, irq affinity) read-only. An
// identity-mapped root would otherwise pass their permission checks.
void mask_proc(int proc) {
  for (const char* name : {"kcore", "keys", "timer_list", "latency_stats", "sched_debug", "acpi", "scsi"}) {
    UniqueFd fd(::openat(proc, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) continue;
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) throw_errno(std::string("stat /proc/") + name);
    std::string what = std::string("/proc/") + name;
    if (S_ISDIR(st.st_mode)) {
      do_mount("tmpfs", fd_path(fd.get()), "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, "size=0", what);
    } else {
      do_mount("/dev/null", fd_path(fd.get()), nullptr, MS_BIND, nullptr, what);
      UniqueFd mounted(::openat(proc, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
      if (!mounted) throw_errno("open " + what);
      make_read_only(mounted.get(), false, what);
    }
  }
  for (const char* name : {"sys", "sysrq-trigger", "irq", "bus", "fs"}) {
    UniqueFd fd(::openat(proc, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!fd) continue;
    std::string what = std::string("/proc/") + name;
    do_mount(fd_path(fd.get()).c_str(), fd_path(fd.get()), nullptr, MS_BIND | MS_REC, nullptr, what);
    UniqueFd mounted(::openat(proc, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
    if (!mounted) throw_errno("open " + what);
    make_read_only(mounted.get(), true, what);
  }
}

void make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) throw_errno("create " + quote(path));
}

// Fills U.initdir with the mount points build_root needs and returns the
// layer list with it on top (see UnionRoot::initdir).
std::vector<std::string> with_init_layer(const UnionRoot& u) {
  std::vector<std::string> layers = u.lowerdirs;
  if (u.initdir.empty()) return layers;
  const std::string& init = u.initdir;
  make_dir(init);
  for (const char* d : {"/proc", "/dev", "/sys", "/etc"}) make_dir(init + d);
  for (const char* f : {"/etc/resolv.conf", "/etc/hosts"}) {
    if (::access(f, R_OK) != 0) continue;
    UniqueFd fd(::open((init + f).c_str(), O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create " + quote(init + f));
  }
  // /etc shows through: it keeps the mode and times of the image's /etc.
  for (const auto& layer : u.lowerdirs) {
    struct stat st {};
    if (::lstat((layer + "/etc").c_str(), &st) != 0) continue;
    if (S_ISDIR(st.st_mode)) {
      ::chmod((init + "/etc").c_str(), st.st_mode & 07777);
      const timespec times[2] = {st.st_atim, st.st_mtim};
      ::utimensat(AT_FDCWD, (init + "/etc").c_str(), times, AT_SYMLINK_NOFOLLOW);
    }
    break;
  }
  layers.insert(layers.begin(), init);
  return layers;
}

}  // namespace

// Starts stratafs on SPEC.rootfs and waits until the mount is ready (stratafs
// detaches then; its daemon lives in the container's pid namespace).
void mount_union(const RunSpec& spec) {
  const UnionRoot& u = *spec.union_root;
  std::vector<std::string> layers = with_init_layer(u);
  if (layers.empty()) throw Error("no layers to mount on " + quote(spec.rootfs), ExitCode::run_failed);
  fs::StratafsMount m;
  m.lowerdirs = std::move(layers);
  m.upperdir = u.upperdir;
  m.workdir = u.workdir;
  m.volatile_upper = u.volatile_upper;
  // Other users: the container's own ids, mapped to other host ids.
  m.allow_other = true;
  // The daemon ends with the supervisor, which the kernel kills when strata
  // dies (PR_SET_PDEATHSIG): no daemon or mount outlives a killed strata.
  m.owner_pid = ::getpid();
  fs::mount_stratafs(u.stratafs, m, spec.rootfs, "the container root", ExitCode::run_failed);
}

// Builds the container's root under SPEC.rootfs and pivots into it. Returns
// the slave side of the pty (or an empty fd without a tty) opened inside.
UniqueFd build_root(const ChildContext& ctx, int& master_out) {
  const RunSpec& spec = *ctx.spec;
  do_mount(spec.rootfs.c_str(), spec.rootfs, nullptr, MS_BIND | MS_REC, nullptr, "the root " + quote(spec.rootfs));
  UniqueFd root = open_at(AT_FDCWD, spec.rootfs, O_RDONLY | O_DIRECTORY);
  int r = root.get();

  // /proc
  {
    UniqueFd proc = ensure_dir(r, "proc");
    do_mount("proc", fd_path(proc.get()), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, "/proc");
    proc.reset(open_in_root(r, "proc", O_PATH | O_DIRECTORY));
    if (!proc) throw_errno("open /proc in the container");
    mask_proc(proc.get());
  }
  // /dev: a tmpfs with the host's harmless devices bound in read-only.
  {
    UniqueFd dev = ensure_dir(r, "dev");
    do_mount("tmpfs", fd_path(dev.get()), "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k", "/dev");
    dev.reset(open_in_root(r, "dev", O_PATH | O_DIRECTORY));
    if (!dev) throw_errno("open /dev in the container");
    for (const char* name : {"null", "zero", "full", "random", "urandom", "tty"}) {
      std::string host = std::string("/dev/") + name;
      UniqueFd f(::openat(dev.get(), name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0666));
      if (!f) throw_errno("create " + host + " in the container");
      f.reset();
      bind_into(r, host, host, true, false);
    }
    if (::mkdirat(dev.get(), "pts", 0755) != 0 || ::mkdirat(dev.get(), "shm", 01777) != 0 ||
        ::mkdirat(dev.get(), "mqueue", 0755) != 0) {
      throw_errno("create directories in /dev");
    }
    std::string pts_opts = "newinstance,ptmxmode=0666,mode=0620";
    if (ctx.gid5_mapped) pts_opts += ",gid=5";
    UniqueFd pts(open_in_root(r, "dev/pts", O_PATH | O_DIRECTORY));
    do_mount("devpts", fd_path(pts.get()), "devpts", MS_NOSUID | MS_NOEXEC, pts_opts.c_str(), "/dev/pts");
    UniqueFd mq(open_in_root(r, "dev/mqueue", O_PATH | O_DIRECTORY));
    do_mount("mqueue", fd_path(mq.get()), "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr, "/dev/mqueue");
    UniqueFd shm(open_in_root(r, "dev/shm", O_PATH | O_DIRECTORY));
    do_mount("shm", fd_path(shm.get()), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=1777,size=65536k", "/dev/shm");
    const std::pair<const char*, const char*> links[] = {
        {"pts/ptmx", "ptmx"},         {"/proc/self/fd", "fd"},       {"/proc/self/fd/0", "stdin"},
        {"/proc/self/fd/1", "stdout"}, {"/proc/self/fd/2", "stderr"}, {"/proc/kcore", "core"},
    };
    for (const auto& [target, name] : links) {
      if (::symlinkat(target, dev.get(), name) != 0) throw_errno(std::string("create /dev/") + name);
    }
  }
  UniqueFd slave;
  if (spec.tty) {
    UniqueFd master(open_in_root(r, "dev/pts/ptmx", O_RDWR | O_NOCTTY));
    if (!master) throw_errno("open /dev/pts/ptmx in the container");
    if (::unlockpt(master.get()) != 0) throw_errno("unlock the pty");
    int n = 0;
    if (::ioctl(master.get(), TIOCGPTN, &n) != 0) throw_errno("read the pty number");
    std::string slave_path = "dev/pts/" + std::to_string(n);
    slave.reset(open_in_root(r, slave_path, O_RDWR | O_NOCTTY));
    if (!slave) throw_errno("open /" + slave_path);
    bind_into(r, fd_path(slave.get()), "/dev/console", false, false);
    master_out = master.release();
  }
  // /sys, read-only.
  if (::access("/sys", F_OK) == 0) bind_into(r, "/sys", "/sys", true, true);
  // Name resolution: the host's files, or those written for the container.
  for (const auto& f : ctx.network->name_files()) {
    try {
      bind_into(r, f.source, f.target, f.read_only, false);
    } catch (const Error& e) {
      std::cerr << "strata: warning: " << e.what() << "\n";
    }
  }
  for (const auto& v : spec.volumes) {
    if (!v.volume.empty() && spec.fill_volume) spec.fill_volume(r, v);
    if (v.uid && ::lchown(v.source.c_str(), *v.uid, v.gid.value_or(0)) != 0) {
      throw_errno("give " + quote(v.target) + " the owner " + std::to_string(*v.uid) + ":" +
                  std::to_string(v.gid.value_or(0)));
    }
    if (v.mode && ::chmod(v.source.c_str(), *v.mode) != 0) throw_errno("set the mode of " + quote(v.target));
    bind_into(r, v.source, v.target, v.read_only, true);
  }
  for (const auto& t : spec.tmpfs) {
    UniqueFd at = ensure_dir(r, t.target);
    do_mount("tmpfs", fd_path(at.get()), "tmpfs", t.flags, t.data.c_str(), "tmpfs on " + quote(t.target));
  }
  if (spec.read_only_root) {
    // Every mount point exists now; the working directory is made here, as
    // it cannot be later.
    if (!spec.workdir.empty() && spec.workdir[0] == '/') ensure_dir(r, spec.workdir);
    make_read_only(r, false, "the root");
  }

  if (::fchdir(r) != 0) throw_errno("enter the container root");
  if (::syscall(SYS_pivot_root, ".", ".") != 0) throw_errno("pivot_root into " + quote(spec.rootfs));
  if (::umount2(".", MNT_DETACH) != 0) throw_errno("detach the host root");
  if (::chdir("/") != 0) throw_errno("enter /");
  return slave;
}

TmpfsMount parse_tmpfs(const std::string& spec) {
  auto bad = [&](const std::string& why) { return UsageError("bad tmpfs " + quote(spec) + ": " + why); };
  TmpfsMount t;
  auto colon = spec.find(':');
  t.target = spec.substr(0, colon);
  if (t.target.empty() || t.target[0] != '/') throw bad("the path must be absolute");
  if (colon != std::string::npos) t.options = spec.substr(colon + 1);
  t.flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;
  const std::pair<const char*, unsigned long> flag_words[] = {{"exec", MS_NOEXEC}, {"suid", MS_NOSUID}, {"dev", MS_NODEV}};
  std::vector<std::string> data;
  for (std::string_view word : colon == std::string::npos ? std::vector<std::string_view>{} : split(t.options, ',')) {
    if (word.empty()) continue;
    std::string opt(word);
    bool known = false;
    if (opt == "ro" || opt == "rw") {
      t.flags = opt == "ro" ? (t.flags | MS_RDONLY) : (t.flags & ~static_cast<unsigned long>(MS_RDONLY));
      known = true;
    }
    for (const auto& [flag_word, flag] : flag_words) {
      if (opt == flag_word) t.flags &= ~flag;
      if (opt == std::string("no") + flag_word) t.flags |= flag;
      known = known || opt == flag_word || opt == std::string("no") + flag_word;
    }
    if (known) continue;
    auto eq = opt.find('=');
    std::string key = opt.substr(0, eq), value = eq == std::string::npos ? "" : opt.substr(eq + 1);
    // The kernel's own syntax for each, checked here so that a typo is a
    // usage error and not a failed mount inside the container.
    bool ok = false;
    if (key == "size" || key == "nr_inodes") {
      std::string_view v = value;
      if (!v.empty() && std::string_view("kKmMgG%").find(v.back()) != std::string_view::npos) v.remove_suffix(1);
      ok = v.size() <= 19 && parse_unsigned(v);
    } else if (key == "mode") {
      ok = value.size() <= 4 && parse_unsigned(value, 8);
    } else if (key == "uid" || key == "gid") {
      auto id = value.size() <= 10 ? parse_unsigned(value) : std::nullopt;
      ok = id.has_value();
      if (ok && *id > idfile::kMaxId) throw bad("id 4294967295 cannot be used");
    } else {
      throw bad("unknown option " + quote(opt));
    }
    if (!ok) throw bad("bad value in " + quote(opt));
    data.push_back(opt);
  }
  for (std::size_t i = 0; i < data.size(); ++i) t.data += (i == 0 ? "" : ",") + data[i];
  return t;
}

}  // namespace strata::sandbox
