// The client side of stratafs: the one writer of its `-o` string (beside its
// parser, options.cpp, whose grammar it follows), the lookup of its binary,
// starting it and the mount table check.
#include "strata/stratafs_client.hpp"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <set>
#include <sstream>
#include <string_view>

#include "strata/fd.hpp"
#include "strata/fs.hpp"

namespace strata::fs {

namespace {

// A path as the value of an -o option: never empty, never a ',' (the list
// separator, which the parser does not unescape).
void check_expressible(const std::string& path, const char* what) {
  if (path.empty()) throw Error(std::string("the ") + what + " path is empty");
  if (path.find(',') != std::string::npos) {
    throw Error(std::string("the ") + what + " " + quote(path) + " contains ',', which stratafs options cannot carry");
  }
}

// "\ooo" octal escapes (how the kernel writes ' ', '\t', '\n' and '\' in
// /proc/self/mountinfo) undone.
std::string unescape_mountinfo(const std::string& field) {
  std::string out;
  for (std::size_t i = 0; i < field.size(); ++i) {
    if (field[i] == '\\' && i + 3 < field.size()) {
      bool octal = true;
      for (std::size_t k = 1; k <= 3; ++k) octal = octal && field[i + k] >= '0' && field[i + k] <= '7';
      if (octal) {
        out += static_cast<char>(((field[i + 1] - '0') << 6) | ((field[i + 2] - '0') << 3) | (field[i + 3] - '0'));
        i += 3;
        continue;
      }
    }
    out += field[i];
  }
  return out;
}

// stratafs's stderr on one line: its own "stratafs: WHAT" line first, what
// came before it (libfuse's reason) in parentheses.
std::string one_line(const std::string& text) {
  std::string why;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    std::string line = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
    start = end == std::string::npos ? text.size() : end + 1;
    if (line.empty()) continue;
    if (line.starts_with("stratafs: ")) line = line.substr(10);
    why = why.empty() ? line : line + " (" + why + ")";
  }
  return why;
}

// How a program run by run_capturing_stderr ended.
struct ProgramResult {
  int status = 0;           // as waitpid gives it
  std::string stderr_text;  // all it wrote to stderr and stdout
};

// Runs ARGS (PATH searched when ARGS[0] has no '/') with its stderr and
// stdout going to a pipe, and waits for it. A daemon that detaches keeps the
// pipe's write end: the read stops at what is there when the first process
// exits, and a full pipe fails the daemon's writes rather than blocking it.
ProgramResult run_capturing_stderr(std::vector<std::string> args) {
  const std::string& program = args[0];
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // Formatted before fork: the child only calls async-signal-safe functions.
  const std::string cannot_run = "cannot run " + quote(program) + ": ";
  int ep[2];
  if (::pipe2(ep, O_CLOEXEC | O_NONBLOCK) != 0) throw SysError(errno, "create a pipe for " + quote(program) + "'s messages");
  UniqueFd err_read(ep[0]), err_write(ep[1]);
  pid_t pid = ::fork();
  if (pid < 0) throw SysError(errno, "start " + quote(program));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    ::dup2(err_write.get(), 2);
    ::dup2(2, 1);  // its messages all go to the pipe, stdout is ours
    ::execvp(argv[0], argv.data());
    const char* err = ::strerror(errno);
    [[maybe_unused]] ssize_t w1 = ::write(2, cannot_run.data(), cannot_run.size());
    [[maybe_unused]] ssize_t w2 = ::write(2, err, std::strlen(err));
    ::_exit(127);
  }
  err_write.reset();
  ProgramResult r;
  while (::waitpid(pid, &r.status, 0) < 0) {
    if (errno != EINTR) throw SysError(errno, "wait for " + quote(program));
  }
  char buf[4096];
  for (ssize_t n; (n = ::read(err_read.get(), buf, sizeof buf)) > 0;) r.stderr_text.append(buf, static_cast<std::size_t>(n));
  return r;
}

}  // namespace

std::string escape_lower_dir(std::string_view dir) {
  std::string out;
  for (char c : dir) {
    if (c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

std::string format_mount_options(const StratafsMount& m) {
  if (m.lowerdirs.empty()) throw Error("no lower directory to mount");
  if (m.lowerdirs.size() > kMaxLowerLayers) {
    throw Error("too many lower directories to mount: " + std::to_string(m.lowerdirs.size()) + " (at most " +
                std::to_string(kMaxLowerLayers) + ")");
  }
  if (m.upperdir.empty() != m.workdir.empty()) {
    throw Error(m.upperdir.empty() ? "a work directory " + quote(m.workdir) + " without an upper directory"
                                   : "an upper directory " + quote(m.upperdir) + " without a work directory");
  }
  // An image may hold the same layer twice (two steps that made the same
  // change). Only its topmost place counts: whatever the lower copy shows,
  // the upper one shows too, and whatever a layer between them hides or
  // replaces, the upper copy shows again. stratafs, like overlayfs, refuses
  // a directory given twice, so the lower copies are left out.
  std::string out = "lowerdir=";
  std::set<std::string_view> given;
  for (const std::string& dir : m.lowerdirs) {
    if (!given.insert(dir).second) continue;
    check_expressible(dir, "layer directory");
    if (given.size() != 1) out += ':';
    out += escape_lower_dir(dir);
  }
  if (!m.upperdir.empty()) {
    check_expressible(m.upperdir, "upper directory");
    check_expressible(m.workdir, "work directory");
    out += ",upperdir=" + m.upperdir + ",workdir=" + m.workdir;
  }
  if (m.read_only) out += ",ro";
  if (m.allow_other) out += ",allow_other";
  if (m.volatile_upper) out += ",volatile";
  if (m.owner_pid < 0) throw Error("bad owner process id " + std::to_string(m.owner_pid) + " for a mount");
  if (m.owner_pid > 0) out += ",owner=" + std::to_string(m.owner_pid);
  return out;
}

std::string find_stratafs() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n > 0) {
    std::string self(buf, static_cast<std::size_t>(n));
    std::string candidate = self.substr(0, self.rfind('/') + 1) + "stratafs";
    if (::access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return "stratafs";
}

void mount_stratafs(const std::string& program, const StratafsMount& m, const std::string& mountpoint,
                    const std::string& what, ExitCode code) {
  std::string opts;
  try {
    opts = format_mount_options(m);
  } catch (const Error& e) {
    throw Error(std::string("cannot mount ") + what + ": " + e.what(), code);
  }
  ProgramResult r = run_capturing_stderr({program, "-o", opts, mountpoint});
  const int status = r.status;
  const std::string& text = r.stderr_text;
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
    if (!text.empty()) {
      [[maybe_unused]] ssize_t w = ::write(2, text.data(), text.size());
    }
    return;
  }
  std::string why = one_line(text);
  if (why.empty()) {
    why = WIFEXITED(status) ? quote(program) + " exited " + std::to_string(WEXITSTATUS(status))
                            : quote(program) + " was killed by signal " + std::to_string(WTERMSIG(status));
  }
  throw Error("stratafs could not mount " + what + ": " + why, code);
}

bool lock_workdir(int fd, int wait_ms) {
  for (int waited = 0;; waited += 10) {
    if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return true;
    if (errno != EWOULDBLOCK || waited >= wait_ms) return false;
    ::usleep(10 * 1000);
  }
}

void unmount_stratafs(const std::string& mountpoint, const std::string& workdir) {
  // EBUSY: a process that was in the tree a moment ago (a build step's last
  // child) may still hold it; it lets go within a second.
  constexpr int kBusyRetries = 50;
  for (int attempt = 0;; ++attempt) {
    if (::umount2(mountpoint.c_str(), 0) == 0) break;
    if (errno == EBUSY && attempt < kBusyRetries) {
      ::usleep(20 * 1000);
      continue;
    }
    if (errno != EPERM) throw SysError(errno, "unmount " + quote(mountpoint));
    // Not allowed to unmount ourselves: the setuid helper unmounts what its
    // caller mounted.
    ProgramResult r = run_capturing_stderr({"fusermount3", "-u", mountpoint});
    if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 0) break;
    std::string why = one_line(r.stderr_text);
    if (why.empty()) why = "fusermount3 failed";
    throw Error("unmount " + quote(mountpoint) + ": " + why);
  }
  if (workdir.empty()) return;
  UniqueFd fd(::open(workdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return;  // no work directory: nothing holds it
  constexpr int kDaemonExitWaitMs = 60000;
  if (!lock_workdir(fd.get(), kDaemonExitWaitMs)) {
    if (errno != EWOULDBLOCK) return;  // a lock we cannot take is one no daemon holds either
    throw Error("unmount " + quote(mountpoint) + ": its stratafs has not let go of " + quote(workdir) + " after 60 s");
  }
  ::flock(fd.get(), LOCK_UN);
}

void detach_stratafs(const std::string& mountpoint) noexcept {
  try {
    unmount_stratafs(mountpoint);
    return;
  } catch (const std::exception&) {
  }
  if (::umount2(mountpoint.c_str(), MNT_DETACH) == 0 || errno != EPERM) return;
  try {
    run_capturing_stderr({"fusermount3", "-u", "-z", mountpoint});
  } catch (const std::exception&) {
  }
}

bool is_mount_point(const std::string& path) {
  char real[PATH_MAX];
  std::string want = ::realpath(path.c_str(), real) != nullptr ? std::string(real) : path;
  std::ifstream f("/proc/self/mountinfo");
  std::string line;
  while (std::getline(f, line)) {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT ...: no field holds a raw space.
    std::istringstream ss(line);
    std::string id, parent, dev, root, mnt;
    ss >> id >> parent >> dev >> root >> mnt;
    if (unescape_mountinfo(mnt) == want) return true;
  }
  return false;
}

}  // namespace strata::fs
