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

void StratafsMounter::mount(const MountRequest& request) {
  fs::StratafsMount m;
  m.lowerdirs = request.lowers;
  m.upperdir = request.upper;
  m.workdir = request.work;
  m.read_only = request.upper.empty();
  // A step's upper is thrown away after a crash: it becomes a layer only
  // through the commit, which syncs what it writes. Syncing it as well
  // (every copy-up, every fsync a package manager makes) is only time lost.
  m.volatile_upper = !request.upper.empty();
  // RUN steps run as the image's users, not only as the mounting one.
  m.allow_other = ::geteuid() == 0;
  // The mount ends with this process, even when it is killed.
  m.owner_pid = ::getpid();
  fs::mount_stratafs(stratafs_, m, request.target, "the build's union at " + quote(request.target));
}

void StratafsMounter::unmount(const std::string& target) noexcept {
  fs::detach_stratafs(target);
}

}  // namespace strata::build
