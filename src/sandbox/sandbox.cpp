// The container runtime's processes: namespaces, id maps, the supervisor
// (forwards signals, reports the exit status), the container's pid 1,
// `strata exec`'s way into a running container, and the terminal relay. The
// root file system is built in rootfs.cpp; the command's credentials and exec
// are in command.cpp.
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
#include <span>
#include <sstream>

#include "sandbox_internal.hpp"
#include "strata/error.hpp"
#include "strata/container_helper.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/sandbox.hpp"
#include "strata/terminal.hpp"
#include "strata/text.hpp"
#include "cgroup.hpp"
#include "network.hpp"

namespace strata::sandbox {

// ---- small system helpers --------------------------------------------------

std::string read_file_or_empty(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return {};
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

IdMapPlan own_id_maps() {
  uid_t uid = ::geteuid();
  std::string name;
  if (passwd* pw = ::getpwuid(uid); pw != nullptr) name = pw->pw_name;
  return plan_id_maps(uid, ::getegid(), name, read_file_or_empty("/etc/subuid"), read_file_or_empty("/etc/subgid"));
}

namespace {

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

}  // namespace

// ---- messages between the processes ----------------------------------------

// Init and the command report a failure to start as one datagram on the error
// pipe: a code byte and the message.
[[noreturn]] void report_and_exit(int errfd, ExitCode code, const std::string& message) {
  std::string msg(1, static_cast<char>(static_cast<int>(code)));
  msg += message.substr(0, 3000);
  [[maybe_unused]] ssize_t n = ::write(errfd, msg.data(), msg.size());
  ::_exit(static_cast<int>(code));
}

void noop_handler(int) {}

namespace {

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

// With a cgroup, pid 1 waits until the host side has put it there ('C').
StartMessages receive_start(int sock, const ContainerCgroup* cgroup = nullptr) {
  StartMessages out;
  for (int i = 0; i < 2; ++i) {
    char buf[1 + sizeof(pid_t)];
    UniqueFd fd;
    ssize_t n = recv_message(sock, buf, sizeof buf, fd);
    if (n <= 0) break;
    if (buf[0] == 'P' && n == static_cast<ssize_t>(sizeof buf)) {
      std::memcpy(&out.pid1, buf + 1, sizeof out.pid1);
      if (cgroup != nullptr && cgroup->active()) {
        cgroup->add(out.pid1);
        if (::send(sock, "C", 1, MSG_NOSIGNAL) != 1) throw_errno("start the container");
      }
    } else if (buf[0] == 'R') {
      out.ready = true;
      out.master = std::move(fd);
    }
  }
  return out;
}

// Signals that strata passes on to the container.
constexpr int kForwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};

// ---- the container side ----------------------------------------------------

void bring_up_loopback() {
  UniqueFd s(::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!s) throw_errno("open a socket for the loopback interface");
  ifreq req{};
  std::strncpy(req.ifr_name, "lo", IFNAMSIZ - 1);
  if (::ioctl(s.get(), SIOCGIFFLAGS, &req) != 0) throw_errno("read the loopback interface");
  req.ifr_flags = static_cast<short>(req.ifr_flags | IFF_UP | IFF_RUNNING);
  if (::ioctl(s.get(), SIOCSIFFLAGS, &req) != 0) throw_errno("bring up the loopback interface");
}

// The container's pid 1 until it execs the command: the root, the
// credentials, stdio, and exec. Nothing of strata stays in the container.
[[noreturn]] void container_main(const ChildContext& ctx) {
  const RunSpec& spec = *ctx.spec;
  try {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
    if (ctx.join_cgroup) {
      char byte = 0;
      ssize_t n;
      do {
        n = ::recv(ctx.sync_sock, &byte, 1, 0);
      } while (n < 0 && errno == EINTR);
      if (n != 1 || byte != 'C') ::_exit(static_cast<int>(ExitCode::run_failed));
      // Its cgroup is the root of what it sees in /proc/self/cgroup.
      if (::unshare(CLONE_NEWCGROUP) != 0) throw_errno("create the container's cgroup namespace");
    }
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
  IdMapPlan plan = own_id_maps();
  if (plan.kind == IdMapPlan::Kind::single) {
    passwd* pw = ::getpwuid(::geteuid());
    std::cerr << "strata: warning: no range for " << quote(pw != nullptr ? pw->pw_name : std::to_string(::geteuid()))
              << " in /etc/subuid and /etc/subgid (newuidmap and newgidmap map only those); the container has only "
                 "uid and gid 0\n";
  }
  bool gid5 = false;
  for (const auto& m : plan.gids) gid5 = gid5 || (m.inside <= 5 && 5 - m.inside < m.count);

  std::vector<std::string> env = command_env(spec);
  ContainerCgroup cgroup(spec.resources, spec.cgroup_name, spec.state_dir);
  ContainerNetwork network(spec);
  HostChannels channels;
  auto& [sync_parent, sync_child, err_read, err_write, sigfd, blocked] = channels;

  ChildContext ctx{&spec, &env, plan.kind, gid5, sync_child.get(), err_write.get()};
  ctx.network = &network;
  ctx.join_cgroup = cgroup.active();
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
  StartMessages started;
  try {
    started = receive_start(sync_parent.get(), &cgroup);
  } catch (...) {
    kill_child();
    throw;
  }
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
        spec.on_started(started.pid1, network.published());
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

// The namespaces a ContainerHelper joins: its user namespace, and with
// Namespaces::user_and_mount its mount namespace.
constexpr NamespaceToJoin kHelperNamespaces[] = {{"user", CLONE_NEWUSER}, {"mnt", CLONE_NEWNS}};

// What exec_in and ContainerHelper open of the container's pid 1 on the
// host before they enter it: a pidfd, its root as it sees it, and those of
// NAMESPACES that differ from the caller's (FLAGS, and their fds for
// enter_namespaces).
struct ContainerEntry {
  std::string proc;  // "/proc/PID"
  UniqueFd pidfd, root;
  int flags = 0;
  std::vector<std::pair<int, UniqueFd>> ns_fds;

  ContainerEntry(pid_t pid, std::span<const NamespaceToJoin> namespaces) : proc("/proc/" + std::to_string(pid)) {
    pidfd.reset(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!pidfd) throw Error("the container's process " + std::to_string(pid) + " is gone", ExitCode::run_failed);
    root = open_at(AT_FDCWD, proc + "/root", O_PATH | O_DIRECTORY);
    for (const auto& ns : namespaces) {
      if (same_namespace(pid, ns.name)) continue;
      flags |= ns.flag;
      ns_fds.emplace_back(ns.flag, open_at(AT_FDCWD, proc + "/ns/" + ns.name, O_RDONLY));
    }
  }
  // Proof that what was opened belongs to the process the pidfd names.
  void check_alive() const {
    if (::syscall(SYS_pidfd_send_signal, pidfd.get(), 0, nullptr, 0) != 0)
      throw Error("the container's process " + proc.substr(6) + " is gone", ExitCode::run_failed);
  }
};

// Forks a process in the pid namespace PID_NS, as fork() does: 0 in the new
// process, its pid (as this process sees it) here. The pid namespace applies
// to the children of a process that enters it, and entering takes
// CAP_SYS_ADMIN in the user namespace that owns it. Root has that here: it
// enters, forks, and returns to its own pid namespace (its later children,
// such as the sanitizers' helper threads, stay on the host). Another user has
// it only inside its container's user namespace USER_NS (>= 0): a short-lived
// process joins that, then the pid namespace, and forks the new process with
// CLONE_PARENT so that it is this process's child all the same (waited for,
// signalled and reaped as any other). The new process is then in USER_NS.
pid_t fork_into_pid_namespace(int pid_ns, int user_ns) {
  if (user_ns < 0) {
    UniqueFd own_pid_ns = open_at(AT_FDCWD, "/proc/self/ns/pid", O_RDONLY);
    if (::setns(pid_ns, CLONE_NEWPID) != 0) throw_errno("enter the container's pid namespace");
    pid_t child = ::fork();
    if (child > 0 && ::setns(own_pid_ns.get(), CLONE_NEWPID) != 0) {
      ::kill(child, SIGKILL);
      throw_errno("return to strata's pid namespace");
    }
    if (child < 0) throw_errno("start the command");
    return child;
  }
  int report[2];
  if (::pipe2(report, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd report_read(report[0]), report_write(report[1]);
  pid_t joiner = ::fork();
  if (joiner < 0) throw_errno("start the command");
  if (joiner == 0) {
    report_read.reset();
    long result[2] = {-1, 0};  // the new pid, or -1 and errno
    if (::setns(user_ns, CLONE_NEWUSER) != 0 || ::setns(pid_ns, CLONE_NEWPID) != 0) {
      result[1] = errno;
    } else {
      result[0] = ::syscall(SYS_clone, CLONE_PARENT | SIGCHLD, nullptr, nullptr, nullptr, nullptr);
      if (result[0] == 0) {
        report_write.reset();
        return 0;
      }
      if (result[0] < 0) result[1] = errno;
    }
    ssize_t written = ::write(report_write.get(), result, sizeof result);
    ::_exit(written == sizeof result ? 0 : 1);
  }
  report_write.reset();
  int status = 0;
  while (::waitpid(joiner, &status, 0) < 0 && errno == EINTR) {
  }
  long result[2] = {-1, 0};
  ssize_t n;
  do {
    n = ::read(report_read.get(), result, sizeof result);
  } while (n < 0 && errno == EINTR);
  if (n != sizeof result) throw Error("start the command: the process entering the container ended early", ExitCode::run_failed);
  if (result[0] < 0) {
    errno = static_cast<int>(result[1]);
    throw_errno("enter the container's pid namespace");
  }
  return static_cast<pid_t>(result[0]);
}

}  // namespace

ContainerHelper::ContainerHelper(pid_t pid, Namespaces namespaces, const std::function<void(int root)>& work) {
  ContainerEntry entry(pid, std::span(kHelperNamespaces).first(namespaces == Namespaces::user ? 1 : 2));
  entry.check_alive();
  auto& [proc, pidfd, root, flags, ns_fds] = entry;
  int ep[2];
  if (::pipe2(ep, O_CLOEXEC) != 0) throw_errno("pipe");
  err_.reset(ep[0]);
  UniqueFd err_write(ep[1]);
  std::cout.flush();
  std::cerr.flush();
  pid_t child = ::fork();
  if (child < 0) throw_errno("start a process in the container");
  if (child == 0) {
    err_.reset();
    try {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      ::prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
      enter_namespaces(pidfd.get(), flags, ns_fds);
      if (namespaces == Namespaces::user_and_mount) {
        if (::fchdir(root.get()) != 0 || ::chroot(".") != 0 || ::chdir("/") != 0) throw_errno("enter the container's root");
        root = open_at(AT_FDCWD, "/", O_PATH | O_DIRECTORY);
      }
      pidfd.reset();
      ns_fds.clear();
      if (::setresgid(0, 0, 0) != 0 || ::setresuid(0, 0, 0) != 0) throw_errno("become root in the user namespace");
      work(root.get());
    } catch (const Error& e) {
      report_and_exit(err_write.get(), e.code(), e.what());
    } catch (const std::exception& e) {
      report_and_exit(err_write.get(), ExitCode::failure, e.what());
    }
    ::_exit(0);
  }
  child_ = child;
}

ContainerHelper::~ContainerHelper() {
  if (child_ <= 0) return;
  ::kill(child_, SIGKILL);
  int st;
  while (::waitpid(child_, &st, 0) < 0 && errno == EINTR) {
  }
}

void ContainerHelper::wait() {
  if (child_ <= 0) return;
  int st = 0;
  while (::waitpid(child_, &st, 0) < 0) {
    if (errno != EINTR) throw_errno("wait for the process in the container");
  }
  child_ = -1;
  std::string msg;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(err_.get(), buf, sizeof buf)) > 0) msg.append(buf, static_cast<std::size_t>(n));
  if (msg.size() > 1) throw Error(msg.substr(1), static_cast<ExitCode>(static_cast<unsigned char>(msg[0])));
  if (WIFSIGNALED(st)) throw Error("the process in the container was killed by signal " + std::to_string(WTERMSIG(st)));
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) throw Error("the process in the container failed");
}

int exec_in(pid_t pid, const RunSpec& spec) {
  if (spec.argv.empty()) throw Error("exec: no command given", ExitCode::run_failed);
  ContainerEntry entry(pid, kExecNamespaces);
  auto& [proc, pidfd, root, flags, ns_fds] = entry;
  UniqueFd pid_ns = open_at(AT_FDCWD, proc + "/ns/pid", O_RDONLY);
  // The command joins the container's cgroup (and its limits).
  UniqueFd cgroup_procs = open_container_cgroup_procs(pid, spec.cgroup_name);
  entry.check_alive();
  IdMapPlan::Kind map_kind = IdMapPlan::Kind::identity;
  if (read_file_or_empty(proc + "/setgroups").rfind("deny", 0) == 0) map_kind = IdMapPlan::Kind::single;
  std::vector<std::string> env = command_env(spec);
  HostChannels channels;
  auto& [sync_parent, sync_child, err_read, err_write, sigfd, blocked] = channels;

  std::cout.flush();
  std::cerr.flush();
  const bool via_user_ns = (flags & CLONE_NEWUSER) != 0;
  UniqueFd user_ns;
  if (via_user_ns) user_ns = open_at(AT_FDCWD, proc + "/ns/user", O_RDONLY);
  pid_t child = fork_into_pid_namespace(pid_ns.get(), via_user_ns ? user_ns.get() : -1);
  if (child == 0) {
    sync_parent.reset();
    err_read.reset();
    sigfd.reset();
    try {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
      if (cgroup_procs && ::write(cgroup_procs.get(), "0", 1) != 1) throw_errno("join the container's cgroup");
      cgroup_procs.reset();
      // fork_into_pid_namespace has joined the user namespace already.
      enter_namespaces(pidfd.get(), via_user_ns ? flags & ~CLONE_NEWUSER : flags, ns_fds);
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

}  // namespace strata::sandbox
