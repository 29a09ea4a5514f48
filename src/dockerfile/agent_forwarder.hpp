// RUN --mount=type=ssh: sockets inside a step that lead to ssh agents on the
// host. Each mount gets a listening socket of its own in the step's work
// directory (bound into the container by the sandbox, with the mount's owner
// and mode); a relay process passes the requests made on each connection to
// a fresh connection to the agent, one at a time, and the agent's answers
// back. Only the requests that use keys (list them, sign with one) reach
// the agent: adding, removing, locking and extensions are answered with
// SSH_AGENT_FAILURE, as BuildKit's read-only agent does, so a RUN cannot
// change the user's agent. The container never sees the agent's path, and
// nothing of it reaches a layer.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "strata/fd.hpp"

namespace strata::build {

class AgentForwarder {
 public:
  AgentForwarder() = default;
  AgentForwarder(const AgentForwarder&) = delete;
  AgentForwarder& operator=(const AgentForwarder&) = delete;
  ~AgentForwarder();  // stops the relay and waits for it

  // Makes a listening socket at SOCKET (mode 0600; it must not exist) whose
  // connections are relayed to the agent whose socket AGENT (an O_PATH
  // descriptor, duplicated here) names: the socket checked when the build
  // started, whatever its path leads to now. Throws Error.
  void add(const std::string& socket, int agent);

  // Starts the relay process once every socket is added (no-op without
  // any). It dies with the calling process. Throws Error.
  void start();

 private:
  struct Route {
    UniqueFd listener;
    UniqueFd agent;  // O_PATH to the agent's socket: connected through /proc/self/fd
  };
  [[noreturn]] void relay();

  std::vector<Route> routes_;
  pid_t pid_ = -1;
};

}  // namespace strata::build
