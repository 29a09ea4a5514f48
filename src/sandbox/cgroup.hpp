// The container's cgroup (cgroup v2), private to src/sandbox: created by
// run() for a container with resource limits, removed when it ends.
#pragma once

#include <sys/types.h>

#include <string>

#include "strata/fd.hpp"
#include "strata/sandbox.hpp"

namespace strata::sandbox {

// The cgroup v2 hierarchy's mount point (/sys/fs/cgroup, or
// /sys/fs/cgroup/unified on a hybrid host); "" when there is none.
std::string cgroup2_mount();

// The cgroup (path below the mount, "/" for the root) that the process
// whose /proc/PID/cgroup reads CONTENT is in; "" when it has no v2 entry.
std::string cgroup2_path(const std::string& content);

// Where a container cgroup goes for a caller in cgroup OWN: the root when
// OWN is the root (the root cgroup may have processes and controlled
// children at once), else OWN's parent, so that the container's cgroup is a
// sibling of the caller's (a cgroup with processes cannot give its children
// controllers: cgroup v2's no-internal-process rule).
std::string cgroup_parent_for(const std::string& own);

class ContainerCgroup {
 public:
  // With RES.any(): creates the cgroup NAME (see cgroup_parent_for), enables
  // the controllers RES needs in its parent and writes the limits. When the
  // hierarchy is not there, not delegated to the caller or lacks a
  // controller, writes one warning line on stderr naming what is missing and
  // makes no cgroup (the container runs without the limits). The path is
  // recorded in STATE_DIR/cgroup (when STATE_DIR is not empty). Throws Error
  // (run_failed) when a limit cannot be written.
  ContainerCgroup(const Resources& res, const std::string& name, const std::string& state_dir);
  ContainerCgroup(const ContainerCgroup&) = delete;
  ContainerCgroup& operator=(const ContainerCgroup&) = delete;
  // Removes the cgroup once its processes are gone.
  ~ContainerCgroup();

  bool active() const { return !path_.empty(); }
  const std::string& path() const { return path_; }
  // Moves process PID into the cgroup.
  void add(pid_t pid) const;

 private:
  std::string path_;
  std::string record_;
};

// Removes the empty cgroup at PATH (retrying while its last processes
// exit); false when it is still busy after a while.
bool remove_cgroup(const std::string& path) noexcept;

// For `strata exec`: cgroup.procs of the cgroup NAME that process PID is in,
// opened for writing; an empty fd when PID is not in such a cgroup.
UniqueFd open_container_cgroup_procs(pid_t pid, const std::string& name);

}  // namespace strata::sandbox
