// Container networking: `--network`, `-p`, `--dns` and `--add-host`, the
// container's /etc/resolv.conf and /etc/hosts, and slirp4netns.
//
// Private networking: run() clones the supervisor into a new network
// namespace (with its user namespace), and once the id maps are written the
// host side of run() (strata in the foreground, the monitor of a detached
// container) starts slirp4netns on it. slirp4netns creates and configures
// tap0 (10.0.2.100/24, gateway 10.0.2.2, DNS 10.0.2.3) and then relays the
// container's traffic through ordinary sockets of the host's network
// namespace, so no privilege is needed; `--disable-host-loopback` keeps the
// host's 127.0.0.1 out of the container's reach. Published ports are added
// through its API socket (add_hostfwd). It ends with the process that
// started it: that process holds the write end of its --exit-fd pipe.
#include "network.hpp"

#include "sandbox_internal.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/oci.hpp"
#include "strata/text.hpp"

namespace strata::sandbox {

namespace {

constexpr const char* kTap = "tap0";
constexpr int kReadyTimeoutMs = 10000;

bool is_ip(const std::string& s, int family) {
  unsigned char buf[sizeof(in6_addr)];
  return ::inet_pton(family, s.c_str(), buf) == 1;
}

std::optional<std::uint16_t> parse_port(std::string_view s) {
  auto n = s.size() <= 5 ? parse_unsigned(s) : std::nullopt;
  if (!n || *n == 0 || *n > 65535) return std::nullopt;
  return static_cast<std::uint16_t>(*n);
}

// PROGRAM in $PATH, or "" when it is not there.
std::string find_in_path(const std::string& program) {
  const char* path = std::getenv("PATH");
  for (std::string_view dir : split(path != nullptr ? path : "/usr/local/bin:/usr/bin:/bin", ':')) {
    std::string candidate = (dir.empty() ? std::string(".") : std::string(dir)) + "/" + program;
    struct stat st {};
    if (::stat(candidate.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(candidate.c_str(), X_OK) == 0)
      return candidate;
  }
  return {};
}

// Where the runtime directory goes: $XDG_RUNTIME_DIR, else /tmp.
std::string runtime_parent() {
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg != nullptr && xdg[0] == '/' && ::access(xdg, W_OK | X_OK) == 0) return xdg;
  return "/tmp";
}

std::string read_host_file(const char* path) {
  try {
    return read_file(path);
  } catch (const Error&) {
    return {};
  }
}

bool starts_with_word(std::string_view line, std::string_view word) {
  auto first = line.find_first_not_of(" \t");
  if (first == std::string_view::npos) return false;
  line.remove_prefix(first);
  return line.starts_with(word) && (line.size() == word.size() || line[word.size()] == ' ' || line[word.size()] == '\t');
}

// slirp4netns's stderr, for an error message: its last non-empty line.
std::string last_line(int fd) {
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::pread(fd, buf, sizeof buf, static_cast<off_t>(text.size()))) > 0) {
    text.append(buf, static_cast<std::size_t>(n));
    if (text.size() > (1 << 20)) break;
  }
  std::string last;
  for (std::string_view line : split(text, '\n'))
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) last = line;
  return last;
}

}  // namespace

Network parse_network(const std::string& name) {
  if (name == "host") return Network::host;
  if (name == "none") return Network::none;
  if (name == "private" || name == "bridge") return Network::private_net;
  throw UsageError("unknown network " + quote(name) + " (private, bridge, host or none)");
}

const char* network_name(Network network) {
  switch (network) {
    case Network::host:
      return "host";
    case Network::none:
      return "none";
    case Network::private_net:
      break;
  }
  return "private";
}

namespace {

// A port or a range FIRST-LAST of them ("80", "8080-8082"); nullopt when
// it is not one (a port is 1..65535; a range goes up).
struct PortRange {
  std::uint16_t first = 0, last = 0;
  std::size_t size() const { return static_cast<std::size_t>(last - first) + 1; }
};

// Parses S as a PortRange for a message about WHAT ("host port"); WHY gets
// the reason when it is not one.
std::optional<PortRange> parse_range(std::string_view s, const std::string& what, std::string& why) {
  auto dash = s.find('-');
  std::string_view first = s.substr(0, dash), last = dash == std::string_view::npos ? first : s.substr(dash + 1);
  auto a = parse_port(first), b = parse_port(last);
  if (!a || !b) {
    why = what + " " + quote(std::string(s)) + " is not a number from 1 to 65535 or a range FIRST-LAST of them";
    return std::nullopt;
  }
  if (*b < *a) {
    why = what + " range " + quote(std::string(s)) + " goes down";
    return std::nullopt;
  }
  PortRange r{*a, *b};
  if (r.size() > kMaxPublishedPorts) {
    why = what + " range " + quote(std::string(s)) + " has " + std::to_string(r.size()) + " ports (at most " +
          std::to_string(kMaxPublishedPorts) + ")";
    return std::nullopt;
  }
  return r;
}

bool known_protocol(std::string_view protocol) { return protocol == "tcp" || protocol == "udp"; }

constexpr const char* kNoIpv6 = "IPv6 host addresses cannot be published (slirp4netns forwards IPv4 ones only)";

}  // namespace

std::vector<PortMapping> parse_publish(const std::string& spec) {
  auto bad = [&](const std::string& why) {
    return UsageError("bad port mapping " + quote(spec) + ": " + why +
                      " (expected [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/tcp|/udp], a port or a range FIRST-LAST)");
  };
  std::string rest = spec, protocol = "tcp", host_ip = "0.0.0.0";
  if (auto slash = rest.rfind('/'); slash != std::string::npos) {
    protocol = rest.substr(slash + 1);
    rest.resize(slash);
    if (!known_protocol(protocol)) throw bad("the protocol must be tcp or udp");
  }
  if (rest.starts_with('[')) {
    auto close = rest.find(']');
    if (close == std::string::npos) throw bad("no ']' after the host address");
    std::string ip = rest.substr(1, close - 1);
    if (is_ip(ip, AF_INET6)) throw bad(kNoIpv6);
    throw bad(quote(ip) + " is not an IPv6 address");
  }
  auto parts = split(rest, ':');
  if (parts.size() > 3) {
    // "::1:8080:80", ":::80": an IPv6 address without brackets.
    auto last = rest.rfind(':'), before_last = rest.rfind(':', last - 1);
    if (is_ip(rest.substr(0, last), AF_INET6) || is_ip(rest.substr(0, before_last), AF_INET6)) throw bad(kNoIpv6);
    throw bad("too many ':'");
  }
  if (parts.size() == 3) {
    host_ip = std::string(parts[0]);
    if (host_ip.empty()) throw bad("the host address before the first ':' is empty");
    if (!is_ip(host_ip, AF_INET)) throw bad(quote(host_ip) + " is not an IPv4 address");
  }
  std::string_view container_part = parts.back();
  std::optional<std::string_view> host_part;
  if (parts.size() >= 2) {
    host_part = parts[parts.size() - 2];
    if (host_part->empty() && parts.size() == 2) throw bad("the host port is missing (give only the container port to have one chosen)");
    if (host_part->empty()) host_part.reset();  // HOSTIP::CONTAINERPORT
  }
  if (container_part.empty()) throw bad("the container port is missing");
  std::string why;
  auto container = parse_range(container_part, "container port", why);
  if (!container) throw bad(why);
  std::optional<PortRange> host;
  if (host_part) {
    if (*host_part == "0") throw bad("host port '0' is not a number from 1 to 65535 (leave the host port out to have one chosen)");
    host = parse_range(*host_part, "host port", why);
    if (!host) throw bad(why);
    if (host->size() != container->size()) {
      throw bad("the host ports (" + std::to_string(host->size()) + ") and the container ports (" +
                std::to_string(container->size()) + ") differ in number (a host range needs a container range of the same " +
                "length; strata does not choose one port of a host range)");
    }
  }
  std::vector<PortMapping> out;
  for (std::size_t i = 0; i < container->size(); ++i) {
    PortMapping p;
    p.host_ip = host_ip;
    p.host_port = host ? static_cast<std::uint16_t>(host->first + i) : 0;
    p.container_port = static_cast<std::uint16_t>(container->first + i);
    p.protocol = protocol;
    out.push_back(p);
  }
  return out;
}

PortMapping make_port(const std::string& host_ip, std::uint64_t host_port, std::uint64_t container_port,
                      const std::string& protocol) {
  std::string what = "port mapping " + quote(host_ip + ":" + std::to_string(host_port) + "->" +
                                             std::to_string(container_port) + "/" + protocol);
  if (!is_ip(host_ip, AF_INET)) throw UsageError("bad " + what + ": the host address is not IPv4");
  if (host_port > 65535 || container_port == 0 || container_port > 65535)
    throw UsageError("bad " + what + ": a port is out of range");
  if (!known_protocol(protocol)) throw UsageError("bad " + what + ": the protocol must be tcp or udp");
  return {host_ip, static_cast<std::uint16_t>(host_port), static_cast<std::uint16_t>(container_port), protocol};
}

void check_ports(const std::vector<PortMapping>& ports) {
  if (ports.size() > kMaxPublishedPorts) {
    throw UsageError(std::to_string(ports.size()) + " ports published (at most " + std::to_string(kMaxPublishedPorts) + ")");
  }
  for (std::size_t i = 0; i < ports.size(); ++i) {
    const PortMapping& a = ports[i];
    if (a.host_port == 0) continue;
    for (std::size_t k = 0; k < i; ++k) {
      const PortMapping& b = ports[k];
      bool overlap = a.host_ip == b.host_ip || a.host_ip == "0.0.0.0" || b.host_ip == "0.0.0.0";
      if (b.host_port == a.host_port && b.protocol == a.protocol && overlap) {
        throw UsageError("host port " + std::to_string(a.host_port) + "/" + a.protocol + " is published twice (" +
                         format_port(b) + ", " + format_port(a) + ")");
      }
    }
  }
}

std::vector<std::string> parse_expose(const std::string& spec) {
  auto slash = spec.find('/');
  std::string protocol = slash == std::string::npos ? "tcp" : spec.substr(slash + 1);
  std::string why;
  auto range = parse_range(std::string_view(spec).substr(0, slash), "port", why);
  if (!known_protocol(protocol)) why = "the protocol must be tcp or udp";
  if (!range || !why.empty())
    throw UsageError("bad exposed port " + quote(spec) + ": " + why + " (expected PORT[/tcp|/udp] or FIRST-LAST[/PROTO])");
  std::vector<std::string> out;
  for (std::size_t i = 0; i < range->size(); ++i) out.push_back(std::to_string(range->first + i) + "/" + protocol);
  return out;
}

std::vector<PortMapping> publish_exposed(std::vector<PortMapping> ports, const std::vector<std::string>& exposed) {
  for (const auto& key : exposed) {
    auto slash = key.find('/');
    std::string protocol = slash == std::string::npos ? "tcp" : key.substr(slash + 1);
    auto port = parse_port(std::string_view(key).substr(0, slash));
    if (!port || !known_protocol(protocol)) continue;
    bool published = false;
    for (const auto& p : ports) published = published || (p.container_port == *port && p.protocol == protocol);
    if (!published) ports.push_back({"0.0.0.0", 0, *port, protocol});
  }
  return ports;
}

std::string format_port(const PortMapping& p) {
  return p.host_ip + ":" + std::to_string(p.host_port) + "->" + std::to_string(p.container_port) + "/" + p.protocol;
}

std::string format_ports(const std::vector<PortMapping>& ports) {
  std::string out;
  for (std::size_t i = 0; i < ports.size();) {
    const PortMapping& first = ports[i];
    std::size_t n = 1;
    auto continues = [&](const PortMapping& p) {
      return first.host_port != 0 && p.host_ip == first.host_ip && p.protocol == first.protocol &&
             p.host_port == first.host_port + n && p.container_port == first.container_port + n;
    };
    while (i + n < ports.size() && continues(ports[i + n])) ++n;
    const PortMapping& last = ports[i + n - 1];
    if (!out.empty()) out += ", ";
    if (n == 1) {
      out += format_port(first);
    } else {
      out += first.host_ip + ":" + std::to_string(first.host_port) + "-" + std::to_string(last.host_port) + "->" +
             std::to_string(first.container_port) + "-" + std::to_string(last.container_port) + "/" + first.protocol;
    }
    i += n;
  }
  return out;
}

HostEntry parse_add_host(const std::string& spec) {
  auto bad = [&](const std::string& why) {
    return UsageError("bad host entry " + quote(spec) + ": " + why + " (expected NAME:IP)");
  };
  auto colon = spec.find(':');
  if (colon == std::string::npos) throw bad("no ':'");
  HostEntry e{spec.substr(0, colon), spec.substr(colon + 1)};
  if (e.name.empty()) throw bad("the name is empty");
  for (char ch : e.name) {
    if (std::isalnum(static_cast<unsigned char>(ch)) == 0 && ch != '-' && ch != '.' && ch != '_')
      throw bad("the name may hold only letters, digits, '-', '.' and '_'");
  }
  if (e.ip == "host-gateway") e.ip = kPrivateGateway;
  if (!is_ip(e.ip, AF_INET) && !is_ip(e.ip, AF_INET6)) throw bad(quote(e.ip) + " is not an IP address");
  return e;
}

void check_dns_server(const std::string& ip) {
  if (!is_ip(ip, AF_INET) && !is_ip(ip, AF_INET6)) throw UsageError("bad DNS server " + quote(ip) + ": not an IP address");
}

std::string container_resolv_conf(std::string_view host, const std::vector<std::string>& dns, Network network) {
  std::string servers, others;
  for (std::string_view line : content_lines(host)) {
    if (starts_with_word(line, "nameserver")) {
      servers += std::string(line) + "\n";
    } else {
      others += std::string(line) + "\n";
    }
  }
  if (!dns.empty()) {
    servers.clear();
    for (const auto& d : dns) servers += "nameserver " + d + "\n";
  } else if (network == Network::private_net) {
    servers = std::string("nameserver ") + kPrivateDns + "\n";
  }
  return servers + others;
}

std::string container_hosts(std::string_view host, const std::string& hostname, Network network,
                            const std::vector<HostEntry>& extra) {
  std::string out;
  if (network == Network::host) {
    out = host;
    if (!out.empty() && out.back() != '\n') out += '\n';
  } else {
    out = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";
    // A name with blanks would make a line of its own.
    if (network == Network::private_net && !hostname.empty() && hostname.find_first_of(" \t\r\n#") == std::string::npos)
      out += std::string(kPrivateAddress) + "\t" + hostname + "\n";
  }
  for (const auto& e : extra) out += e.ip + "\t" + e.name + "\n";
  return out;
}

ContainerNetwork::ContainerNetwork(const RunSpec& spec)
    : network_(spec.network), ports_(spec.ports), state_dir_(spec.state_dir) {
  try {
    check_ports(ports_);
  } catch (const Error& e) {
    throw Error(e.what(), ExitCode::run_failed);
  }
  if (!ports_.empty() && network_ != Network::private_net) {
    throw Error(std::string("ports cannot be published with --network ") + network_name(network_) +
                    " (only with private networking)",
                ExitCode::run_failed);
  }
  if (network_ == Network::private_net) {
    slirp4netns_ = find_in_path("slirp4netns");
    if (slirp4netns_.empty()) {
      throw Error("slirp4netns is not installed (needed for private networking): install it (apt-get install slirp4netns) "
                  "or use --network host or --network none",
                  ExitCode::run_failed);
    }
  }
  if (network_ == Network::host && spec.dns.empty() && spec.extra_hosts.empty()) return;
  make_dir();
  auto write = [&](const char* name, const std::string& text) {
    std::string path = dir_->path() + "/" + name;
    UniqueFd fd(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create " + quote(path));
    write_all(fd.get(), text, path);
  };
  write("resolv.conf", container_resolv_conf(read_host_file("/etc/resolv.conf"), spec.dns, network_));
  write("hosts", container_hosts(read_host_file("/etc/hosts"), spec.hostname, network_, spec.extra_hosts));
}

ContainerNetwork::~ContainerNetwork() {
  stop();
  if (dir_ && !state_dir_.empty()) {
    dir_.reset();
    forget_leftover(state_dir_, "netdir");
  }
}

// The runtime directory lives outside the store: a socket's path has at most
// 107 bytes. A killed strata leaves it; remove_leftovers finds it recorded.
void ContainerNetwork::make_dir() {
  dir_.emplace(runtime_parent(), "strata-net.");
  if (!state_dir_.empty()) record_leftover(state_dir_, "netdir", dir_->path());
}

std::vector<BindMount> ContainerNetwork::name_files() const {
  std::vector<BindMount> out;
  for (const char* f : {"/etc/resolv.conf", "/etc/hosts"}) {
    if (dir_) {
      out.push_back({dir_->path() + "/" + (std::strrchr(f, '/') + 1), f, false, {}, {}, {}, {}});
    } else if (::access(f, R_OK) == 0) {
      out.push_back({f, f, true, {}, {}, {}, {}});
    }
  }
  return out;
}

void ContainerNetwork::attach(pid_t pid) {
  if (network_ != Network::private_net) return;
  if (!dir_) make_dir();
  std::string api = dir_->path() + "/slirp4netns.sock";
  if (api.size() >= sizeof(sockaddr_un::sun_path))
    throw Error("the runtime directory " + quote(dir_->path()) + " is too long a path for a socket (set XDG_RUNTIME_DIR)",
                ExitCode::run_failed);
  int ready[2], exit_pipe[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd ready_read(ready[0]), ready_write(ready[1]);
  if (::pipe2(exit_pipe, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd exit_read(exit_pipe[0]), exit_write(exit_pipe[1]);
  UniqueFd log(::memfd_create("slirp4netns-stderr", MFD_CLOEXEC));
  if (!log) throw_errno("memfd_create");
  std::vector<std::string> args = {slirp4netns_, "--configure", "--mtu=65520", "--disable-host-loopback",
                                   "--api-socket", api, "--ready-fd=3", "--exit-fd=4", std::to_string(pid), kTap};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t child = ::fork();
  if (child < 0) throw_errno("start slirp4netns");
  if (child == 0) {
    // Its own session: the terminal's Ctrl-C is the container's to get.
    ::setsid();
    sigset_t none;
    sigemptyset(&none);
    for (int sig = 1; sig < NSIG; ++sig) ::signal(sig, SIG_DFL);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    int null = ::open("/dev/null", O_RDWR | O_CLOEXEC);
    // fds 3 and 4 as the arguments say; dup2 to a high number first, as the
    // pipes may sit on 3 or 4 already.
    int r = ::fcntl(ready_write.get(), F_DUPFD_CLOEXEC, 10), e = ::fcntl(exit_read.get(), F_DUPFD_CLOEXEC, 10);
    if (null < 0 || r < 0 || e < 0 || ::dup2(null, 0) < 0 || ::dup2(null, 1) < 0 || ::dup2(log.get(), 2) < 0 ||
        ::dup2(r, 3) < 0 || ::dup2(e, 4) < 0) {
      ::_exit(127);
    }
    const int keep[] = {3, 4};
    close_descriptors_except(keep);
    ::execv(argv[0], argv.data());
    [[maybe_unused]] ssize_t w = ::write(2, "cannot execute slirp4netns\n", 27);
    ::_exit(127);
  }
  slirp_pid_ = child;
  exit_fd_ = std::move(exit_write);
  ready_write.reset();
  exit_read.reset();
  auto fail = [&](const std::string& why) {
    std::string said = last_line(log.get());
    stop();
    throw Error("private networking: slirp4netns " + why + (said.empty() ? "" : ": " + said), ExitCode::run_failed);
  };
  pollfd p{ready_read.get(), POLLIN, 0};
  int n;
  do {
    n = ::poll(&p, 1, kReadyTimeoutMs);
  } while (n < 0 && errno == EINTR);
  if (n == 0) fail("did not start within " + std::to_string(kReadyTimeoutMs / 1000) + " seconds");
  char byte = 0;
  if (n < 0 || ::read(ready_read.get(), &byte, 1) != 1 || byte != '1') fail("failed");
  // The given host ports first, so that a chosen one cannot take one of them.
  for (const auto& port : ports_)
    if (port.host_port != 0) publish(port);
  // Another process may take a chosen port before slirp4netns binds it: a
  // few tries, each with a port chosen again.
  constexpr int kTries = 3;
  for (auto& port : ports_) {
    if (port.host_port != 0) continue;
    for (int tried = 1;; ++tried) {
      PortMapping chosen = port;
      chosen.host_port = free_host_port(port);
      try {
        publish(chosen);
      } catch (const Error&) {
        if (tried == kTries) throw;
        continue;
      }
      port = chosen;
      break;
    }
  }
}

// A port of PORT's host address that nothing uses for its protocol now: the
// kernel's pick for a socket bound to port 0. slirp4netns takes no port 0.
std::uint16_t ContainerNetwork::free_host_port(const PortMapping& port) {
  std::string what = "choose a host port for " + std::to_string(port.container_port) + "/" + port.protocol;
  UniqueFd sock(::socket(AF_INET, (port.protocol == "udp" ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0));
  if (!sock) throw_errno(what);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  if (::inet_pton(AF_INET, port.host_ip.c_str(), &addr.sin_addr) != 1)
    throw Error(what + ": " + quote(port.host_ip) + " is not an IPv4 address", ExitCode::run_failed);
  socklen_t len = sizeof addr;
  if (::bind(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(sock.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw Error(what + " on " + port.host_ip + ": " + std::strerror(errno), ExitCode::run_failed);
  return ntohs(addr.sin_port);
}

void ContainerNetwork::publish(const PortMapping& port) {
  using oci::json;
  std::string what = "publish " + format_port(port);
  json request = {{"execute", "add_hostfwd"},
                  {"arguments",
                   {{"proto", port.protocol},
                    {"host_addr", port.host_ip},
                    {"host_port", port.host_port},
                    {"guest_addr", kPrivateAddress},
                    {"guest_port", port.container_port}}}};
  UniqueFd sock(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!sock) throw_errno(what);
  timeval timeout{5, 0};
  ::setsockopt(sock.get(), SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::string path = dir_->path() + "/slirp4netns.sock";
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  if (::connect(sock.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw_errno(what + ": connect to slirp4netns");
  write_all(sock.get(), request.dump(), what);
  ::shutdown(sock.get(), SHUT_WR);
  std::string reply;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(sock.get(), buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) reply.append(buf, static_cast<std::size_t>(n));
    if (reply.size() > 65536) break;
  }
  json j = json::parse(reply, nullptr, false);
  if (j.is_object() && j.contains("return")) return;
  std::string why = "no answer from slirp4netns";
  if (j.is_object() && j.contains("error") && j["error"].is_object()) why = j["error"].value("desc", reply);
  throw Error(what + ": " + why, ExitCode::run_failed);
}

void ContainerNetwork::stop() noexcept {
  exit_fd_.reset();
  if (slirp_pid_ <= 0) return;
  // It exits once it sees the pipe's end; a slirp4netns that does not is
  // killed after 2 seconds.
  for (int waited = 0;; waited += 10) {
    pid_t p = ::waitpid(slirp_pid_, nullptr, WNOHANG);
    if (p == slirp_pid_ || (p < 0 && errno != EINTR)) break;
    if (waited >= 2000) {
      ::kill(slirp_pid_, SIGKILL);
      while (::waitpid(slirp_pid_, nullptr, 0) < 0 && errno == EINTR) {
      }
      break;
    }
    timespec ts{0, 10'000'000};
    ::nanosleep(&ts, nullptr);
  }
  slirp_pid_ = -1;
}

}  // namespace strata::sandbox
