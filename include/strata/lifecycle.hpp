// strata::lifecycle: containers that outlive the `strata` command that starts
// them, as docker and podman keep them.
//
// Files in a container's directory (ROOT/containers/<id>/), beside the store's
// container.json, upper/, work/ and lock:
//   config.json  how the container runs (command, env, user, security, ports
//                as asked for: HostPort 0 is chosen at each start), saved
//                when it is created by `run`, so that `start` runs it the same
//   state.json   Status ("created", "running", "exited"), Pid (the container's
//                pid 1 as the host sees it), MonitorPid, StartedAt,
//                FinishedAt, ExitCode, Error, Ports (while it runs: the
//                published ports, chosen host ports filled in); replaced by
//                rename, never written in place
//   ctr.log      the command's stdout and stderr, one record a line in the
//                CRI format ("TIME STREAM F|P TEXT"), rotated to ctr.log.1
//                .. ctr.log.N-1 at LogOptions::max_size
//   stdin        a FIFO, while a detached container made with -i runs: its
//                stdin (its terminal's input with -t), which `attach` writes
//
// The process that runs a container (the `strata run` process in the
// foreground, the monitor for a detached one) holds the container's lock
// (store::Store::lock_container) for its whole life: the lock, not
// state.json, says whether the container runs. A state that says "running"
// while nobody holds the lock is reported as exited with ExitCode 255 and an
// Error naming the monitor that died (container_state).
//
// The monitor (start_detached): a process of its own session, double-forked
// so that nothing waits for it, with stdin at /dev/null (or, with -i, the
// stdin FIFO, which it holds open for reading and writing so that the command
// never sees its end, as docker keeps a detached stdin open) and stdout and stderr
// into pipes that its log writer child copies into ctr.log. It takes the lock,
// runs the container through sandbox::run (which owns the supervisor and,
// through it, the stratafs mount inside the container's mount namespace),
// records the state, and, with `--rm`, removes the container. Killed, it takes
// the supervisor with it (PR_SET_PDEATHSIG), hence pid 1 and stratafs: nothing
// stays mounted and the lock is free.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

#include "strata/fd.hpp"
#include "strata/oci.hpp"
#include "strata/sandbox.hpp"
#include "strata/store.hpp"

namespace strata::lifecycle {

struct State {
  std::string status = "created";  // created | running | exited
  pid_t pid = 0;                   // the container's pid 1 on the host; 0 unless running
  pid_t monitor_pid = 0;           // the process holding the lock
  std::string started_at;          // RFC 3339 with nanoseconds; empty: never started
  std::string finished_at;
  int exit_code = 0;
  std::string error;  // why it could not start, or why its end is unknown
  // While it runs: its ports as published, chosen host ports filled in.
  std::vector<sandbox::PortMapping> ports;
  bool running() const { return status == "running"; }
  oci::json to_json() const;  // docker's State object
};

// The container's state as a reader should see it (see the top).
State container_state(const store::Store& store, const store::Container& c);

// Replaces state.json atomically.
void write_state(const store::Container& c, const State& state);

// `--log-opt max-size=SIZE` and `max-file=N`: each log file is rotated
// before it would pass MAX_SIZE; MAX_FILES files are kept (the current one
// included), so the logs take at most MAX_SIZE * MAX_FILES bytes.
struct LogOptions {
  std::uint64_t max_size = 10 << 20;
  unsigned max_files = 2;
};
// The run configuration in config.json (the store's Container record holds
// the image only). Missing: nullopt (a container made by `strata create`).
// LOG (`--log-opt`) is kept with it for `start` and `restart`.
void save_config(const store::Container& c, const sandbox::ContainerRunOptions& options, const LogOptions& log = {});
std::optional<sandbox::ContainerRunOptions> load_config(const store::Container& c);
LogOptions load_log_options(const store::Container& c);

// Parses "max-size=10m" (k, m, g suffixes) or "max-file=3" into OPTIONS;
// throws UsageError for anything else.
void parse_log_opt(LogOptions& options, const std::string& opt);

// Starts container C detached under a monitor and returns once its command
// runs (the monitor has the lock and state.json says running). Throws
// store::ContainerRunning when it is running already, and sandbox::run's
// errors (125, 126, 127) when it cannot start. With REMOVE the monitor
// removes the container when it ends.
void start_detached(const std::string& store_root, const store::Container& c, const sandbox::ContainerRunOptions& options,
                    const LogOptions& log, bool remove);

// The write end of the stdin of running container C (made with -i), for
// `attach`. Throws Error when it has none or is not running.
UniqueFd open_container_stdin(const store::Container& c);

// Sends SIGNAL to the running container: signals that strata forwards
// (HUP, INT, QUIT, TERM, USR1, USR2, ALRM) through the monitor and the
// supervisor to pid 1's process group, as a terminal would (a pid 1 without
// a handler then ends as any process would); others to pid 1 itself. Throws
// Error when the container is not running.
void kill_container(const store::Store& store, const store::Container& c, int signal);

// Waits until nobody holds the container's lock; with TIMEOUT_MS (>= 0)
// at most that long. Returns whether it is free.
bool wait_stopped(const store::Store& store, const store::Container& c, int timeout_ms = -1);

// `strata stop`: SIGNAL (the image's STOPSIGNAL, else SIGTERM), then SIGKILL
// after TIMEOUT seconds; returns once it has ended. Nothing when it is not
// running.
void stop_container(const store::Store& store, const store::Container& c, int timeout_seconds);

// The image's STOPSIGNAL for C, SIGTERM when it has none or it is unknown.
int stop_signal(const store::Store& store, const store::Container& c);

// "TERM", "SIGTERM", "sigterm" or "15" as a signal number; throws UsageError
// naming the bad value otherwise.
int parse_signal(const std::string& name);

// `strata logs`.
struct LogsOptions {
  bool follow = false;
  std::optional<std::size_t> tail;  // the last N lines only
  bool timestamps = false;
};
// Writes C's log to OUT (the command's stdout) and ERR (its stderr); with
// FOLLOW, goes on until the container is not running.
void print_logs(const store::Store& store, const store::Container& c, const LogsOptions& options, std::ostream& out,
                std::ostream& err);

// docker's STATUS column: "Up 3 minutes", "Exited (0) 2 hours ago", "Created".
std::string status_text(const State& state);

// A time as RFC 3339 UTC with nanoseconds, as docker writes StartedAt.
std::string rfc3339_nano_now();

}  // namespace strata::lifecycle

namespace strata::sandbox {

// Runs container C of STORE as OPTIONS say (image, name and remove aside),
// recording its state (lifecycle::State) as it starts and ends, and calls
// AFTER_START once the command runs; the caller holds the container's lock.
// Returns run()'s status; throws run()'s errors after recording them.
int run_container(store::Store& store, const store::Container& c, const ContainerRunOptions& options,
                  const std::function<void()>& after_start = {});

// `strata inspect` of a container, as docker prints it: Id, Name, Image,
// Created, State, Config, HostConfig, LogPath, GraphDriver (Data: LowerDir,
// the layers topmost first joined by ':', UpperDir, WorkDir and MergedDir,
// where the union is mounted inside the container's own mount namespace
// while it runs) and Mounts (where `strata mount` mounted it).
oci::json inspect_container(const store::Store& store, const store::Container& c);

// What `strata exec` starts in container C with (argv, tty and interactive
// aside): the image's and the container's env, user, working directory and
// host name, and the container's capabilities and seccomp filter.
RunSpec exec_spec(const store::Store& store, const store::Container& c);

// What `strata start` runs container C with: the configuration it was
// created with (config.json; GIVEN when it has none), with GIVEN's
// interactive and tty flags and its fill_volume.
ContainerRunOptions start_options(const store::Container& c, const ContainerRunOptions& given);

}  // namespace strata::sandbox
