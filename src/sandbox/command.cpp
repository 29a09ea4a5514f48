// The command's side once its root is in place (the container's pid 1, or a
// process `strata exec` starts): its session and terminal, stdin, working
// directory, ids, groups, capabilities, no_new_privs and seccomp filter,
// `--init`'s reaper, and the exec with docker's $PATH search and exit codes.
#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "sandbox_internal.hpp"
#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/sandbox.hpp"
#include "strata/text.hpp"

namespace strata::sandbox {

namespace {

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

}  // namespace

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
    if (!tty && spec.output_fd >= 0) {
      if (::dup2(spec.output_fd, 1) < 0 || ::dup2(spec.output_fd, 2) < 0) throw_errno("redirect the output");
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
                             ? " (only uid and gid 0 exist: add a range for the user to /etc/subuid and /etc/subgid, which "
                               "newuidmap and newgidmap map)"
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
    // The command gets descriptors 0, 1 and 2 only: nothing strata was
    // started with (a caller's pipe, a host file) reaches the container,
    // nor stays open in its init process for /proc/1/fd to show.
    const int keep[] = {err_fd};
    close_descriptors_except(keep);
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

}  // namespace strata::sandbox
