// RUN --mount=type=ssh: the listening sockets and the relay process (see
// agent_forwarder.hpp).
#include "agent_forwarder.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <list>

#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/text.hpp"

namespace strata::build {

namespace {

// The socket DIR_FD/NAME, or the one an O_PATH descriptor names (NAME
// empty), through /proc/self/fd: no path length limit, no path looked up again.
sockaddr_un unix_address(int dir_fd, const std::string& name) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = "/proc/self/fd/" + std::to_string(dir_fd);
  if (!name.empty()) path += "/" + name;
  if (path.size() >= sizeof addr.sun_path) throw Error("the socket name " + quote(name) + " is too long");
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  return addr;
}

// The ssh agent protocol (draft-miller-ssh-agent): each message is a
// 32-bit big-endian length, then that many bytes, the first its type.
constexpr std::uint32_t kMaxMessage = 256 * 1024;  // as ssh-agent's own limit
constexpr unsigned char kRequestIdentities = 11;
constexpr unsigned char kSignRequest = 13;
constexpr char kFailure[] = {0, 0, 0, 1, 5};  // SSH_AGENT_FAILURE

// The length of the message at the front of BUF: 0 while it is incomplete,
// -1 when it breaks the protocol (empty or too long).
long long framed_length(const std::string& buf) {
  if (buf.size() < 4) return 0;
  std::uint32_t len = 0;
  for (int i = 0; i < 4; ++i) len = (len << 8) | static_cast<unsigned char>(buf[static_cast<size_t>(i)]);
  if (len == 0 || len > kMaxMessage) return -1;
  return buf.size() >= 4 + static_cast<size_t>(len) ? 4 + static_cast<long long>(len) : 0;
}

// One connection from the container and its own connection to the agent.
// One request is at the agent at a time, so answers (the agent's, or the
// relay's refusals) keep their order.
struct Link {
  UniqueFd client, agent;
  std::string from_client, to_agent;  // requests: not yet whole or looked at / passed on
  std::string from_agent, to_client;  // answers
  bool awaiting = false;              // a request is at the agent
  bool client_eof = false, agent_eof = false;
  bool client_hup = false, agent_hup = false;  // poll said so: not polled again while nothing is to do
  bool broken = false;

  // Moves what is whole: the agent's answers to the client, then the
  // client's next request to the agent or, when it may not pass, a refusal.
  void route() {
    while (true) {
      long long n = framed_length(from_agent);
      if (n < 0) broken = true;
      if (n <= 0) break;
      to_client.append(from_agent, 0, static_cast<size_t>(n));
      from_agent.erase(0, static_cast<size_t>(n));
      awaiting = false;
    }
    while (!broken && !awaiting && to_client.size() < kMaxMessage) {
      long long n = framed_length(from_client);
      if (n < 0) broken = true;
      if (n <= 0) break;
      const auto type = static_cast<unsigned char>(from_client[4]);
      if (type == kRequestIdentities || type == kSignRequest) {
        to_agent.append(from_client, 0, static_cast<size_t>(n));
        awaiting = true;
      } else {
        to_client.append(kFailure, sizeof kFailure);
      }
      from_client.erase(0, static_cast<size_t>(n));
    }
  }

  // Ended: broken, or the client is gone and nothing it asked is still
  // due, or the agent is gone and nothing it answered is still to deliver.
  bool done() const {
    if (broken) return true;
    if (client_eof && !awaiting && framed_length(from_client) <= 0 && to_client.empty()) return true;
    return agent_eof && to_client.empty();
  }
};

constexpr size_t kMaxLinks = 64;

// Reads what FD has onto BUF; sets EOF at its end and BROKEN on an error.
void pull(int fd, std::string& buf, bool& eof, bool& broken) {
  char chunk[16384];
  ssize_t n = ::recv(fd, chunk, sizeof chunk, MSG_DONTWAIT);
  if (n > 0) {
    buf.append(chunk, static_cast<size_t>(n));
  } else if (n == 0) {
    eof = true;
  } else if (errno != EAGAIN && errno != EINTR) {
    broken = true;
  }
}

// Writes what BUF holds to FD, as much as it takes now.
void push(int fd, std::string& buf, bool& broken) {
  if (buf.empty()) return;
  ssize_t n = ::send(fd, buf.data(), buf.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  if (n > 0) {
    buf.erase(0, static_cast<size_t>(n));
  } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
    broken = true;
  }
}

}  // namespace

AgentForwarder::~AgentForwarder() {
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    while (::waitpid(pid_, nullptr, 0) < 0 && errno == EINTR) {
    }
  }
}

void AgentForwarder::add(const std::string& socket, int agent) {
  Route route;
  route.agent.reset(::fcntl(agent, F_DUPFD_CLOEXEC, 3));
  if (!route.agent) throw_errno("hold the ssh agent's socket");
  auto slash = socket.rfind('/');
  std::string dir = slash == std::string::npos ? "." : socket.substr(0, slash);
  UniqueFd dir_fd(::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd) throw_errno("open " + quote(dir));
  route.listener.reset(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!route.listener) throw_errno("create a socket for an ssh agent");
  sockaddr_un addr = unix_address(dir_fd.get(), socket.substr(slash + 1));
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
    keep.push_back(r.agent.get());
  }
  close_descriptors_except(keep);
  ::signal(SIGPIPE, SIG_IGN);

  std::list<Link> links;
  std::vector<pollfd> fds;
  std::vector<Link*> owners;  // the link of each pair of entries of fds past the listeners
  while (true) {
    fds.clear();
    owners.clear();
    for (const auto& r : routes_) fds.push_back({r.listener.get(), POLLIN, 0});
    for (auto& l : links) {
      short client_events = 0;
      short agent_events = 0;
      if (!l.client_eof && l.from_client.size() <= kMaxMessage + 4) client_events |= POLLIN;
      if (!l.to_client.empty()) client_events |= POLLOUT;
      if (!l.agent_eof && l.from_agent.size() <= kMaxMessage + 4) agent_events |= POLLIN;
      if (!l.to_agent.empty()) agent_events |= POLLOUT;
      // A side that hung up reports it at every poll: left out while
      // nothing is to be read from it or written to it.
      fds.push_back({l.client_hup && client_events == 0 ? -1 : l.client.get(), client_events, 0});
      fds.push_back({l.agent_hup && agent_events == 0 ? -1 : l.agent.get(), agent_events, 0});
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
      sockaddr_un addr = unix_address(routes_[i].agent.get(), "");
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
      Link& l = *owners[(i - routes_.size()) / 2];
      const short c = fds[i].revents;
      const short a = fds[i + 1].revents;
      if ((c & (POLLHUP | POLLERR)) != 0) l.client_hup = true;
      if ((a & (POLLHUP | POLLERR)) != 0) l.agent_hup = true;
      if ((c & (POLLIN | POLLHUP | POLLERR)) != 0 && (fds[i].events & POLLIN) != 0) {
        pull(l.client.get(), l.from_client, l.client_eof, l.broken);
      }
      if ((a & (POLLIN | POLLHUP | POLLERR)) != 0 && (fds[i + 1].events & POLLIN) != 0) {
        pull(l.agent.get(), l.from_agent, l.agent_eof, l.broken);
      }
      l.route();
      if (!l.broken) push(l.agent.get(), l.to_agent, l.broken);
      if (!l.broken) push(l.client.get(), l.to_client, l.broken);
    }
    links.remove_if([](const Link& l) { return l.done(); });
  }
}

}  // namespace strata::build
