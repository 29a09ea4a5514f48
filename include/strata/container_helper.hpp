// strata::sandbox::ContainerHelper: work on the files of a running container
// as its own processes see them, without running any of its programs.
#pragma once

#include <sys/types.h>

#include <functional>

#include "strata/fd.hpp"

namespace strata::sandbox {

// A process of strata's own code (it executes nothing) that works on the
// files of a running container through the container's own view: it joins
// the user namespace of the container's pid 1 (PID as the host numbers it;
// the root of a rootless container is a FUSE mount that only processes of
// its user namespace may use) and becomes root in it. It does not join the
// pid namespace, so that no process of the container can see it, and it is
// not dumpable. It runs WORK with ROOT, the container's root as its pid 1
// sees it (its mounts included; paths in it resolve with RESOLVE_IN_ROOT),
// and ends. With Namespaces::user_and_mount it also joins the mount
// namespace and chroots to that root (ROOT is then "/"), for work on the
// mounts themselves; its /proc is then the container's. What it needs of the
// host comes in as the fds WORK captures, opened before. cp and export use
// it on a running container.
class ContainerHelper {
 public:
  enum class Namespaces { user, user_and_mount };
  // Starts the helper; throws Error (run_failed) when the container's pid 1
  // is gone.
  ContainerHelper(pid_t pid, Namespaces namespaces, const std::function<void(int root)>& work);
  ContainerHelper(const ContainerHelper&) = delete;
  ContainerHelper& operator=(const ContainerHelper&) = delete;
  ~ContainerHelper();  // kills and reaps the helper unless waited for
  // Waits for the helper to end; throws the Error WORK threw (its message
  // and code), or one saying how it ended when it was killed.
  void wait();

 private:
  pid_t child_ = -1;
  UniqueFd err_;
};

}  // namespace strata::sandbox
