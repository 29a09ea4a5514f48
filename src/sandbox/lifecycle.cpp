// Detached containers: state.json, config.json, the monitor and its log
// writer, signals, stop, wait and logs (see include/strata/lifecycle.hpp).
#include "strata/lifecycle.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <ostream>

#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/text.hpp"

namespace strata::lifecycle {

using oci::json;

namespace {

constexpr const char* kStateFile = "state.json";
constexpr const char* kConfigFile = "config.json";
constexpr const char* kLogFile = "ctr.log";
constexpr const char* kStdinFifo = "stdin";

// The signals sandbox::run passes on to the container (its kForwarded).
constexpr int kForwarded[] = {SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM};

bool is_forwarded(int sig) { return std::find(std::begin(kForwarded), std::end(kForwarded), sig) != std::end(kForwarded); }

// PATH replaced by DATA through a rename, so that readers see the old or
// the new content, never a part.
void replace_file(const std::string& path, std::string_view data) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  {
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
    if (!fd) throw_errno("create " + quote(tmp));
    write_all(fd.get(), data, tmp);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int err = errno;
    ::unlink(tmp.c_str());
    throw SysError(err, "replace " + quote(path));
  }
}

std::optional<json> read_json_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    return std::nullopt;
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return std::nullopt;
  return j;
}

// A port mapping as config.json and state.json hold it, and back; checked as
// -p checks it: the file may have been edited.
json port_to_json(const sandbox::PortMapping& p) {
  return {{"HostIp", p.host_ip}, {"HostPort", p.host_port}, {"ContainerPort", p.container_port}, {"Protocol", p.protocol}};
}

sandbox::PortMapping port_from_json(const json& p) {
  auto number = [&](const char* key) -> std::uint64_t {
    return p.is_object() && p.contains(key) && p[key].is_number_unsigned() ? p[key].get<std::uint64_t>() : UINT64_MAX;
  };
  auto text = [&](const char* key) {
    return p.is_object() && p.contains(key) && p[key].is_string() ? p[key].get<std::string>() : std::string();
  };
  return sandbox::make_port(text("HostIp"), number("HostPort"), number("ContainerPort"), text("Protocol"));
}

State read_state_file(const store::Container& c) {
  State s;
  auto j = read_json_file(c.dir + "/" + kStateFile);
  if (!j) return s;
  s.status = j->value("Status", "created");
  s.pid = j->value("Pid", 0);
  s.monitor_pid = j->value("MonitorPid", 0);
  s.started_at = j->value("StartedAt", "");
  s.finished_at = j->value("FinishedAt", "");
  s.exit_code = j->value("ExitCode", 0);
  s.error = j->value("Error", "");
  if (j->contains("Ports") && (*j)["Ports"].is_array()) {
    try {
      for (const auto& p : (*j)["Ports"]) s.ports.push_back(port_from_json(p));
    } catch (const Error&) {
      s.ports.clear();  // an edited file: no ports rather than wrong ones
    }
  }
  return s;
}

// A process of the host as a pidfd (so that a signal cannot reach another
// process that got its pid since); empty when it is gone.
UniqueFd open_pidfd(pid_t pid) {
  if (pid <= 0) return {};
  return UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
}

void sleep_ms(int ms) {
  timespec ts{ms / 1000, static_cast<long>(ms % 1000) * 1000000L};
  while (::nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

std::string to_lower(std::string s) {
  for (char& ch : s) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

// ---- the log --------------------------------------------------------------

class LogWriter {
 public:
  LogWriter(std::string dir, LogOptions options) : dir_(std::move(dir)), options_(options) { open_current(); }

  // Writes TEXT (a read from STREAM's pipe) as records; the last piece,
  // when it does not end a line, as a partial one.
  void write(const char* stream, std::string_view text) {
    std::string time = rfc3339_nano_now();
    std::string head_len_probe = time + " " + stream + " F ";
    // A record never exceeds max_size: longer lines are split into partial
    // records.
    std::size_t room = options_.max_size > head_len_probe.size() + 1 ? options_.max_size - head_len_probe.size() - 1 : 1;
    while (!text.empty()) {
      auto nl = text.find('\n');
      bool full = nl != std::string_view::npos && nl <= room;
      std::size_t len = full ? nl : std::min(room, nl == std::string_view::npos ? text.size() : nl);
      std::string rec = time + " " + stream + (full ? " F " : " P ") + std::string(text.substr(0, len)) + "\n";
      text.remove_prefix(full ? len + 1 : len);
      append(rec);
    }
  }

 private:
  std::string path(unsigned n) const { return dir_ + "/" + kLogFile + (n == 0 ? "" : "." + std::to_string(n)); }

  void open_current() {
    fd_.reset(::open(path(0).c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640));
    if (!fd_) throw_errno("open the log " + quote(path(0)));
    struct stat st {};
    size_ = ::fstat(fd_.get(), &st) == 0 ? static_cast<std::uint64_t>(st.st_size) : 0;
  }

  void rotate() {
    fd_.reset();
    if (options_.max_files <= 1) {
      ::unlink(path(0).c_str());
    } else {
      for (unsigned n = options_.max_files - 1; n >= 2; --n) ::rename(path(n - 1).c_str(), path(n).c_str());
      ::rename(path(0).c_str(), path(1).c_str());
    }
    open_current();
  }

  void append(const std::string& rec) {
    if (size_ > 0 && size_ + rec.size() > options_.max_size) rotate();
    // A full disk loses log lines, never the container.
    try {
      write_all(fd_.get(), rec, "the log");
      size_ += rec.size();
    } catch (const Error&) {
    }
  }

  std::string dir_;
  LogOptions options_;
  UniqueFd fd_;
  std::uint64_t size_ = 0;
};

// The log writer process: copies the two pipes into the log until every
// process of the container has closed them.
[[noreturn]] void log_writer_main(const std::string& dir, const LogOptions& options, int out, int err) {
  try {
    LogWriter log(dir, options);
    pollfd fds[2] = {{out, POLLIN, 0}, {err, POLLIN, 0}};
    const char* names[2] = {"stdout", "stderr"};
    std::string buf(65536, '\0');
    while (fds[0].fd >= 0 || fds[1].fd >= 0) {
      if (::poll(fds, 2, -1) < 0) {
        if (errno == EINTR) continue;
        break;
      }
      for (int i = 0; i < 2; ++i) {
        if (fds[i].fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
        if (n <= 0) {
          fds[i].fd = -1;
          continue;
        }
        log.write(names[i], std::string_view(buf.data(), static_cast<std::size_t>(n)));
      }
    }
  } catch (const std::exception&) {
    ::_exit(1);
  }
  ::_exit(0);
}

// One record of the log.
struct Record {
  std::string time;
  bool is_stderr = false;
  bool full = true;  // ends a line
  std::string text;
};

std::optional<Record> parse_record(std::string_view line) {
  auto a = line.find(' ');
  if (a == std::string_view::npos) return std::nullopt;
  auto b = line.find(' ', a + 1);
  if (b == std::string_view::npos || b + 2 > line.size()) return std::nullopt;
  Record r;
  r.time = std::string(line.substr(0, a));
  std::string_view stream = line.substr(a + 1, b - a - 1);
  r.is_stderr = stream == "stderr";
  r.full = line[b + 1] == 'F';
  r.text = b + 3 <= line.size() ? std::string(line.substr(b + 3)) : std::string();
  return r;
}

// Parses complete lines of TEXT into OUT; returns how many bytes it used.
std::size_t parse_records(std::string_view text, std::vector<Record>& out) {
  std::size_t used = 0;
  for (;;) {
    auto nl = text.find('\n', used);
    if (nl == std::string_view::npos) return used;
    if (auto r = parse_record(text.substr(used, nl - used))) out.push_back(std::move(*r));
    used = nl + 1;
  }
}

class LogPrinter {
 public:
  LogPrinter(bool timestamps, std::ostream& out, std::ostream& err) : timestamps_(timestamps), out_(out), err_(err) {}
  void print(const Record& r) {
    std::ostream& os = r.is_stderr ? err_ : out_;
    bool& start = line_start_[r.is_stderr ? 1 : 0];
    if (start && timestamps_) os << r.time << " ";
    os << r.text;
    if (r.full) os << "\n";
    start = r.full;
    os.flush();
  }

 private:
  bool timestamps_;
  std::ostream& out_;
  std::ostream& err_;
  bool line_start_[2] = {true, true};
};

std::string duration_text(std::int64_t seconds) {
  auto n = [](std::int64_t v, const char* unit) { return std::to_string(v) + " " + unit + (v == 1 ? "" : "s"); };
  if (seconds < 1) return "Less than a second";
  if (seconds < 60) return n(seconds, "second");
  if (seconds < 120) return "About a minute";
  if (seconds < 3600) return n(seconds / 60, "minute");
  if (seconds < 7200) return "About an hour";
  if (seconds < 3600 * 48) return n(seconds / 3600, "hour");
  if (seconds < 86400 * 14) return n(seconds / 86400, "day");
  if (seconds < 86400 * 90) return n(seconds / (86400 * 7), "week");
  if (seconds < 86400 * 365 * 2) return n(seconds / (86400 * 30), "month");
  return n(seconds / (86400 * 365), "year");
}

std::int64_t seconds_since(const std::string& time) {
  auto t = oci::parse_rfc3339(time);
  if (!t) return 0;
  return std::max<std::int64_t>(0, static_cast<std::int64_t>(std::time(nullptr)) - *t);
}

// ---- the monitor ----------------------------------------------------------

// What the monitor tells `strata run -d` / `strata start`: one message, a
// code byte (0: the command runs; 'R': the container is running already;
// else an ExitCode) and a one-line error.
constexpr char kStarted = 0;
constexpr char kAlreadyRunning = 'R';

void report(int fd, char code, const std::string& message) {
  std::string msg(1, code);
  msg += message.substr(0, 3000);
  [[maybe_unused]] ssize_t n = ::write(fd, msg.data(), msg.size());
}

void redirect(int fd, int to) {
  if (::dup2(to, fd) < 0) throw_errno("redirect fd " + std::to_string(fd));
}

[[noreturn]] void monitor_main(const std::string& store_root, const std::string& id,
                               const sandbox::ContainerRunOptions& options, const LogOptions& log_options, bool remove,
                               int status_fd) {
  bool started = false;
  try {
    // Nothing of the caller stays open here: a pipe the caller's caller
    // waits on would otherwise never see its end.
    const int keep[] = {status_fd};
    close_descriptors_except(keep);
    if (::chdir("/") != 0) throw_errno("enter /");
    UniqueFd null(::open("/dev/null", O_RDWR | O_CLOEXEC));
    if (!null) throw_errno("open /dev/null");
    redirect(0, null.get());
    // The forwarded signals are taken by sandbox::run; until it runs and
    // after, they must not end the monitor.
    sigset_t forwarded;
    sigemptyset(&forwarded);
    for (int sig : kForwarded) sigaddset(&forwarded, sig);
    ::sigprocmask(SIG_BLOCK, &forwarded, nullptr);

    auto store = store::Store::open(store_root);
    store::Container c = store.container(id);
    int out[2], err[2];
    if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0) throw_errno("pipe");
    pid_t writer = ::fork();
    if (writer < 0) throw_errno("start the log writer");
    if (writer == 0) {
      ::close(out[1]);
      ::close(err[1]);
      ::close(status_fd);
      redirect(1, null.get());  // the caller's stdout and stderr are not for it either
      redirect(2, null.get());
      log_writer_main(c.dir, log_options, out[0], err[0]);
    }
    ::close(out[0]);
    ::close(err[0]);
    redirect(1, out[1]);
    redirect(2, err[1]);
    ::close(out[1]);
    ::close(err[1]);

    int status = 0;
    {
      auto use = store.lock_container(c);
      if (auto m = store.mounted_at(c); !m.empty())
        throw Error("container " + quote(c.name) + " is mounted at " + quote(m[0]) + " (unmount it first)",
                    ExitCode::run_failed);
      sandbox::ContainerRunOptions o = options;
      o.interactive = options.open_stdin;
      const std::string fifo = c.dir + "/" + kStdinFifo;
      UniqueFd input;
      if (o.interactive) {
        // Made only now, under the lock: a FIFO of an earlier run may be left.
        if (::unlink(fifo.c_str()) != 0 && errno != ENOENT) throw_errno("remove " + quote(fifo));
        if (::mkfifo(fifo.c_str(), 0600) != 0) throw_errno("create " + quote(fifo));
        input = open_at(AT_FDCWD, fifo, O_RDWR | O_NOFOLLOW | O_CLOEXEC);
        redirect(0, input.get());
      }
      try {
        status = sandbox::run_container(store, c, o, [&] {
          report(status_fd, kStarted, "");
          ::close(status_fd);
          started = true;
        });
      } catch (const Error& e) {
        if (started) throw;
        // The message for `strata run -d`, and the log for `strata logs`.
        report(status_fd, static_cast<char>(e.code() == ExitCode::failure ? ExitCode::run_failed : e.code()), e.what());
        started = true;
        std::fprintf(stderr, "strata: %s\n", e.what());
      }
      // The log is complete before the lock says the container has ended.
      redirect(0, null.get());
      if (input) ::unlink(fifo.c_str());
      redirect(1, null.get());
      redirect(2, null.get());
      while (::waitpid(writer, nullptr, 0) < 0 && errno == EINTR) {
      }
    }
    static_cast<void>(status);
    if (remove) {
      try {
        store.remove_container(c.id, true, true);  // `run --rm`: with its anonymous volumes
      } catch (const Error&) {
        // `rm -f` got there first.
      }
    }
  } catch (const store::ContainerRunning& e) {
    if (!started) report(status_fd, kAlreadyRunning, e.what());
    ::_exit(1);
  } catch (const Error& e) {
    if (!started) report(status_fd, static_cast<char>(e.code() == ExitCode::failure ? ExitCode::run_failed : e.code()), e.what());
    ::_exit(1);
  } catch (const std::exception& e) {
    if (!started) report(status_fd, static_cast<char>(ExitCode::run_failed), e.what());
    ::_exit(1);
  }
  ::_exit(0);
}

}  // namespace

// ---- state and config -----------------------------------------------------

json State::to_json() const {
  return {{"Status", status},
          {"Running", running()},
          {"Paused", false},
          {"Restarting", false},
          {"OOMKilled", false},
          {"Dead", false},
          {"Pid", running() ? pid : 0},
          {"MonitorPid", running() ? monitor_pid : 0},
          {"ExitCode", exit_code},
          {"Error", error},
          {"StartedAt", started_at.empty() ? "0001-01-01T00:00:00Z" : started_at},
          {"FinishedAt", finished_at.empty() ? "0001-01-01T00:00:00Z" : finished_at}};
}

void write_state(const store::Container& c, const State& s) {
  json j = {{"Status", s.status},         {"Pid", s.pid},           {"MonitorPid", s.monitor_pid},
            {"StartedAt", s.started_at},  {"FinishedAt", s.finished_at}, {"ExitCode", s.exit_code},
            {"Error", s.error}};
  json ports = json::array();
  for (const auto& p : s.ports) ports.push_back(port_to_json(p));
  j["Ports"] = ports;
  replace_file(c.dir + "/" + kStateFile, j.dump());
}

State container_state(const store::Store& store, const store::Container& c) {
  State s = read_state_file(c);
  if (s.running() && !store.running(c)) {
    // The monitor may have written the end and let go just now.
    s = read_state_file(c);
    if (s.running()) {
      s.status = "exited";
      s.exit_code = 255;
      s.error = "the process that ran the container (pid " + std::to_string(s.monitor_pid) +
                ") ended without recording its exit";
      s.finished_at = rfc3339_nano_now();
      s.pid = 0;
      s.ports.clear();
      // The first to see it records it, so that the time stays that of the
      // discovery; under the lock, so that a start in between wins.
      try {
        auto use = store.lock_container(c);
        if (read_state_file(c).running()) write_state(c, s);
      } catch (const Error&) {
        return read_state_file(c);
      }
    }
  }
  return s;
}

void save_config(const store::Container& c, const sandbox::ContainerRunOptions& o, const LogOptions& log) {
  json volumes = json::array();
  for (const auto& v : o.volumes) {
    json one = {{"Source", v.source}, {"Target", v.target}, {"ReadOnly", v.read_only}};
    if (!v.volume.empty()) one["Volume"] = v.volume;
    if (v.anonymous) one["Anonymous"] = true;
    volumes.push_back(one);
  }
  json tmpfs = json::array();
  for (const auto& t : o.tmpfs) tmpfs.push_back(t.options.empty() ? t.target : t.target + ":" + t.options);
  std::string seccomp = !o.seccomp ? "unconfined" : o.seccomp_profile_text.empty() ? "default" : "custom";
  json ports = json::array();
  for (const auto& p : o.ports) ports.push_back(port_to_json(p));
  json extra_hosts = json::array();
  for (const auto& h : o.extra_hosts) extra_hosts.push_back(h.name + ":" + h.ip);
  json j = {{"Args", o.args},
            {"Env", o.env},
            {"Tty", o.tty},
            {"OpenStdin", o.open_stdin},
            {"Network", sandbox::network_name(o.network)},
            {"Ports", ports},
            {"PublishAllPorts", o.publish_all},
            {"Expose", o.expose},
            {"Dns", o.dns},
            {"ExtraHosts", extra_hosts},
            {"Volumes", volumes},
            {"Tmpfs", tmpfs},
            {"ReadonlyRootfs", o.read_only_root},
            {"Capabilities", o.capabilities},
            {"Seccomp", seccomp},
            {"Init", o.init},
            {"Memory", o.resources.memory},
            {"MemorySwap", o.resources.memory_swap},
            {"NanoCpus", o.resources.nano_cpus},
            {"PidsLimit", o.resources.pids_limit},
            {"LogMaxSize", log.max_size},
            {"LogMaxFiles", log.max_files}};
  if (o.entrypoint) j["Entrypoint"] = *o.entrypoint;
  if (o.workdir) j["WorkingDir"] = *o.workdir;
  if (o.user) j["User"] = *o.user;
  if (o.hostname) j["Hostname"] = *o.hostname;
  if (seccomp == "custom") j["SeccompProfile"] = o.seccomp_profile_text;
  replace_file(c.dir + "/" + kConfigFile, j.dump());
}

std::optional<sandbox::ContainerRunOptions> load_config(const store::Container& c) {
  auto j = read_json_file(c.dir + "/" + kConfigFile);
  if (!j) return std::nullopt;
  sandbox::ContainerRunOptions o;
  auto strings = [&](const char* key) {
    std::vector<std::string> out;
    if (j->contains(key) && (*j)[key].is_array())
      for (const auto& v : (*j)[key])
        if (v.is_string()) out.push_back(v.get<std::string>());
    return out;
  };
  auto optional_string = [&](const char* key) -> std::optional<std::string> {
    if (j->contains(key) && (*j)[key].is_string()) return (*j)[key].get<std::string>();
    return std::nullopt;
  };
  o.image = c.image_name;
  o.name = c.name;
  o.args = strings("Args");
  o.env = strings("Env");
  o.entrypoint = optional_string("Entrypoint");
  o.workdir = optional_string("WorkingDir");
  o.user = optional_string("User");
  o.hostname = optional_string("Hostname");
  o.tty = j->value("Tty", false);
  o.open_stdin = j->value("OpenStdin", false);
  // Containers made before private networking have host networking.
  try {
    o.network = sandbox::parse_network(j->value("Network", "host"));
    if (j->contains("Ports") && (*j)["Ports"].is_array())
      for (const auto& p : (*j)["Ports"]) o.ports.push_back(port_from_json(p));
    sandbox::check_ports(o.ports);
    o.publish_all = j->value("PublishAllPorts", false);
    for (const auto& e : strings("Expose"))
      for (auto& key : sandbox::parse_expose(e)) o.expose.push_back(key);
    o.dns = strings("Dns");
    for (const auto& d : o.dns) sandbox::check_dns_server(d);
    for (const auto& h : strings("ExtraHosts")) o.extra_hosts.push_back(sandbox::parse_add_host(h));
  } catch (const Error& e) {
    throw Error("the network settings of " + quote(c.name) + ": " + e.what());
  }
  if (j->contains("Volumes") && (*j)["Volumes"].is_array())
    for (const auto& v : (*j)["Volumes"])
      if (v.is_object())
        o.volumes.push_back({v.value("Source", ""), v.value("Target", ""), v.value("ReadOnly", false), v.value("Volume", ""),
                             {}, {}, {}, v.value("Anonymous", false)});
  for (const auto& t : strings("Tmpfs")) o.tmpfs.push_back(sandbox::parse_tmpfs(t));
  o.read_only_root = j->value("ReadonlyRootfs", false);
  o.capabilities = j->value("Capabilities", sandbox::default_capabilities());
  std::string seccomp = j->value("Seccomp", "default");
  if (seccomp == "unconfined") {
    o.seccomp.reset();
  } else if (seccomp == "custom") {
    o.seccomp_profile_text = j->value("SeccompProfile", "");
    o.seccomp = sandbox::parse_seccomp_profile(o.seccomp_profile_text, "the seccomp profile of " + quote(c.name));
  }
  o.init = j->value("Init", false);
  // Checked again as the flags check them: the file may have been edited.
  auto number = [&](const char* key) -> std::int64_t {
    return j->contains(key) && (*j)[key].is_number_integer() ? (*j)[key].get<std::int64_t>() : 0;
  };
  o.resources.memory = std::max<std::int64_t>(0, number("Memory"));
  o.resources.memory_swap = std::max<std::int64_t>(-1, number("MemorySwap"));
  o.resources.nano_cpus = std::max<std::int64_t>(0, number("NanoCpus"));
  o.resources.pids_limit = std::max<std::int64_t>(0, number("PidsLimit"));
  try {
    sandbox::check_resources(o.resources);
  } catch (const Error& e) {
    throw Error("the resource limits of " + quote(c.name) + ": " + e.what());
  }
  return o;
}

LogOptions load_log_options(const store::Container& c) {
  LogOptions log;
  if (auto j = read_json_file(c.dir + "/" + kConfigFile)) {
    log.max_size = std::max<std::uint64_t>(1024, j->value("LogMaxSize", log.max_size));
    log.max_files = std::clamp(j->value("LogMaxFiles", log.max_files), 1U, 100U);
  }
  return log;
}

void parse_log_opt(LogOptions& options, const std::string& opt) {
  auto eq = opt.find('=');
  std::string key = opt.substr(0, eq), value = eq == std::string::npos ? "" : opt.substr(eq + 1);
  auto bad = [&]() { return UsageError("bad log option " + quote(opt) + " (max-size=SIZE[k|m|g] or max-file=N)"); };
  if (value.empty() || value.find_first_not_of("0123456789kKmMgGbB") != std::string::npos ||
      !std::isdigit(static_cast<unsigned char>(value[0])))
    throw bad();
  std::size_t used = 0;
  std::uint64_t n = 0;
  try {
    n = std::stoull(value, &used);
  } catch (const std::exception&) {
    throw bad();
  }
  std::string suffix = to_lower(value.substr(used));
  if (key == "max-size") {
    std::uint64_t unit = suffix.empty() || suffix == "b" ? 1 : suffix == "k" || suffix == "kb" ? 1024
                       : suffix == "m" || suffix == "mb" ? 1 << 20 : suffix == "g" || suffix == "gb" ? 1 << 30 : 0;
    if (unit == 0 || n > (std::uint64_t{1} << 40) / unit) throw bad();
    if (n * unit < 1024) throw UsageError("log option " + quote(opt) + ": max-size is at least 1k");
    options.max_size = n * unit;
  } else if (key == "max-file") {
    if (!suffix.empty() || n < 1 || n > 100) throw bad();
    options.max_files = static_cast<unsigned>(n);
  } else {
    throw bad();
  }
}

// ---- starting and signalling ----------------------------------------------

void start_detached(const std::string& store_root, const store::Container& c, const sandbox::ContainerRunOptions& options,
                    const LogOptions& log, bool remove) {
  int sp[2];
  if (::pipe2(sp, O_CLOEXEC) != 0) throw_errno("pipe");
  UniqueFd status_read(sp[0]), status_write(sp[1]);
  std::fflush(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("start the monitor");
  if (pid == 0) {
    // A session of its own, and reparented to init (or the nearest
    // subreaper) when its parent leaves: nothing of the caller's terminal
    // or process group reaches it.
    ::setsid();
    pid_t monitor = ::fork();
    if (monitor != 0) ::_exit(monitor < 0 ? 1 : 0);
    monitor_main(store_root, c.id, options, log, remove, status_write.get());
  }
  status_write.reset();
  while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
  // One message, written at once (shorter than PIPE_BUF); the pipe's end
  // may never come, as the supervisor keeps a copy of it.
  std::string msg;
  char buf[4096];
  ssize_t n;
  do {
    n = ::read(status_read.get(), buf, sizeof buf);
  } while (n < 0 && errno == EINTR);
  if (n > 0) msg.assign(buf, static_cast<std::size_t>(n));
  if (msg.empty()) throw Error("the monitor of container " + quote(c.name) + " ended before the container started", ExitCode::run_failed);
  if (msg[0] == kStarted) return;
  if (msg[0] == kAlreadyRunning) throw store::ContainerRunning(msg.substr(1));
  throw Error(msg.substr(1), static_cast<ExitCode>(static_cast<unsigned char>(msg[0])));
}

int parse_signal(const std::string& given) {
  static const std::pair<const char*, int> kNames[] = {
      {"HUP", SIGHUP},   {"INT", SIGINT},     {"QUIT", SIGQUIT},   {"ILL", SIGILL},       {"TRAP", SIGTRAP},
      {"ABRT", SIGABRT}, {"IOT", SIGIOT},     {"BUS", SIGBUS},     {"FPE", SIGFPE},       {"KILL", SIGKILL},
      {"USR1", SIGUSR1}, {"SEGV", SIGSEGV},   {"USR2", SIGUSR2},   {"PIPE", SIGPIPE},     {"ALRM", SIGALRM},
      {"TERM", SIGTERM}, {"STKFLT", SIGSTKFLT}, {"CHLD", SIGCHLD}, {"CONT", SIGCONT},     {"STOP", SIGSTOP},
      {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},   {"TTOU", SIGTTOU},   {"URG", SIGURG},       {"XCPU", SIGXCPU},
      {"XFSZ", SIGXFSZ}, {"VTALRM", SIGVTALRM}, {"PROF", SIGPROF}, {"WINCH", SIGWINCH},   {"IO", SIGIO},
      {"POLL", SIGPOLL}, {"PWR", SIGPWR},     {"SYS", SIGSYS}};
  std::string name = given;
  for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (name.rfind("SIG", 0) == 0) name = name.substr(3);
  if (!name.empty() && name.find_first_not_of("0123456789") == std::string::npos && name.size() <= 2) {
    int n = std::stoi(name);
    if (n >= 1 && n < NSIG) return n;
  }
  for (const auto& [n, sig] : kNames)
    if (name == n) return sig;
  throw UsageError("invalid signal " + quote(given) + " (a name such as TERM or KILL, or a number)");
}

int stop_signal(const store::Store& store, const store::Container& c) {
  try {
    store::Image image = store.image_by_manifest(c.image);
    if (image.config.contains("config") && image.config["config"].is_object()) {
      std::string s = image.config["config"].value("StopSignal", "");
      if (!s.empty()) return parse_signal(s);
    }
  } catch (const Error&) {
  }
  return SIGTERM;
}

UniqueFd open_container_stdin(const store::Container& c) {
  std::string path = c.dir + "/" + kStdinFifo;
  // Non-blocking: with no reader (the container has just ended) this fails
  // at once (ENXIO) instead of waiting for one.
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISFIFO(st.st_mode))
    throw Error("container " + quote(c.name) + " has no stdin to attach to (it was not started with -i, or has ended)");
  if (::fcntl(fd.get(), F_SETFL, ::fcntl(fd.get(), F_GETFL) & ~O_NONBLOCK) != 0) throw_errno("attach to the stdin of " + quote(c.name));
  return fd;
}

void kill_container(const store::Store& store, const store::Container& c, int sig) {
  State s = container_state(store, c);
  auto not_running = [&] { return Error("container " + quote(c.name) + " is not running"); };
  if (!s.running()) throw not_running();
  UniqueFd target = open_pidfd(is_forwarded(sig) ? s.monitor_pid : s.pid);
  // The lock proves that the pid opened is still the container's.
  if (!target || !store.running(c)) throw not_running();
  if (::syscall(SYS_pidfd_send_signal, target.get(), sig, nullptr, 0) != 0) {
    if (errno == ESRCH) throw not_running();
    throw_errno("signal container " + quote(c.name));
  }
}

bool wait_stopped(const store::Store& store, const store::Container& c, int timeout_ms) {
  for (int waited = 0;; waited += 50) {
    if (!store.running(c)) return true;
    if (timeout_ms >= 0 && waited >= timeout_ms) return false;
    sleep_ms(50);
  }
}

void stop_container(const store::Store& store, const store::Container& c, int timeout_seconds) {
  if (!container_state(store, c).running()) return;
  try {
    kill_container(store, c, stop_signal(store, c));
  } catch (const Error&) {
    if (!store.running(c)) return;
  }
  if (wait_stopped(store, c, std::max(0, timeout_seconds) * 1000)) return;
  try {
    kill_container(store, c, SIGKILL);
  } catch (const Error&) {
  }
  wait_stopped(store, c);
}

// ---- logs -----------------------------------------------------------------

void print_logs(const store::Store& store, const store::Container& c, const LogsOptions& options, std::ostream& out,
                std::ostream& err) {
  std::vector<std::string> rotated;
  for (unsigned n = 1;; ++n) {
    std::string p = c.dir + "/" + kLogFile + "." + std::to_string(n);
    if (::access(p.c_str(), F_OK) != 0) break;
    rotated.push_back(p);
  }
  std::vector<Record> records;
  for (auto it = rotated.rbegin(); it != rotated.rend(); ++it) {
    try {
      parse_records(read_file(*it), records);
    } catch (const Error&) {
      // Rotated away while read.
    }
  }
  std::string current_path = c.dir + "/" + kLogFile;
  UniqueFd current(::open(current_path.c_str(), O_RDONLY | O_CLOEXEC));
  std::string pending;
  auto read_more = [&](std::vector<Record>& into) {
    if (!current) return false;
    char buf[65536];
    bool any = false;
    for (;;) {
      ssize_t n = ::read(current.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      pending.append(buf, static_cast<std::size_t>(n));
      any = true;
    }
    pending.erase(0, parse_records(pending, into));
    return any;
  };
  read_more(records);
  std::size_t first = 0;
  if (options.tail) {
    std::size_t lines = 0;
    first = records.size();
    while (first > 0) {
      if (records[first - 1].full) {
        if (lines == *options.tail) break;
        ++lines;
      }
      --first;
    }
  }
  LogPrinter printer(options.timestamps, out, err);
  for (std::size_t i = first; i < records.size(); ++i) printer.print(records[i]);
  if (!options.follow) return;
  for (;;) {
    bool running = store.running(c);
    std::vector<Record> more;
    bool any = read_more(more);
    // Rotated: what is left of the old file was read above; go on with the new one.
    struct stat now {}, ours {};
    if (::stat(current_path.c_str(), &now) == 0 && (!current || (::fstat(current.get(), &ours) == 0 && ours.st_ino != now.st_ino))) {
      read_more(more);
      current.reset(::open(current_path.c_str(), O_RDONLY | O_CLOEXEC));
      pending.clear();
      any = read_more(more) || any;
    }
    for (const auto& r : more) printer.print(r);
    if (!running && !any) return;
    if (!any) sleep_ms(100);
  }
}

// ---- status ---------------------------------------------------------------

std::string status_text(const State& s) {
  if (s.running()) return "Up " + duration_text(seconds_since(s.started_at));
  if (s.status == "exited")
    return "Exited (" + std::to_string(s.exit_code) + ") " + duration_text(seconds_since(s.finished_at)) + " ago";
  return "Created";
}

std::string rfc3339_nano_now() {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  tm t{};
  ::gmtime_r(&ts.tv_sec, &t);
  char buf[64];
  std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &t);
  std::snprintf(buf + n, sizeof buf - n, ".%09ldZ", ts.tv_nsec);
  return buf;
}

}  // namespace strata::lifecycle
