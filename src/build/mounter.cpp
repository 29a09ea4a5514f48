// Union mounts for build steps through the stratafs binary.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "strata/build_executor.hpp"
#include "strata/error.hpp"

namespace strata::build {

namespace {

std::string escape_layer(const std::string& path) {
  if (path.find(',') != std::string::npos) throw Error("layer path " + quote(path) + " contains a comma");
  std::string out;
  for (char c : path) {
    if (c == ':' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

bool is_mount_point(const std::string& path) {
  std::ifstream mounts("/proc/self/mounts");
  std::string dev, point, rest;
  while (mounts >> dev >> point && std::getline(mounts, rest)) {
    if (point == path) return true;
  }
  return false;
}

int spawn_wait(const std::vector<std::string>& argv, bool quiet) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork");
  if (pid == 0) {
    if (quiet) {
      int null = ::open("/dev/null", O_WRONLY);
      if (null >= 0) {
        ::dup2(null, 1);
        ::dup2(null, 2);
      }
    } else {
      ::dup2(2, 1);  // stratafs's messages go with ours, to stderr
    }
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) throw_errno("wait for " + quote(argv[0]));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

}  // namespace

void StratafsMounter::mount(const MountRequest& request) {
  if (::access(stratafs_.c_str(), X_OK) != 0) {
    throw Error("the union file system driver " + quote(stratafs_) + " is missing; it is installed beside strata");
  }
  std::string lowers;
  for (const auto& l : request.lowers) {
    if (!lowers.empty()) lowers += ':';
    lowers += escape_layer(l);
  }
  std::string opts = "lowerdir=" + lowers;
  if (!request.upper.empty()) {
    opts += ",upperdir=" + escape_layer(request.upper) + ",workdir=" + escape_layer(request.work);
  } else {
    opts += ",ro";
  }
  // RUN steps run as the image's users, not only as the mounting one.
  if (::geteuid() == 0) opts += ",allow_other";
  // The mount ends with this process, even when it is killed.
  opts += ",owner=" + std::to_string(::getpid());
  int rc = spawn_wait({stratafs_, "-o", opts, request.target}, false);
  if (rc != 0) throw Error("mount the build's union at " + quote(request.target) + " failed (stratafs exit " + std::to_string(rc) + ")");
}

void StratafsMounter::unmount(const std::string& target) noexcept {
  for (int attempt = 0; attempt < 50 && is_mount_point(target); ++attempt) {
    if (::umount2(target.c_str(), 0) == 0) continue;
    if (errno == EPERM) {
      try {
        spawn_wait({"/usr/bin/fusermount3", "-u", target}, true);
      } catch (const Error&) {
      }
    } else if (errno == EBUSY) {
      ::usleep(20000);
      if (attempt > 40) ::umount2(target.c_str(), MNT_DETACH);
    } else {
      ::umount2(target.c_str(), MNT_DETACH);
    }
  }
}

}  // namespace strata::build
