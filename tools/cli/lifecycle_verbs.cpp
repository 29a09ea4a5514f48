// Verbs of running containers: stop, kill, wait, logs, attach, restart, exec.
#include <pthread.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <iostream>
#include <optional>
#include <thread>

#include "cli.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/lifecycle.hpp"
#include "strata/sandbox.hpp"
#include "strata/terminal.hpp"

namespace strata::cli {
namespace {

std::vector<std::string> names_of(const po::variables_map& vm) {
  return vm["containers"].as<std::vector<std::string>>();
}

// Runs ACTION on each container named, as docker does: an error is reported
// and the others still get their turn; the status is the last error's.
template <typename Fn>
int for_each_container(const po::variables_map& vm, Fn action) {
  int rc = 0;
  for (const auto& n : names_of(vm)) {
    try {
      action(n);
    } catch (const Error& e) {
      std::cerr << "strata: " << e.what() << "\n";
      rc = static_cast<int>(e.code());
    }
  }
  return rc;
}

// stop and restart: [-t SECONDS] CONTAINER...
bool parse_timed(const char* verb, const std::vector<std::string>& args, po::variables_map& vm) {
  po::options_description opts("Options");
  opts.add_options()("time,t", po::value<int>()->default_value(10), "seconds to wait before SIGKILL")(
      "containers", po::value<std::vector<std::string>>()->required(), "containers");
  po::positional_options_description pos;
  pos.add("containers", -1);
  std::string usage = std::string("strata ") + verb + " [-t SECONDS] CONTAINER...";
  if (!parse_args(verb, usage.c_str(), opts, pos, args, vm)) return false;
  if (vm["time"].as<int>() < 0) throw UsageError(std::string(verb) + ": the timeout must not be negative");
  return true;
}

int stop_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::variables_map vm;
  if (!parse_timed("stop", args, vm)) return 0;
  int t = vm["time"].as<int>();
  auto store = open_store(g);
  return for_each_container(vm, [&](const std::string& n) {
    lifecycle::stop_container(store, store.container(n), t);
    std::cout << n << std::endl;
  });
}

int kill_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("signal,s", po::value<std::string>()->default_value("KILL"), "signal name or number")(
      "containers", po::value<std::vector<std::string>>()->required(), "containers");
  po::positional_options_description pos;
  pos.add("containers", -1);
  po::variables_map vm;
  if (!parse_args("kill", "strata kill [-s SIGNAL] CONTAINER...", opts, pos, args, vm)) return 0;
  int sig = lifecycle::parse_signal(vm["signal"].as<std::string>());
  auto store = open_store(g);
  return for_each_container(vm, [&](const std::string& n) {
    lifecycle::kill_container(store, store.container(n), sig);
    std::cout << n << std::endl;
  });
}

int wait_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("containers", po::value<std::vector<std::string>>()->required(), "containers");
  po::positional_options_description pos;
  pos.add("containers", -1);
  po::variables_map vm;
  if (!parse_args("wait", "strata wait CONTAINER...", opts, pos, args, vm)) return 0;
  auto store = open_store(g);
  return for_each_container(vm, [&](const std::string& n) {
    store::Container c = store.container(n);
    lifecycle::wait_stopped(store, c);
    std::cout << lifecycle::container_state(store, c).exit_code << std::endl;
  });
}

int logs_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("follow,f", po::bool_switch(), "go on printing while the container runs")(
      "tail,n", po::value<std::string>()->default_value("all"), "only the last N lines")(
      "timestamps,t", po::bool_switch(), "prefix each line with the time it was written")(
      "container", po::value<std::string>()->required(), "container");
  po::positional_options_description pos;
  pos.add("container", 1);
  po::variables_map vm;
  if (!parse_args("logs", "strata logs [-f] [--tail N] [-t] CONTAINER", opts, pos, args, vm)) return 0;
  lifecycle::LogsOptions o;
  o.follow = vm["follow"].as<bool>();
  o.timestamps = vm["timestamps"].as<bool>();
  std::string tail = vm["tail"].as<std::string>();
  if (tail != "all") {
    if (tail.empty() || tail.size() > 12 || tail.find_first_not_of("0123456789") != std::string::npos)
      throw UsageError("logs: bad --tail " + quote(tail) + " (a number of lines or all)");
    o.tail = static_cast<std::size_t>(std::stoull(tail));
  }
  auto store = open_store(g);
  lifecycle::print_logs(store, store.container(vm["container"].as<std::string>()), o, std::cout, std::cerr);
  return 0;
}

// Forwards SIGINT and SIGTERM to the running container C for as long as the
// process lives (attach --sig-proxy): the signals are blocked in every
// thread and taken by one of its own with sigwait.
void proxy_signals(const store::Store& store, const store::Container& c) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  if (::pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw Error("attach: cannot block signals");
  std::thread([store, c, set] {
    for (;;) {
      int sig = 0;
      if (::sigwait(&set, &sig) != 0) continue;
      try {
        lifecycle::kill_container(store, c, sig);
      } catch (const Error& e) {
        std::cerr << "strata: " << e.what() << std::endl;
      }
    }
  }).detach();
}

// Copies what is typed (fd 0) into the container's stdin TO until the input
// ends, from a thread of its own. With a terminal in raw mode (RESTORE: its
// settings before) Ctrl-P Ctrl-Q detaches, as docker's default detach keys
// do: the terminal is restored and strata exits 0, the container runs on.
void pass_input(UniqueFd to, std::optional<termios> restore) {
  std::thread([fd = to.release(), restore] {
    const bool terminal = restore.has_value();
    UniqueFd input(fd);
    constexpr char kCtrlP = 0x10, kCtrlQ = 0x11;
    bool after_ctrl_p = false;
    char buf[4096];
    for (;;) {
      ssize_t n = ::read(0, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return;
      std::string out;
      for (ssize_t i = 0; i < n; ++i) {
        char ch = buf[i];
        if (terminal && after_ctrl_p && ch == kCtrlQ) {
          if (!out.empty()) static_cast<void>(::write(input.get(), out.data(), out.size()));
          ::tcsetattr(0, TCSANOW, &*restore);
          static constexpr char kDetached[] = "\r\nstrata: detached (Ctrl-P Ctrl-Q); the container runs on\n";
          static_cast<void>(::write(2, kDetached, sizeof kDetached - 1));
          ::_exit(0);
        }
        if (after_ctrl_p) out += kCtrlP;  // not a detach: the held Ctrl-P goes on
        after_ctrl_p = terminal && ch == kCtrlP;
        if (!after_ctrl_p) out += ch;
      }
      try {
        write_all(input.get(), out.data(), out.size(), "the container's stdin");
      } catch (const Error&) {
        return;  // the container has ended; its end ends attach
      }
    }
  }).detach();
}

int attach_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("no-stdin", po::bool_switch(), "do not pass stdin to the container (a container made with -i gets it)")(
      "sig-proxy", po::value<bool>()->default_value(true, "true")->implicit_value(true, "true"), "forward SIGINT and SIGTERM to the container")(
      "container", po::value<std::string>()->required(), "container");
  po::positional_options_description pos;
  pos.add("container", 1);
  po::variables_map vm;
  if (!parse_args("attach", "strata attach [--no-stdin] [--sig-proxy=true|false] CONTAINER", opts, pos, args, vm))
    return 0;
  auto store = open_store(g);
  store::Container c = store.container(vm["container"].as<std::string>());
  if (!lifecycle::container_state(store, c).running())
    throw Error("container " + quote(c.name) + " is not running; you cannot attach to a stopped container");
  auto config = lifecycle::load_config(c);
  std::optional<RawTerminal> raw;
  if (!vm["no-stdin"].as<bool>() && config && config->open_stdin) {
    UniqueFd input = lifecycle::open_container_stdin(c);
    if (config->tty) raw.emplace();
    const termios* saved = raw ? raw->saved() : nullptr;
    pass_input(std::move(input), saved != nullptr ? std::optional<termios>(*saved) : std::nullopt);
  }
  if (vm["sig-proxy"].as<bool>()) proxy_signals(store, c);
  // Its output from now on, as `logs -f --tail 0`, until it ends.
  lifecycle::LogsOptions o;
  o.follow = true;
  o.tail = 0;
  lifecycle::print_logs(store, c, o, std::cout, std::cerr);
  std::cout.flush();
  lifecycle::wait_stopped(store, c);
  return lifecycle::container_state(store, c).exit_code;
}

int restart_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::variables_map vm;
  if (!parse_timed("restart", args, vm)) return 0;
  int t = vm["time"].as<int>();
  std::string root = g.root.empty() ? store::default_root() : g.root;
  auto store = store::Store::open(root);
  sandbox::ContainerRunOptions given;
  given.fill_volume = fill_new_volume;
  return for_each_container(vm, [&](const std::string& n) {
    store::Container c = store.container(n);
    lifecycle::stop_container(store, c, t);
    lifecycle::start_detached(root, c, sandbox::start_options(c, given), lifecycle::load_log_options(c), false);
    std::cout << n << std::endl;
  });
}

// exec's own options end at the container's name; the rest is the command.
std::size_t exec_split_point(const std::vector<std::string>& args) {
  std::size_t i = 0;
  for (; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.size() < 2 || a[0] != '-') break;
    if (a == "--") return i;
    if (a[1] == '-') {
      if (a.find('=') == std::string::npos && (a == "--user" || a == "--workdir" || a == "--env")) ++i;
      continue;
    }
    for (std::size_t k = 1; k < a.size(); ++k) {
      if (std::string("uwe").find(a[k]) != std::string::npos) {
        if (k + 1 == a.size()) ++i;
        break;
      }
    }
  }
  return std::min(i + 1, args.size());  // the container's name is strata's too
}

int exec_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  std::size_t split = exec_split_point(args);
  std::vector<std::string> own(args.begin(), args.begin() + static_cast<std::ptrdiff_t>(split));
  std::vector<std::string> command(args.begin() + static_cast<std::ptrdiff_t>(split), args.end());
  po::options_description opts("Options");
  opts.add_options()("interactive,i", po::bool_switch(), "pass stdin to the command")(
      "tty,t", po::bool_switch(), "give the command a pseudo-terminal")(
      "user,u", po::value<std::string>(), "run as USER[:GROUP] or UID[:GID] of the container")(
      "workdir,w", po::value<std::string>(), "working directory inside the container")(
      "env,e", po::value<std::vector<std::string>>()->composing(), "set an environment variable (KEY=VALUE)")(
      "container", po::value<std::string>()->required(), "container");
  po::positional_options_description pos;
  pos.add("container", 1);
  po::variables_map vm;
  if (!parse_args("exec", "strata exec [-it] [-u USER] [-w DIR] [-e VAR=VALUE] CONTAINER COMMAND [ARG...]", opts, pos,
                  own, vm))
    return 0;
  if (command.empty()) throw UsageError("exec: no command given");
  auto store = open_store(g);
  store::Container c = store.container(vm["container"].as<std::string>());
  lifecycle::State state = lifecycle::container_state(store, c);
  if (!state.running() || state.pid <= 0) throw Error("container " + quote(c.name) + " is not running");
  sandbox::RunSpec spec = sandbox::exec_spec(store, c);
  spec.argv = command;
  spec.tty = vm["tty"].as<bool>();
  spec.interactive = vm["interactive"].as<bool>();
  if (vm.count("user") != 0U) spec.user = vm["user"].as<std::string>();
  if (vm.count("workdir") != 0U) spec.workdir = vm["workdir"].as<std::string>();
  if (vm.count("env") != 0U) {
    for (const auto& e : vm["env"].as<std::vector<std::string>>()) {
      if (e.find('=') == std::string::npos || e[0] == '=') throw UsageError("exec: bad environment variable " + quote(e) + " (KEY=VALUE)");
      spec.env.push_back(e);
    }
  }
  return sandbox::exec_in(state.pid, spec);
}

const VerbRegistration reg_stop("stop", "stop running containers (STOPSIGNAL, then SIGKILL)", stop_verb);
const VerbRegistration reg_kill("kill", "send a signal to running containers", kill_verb);
const VerbRegistration reg_wait("wait", "wait for containers to end and print their exit codes", wait_verb);
const VerbRegistration reg_logs("logs", "print a container's output", logs_verb);
const VerbRegistration reg_attach("attach", "follow a detached container's output until it ends", attach_verb);
const VerbRegistration reg_restart("restart", "stop and start containers again", restart_verb);
const VerbRegistration reg_exec("exec", "run a command in a running container", exec_verb);

}  // namespace
}  // namespace strata::cli
