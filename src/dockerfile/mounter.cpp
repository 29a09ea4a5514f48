// Union mounts for build steps through the stratafs binary.
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "strata/build_executor.hpp"
#include "strata/error.hpp"
#include "strata/stratafs_client.hpp"

namespace strata::build {

namespace {

// Runs fusermount3 -u TARGET with its output discarded.
void fusermount_unmount(const std::string& target) {
  pid_t pid = ::fork();
  if (pid < 0) return;
  if (pid == 0) {
    int null = ::open("/dev/null", O_WRONLY);
    if (null >= 0) {
      ::dup2(null, 1);
      ::dup2(null, 2);
    }
    ::execl("/usr/bin/fusermount3", "fusermount3", "-u", target.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

}  // namespace

void StratafsMounter::mount(const MountRequest& request) {
  fs::StratafsMount m;
  m.lowerdirs = request.lowers;
  m.upperdir = request.upper;
  m.workdir = request.work;
  m.read_only = request.upper.empty();
  // RUN steps run as the image's users, not only as the mounting one.
  m.allow_other = ::geteuid() == 0;
  // The mount ends with this process, even when it is killed.
  m.owner_pid = ::getpid();
  fs::mount_stratafs(stratafs_, m, request.target, "the build's union at " + quote(request.target));
}

void StratafsMounter::unmount(const std::string& target) noexcept {
  for (int attempt = 0; attempt < 50 && fs::is_mount_point(target); ++attempt) {
    if (::umount2(target.c_str(), 0) == 0) continue;
    if (errno == EPERM) {
      fusermount_unmount(target);
    } else if (errno == EBUSY) {
      ::usleep(20000);
      if (attempt > 40) ::umount2(target.c_str(), MNT_DETACH);
    } else {
      ::umount2(target.c_str(), MNT_DETACH);
    }
  }
}

}  // namespace strata::build
