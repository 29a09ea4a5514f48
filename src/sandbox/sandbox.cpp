// The container runtime: namespaces, id maps, the root file system, the
// supervisor (forwards signals, reports the exit status), the command's
// credentials and exec, and the terminal relay.
//
// Processes: the caller (on the host) clones the supervisor into new user,
// mount, uts and ipc namespaces (and network, unless Network::host), writes
// its id maps, starts slirp4netns on it for private networking (network.cpp),
// then relays signals and, with a tty, the terminal. The supervisor mounts the union (stratafs runs
// beside it, outside the container), then forks the container's first
// process into new pid and mount namespaces: it builds the root (every path
// inside it is resolved with openat2(RESOLVE_IN_ROOT), so symlinks in the
// image cannot point a mount or a new file outside the root), pivots into it
// and execs the command, which is pid 1 of the container as in docker. The
// container sees only its own processes; strata's (the caller, the
// supervisor, stratafs, with their host paths) are in the parent pid
// namespace. When pid 1 ends the kernel kills what is left in its namespace;
// the supervisor ends stratafs, waits for it and exits with pid 1's status.
// A killed strata takes the supervisor (PR_SET_PDEATHSIG), and with it pid 1;
// stratafs watches the supervisor (-o owner=) and unmounts and exits then.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/openat2.h>
#include <net/if.h>
#include <poll.h>
#include <pwd.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/idfile.hpp"
#include "strata/sandbox.hpp"
#include "strata/stratafs_client.hpp"
#include "strata/text.hpp"
#include "network.hpp"

namespace strata::sandbox {

namespace {

// ---- small system helpers --------------------------------------------------

std::string read_file_or_empty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Reads a small regular file of the container (its /etc/passwd or
// /etc/group); anything else (missing, a FIFO, a device, huge) reads as empty,
// so that a hostile image cannot make strata block or run out of memory.
std::string read_container_file(const char* path) {
  UniqueFd fd(::open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (16 << 20)) return {};
  std::string out(static_cast<std::size_t>(st.st_size), '\0');
  std::size_t got = 0;
  while (got < out.size()) {
    ssize_t n = ::read(fd.get(), out.data() + got, out.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  out.resize(got);
  return out;
}

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

// ---- capabilities ----------------------------------------------------------

// Limits the bounding set to MASK (while the process still holds
// CAP_SETPCAP) and clears the ambient set.
void limit_bounding_set(std::uint64_t mask) {
  for (int cap = 0; cap <= 63; ++cap) {
    if (((mask >> cap) & 1U) != 0) continue;
    if (::prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0) {
      if (errno == EINVAL) break;  // past the last capability this kernel knows
      throw_errno("drop " + capability_name(cap));
    }
  }
  ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

// Limits the permitted and effective sets to MASK and clears the inheritable
// set; after the credentials change, which needs CAP_SETUID and CAP_SETGID
// even when MASK lacks them.
void limit_capabilities(std::uint64_t mask) {
  __user_cap_header_struct header{};
  header.version = _LINUX_CAPABILITY_VERSION_3;
  __user_cap_data_struct data[2]{};
  if (::syscall(SYS_capget, &header, data) != 0) throw_errno("read capabilities");
  for (int i = 0; i < 2; ++i) {
    auto m = static_cast<std::uint32_t>(mask >> (32 * i));
    data[i].permitted &= m;
    data[i].effective &= m;
    data[i].inheritable = 0;
  }
  if (::syscall(SYS_capset, &header, data) != 0) throw_errno("set capabilities");
}

// ---- messages between the processes ----------------------------------------

// Init and the command report a failure to start as one datagram on the error
// pipe: a code byte and the message.
[[noreturn]] void report_and_exit(int errfd, ExitCode code, const std::string& message) {
  std::string msg(1, static_cast<char>(static_cast<int>(code)));
  msg += message.substr(0, 3000);
  [[maybe_unused]] ssize_t n = ::write(errfd, msg.data(), msg.size());
  ::_exit(static_cast<int>(code));
}

void send_fd(int sock, int fd) {
  char byte = 'R';
  iovec iov{&byte, 1};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char buf[CMSG_SPACE(sizeof(int))]{};
  if (fd >= 0) {
    msg.msg_control = buf;
    msg.msg_controllen = sizeof buf;
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    std::memcpy(CMSG_DATA(c), &fd, sizeof fd);
  }
  if (::sendmsg(sock, &msg, MSG_NOSIGNAL) != 1) throw_errno("send the terminal to strata");
}

// Receives one message of at most SIZE bytes into BUF; FD receives the
// descriptor that came with it, if any. Returns its length, 0 when the peer
// closed the socket without sending.
ssize_t recv_message(int sock, char* buf, std::size_t size, UniqueFd& fd) {
  iovec iov{buf, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char cbuf[CMSG_SPACE(sizeof(int))]{};
  msg.msg_control = cbuf;
  msg.msg_controllen = sizeof cbuf;
  ssize_t n;
  do {
    n = ::recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); n >= 0 && c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      int got = -1;
      std::memcpy(&got, CMSG_DATA(c), sizeof got);
      fd.reset(got);
    }
  }
  return n < 0 ? 0 : n;
}

// The supervisor tells the host side the container's pid 1 as 'P' + pid;
// pid 1 sends 'R' (with the pty master, if any) once the root is built.
struct StartMessages {
  pid_t pid1 = 0;
  bool ready = false;
  UniqueFd master;
};

StartMessages receive_start(int sock) {
  StartMessages out;
  for (int i = 0; i < 2; ++i) {
    char buf[1 + sizeof(pid_t)];
    UniqueFd fd;
    ssize_t n = recv_message(sock, buf, sizeof buf, fd);
    if (n <= 0) break;
    if (buf[0] == 'P' && n == static_cast<ssize_t>(sizeof buf)) {
      std::memcpy(&out.pid1, buf + 1, sizeof out.pid1);
    } else if (buf[0] == 'R') {
      out.ready = true;
      out.master = std::move(fd);
    }
  }
  return out;
}

// Signals that strata passes on to the container.
constexpr int kForwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};

void noop_handler(int) {}

// What the host side sends init once its id maps are written.
struct GoMessage {
  winsize size{};
  bool has_size = false;
};

// ---- the container side ----------------------------------------------------

struct ChildContext {
  const RunSpec* spec;
  const std::vector<std::string>* env;  // completed except HOME
  IdMapPlan::Kind map_kind;
  bool gid5_mapped;
  int sync_sock;
  int err_fd;
  const GoMessage* go = nullptr;  // set once the host side has written the id maps
  const ContainerNetwork* network = nullptr;
};

void bring_up_loopback() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) throw_errno("open a socket for the loopback interface");
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &req) != 0) throw_errno("read the loopback interface");
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &req) != 0) throw_errno("bring up the loopback interface");
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
  for (const auto& v : spec.volumes) bind_into(r, v.source, v.target, v.read_only, true);
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

[[noreturn]] void exec_command(const std::vector<std::string>& args, const std::vector<std::string>& env, int err_fd) {
  std::vector<char*> argv, envp;
  for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::string path = kDefaultPath;
  for (const auto& e : env) {
    envp.push_back(const_cast<char*>(e.c_str()));
    if (e.rfind("PATH=", 0) == 0) path = e.substr(5);
  }
  envp.push_back(nullptr);
  const std::string& file = args[0];
  auto fail = [&](int err, const std::string& what) {
    ExitCode code = (err == ENOENT || err == ENOTDIR) ? ExitCode::command_not_found : ExitCode::cannot_invoke;
    report_and_exit(err_fd, code, what + ": " + std::strerror(err));
  };
  if (file.empty()) report_and_exit(err_fd, ExitCode::command_not_found, "empty command name");
  if (file.find('/') != std::string::npos) {
    ::execve(file.c_str(), argv.data(), envp.data());
    fail(errno, "exec " + quote(file));
  }
  bool denied = false;
  std::size_t start = 0;
  for (;;) {
    auto end = path.find(':', start);
    std::string dir = path.substr(start, end == std::string::npos ? std::string::npos : end - start);
    std::string candidate = (dir.empty() ? std::string(".") : dir) + "/" + file;
    ::execve(candidate.c_str(), argv.data(), envp.data());
    int err = errno;
    if (err == EACCES) {
      denied = true;
    } else if (err != ENOENT && err != ENOTDIR) {
      fail(err, "exec " + quote(candidate));
    }
    if (end == std::string::npos) break;
    start = end + 1;
  }
  if (denied) fail(EACCES, "exec " + quote(file));
  report_and_exit(err_fd, ExitCode::command_not_found,
                  "exec " + quote(file) + ": executable file not found in $PATH");
}

// Overwrites this process's command line (strata's, with host paths) with
// "strata-init", so that the container sees nothing of the host in pid 1's
// /proc/1/cmdline.
void hide_host_command_line() {
  std::string stat = read_file_or_empty("/proc/self/stat");
  auto close_paren = stat.rfind(')');
  if (close_paren == std::string::npos) return;
  std::istringstream fields(stat.substr(close_paren + 2));
  // After the name: field 3 (state) .. 52; arg_start and arg_end are 48, 49.
  std::string field;
  unsigned long arg_start = 0, arg_end = 0;
  for (int n = 3; n <= 49 && fields >> field; ++n) {
    if (n == 48) arg_start = std::strtoul(field.c_str(), nullptr, 10);
    if (n == 49) arg_end = std::strtoul(field.c_str(), nullptr, 10);
  }
  if (arg_start == 0 || arg_end <= arg_start) return;
  auto* args = reinterpret_cast<char*>(arg_start);
  std::size_t size = arg_end - arg_start;
  std::memset(args, 0, size);
  std::memcpy(args, "strata-init", std::min<std::size_t>(size - 1, 11));
  ::prctl(PR_SET_NAME, "strata-init", 0, 0, 0);
}

// `--init`: the calling process forks; the child returns (to exec the
// command) in a process group of its own, in the terminal's foreground with
// a tty; the parent stays as pid 1, passes every signal it gets to the
// command's process group, reaps every process that ends, and exits with the
// command's status once it has ended.
void become_init(int err_fd, bool tty) {
  sigset_t all, old;
  sigfillset(&all);
  ::sigprocmask(SIG_SETMASK, &all, &old);
  pid_t child = ::fork();
  if (child < 0) throw_errno("start the command under the init process");
  if (child == 0) {
    if (::setpgid(0, 0) != 0) throw_errno("start a process group");
    if (tty && ::tcsetpgrp(0, ::getpid()) != 0) throw_errno("take the terminal");
    ::sigprocmask(SIG_SETMASK, &old, nullptr);
    return;
  }
  ::close(err_fd);  // the command reports its own exec failure
  hide_host_command_line();
  // As pid 1 the kernel gives it only the signals it has a handler for.
  struct sigaction sa {};
  sa.sa_handler = noop_handler;
  sigemptyset(&sa.sa_mask);
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &sa, nullptr);
  }
  for (;;) {
    siginfo_t info{};
    int sig = ::sigwaitinfo(&all, &info);
    if (sig < 0) continue;
    if (sig != SIGCHLD) {
      if (::kill(-child, sig) != 0) ::kill(child, sig);
      continue;
    }
    int status = 0;
    pid_t p;
    while ((p = ::waitpid(-1, &status, WNOHANG)) > 0) {
      if (p != child) continue;
      if (WIFEXITED(status)) ::_exit(WEXITSTATUS(status));
      ::_exit(128 + WTERMSIG(status));
    }
  }
}

// The command's side once its root is in place (the container's pid 1, or a
// process `strata exec` starts): the session and terminal, stdin, the working
// directory, the credentials, capabilities and seccomp, and exec.
[[noreturn]] void become_user_and_exec(const RunSpec& spec, const std::vector<std::string>& base_env,
                                       IdMapPlan::Kind map_kind, int err_fd, UniqueFd slave, const ExecUser& user) {
  try {
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    const bool tty = static_cast<bool>(slave);
    if (tty) {
      if (::setsid() < 0) throw_errno("start a session");
      if (::ioctl(slave.get(), TIOCSCTTY, 0) != 0) throw_errno("set the controlling terminal");
      if (::fchown(slave.get(), user.uid, static_cast<gid_t>(-1)) != 0 && errno != EINVAL) throw_errno("chown the terminal");
      for (int fd = 0; fd < 3; ++fd) {
        if (::dup2(slave.get(), fd) < 0) throw_errno("attach the terminal");
      }
      if (slave.get() > 2) {
        slave.reset();
      } else {
        static_cast<void>(slave.release());  // it is one of 0, 1, 2 now
      }
    } else {
      // A process group of its own, for the signals the supervisor passes
      // on (in the supervisor's session, which has no terminal).
      if (::setpgid(0, 0) != 0) throw_errno("start a process group");
    }
    if (!tty && !spec.interactive) {
      int null = ::open("/dev/null", O_RDONLY);
      if (null < 0) throw_errno("open /dev/null");
      if (::dup2(null, 0) < 0) throw_errno("redirect stdin");
      if (null != 0) ::close(null);
    }
    std::string workdir = spec.workdir.empty() ? "/" : spec.workdir;
    if (workdir[0] != '/') throw Error("the working directory " + quote(workdir) + " is not absolute", ExitCode::run_failed);
    ensure_dir(open_at(AT_FDCWD, "/", O_PATH | O_DIRECTORY).get(), workdir);
    if (::chdir(workdir.c_str()) != 0) throw_errno("enter the working directory " + quote(workdir));
    limit_bounding_set(spec.capabilities);
    if (map_kind != IdMapPlan::Kind::single) {
      if (::setgroups(user.groups.size(), user.groups.data()) != 0) throw_errno("set the supplementary groups");
    }
    auto unmapped = [&](const std::string& what) {
      std::string hint = map_kind == IdMapPlan::Kind::single
                             ? " (only uid and gid 0 exist: add a range for the user in /etc/subuid and /etc/subgid)"
                             : "";
      throw Error(what + " is not mapped in the container's user namespace" + hint, ExitCode::run_failed);
    };
    if (::setresgid(user.gid, user.gid, user.gid) != 0) {
      if (errno == EINVAL) unmapped("gid " + std::to_string(user.gid));
      throw_errno("set gid " + std::to_string(user.gid));
    }
    if (::setresuid(user.uid, user.uid, user.uid) != 0) {
      if (errno == EINVAL) unmapped("uid " + std::to_string(user.uid));
      throw_errno("set uid " + std::to_string(user.uid));
    }
    limit_capabilities(spec.capabilities);
    if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) throw_errno("set no_new_privs");
    std::vector<std::string> env = base_env;
    bool has_home = false;
    for (const auto& e : env) has_home = has_home || e.rfind("HOME=", 0) == 0;
    if (!has_home) env.push_back("HOME=" + user.home);
    // Last: from here on the filter applies to what strata does too.
    if (spec.seccomp) apply_seccomp(*spec.seccomp, spec.capabilities);
    if (spec.init) become_init(err_fd, tty);
    exec_command(spec.argv, env, err_fd);
  } catch (const Error& e) {
    report_and_exit(err_fd, e.code() == ExitCode::failure ? ExitCode::run_failed : e.code(), e.what());
  } catch (const std::exception& e) {
    report_and_exit(err_fd, ExitCode::run_failed, e.what());
  }
}

// The container's pid 1 until it execs the command: the root, the
// credentials, stdio, and exec. Nothing of strata stays in the container.
[[noreturn]] void container_main(const ChildContext& ctx) {
  const RunSpec& spec = *ctx.spec;
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // A mount namespace of its own: pivot_root moves the root of every
    // process that shares it, and the supervisor must keep the host's.
    if (::unshare(CLONE_NEWNS) != 0) throw_errno("create the container's mount namespace");
    if (::sethostname(spec.hostname.data(), spec.hostname.size()) != 0) throw_errno("set the host name");
    if (spec.network != Network::host) bring_up_loopback();
    int master = -1;
    UniqueFd slave = build_root(ctx, master);
    UniqueFd master_fd(master);
    if (master_fd && ctx.go->has_size) ::ioctl(master_fd.get(), TIOCSWINSZ, &ctx.go->size);
    ExecUser user = resolve_user(spec.user, read_container_file("/etc/passwd"), read_container_file("/etc/group"));
    send_fd(ctx.sync_sock, master_fd.get());
    master_fd.reset();
    ::close(ctx.sync_sock);
    become_user_and_exec(spec, *ctx.env, ctx.map_kind, ctx.err_fd, std::move(slave), user);
  } catch (const Error& e) {
    report_and_exit(ctx.err_fd, e.code() == ExitCode::failure ? ExitCode::run_failed : e.code(), e.what());
  } catch (const std::exception& e) {
    report_and_exit(ctx.err_fd, ExitCode::run_failed, e.what());
  }
}

int status_code(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
  return 255;
}

// Whether process PID has a handler for SIG, or ignores it: as pid 1 of its
// namespace it would otherwise never see the signal (the kernel drops signals
// that init leaves at their default action).
bool takes_signal(pid_t pid, int sig) {
  std::string status = read_file_or_empty("/proc/" + std::to_string(pid) + "/status");
  for (const char* field : {"SigCgt:\t", "SigIgn:\t"}) {
    auto at = status.find(field);
    if (at == std::string::npos) continue;
    std::uint64_t mask = std::strtoull(status.c_str() + at + std::strlen(field), nullptr, 16);
    if ((mask >> (sig - 1)) & 1U) return true;
  }
  return false;
}

// Ends the calling process's remaining children (stratafs, which unmounts
// on SIGTERM) and waits for them: when strata returns, the container's
// union is gone and its upper is no longer written.
void end_children() {
  std::string self = std::to_string(::getpid());
  std::istringstream children(read_file_or_empty("/proc/" + self + "/task/" + self + "/children"));
  for (pid_t pid; children >> pid;) ::kill(pid, SIGTERM);
  while (::waitpid(-1, nullptr, 0) > 0 || errno == EINTR) {
  }
}

// The supervisor: in the container's user namespace but outside its pid
// namespace, so that nothing inside can see or signal it (or stratafs,
// which it starts). Mounts the union, starts the container's pid 1, passes
// it the signals strata forwards, and exits with its status.
[[noreturn]] void supervisor_main(ChildContext ctx) {
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    // A session of its own: the host's terminal signals reach the container
    // only through strata, once.
    ::setsid();
    GoMessage go;
    ssize_t n;
    do {
      n = ::read(ctx.sync_sock, &go, sizeof go);
    } while (n < 0 && errno == EINTR);
    if (n != static_cast<ssize_t>(sizeof go)) ::_exit(static_cast<int>(ExitCode::run_failed));
    ctx.go = &go;
    if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) throw_errno("become root in the user namespace");
    if (ctx.map_kind != IdMapPlan::Kind::single && ::setgroups(0, nullptr) != 0) throw_errno("clear the groups");
    // stratafs detaches from its starter: as a subreaper this process gets
    // it back as a child, to end it and wait for it when the container ends.
    ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) throw_errno("make the mounts private");
    // stratafs stays in this mount namespace with the host's root; the
    // container gets a copy of it, so that pivot_root (which moves every
    // process of its namespace whose root is the old one) leaves the daemon
    // alone: its own path lookups must never go through its mount.
    if (ctx.spec->union_root) mount_union(*ctx.spec);
    if (::unshare(CLONE_NEWPID) != 0) throw_errno("create the container's pid namespace");

    // Every signal stays blocked here and is taken with sigwaitinfo; the
    // forwarded ones get a handler so that they are not lost to SIG_IGN.
    struct sigaction sa {};
    sa.sa_handler = noop_handler;
    sigemptyset(&sa.sa_mask);
    for (int sig : kForwarded) ::sigaction(sig, &sa, nullptr);
    ::sigaction(SIGCHLD, &sa, nullptr);
    sigset_t all;
    sigfillset(&all);
    ::sigprocmask(SIG_SETMASK, &all, nullptr);

    pid_t pid1 = ::fork();
    if (pid1 < 0) throw_errno("start the container's first process");
    if (pid1 == 0) container_main(ctx);
    {
      char msg[1 + sizeof(pid_t)] = {'P'};
      std::memcpy(msg + 1, &pid1, sizeof pid1);
      [[maybe_unused]] ssize_t sent = ::send(ctx.sync_sock, msg, sizeof msg, MSG_NOSIGNAL);
    }
    ::close(ctx.sync_sock);
    ::close(ctx.err_fd);
    int ended_by = 0;  // a signal the command left at its default action
    for (;;) {
      siginfo_t info{};
      int sig = ::sigwaitinfo(&all, &info);
      if (sig < 0) continue;
      if (sig == SIGCHLD) {
        int status = 0;
        pid_t p;
        while ((p = ::waitpid(-1, &status, WNOHANG)) > 0) {
          if (p != pid1) continue;
          end_children();
          if (ended_by != 0 && WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) ::_exit(128 + ended_by);
          ::_exit(status_code(status));
        }
      } else {
        // To pid 1's process group, as a terminal sends its Ctrl-C: a shell
        // waiting for a child would otherwise wait on.
        bool taken = !ctx.spec->signals_end_command && takes_signal(pid1, sig);
        ::kill(-pid1, sig);
        if (!taken) {
          // What the signal does to a process that is not pid 1: end it.
          ended_by = sig;
          ::kill(pid1, SIGKILL);
        }
      }
    }
  } catch (const Error& e) {
    report_and_exit(ctx.err_fd, e.code() == ExitCode::failure ? ExitCode::run_failed : e.code(), e.what());
  } catch (const std::exception& e) {
    report_and_exit(ctx.err_fd, ExitCode::run_failed, e.what());
  }
}

// ---- the host side ---------------------------------------------------------

void write_proc_file(pid_t pid, const char* name, const std::string& content) {
  std::string path = "/proc/" + std::to_string(pid) + "/" + name;
  UniqueFd fd = open_at(AT_FDCWD, path, O_WRONLY);
  if (::write(fd.get(), content.data(), content.size()) != static_cast<ssize_t>(content.size())) {
    throw_errno("write " + path);
  }
}

void run_map_tool(const char* tool, pid_t pid, const std::vector<IdMapping>& map) {
  std::vector<std::string> args = {tool, std::to_string(pid)};
  for (const auto& m : map) {
    args.push_back(std::to_string(m.inside));
    args.push_back(std::to_string(m.outside));
    args.push_back(std::to_string(m.count));
  }
  pid_t p = ::fork();
  if (p < 0) throw_errno(std::string("start ") + tool);
  if (p == 0) {
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execvp(tool, argv.data());
    std::fprintf(stderr, "strata: cannot run %s: %s (install uidmap)\n", tool, std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(p, &status, 0) < 0) {
    if (errno != EINTR) throw_errno(std::string("wait for ") + tool);
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    throw Error(std::string(tool) + " failed to map the container's ids (see /etc/subuid and /etc/subgid)",
                ExitCode::run_failed);
  }
}

void write_id_maps(pid_t pid, const IdMapPlan& plan) {
  switch (plan.kind) {
    case IdMapPlan::Kind::identity:
      write_proc_file(pid, "uid_map", format_id_map(plan.uids));
      write_proc_file(pid, "gid_map", format_id_map(plan.gids));
      break;
    case IdMapPlan::Kind::single:
      write_proc_file(pid, "setgroups", "deny");
      write_proc_file(pid, "uid_map", format_id_map(plan.uids));
      write_proc_file(pid, "gid_map", format_id_map(plan.gids));
      break;
    case IdMapPlan::Kind::subordinate:
      run_map_tool("newuidmap", pid, plan.uids);
      run_map_tool("newgidmap", pid, plan.gids);
      break;
  }
}

// Puts the terminal on fd 0 in raw mode for as long as it lives.
class RawTerminal {
 public:
  RawTerminal() {
    if (::isatty(0) == 0 || ::tcgetattr(0, &saved_) != 0) return;
    termios raw = saved_;
    ::cfmakeraw(&raw);
    if (::tcsetattr(0, TCSANOW, &raw) == 0) active_ = true;
  }
  RawTerminal(const RawTerminal&) = delete;
  RawTerminal& operator=(const RawTerminal&) = delete;
  ~RawTerminal() {
    if (active_) ::tcsetattr(0, TCSANOW, &saved_);
  }

 private:
  termios saved_{};
  bool active_ = false;
};

class SignalMask {
 public:
  explicit SignalMask(const sigset_t& set) { ::sigprocmask(SIG_BLOCK, &set, &old_); }
  SignalMask(const SignalMask&) = delete;
  SignalMask& operator=(const SignalMask&) = delete;
  ~SignalMask() {
    // Drop what arrived for the container before unblocking.
    ::sigprocmask(SIG_SETMASK, &old_, nullptr);
  }

 private:
  sigset_t old_{};
};

bool copy_some(int from, int to) {
  char buf[8192];
  ssize_t n = ::read(from, buf, sizeof buf);
  if (n < 0 && (errno == EINTR || errno == EAGAIN)) return true;
  if (n <= 0) return false;
  try {
    write_all(to, buf, static_cast<std::size_t>(n), "terminal output");
  } catch (const Error&) {
    return false;
  }
  return true;
}

// Waits for init, forwarding signals and relaying the terminal.
int supervise(pid_t child, const RunSpec& spec, int sigfd, UniqueFd master) {
  bool relay_stdin = master && spec.interactive;
  bool exited = false;
  int status = 0;
  if (master) ::fcntl(master.get(), F_SETFL, ::fcntl(master.get(), F_GETFL) | O_NONBLOCK);
  while (!exited) {
    pollfd fds[3] = {{sigfd, POLLIN, 0}, {master ? master.get() : -1, POLLIN, 0}, {relay_stdin ? 0 : -1, POLLIN, 0}};
    if (::poll(fds, 3, -1) < 0) {
      if (errno == EINTR) continue;
      throw_errno("poll");
    }
    if ((fds[0].revents & POLLIN) != 0) {
      signalfd_siginfo si{};
      while (::read(sigfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si)) {
        int sig = static_cast<int>(si.ssi_signo);
        if (sig == SIGCHLD) {
          if (::waitpid(child, &status, WNOHANG) == child) exited = true;
        } else if (sig == SIGWINCH) {
          winsize ws{};
          if (master && ::ioctl(0, TIOCGWINSZ, &ws) == 0) ::ioctl(master.get(), TIOCSWINSZ, &ws);
        } else {
          ::kill(child, sig);
        }
      }
    }
    if (master && (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      if (!copy_some(master.get(), 1)) {
        // The last slave is closed: wait for init without relaying.
        master.reset();
        relay_stdin = false;
      }
    }
    if (relay_stdin && (fds[2].revents & (POLLIN | POLLHUP | POLLERR)) != 0) {
      char buf[4096];
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n > 0) {
        try {
          write_all(master.get(), buf, static_cast<std::size_t>(n), "terminal input");
        } catch (const Error&) {
          relay_stdin = false;
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        // End of input: pass it on as the terminal's end-of-file character.
        relay_stdin = false;
        [[maybe_unused]] ssize_t w = ::write(master.get(), "\x04", 1);
      }
    }
  }
  if (master) {
    // Drain what the command wrote before it ended.
    for (int i = 0; i < 100; ++i) {
      pollfd p{master.get(), POLLIN, 0};
      if (::poll(&p, 1, 20) <= 0) break;
      if (!copy_some(master.get(), 1)) break;
    }
  }
  return status;
}

// What the host side of run() and exec_in() holds while the command runs:
// the sync socket and the error pipe to the container side, and the
// forwarded signals (with SIGCHLD and SIGWINCH) blocked and read from a
// signalfd.
struct HostChannels {
  UniqueFd sync_parent, sync_child, err_read, err_write, sigfd;
  std::optional<SignalMask> mask;
  HostChannels() {
    int sp[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sp) != 0) throw_errno("socketpair");
    sync_parent.reset(sp[0]);
    sync_child.reset(sp[1]);
    int ep[2];
    if (::pipe2(ep, O_CLOEXEC | O_NONBLOCK) != 0) throw_errno("pipe");
    err_read.reset(ep[0]);
    err_write.reset(ep[1]);
    sigset_t handled;
    sigemptyset(&handled);
    for (int sig : kForwarded) sigaddset(&handled, sig);
    sigaddset(&handled, SIGCHLD);
    sigaddset(&handled, SIGWINCH);
    mask.emplace(handled);
    sigfd.reset(::signalfd(-1, &handled, SFD_CLOEXEC | SFD_NONBLOCK));
    if (!sigfd) throw_errno("signalfd");
  }
};

// The command's environment but HOME, which comes from the user, which only
// the container's /etc/passwd knows.
std::vector<std::string> command_env(const RunSpec& spec) {
  std::vector<std::string> env = complete_env(spec.env, spec.hostname, "", spec.tty);
  std::erase_if(env, [](const std::string& e) { return e == "HOME="; });
  return env;
}

}  // namespace

int run(const RunSpec& spec) {
  if (spec.argv.empty()) throw Error("no command given and the image has none", ExitCode::run_failed);
  {
    struct stat st {};
    if (::stat(spec.rootfs.c_str(), &st) != 0) throw SysError(errno, "root directory " + quote(spec.rootfs));
    if (!S_ISDIR(st.st_mode)) throw Error("root directory " + quote(spec.rootfs) + " is not a directory", ExitCode::run_failed);
  }
  for (const auto& v : spec.volumes) {
    if (v.target.empty() || v.target[0] != '/') {
      throw Error("volume target " + quote(v.target) + " is not an absolute path", ExitCode::run_failed);
    }
    if (::access(v.source.c_str(), F_OK) != 0) throw Error("volume source " + quote(v.source) + ": " + std::strerror(errno), ExitCode::run_failed);
  }
  uid_t uid = ::geteuid();
  gid_t gid = ::getegid();
  std::string name;
  if (passwd* pw = ::getpwuid(uid); pw != nullptr) name = pw->pw_name;
  IdMapPlan plan = plan_id_maps(uid, gid, name, read_file_or_empty("/etc/subuid"), read_file_or_empty("/etc/subgid"));
  if (plan.kind == IdMapPlan::Kind::single) {
    std::cerr << "strata: warning: no range for " << quote(name.empty() ? std::to_string(uid) : name)
              << " in /etc/subuid and /etc/subgid; the container has only uid and gid 0\n";
  }
  bool gid5 = false;
  for (const auto& m : plan.gids) gid5 = gid5 || (m.inside <= 5 && 5 - m.inside < m.count);

  std::vector<std::string> env = command_env(spec);
  ContainerNetwork network(spec);
  HostChannels channels;
  auto& [sync_parent, sync_child, err_read, err_write, sigfd, blocked] = channels;

  ChildContext ctx{&spec, &env, plan.kind, gid5, sync_child.get(), err_write.get()};
  ctx.network = &network;
  // The pid namespace comes later, with the container's first process (see
  // supervisor_main).
  unsigned long flags = CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD;
  if (network.own_namespace()) flags |= CLONE_NEWNET;
  std::cout.flush();
  std::cerr.flush();
  long pid = ::syscall(SYS_clone, flags, nullptr, nullptr, nullptr, nullptr);
  if (pid < 0) throw_errno("create the container's namespaces");
  if (pid == 0) {
    sync_parent.reset();
    err_read.reset();
    sigfd.reset();
    supervisor_main(ctx);
  }
  auto child = static_cast<pid_t>(pid);
  sync_child.reset();
  err_write.reset();
  auto kill_child = [&] {
    ::kill(child, SIGKILL);
    int st;
    while (::waitpid(child, &st, 0) < 0 && errno == EINTR) {
    }
  };
  try {
    write_id_maps(child, plan);
    network.attach(child);
    GoMessage go;
    if (spec.tty && ::ioctl(0, TIOCGWINSZ, &go.size) == 0) go.has_size = true;
    if (::write(sync_parent.get(), &go, sizeof go) != static_cast<ssize_t>(sizeof go)) throw_errno("start the container");
  } catch (...) {
    kill_child();
    throw;
  }
  StartMessages started = receive_start(sync_parent.get());
  sync_parent.reset();
  std::optional<RawTerminal> raw;
  if (started.master && spec.interactive) raw.emplace();
  // The exec closes the last writer of the error pipe (close-on-exec): its
  // end without a message means the command runs.
  std::string early_error;
  if (started.ready && spec.on_started) {
    pollfd p{err_read.get(), POLLIN, 0};
    while (::poll(&p, 1, -1) < 0 && errno == EINTR) {
    }
    char buf[4096];
    ssize_t n = ::read(err_read.get(), buf, sizeof buf);
    if (n > 0) {
      early_error.assign(buf, static_cast<std::size_t>(n));
    } else if (started.pid1 > 0) {
      try {
        spec.on_started(started.pid1);
      } catch (...) {
        raw.reset();
        kill_child();
        throw;
      }
    }
  }
  int status = supervise(child, spec, sigfd.get(), std::move(started.master));
  raw.reset();

  if (early_error.empty()) {
    char buf[4096];
    ssize_t n = ::read(err_read.get(), buf, sizeof buf);
    if (n > 0) early_error.assign(buf, static_cast<std::size_t>(n));
  }
  if (early_error.size() > 1) {
    auto code = static_cast<ExitCode>(static_cast<unsigned char>(early_error[0]));
    throw Error(early_error.substr(1), code);
  }
  return status_code(status);
}

namespace {

// The namespaces `strata exec` enters: those of the container's pid 1 that
// differ from the caller's (joining one's own host network namespace would
// need privileges over it that a rootless user lacks).
struct NamespaceToJoin {
  const char* name;
  int flag;
};
constexpr NamespaceToJoin kExecNamespaces[] = {{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS},   {"uts", CLONE_NEWUTS},
                                               {"ipc", CLONE_NEWIPC},   {"net", CLONE_NEWNET},  {"cgroup", CLONE_NEWCGROUP}};

bool same_namespace(pid_t pid, const char* name) {
  struct stat theirs {}, ours {};
  std::string path = "/proc/" + std::to_string(pid) + "/ns/" + name;
  if (::stat(path.c_str(), &theirs) != 0) throw_errno("read " + path);
  std::string self = std::string("/proc/self/ns/") + name;
  return ::stat(self.c_str(), &ours) == 0 && ours.st_ino == theirs.st_ino && ours.st_dev == theirs.st_dev;
}

// Enters the namespaces FLAGS of the process behind PIDFD: at once through
// the pidfd (Linux 5.8), else one by one through NS_FDS (user first).
void enter_namespaces(int pidfd, int flags, const std::vector<std::pair<int, UniqueFd>>& ns_fds) {
  if (flags == 0) return;
  if (::setns(pidfd, flags) == 0) return;
  if (errno != EINVAL && errno != ENOSYS && errno != EBADF) throw_errno("enter the container's namespaces");
  for (const auto& [flag, fd] : ns_fds) {
    if ((flags & flag) != 0 && ::setns(fd.get(), flag) != 0) throw_errno("enter the container's namespaces");
  }
}

}  // namespace

int exec_in(pid_t pid, const RunSpec& spec) {
  if (spec.argv.empty()) throw Error("exec: no command given", ExitCode::run_failed);
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) throw Error("the container's process " + std::to_string(pid) + " is gone", ExitCode::run_failed);
  std::string proc = "/proc/" + std::to_string(pid);
  // Its root as it sees it, opened on the host; then proof that PID is still
  // the process the pidfd names.
  UniqueFd root = open_at(AT_FDCWD, proc + "/root", O_PATH | O_DIRECTORY);
  int flags = 0;
  std::vector<std::pair<int, UniqueFd>> ns_fds;
  for (const auto& ns : kExecNamespaces) {
    if (same_namespace(pid, ns.name)) continue;
    flags |= ns.flag;
    ns_fds.emplace_back(ns.flag, open_at(AT_FDCWD, proc + "/ns/" + ns.name, O_RDONLY));
  }
  UniqueFd pid_ns = open_at(AT_FDCWD, proc + "/ns/pid", O_RDONLY);
  if (::syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) != 0)
    throw Error("the container's process " + std::to_string(pid) + " is gone", ExitCode::run_failed);
  IdMapPlan::Kind map_kind = IdMapPlan::Kind::identity;
  if (read_file_or_empty(proc + "/setgroups").rfind("deny", 0) == 0) map_kind = IdMapPlan::Kind::single;
  std::vector<std::string> env = command_env(spec);
  HostChannels channels;
  auto& [sync_parent, sync_child, err_read, err_write, sigfd, blocked] = channels;

  // The pid namespace applies to the children of the process that enters
  // it: the command's, and then this process's own again (its later
  // children, such as the sanitizers' helper threads, stay on the host).
  UniqueFd own_pid_ns = open_at(AT_FDCWD, "/proc/self/ns/pid", O_RDONLY);
  if (::setns(pid_ns.get(), CLONE_NEWPID) != 0) throw_errno("enter the container's pid namespace");
  std::cout.flush();
  std::cerr.flush();
  pid_t child = ::fork();
  if (child > 0 && ::setns(own_pid_ns.get(), CLONE_NEWPID) != 0) {
    ::kill(child, SIGKILL);
    throw_errno("return to strata's pid namespace");
  }
  if (child < 0) throw_errno("start the command");
  if (child == 0) {
    sync_parent.reset();
    err_read.reset();
    sigfd.reset();
    try {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      enter_namespaces(pidfd.get(), flags, ns_fds);
      if (::fchdir(root.get()) != 0 || ::chroot(".") != 0 || ::chdir("/") != 0) throw_errno("enter the container's root");
      if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) throw_errno("become root in the user namespace");
      UniqueFd slave, master;
      if (spec.tty) {
        master.reset(::open("/dev/pts/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!master) throw_errno("open /dev/pts/ptmx in the container");
        if (::unlockpt(master.get()) != 0) throw_errno("unlock the pty");
        int n = 0;
        if (::ioctl(master.get(), TIOCGPTN, &n) != 0) throw_errno("read the pty number");
        slave.reset(::open(("/dev/pts/" + std::to_string(n)).c_str(), O_RDWR | O_NOCTTY | O_CLOEXEC));
        if (!slave) throw_errno("open the pty");
        winsize ws{};
        if (::ioctl(0, TIOCGWINSZ, &ws) == 0) ::ioctl(master.get(), TIOCSWINSZ, &ws);
      }
      ExecUser user = resolve_user(spec.user, read_container_file("/etc/passwd"), read_container_file("/etc/group"));
      send_fd(sync_child.get(), master.get());
      master.reset();
      sync_child.reset();
      RunSpec inside = spec;
      inside.init = false;
      become_user_and_exec(inside, env, map_kind, err_write.get(), std::move(slave), user);
    } catch (const Error& e) {
      report_and_exit(err_write.get(), e.code() == ExitCode::failure ? ExitCode::run_failed : e.code(), e.what());
    } catch (const std::exception& e) {
      report_and_exit(err_write.get(), ExitCode::run_failed, e.what());
    }
  }
  sync_child.reset();
  err_write.reset();
  UniqueFd master;
  char byte[1];
  static_cast<void>(recv_message(sync_parent.get(), byte, sizeof byte, master));
  sync_parent.reset();
  std::optional<RawTerminal> raw;
  if (master && spec.interactive) raw.emplace();
  int status = supervise(child, spec, sigfd.get(), std::move(master));
  raw.reset();
  char buf[4096];
  ssize_t n = ::read(err_read.get(), buf, sizeof buf);
  if (n > 1) throw Error(std::string(buf + 1, static_cast<std::size_t>(n - 1)), static_cast<ExitCode>(static_cast<unsigned char>(buf[0])));
  return status_code(status);
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
