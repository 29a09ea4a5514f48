// RUN --mount=type=ssh: sockets inside a step that lead to ssh agents on the
// host. Each mount gets a listening socket of its own in the step's work
// directory (bound into the container by the sandbox, with the mount's owner
// and mode); a relay process copies bytes between each connection made to it
// and a fresh connection to the agent. The container never sees the agent's
// path or its directory, and nothing of it reaches a layer.
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
  // connections are relayed to the agent listening at AGENT. Throws Error.
  void add(const std::string& socket, const std::string& agent);

  // Starts the relay process once every socket is added (no-op without
  // any). It dies with the calling process. Throws Error.
  void start();

 private:
  struct Route {
    UniqueFd listener;
    UniqueFd agent_dir;  // O_PATH: the agent is reached through it, whatever its path's length
    std::string agent_name;
    std::string agent;   // as given, for messages
  };
  [[noreturn]] void relay();

  std::vector<Route> routes_;
  pid_t pid_ = -1;
};

}  // namespace strata::build
