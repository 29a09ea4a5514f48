// RUN --mount=type=ssh: the listening sockets and the relay process (see
// agent_forwarder.hpp).
#include "agent_forwarder.hpp"

#include <fcntl.h>
#include <linux/close_range.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <list>

#include "strata/error.hpp"
#include "strata/text.hpp"

namespace strata::build {

namespace {

// A path too long for sun_path is reached through its directory's fd.
sockaddr_un unix_address(int dir_fd, const std::string& name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = "/proc/self/fd/" + std::to_string(dir_fd) + "/" + name;
  if (path.size() >= sizeof addr.sun_path) throw Error("the socket name " + quote(name) + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// One connection from the container and its own connection to the agent.
// Each side's bytes wait in a buffer until the other side takes them; a
// side is read again only once its last bytes are written, so a peer that
// stops reading holds back only its own connection.
struct Link {
  UniqueFd client, agent;
  std::string to_agent, to_client;
  bool client_eof = false, agent_eof = false;
  bool client_hup = false, agent_hup = false;  // poll said so: not polled again unless written to
  bool broken = false;

  bool done() const {
    return broken || (client_eof && agent_eof && to_agent.empty() && to_client.empty());
  }
};

constexpr size_t kMaxLinks = 64;
constexpr size_t kChunk = 64 * 1024;

// Reads what FROM has into BUF; false at end of file or on an error.
bool pull(int from, std::string& buf, bool& eof, bool& broken) {
  char chunk[kChunk];
  ssize_t n = ::recv(from, chunk, sizeof chunk, MSG_DONTWAIT);
  if (n > 0) {
    buf.append(chunk, static_cast<size_t>(n));
    return true;
  }
  if (n == 0) {
    eof = true;
  } else if (errno != EAGAIN && errno != EINTR) {
    broken = true;
  }
  return false;
}

// Writes what BUF holds to TO; half-closes TO once BUF is empty and its
// source has ended.
void push(int to, std::string& buf, bool source_eof, bool& broken) {
  if (!buf.empty()) {
    ssize_t n = ::send(to, buf.data(), buf.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      buf.erase(0, static_cast<size_t>(n));
    } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
      broken = true;
      return;
    }
  }
  if (buf.empty() && source_eof) ::shutdown(to, SHUT_WR);
}

}  // namespace

AgentForwarder::~AgentForwarder() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

void AgentForwarder::add(const std::string& socket, const std::string& agent) {
  Route route;
  route.agent = agent;
  auto slash = agent.rfind('/');
  std::string agent_dir = slash == std::string::npos ? "." : slash == 0 ? "/" : agent.substr(0, slash);
  route.agent_name = agent.substr(slash == std::string::npos ? 0 : slash + 1);
  route.agent_dir.reset(::open(agent_dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!route.agent_dir) throw_errno("open the directory of the ssh agent socket " + quote(agent));

  auto s_slash = socket.rfind('/');
  std::string dir = s_slash == std::string::npos ? "." : socket.substr(0, s_slash);
  UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) throw_errno("open " + quote(dir));
  route.listener.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!route.listener) throw_errno("create a socket for the ssh agent " + quote(agent));
  sockaddr_un addr = unix_address(dir_fd.get(), socket.substr(s_slash + 1));
  // Made 0600 from the start; the sandbox gives it the mount's owner and mode.
  mode_t old_mask = ::umask(0177);
  int rc = ::bind(route.listener.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr);
  int bind_errno = errno;
  ::umask(old_mask);
  if (rc != 0) throw SysError(bind_errno, "bind the ssh agent socket " + quote(socket));
  if (::listen(route.listener.get(), 16) != 0) throw_errno("listen on " + quote(socket));
  routes_.push_back(std::move(route));
}

void AgentForwarder::start() {
  if (routes_.empty() || pid_ > 0) return;
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("start the ssh agent relay");
  if (pid > 0) {
    pid_ = pid;
    return;
  }
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) ::_exit(0);
  relay();
}

void AgentForwarder::relay() {
  // Only the relay's own descriptors stay open: no lock or file of the
  // build outlives it through this process.
  std::vector<int> keep;
  for (const auto& r : routes_) {
    keep.push_back(r.listener.get());
    keep.push_back(r.agent_dir.get());
  }
  std::sort(keep.begin(), keep.end());
  unsigned from = 3;
  for (int fd : keep) {
    if (static_cast<unsigned>(fd) > from) ::close_range(from, static_cast<unsigned>(fd) - 1, 0);
    from = static_cast<unsigned>(fd) + 1;
  }
  ::close_range(from, ~0U, 0);
  ::signal(SIGPIPE, SIG_IGN);

  std::list<Link> links;
  std::vector<pollfd> fds;
  std::vector<Link*> owners;  // the link of each entry of fds past the listeners
  while (true) {
    fds.clear();
    owners.clear();
    for (const auto& r : routes_) fds.push_back({r.listener.get(), POLLIN, 0});
    for (auto& l : links) {
      short client_events = 0;
      short agent_events = 0;
      if (l.to_agent.empty() && !l.client_eof) client_events |= POLLIN;
      if (!l.to_client.empty()) client_events |= POLLOUT;
      if (l.to_client.empty() && !l.agent_eof) agent_events |= POLLIN;
      if (!l.to_agent.empty()) agent_events |= POLLOUT;
      // A side that hung up reports it at every poll: left out while
      // nothing is to be read from it or written to it.
      bool skip_client = l.client_hup && client_events == 0;
      bool skip_agent = l.agent_hup && agent_events == 0;
      fds.push_back({skip_client ? -1 : l.client.get(), client_events, 0});
      owners.push_back(&l);
      fds.push_back({skip_agent ? -1 : l.agent.get(), agent_events, 0});
      owners.push_back(&l);
    }
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    for (size_t i = 0; i < routes_.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      UniqueFd client(::accept4(routes_[i].listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
      if (!client || links.size() >= kMaxLinks) continue;  // refused: closed at once
      UniqueFd agent(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
      if (!agent) continue;
      sockaddr_un addr{};
      try {
        addr = unix_address(routes_[i].agent_dir.get(), routes_[i].agent_name);
      } catch (const Error&) {
        continue;
      }
      timeval limit{5, 0};  // an agent whose backlog is full does not hold the relay up for long
      ::setsockopt(agent.get(), SOL_SOCKET, SO_SNDTIMEO, &limit, sizeof limit);
      if (::connect(agent.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof addr) != 0) continue;
      int flags = ::fcntl(agent.get(), F_GETFL);
      if (flags < 0 || ::fcntl(agent.get(), F_SETFL, flags | O_NONBLOCK) != 0) continue;
      Link& l = links.emplace_back();
      l.client = std::move(client);
      l.agent = std::move(agent);
    }
    for (size_t i = routes_.size(); i < fds.size(); i += 2) {
      Link& l = *owners[i - routes_.size()];
      const short c = fds[i].revents;
      const short a = fds[i + 1].revents;
      if ((c & (POLLHUP | POLLERR)) != 0) l.client_hup = true;
      if ((a & (POLLHUP | POLLERR)) != 0) l.agent_hup = true;
      if ((c & (POLLIN | POLLHUP | POLLERR)) != 0 && l.to_agent.empty() && !l.client_eof) {
        pull(l.client.get(), l.to_agent, l.client_eof, l.broken);
      }
      if ((a & (POLLIN | POLLHUP | POLLERR)) != 0 && l.to_client.empty() && !l.agent_eof) {
        pull(l.agent.get(), l.to_client, l.agent_eof, l.broken);
      }
      if (!l.broken) push(l.agent.get(), l.to_agent, l.client_eof, l.broken);
      if (!l.broken) push(l.client.get(), l.to_client, l.agent_eof, l.broken);
    }
    links.remove_if([](const Link& l) { return l.done(); });
  }
}

}  // namespace strata::build
