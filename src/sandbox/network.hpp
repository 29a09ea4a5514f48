// The host side of a container's network, private to src/sandbox: what run()
// prepares before the container's namespaces exist (the name files) and
// starts once they do (slirp4netns and its port forwards).
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "strata/fd.hpp"
#include "strata/sandbox.hpp"

namespace strata::sandbox {

class ContainerNetwork {
 public:
  // Checks SPEC's network settings (slirp4netns installed for private
  // networking, -p only with it; the ports as check_ports wants them) and writes the container's /etc/resolv.conf
  // and /etc/hosts into a private runtime directory when it needs its own.
  // Throws Error (ExitCode::run_failed) naming what is wrong.
  explicit ContainerNetwork(const RunSpec& spec);
  ContainerNetwork(const ContainerNetwork&) = delete;
  ContainerNetwork& operator=(const ContainerNetwork&) = delete;
  // Ends slirp4netns (through its exit fd) and waits for it; removes the
  // runtime directory (and its record in RunSpec::state_dir).
  ~ContainerNetwork();

  // Whether the container gets a network namespace of its own.
  bool own_namespace() const { return network_ != Network::host; }

  // With private networking: starts slirp4netns on the network namespace of
  // PID (a process of the container, its id maps written), waits until tap0
  // is configured and publishes the ports through its API socket. Nothing
  // for the other modes. Throws Error (run_failed) with slirp4netns's reason.
  void attach(pid_t pid);

  // The files bound on /etc/resolv.conf and /etc/hosts in the container:
  // those written for it (writable), else the host's (read-only, when they
  // exist).
  std::vector<BindMount> name_files() const;

  // The ports as attach() published them: chosen host ports filled in.
  const std::vector<PortMapping>& published() const { return ports_; }

 private:
  void publish(const PortMapping& port);
  static std::uint16_t free_host_port(const PortMapping& port);
  void stop() noexcept;
  void make_dir();

  Network network_;
  std::vector<PortMapping> ports_;
  std::optional<TempDir> dir_;
  std::string state_dir_;  // RunSpec::state_dir: where dir_ is recorded
  std::string slirp4netns_;
  pid_t slirp_pid_ = -1;
  UniqueFd exit_fd_;  // its write end: slirp4netns ends when it closes
};

}  // namespace strata::sandbox
