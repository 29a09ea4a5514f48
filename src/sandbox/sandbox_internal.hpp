// What the files of the sandbox module's runtime share and nothing outside
// it uses: sandbox.cpp (the processes: host side, supervisor, pid 1,
// exec_in), rootfs.cpp (the container's root file system) and command.cpp
// (the command's credentials and exec).
#pragma once

#include <sys/ioctl.h>

#include <string>
#include <vector>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/sandbox.hpp"
#include "network.hpp"

namespace strata::sandbox {

// What the host side sends init once its id maps are written.
struct GoMessage {
  winsize size{};
  bool has_size = false;
};

struct ChildContext {
  const RunSpec* spec;
  const std::vector<std::string>* env;  // completed except HOME
  IdMapPlan::Kind map_kind;
  bool gid5_mapped;
  int sync_sock;
  int err_fd;
  const GoMessage* go = nullptr;  // set once the host side has written the id maps
  const ContainerNetwork* network = nullptr;
  bool join_cgroup = false;  // pid 1 waits for 'C' (it is in its cgroup) before anything else
};

// sandbox.cpp: the contents of the file at PATH, empty when it cannot be read.
std::string read_file_or_empty(const std::string& path);
// sandbox.cpp: reports a failure to start on the error pipe ERRFD and exits
// with CODE.
[[noreturn]] void report_and_exit(int errfd, ExitCode code, const std::string& message);
// sandbox.cpp: a handler that does nothing, for signals taken with sigwaitinfo.
void noop_handler(int);

// cgroup.cpp: records in STATE_DIR/leftover.WHAT the host path PATH that
// the running container holds (removed by remove_leftovers if it stays),
// and forgets it again.
void record_leftover(const std::string& state_dir, const std::string& what, const std::string& path);
void forget_leftover(const std::string& state_dir, const std::string& what) noexcept;

// rootfs.cpp: the directory PATH inside ROOT as an O_PATH fd, created with
// its parents when missing.
UniqueFd ensure_dir(int root, const std::string& given);
// rootfs.cpp: mounts SPEC.union_root on SPEC.rootfs with stratafs.
void mount_union(const RunSpec& spec);
// rootfs.cpp: builds the container's root and pivots into it; returns the
// pty's slave side (MASTER_OUT its master) with a tty.
UniqueFd build_root(const ChildContext& ctx, int& master_out);

// command.cpp: the command's process from its root to its exec.
[[noreturn]] void become_user_and_exec(const RunSpec& spec, const std::vector<std::string>& base_env,
                                       IdMapPlan::Kind map_kind, int err_fd, UniqueFd slave, const ExecUser& user);

}  // namespace strata::sandbox
