// strata::sandbox: run one command as a rootless container.
//
// run() starts the command in new user, mount, pid, uts and ipc namespaces
// (and a network namespace of its own unless Network::host: empty with
// Network::none, connected by slirp4netns with Network::private_net), with a
// root directory entered by pivot_root, a fresh /proc, a minimal /dev, /sys
// read-only and the host's /etc/resolv.conf and /etc/hosts (read-only; files
// written for the container instead with its own network namespace, --dns or
// --add-host: see container_resolv_conf and container_hosts), the docker default
// capability set and seccomp policy (RunSpec::capabilities, ::seccomp) and
// no_new_privs. The command is pid 1 of its pid namespace, which holds no
// process of strata's (stratafs included). It returns when the command has
// ended and every process it started is gone.
//
// User namespace: root runs in an identity-mapped namespace (uid 0 inside is
// uid 0 outside, but holds no capability over the host). Another user gets
// the range /etc/subuid and /etc/subgid give it, through newuidmap and
// newgidmap: container uid 0 is the user, 1..N are the subordinate ids. A user
// without a range gets a single-id map (only uid/gid 0 exist inside) and a
// warning on stderr.
//
// Using it from another module (the Dockerfile builder's RUN steps): fill a
// RunSpec with the root directory (or a UnionRoot to have the sandbox mount the
// layers itself, inside the container's mount namespace, so no mount ever
// shows on the host; RunSpec::rootfs is then an existing empty directory to
// mount on, and UnionRoot::initdir keeps the mount points out of the upper),
// argv, env, workdir and user, and call run(). The return
// value is the command's exit status as a shell reports it (0..255, 128+N when
// it died of signal N). When the command cannot start, run() throws
// strata::Error with ExitCode::run_failed (125: the sandbox could not be set
// up, e.g. a bad user or a missing root), ExitCode::cannot_invoke (126: the
// command is not executable) or ExitCode::command_not_found (127). Nothing is
// left mounted on the host in any case. A RUN step wants: tty = false,
// interactive = false (stdin is /dev/null), network = Network::host.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace strata::sandbox {

// ---- id maps ---------------------------------------------------------------

// One line of /etc/subuid or /etc/subgid: "OWNER:START:COUNT", where OWNER is
// a user name or a numeric id.
struct SubIdRange {
  std::string owner;
  std::uint32_t start = 0;
  std::uint32_t count = 0;
};

// Parses the content of /etc/subuid or /etc/subgid. Blank lines, '#' comments
// and malformed lines are skipped (the shadow tools do the same).
std::vector<SubIdRange> parse_subid_file(std::string_view content);

// The first range in RANGES that belongs to the user NAME or the numeric ID.
std::optional<SubIdRange> find_subid_range(const std::vector<SubIdRange>& ranges, std::string_view name,
                                           std::uint32_t id);

// One line of /proc/PID/uid_map: ids [inside, inside+count) are
// [outside, outside+count) in the parent namespace.
struct IdMapping {
  std::uint32_t inside = 0;
  std::uint32_t outside = 0;
  std::uint32_t count = 0;
};

// How the container's user namespace maps ids.
struct IdMapPlan {
  enum class Kind { identity, subordinate, single } kind = Kind::single;
  std::vector<IdMapping> uids;
  std::vector<IdMapping> gids;
};

// Chooses the mapping for the caller with host uid UID / gid GID (and user
// name NAME) given the contents of /etc/subuid and /etc/subgid: identity for
// uid 0; container 0 -> the caller plus 1..count -> the subordinate range
// when the caller has a range in both files; else a single-id map.
IdMapPlan plan_id_maps(std::uint32_t uid, std::uint32_t gid, std::string_view name, std::string_view subuid,
                       std::string_view subgid);

// The mapping of the calling user's containers: plan_id_maps of its
// effective ids and name, with /etc/subuid and /etc/subgid.
IdMapPlan own_id_maps();

// The owner PLAN's containers see for a file that host ids own (in place:
// the form of archive::OwnerMap); host ids outside the maps become 65534,
// as the kernel shows them. Empty for the identity map.
std::function<void(std::uint32_t& uid, std::uint32_t& gid)> container_owners(const IdMapPlan& plan);

// The host ids that own a file PLAN's containers see owned by UID and GID
// (in place); ids the maps do not cover are left as they are. Empty for the
// identity map.
std::function<void(std::uint32_t& uid, std::uint32_t& gid)> host_owners(const IdMapPlan& plan);

// Formats mappings as /proc/PID/uid_map expects ("IN OUT COUNT\n" lines).
std::string format_id_map(const std::vector<IdMapping>& map);

// ---- users -----------------------------------------------------------------

// The identity a command runs as, as docker derives it from `-u` and the
// image's /etc/passwd and /etc/group.
struct ExecUser {
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups (from /etc/group membership)
  std::string home = "/";
};

// Resolves SPEC ("", "NAME", "UID", "NAME:GROUP", "UID:GID", ...) against the
// contents of the container's /etc/passwd and /etc/group. An empty user is
// root; a numeric uid that passwd does not list runs with gid 0 and home "/";
// a name that passwd does not list is an error (Error with
// ExitCode::run_failed, naming the user), as is an unknown group name.
ExecUser resolve_user(std::string_view spec, std::string_view passwd, std::string_view group);

// ---- capabilities and seccomp ----------------------------------------------

// The capability NAME ("NET_ADMIN", "CAP_NET_ADMIN", any case; "ALL") as a
// mask of capability bits. Throws Error (run_failed) for an unknown name.
std::uint64_t capability_mask(std::string_view name);

// docker's default set: CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW,
// SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL,
// AUDIT_WRITE.
std::uint64_t default_capabilities();

// The set `--cap-add`, `--cap-drop` and `--privileged` give: every
// capability with PRIVILEGED; else the default set less DROP, plus ADD.
std::uint64_t capability_set(const std::vector<std::string>& add, const std::vector<std::string>& drop,
                             bool privileged);

// "CAP_CHOWN" for 0.
std::string capability_name(int cap);

enum class SeccompAction { allow, errno_return, kill_thread, kill_process, trap, log };
enum class SeccompCompare { ne, lt, le, eq, ge, gt, masked_eq };

// A comparison of syscall argument INDEX (docker's "args" entries).
struct SeccompArg {
  unsigned index = 0;
  std::uint64_t value = 0;
  std::uint64_t value_two = 0;  // masked_eq: (arg & value) == value_two
  SeccompCompare op = SeccompCompare::eq;
};

// One entry of a profile's "syscalls": ACTION for the syscalls NAMES when
// every comparison in ARGS holds, if the container's capabilities include
// all of INCLUDES_CAPS and none of EXCLUDES_CAPS.
struct SeccompRule {
  std::vector<std::string> names;
  SeccompAction action = SeccompAction::errno_return;
  int errno_value = 1;  // EPERM
  std::vector<SeccompArg> args;
  std::uint64_t includes_caps = 0;
  std::uint64_t excludes_caps = 0;
};

struct SeccompProfile {
  SeccompAction default_action = SeccompAction::allow;
  int default_errno = 1;  // EPERM
  std::vector<SeccompRule> syscalls;
};

// docker's default policy written as a default-allow list of what it blocks
// (keys, modules, kexec, reboot, clocks, mounts and namespaces, ptrace and
// process_vm_*, bpf, perf_event_open, I/O ports, acct, NUMA policy,
// userfaultfd), each allowed again with the capability docker allows it
// with. See strata-run(1).
SeccompProfile default_seccomp_profile();

// A profile in docker's JSON format: defaultAction, defaultErrnoRet and
// syscalls entries with names (or name), action, errnoRet, args (index,
// value, valueTwo, op) and includes/excludes "caps"; other keys are ignored.
// Unknown syscall names are skipped when the filter is made. Throws Error
// (run_failed) naming WHAT when TEXT is not such a profile.
SeccompProfile parse_seccomp_profile(std::string_view text, const std::string& what);

// Installs PROFILE as the calling thread's seccomp filter (no_new_privs must
// be set), with the rules that apply to a process holding CAPABILITIES.
void apply_seccomp(const SeccompProfile& profile, std::uint64_t capabilities);

// ---- running ---------------------------------------------------------------

// ---- networking -------------------------------------------------------------

// `--network`: host shares the host's network namespace; none is an empty one
// (loopback only); private (docker's "bridge") is a namespace of its own with
// loopback and tap0, which slirp4netns connects to the host's network in user
// mode (address kPrivateAddress, gateway kPrivateGateway, DNS kPrivateDns).
enum class Network { host, none, private_net };

inline constexpr const char* kPrivateAddress = "10.0.2.100";
inline constexpr const char* kPrivateGateway = "10.0.2.2";
inline constexpr const char* kPrivateDns = "10.0.2.3";

// "host", "none", "private" or "bridge" (private's docker name); throws
// UsageError otherwise.
Network parse_network(const std::string& name);
// "host", "none" or "private".
const char* network_name(Network network);

// One published port: connections to HOSTIP (IPv4, default 0.0.0.0) port
// HOSTPORT on the host are forwarded to the container's port CONTAINERPORT
// (private networking only). HOSTPORT 0: a free port of the host is chosen
// each time the container starts.
struct PortMapping {
  std::string host_ip = "0.0.0.0";
  std::uint16_t host_port = 0;
  std::uint16_t container_port = 0;
  std::string protocol = "tcp";
  bool operator==(const PortMapping&) const = default;
};

// The most ports one container may publish: slirp4netns holds a socket for
// each.
inline constexpr std::size_t kMaxPublishedPorts = 1000;

// Parses a `-p` value, docker's forms: CONTAINERPORT, HOSTPORT:CONTAINERPORT,
// HOSTIP:HOSTPORT:CONTAINERPORT or HOSTIP::CONTAINERPORT, each port a number
// or a range FIRST-LAST, with /tcp or /udp; one mapping a port, in order. A
// host range needs a container range of the same length; an omitted host
// port is chosen. Throws UsageError naming the bad part (ports are 1..65535,
// at most kMaxPublishedPorts, the address IPv4: slirp4netns forwards no IPv6
// host address).
std::vector<PortMapping> parse_publish(const std::string& spec);

// A mapping read back from a saved container: the same checks as
// parse_publish (HOST_PORT 0: chosen), UsageError naming the bad field.
PortMapping make_port(const std::string& host_ip, std::uint64_t host_port, std::uint64_t container_port,
                      const std::string& protocol);

// Checks a container's ports together: at most kMaxPublishedPorts, and no
// host port (with its protocol) published twice on overlapping addresses.
// Throws UsageError naming the port.
void check_ports(const std::vector<PortMapping>& ports);

// `--expose` and an image's ExposedPorts key: PORT[/tcp|/udp] or a range
// FIRST-LAST[/PROTO], as "80/tcp" keys, one a port. Throws UsageError.
std::vector<std::string> parse_expose(const std::string& spec);

// `-P`: PORTS plus a mapping to a chosen host port (on 0.0.0.0) for each of
// EXPOSED ("80/tcp" keys) that PORTS does not publish yet. Keys that are not
// a port are ignored (an image's config may hold anything).
std::vector<PortMapping> publish_exposed(std::vector<PortMapping> ports, const std::vector<std::string>& exposed);

// "127.0.0.1:8080->80/tcp", as docker's PORTS column shows a mapping.
std::string format_port(const PortMapping& port);
// docker's PORTS column: the mappings joined by ", ", runs of consecutive
// ports (both sides, one address and protocol) as ranges,
// "0.0.0.0:8080-8082->80-82/tcp".
std::string format_ports(const std::vector<PortMapping>& ports);

// `--add-host NAME:IP`: a line "IP\tNAME" added to the container's
// /etc/hosts. IP may be IPv4 or IPv6, or "host-gateway" (the host as the
// container reaches it: kPrivateGateway).
struct HostEntry {
  std::string name;
  std::string ip;
};

// Parses an `--add-host` value; throws UsageError naming the bad part.
HostEntry parse_add_host(const std::string& spec);

// Checks a `--dns` value (an IPv4 or IPv6 address); throws UsageError.
void check_dns_server(const std::string& ip);

// The container's /etc/resolv.conf: HOST_RESOLV_CONF (the host's) with its
// nameserver lines replaced by DNS, else by kPrivateDns with private
// networking; its search and options lines kept.
std::string container_resolv_conf(std::string_view host_resolv_conf, const std::vector<std::string>& dns,
                                  Network network);

// The container's /etc/hosts: the host's (HOST_HOSTS) with host networking,
// else localhost and, with private networking, HOSTNAME at kPrivateAddress;
// then EXTRA, one "IP\tNAME" line each.
std::string container_hosts(std::string_view host_hosts, const std::string& hostname, Network network,
                            const std::vector<HostEntry>& extra);

// ---- resources ---------------------------------------------------------------

// cgroup v2 limits (`--memory`, `--memory-swap`, `--cpus`, `--pids-limit`).
// A container with any of them runs in a cgroup of its own (see
// ContainerCgroup in src/sandbox/cgroup.hpp and strata-run(1)).
struct Resources {
  std::int64_t memory = 0;       // bytes (memory.max); 0: no limit
  std::int64_t memory_swap = 0;  // memory plus swap, bytes; 0: twice memory, -1: unlimited swap
  std::int64_t nano_cpus = 0;    // 10^9 per CPU (cpu.max); 0: no limit
  std::int64_t pids_limit = 0;   // pids.max; 0 or -1: unlimited
  bool any() const { return memory > 0 || nano_cpus > 0 || pids_limit > 0; }
};

// docker's sizes: "32m", "1.5g", "4096", "512kb", "1GiB" (b, k, m, g, t, p;
// powers of 1024). Throws UsageError naming FLAG and the value.
std::int64_t parse_memory_size(const std::string& value, const std::string& flag);
// `--memory-swap`: a size, or -1 for unlimited swap.
std::int64_t parse_memory_swap(const std::string& value);
// `--cpus 1.5` as nano CPUs (1500000000); from 0.01 to the number of CPUs.
std::int64_t parse_cpus(const std::string& value);
// `--pids-limit N`: N > 0, or 0 / -1 for unlimited (returned as 0).
std::int64_t parse_pids_limit(const std::string& value);
// Checks that the limits go together (--memory-swap needs --memory and is
// at least as large, --memory at least 6 MiB); throws UsageError.
void check_resources(const Resources& r);
// cpu.max for NANO_CPUS: "QUOTA 100000" ("50000 100000" for half a CPU).
std::string cpu_max(std::int64_t nano_cpus);

// A host path bound into the container (`-v HOST:CTR[:ro]`), or a volume of
// the store (`-v NAME:CTR`, or an anonymous one: `-v CTR`, the image's
// VOLUMEs): then SOURCE is the volume's _data.
struct BindMount {
  std::string source;  // host path (file or directory)
  std::string target;  // absolute path inside the container
  bool read_only = false;
  std::string volume;  // the volume's name; "" for a host path
  // Set on SOURCE by the container's pid 1 (inside its user namespace, so
  // container ids) before the bind: a build's cache and secret mounts.
  std::optional<std::uint32_t> uid, gid, mode;
  // An anonymous volume: VOLUME is a random name (store::new_volume_name)
  // given when the container is made; `rm -v` and `run --rm` remove it.
  bool anonymous = false;
};

// A volume's target as strata mounts it: PATH made canonical ("/a/../b/" is
// "/b"); nullopt when PATH is not absolute or is the root itself.
std::optional<std::string> clean_volume_target(const std::string& path);

// The most VOLUME paths an image may declare: more is refused.
inline constexpr std::size_t kMaxImageVolumes = 128;

// Called by the container's pid 1 for each BindMount with a volume name,
// after the root is mounted and before the volume is bound over its target:
// ROOT is an fd of the container's root (paths in it resolve with
// RESOLVE_IN_ROOT). Fills a new, empty volume with what the image has at the
// target, as docker does. Throws Error to fail the start.
using FillVolume = std::function<void(int root, const BindMount& volume)>;

// A tmpfs mounted in the container (`--tmpfs PATH[:OPTIONS]`).
struct TmpfsMount {
  std::string target;   // absolute path inside the container
  std::string options;  // as given (shown by inspect)
  unsigned long flags = 0;  // MS_* flags: nosuid, nodev and noexec unless the options say otherwise
  std::string data;         // size=, mode=, uid=, gid=, nr_inodes= for the kernel
};

// Parses docker's `--tmpfs PATH[:OPTIONS]`: OPTIONS is a comma-separated
// list of ro|rw, exec|noexec, suid|nosuid, dev|nodev and size=N[k|m|g|%],
// mode=OCTAL, uid=N, gid=N, nr_inodes=N[k|m|g]; without them the tmpfs is
// rw,noexec,nosuid,nodev as in docker. Throws Error (ExitCode::usage) naming
// the bad part.
TmpfsMount parse_tmpfs(const std::string& spec);

// Layers that the sandbox mounts with stratafs onto RunSpec::rootfs inside the
// container's namespaces. The mount lives only as long as the container.
struct UnionRoot {
  std::string stratafs;                // path of the stratafs program
  std::vector<std::string> lowerdirs;  // topmost first
  std::string upperdir;                // empty: read-only
  std::string workdir;
  bool volatile_upper = false;         // stratafs -o volatile: a build step's upper, never synced
  // A directory (created when missing) that the sandbox fills with the mount
  // points it needs (/proc, /dev, /sys, /etc/resolv.conf, /etc/hosts) and
  // stacks between the layers and the upper, as docker's "init" layer: they
  // then never appear in the upper, so a commit of it holds only what the
  // command changed. Empty: missing mount points are created in the upper.
  std::string initdir;
};

struct RunSpec {
  std::string rootfs;                   // directory that becomes "/"; the mount point with union_root
  std::optional<UnionRoot> union_root;  // mount these layers on rootfs first
  std::vector<std::string> argv;        // argv[0] without '/' is looked up in the container's PATH
  std::vector<std::string> env;         // "KEY=VALUE"; PATH, HOME, HOSTNAME (and TERM with tty) default
  std::string workdir = "/";            // created when missing, as docker does
  std::string user;                     // `-u` spec: USER[:GROUP] or UID[:GID]; empty is root
  std::string hostname = "strata";
  bool tty = false;          // a pseudo-terminal on stdin/stdout/stderr (devpts inside the container)
  bool interactive = false;  // pass stdin (else stdin is /dev/null)
  // Without tty: when >= 0, the command's standard output and error (else
  // strata's own). strata's warnings still go to its own standard error.
  int output_fd = -1;
  Network network = Network::host;
  std::vector<PortMapping> ports;     // `-p` (Network::private_net only); host port 0: chosen
  std::vector<std::string> dns;       // `--dns`
  std::vector<HostEntry> extra_hosts;  // `--add-host`
  std::vector<BindMount> volumes;
  FillVolume fill_volume;  // empty: volumes are mounted as they are
  std::vector<TmpfsMount> tmpfs;
  // `--read-only`: the root is mounted read-only once the mount points are
  // made (the working directory among them); /dev, /dev/shm, /proc, tmpfs
  // and volumes keep their own modes.
  bool read_only_root = false;
  // Bounding, permitted and effective capability sets of the command.
  std::uint64_t capabilities = default_capabilities();
  // The seccomp filter; nullopt: none (`--security-opt seccomp=unconfined`).
  std::optional<SeccompProfile> seccomp = default_seccomp_profile();
  // `--init`: pid 1 is a small reaper in strata's code (no program from the
  // image or the host) that runs the command as its child, passes it every
  // signal it gets, reaps the orphans the container leaves, and exits with
  // the command's status.
  bool init = false;
  // A signal strata forwards ends the command even when pid 1 catches or
  // ignores it (status 128+N): a build's RUN step, which Ctrl-C cancels. A
  // shell as pid 1 that catches SIGINT between two commands would otherwise
  // go on to the next one.
  bool signals_end_command = false;
  // Limits; with any, the container's pid 1 (before it execs) and what
  // `strata exec` starts run in the cgroup CGROUP_NAME.
  Resources resources;
  std::string cgroup_name;
  // A directory (the container's in the store) where run() records what it
  // leaves on the host while the container runs (its cgroup, slirp4netns's
  // runtime directory), for remove_leftovers after a SIGKILL. Empty: none.
  std::string state_dir;
  // Called in the calling process with the container's pid 1 (as the host
  // numbers it) and the ports as published (chosen host ports filled in)
  // once the command has been executed (it exists, the root is built, the
  // credentials are set); not called when it cannot start.
  std::function<void(pid_t, const std::vector<PortMapping>&)> on_started;
};

// Runs SPEC and returns the command's exit status (128+N for signal N).
// Throws strata::Error (codes 125/126/127 as described at the top).
int run(const RunSpec& spec);

// Docker's default PATH inside a container.
inline constexpr const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Returns ENV with the defaults added: PATH when missing, HOSTNAME, HOME (from
// the user), TERM=xterm when TTY. Later duplicates of a key replace earlier ones.
std::vector<std::string> complete_env(const std::vector<std::string>& env, const std::string& hostname,
                                      const std::string& home, bool tty);

// ---- containers from the image store -------------------------------------

// The command docker runs: ENTRYPOINT (the image's, or `--entrypoint`, which
// also drops the image's CMD) followed by the given ARGS, or by the image's
// CMD when there are none.
std::vector<std::string> combine_command(const std::vector<std::string>& image_entrypoint,
                                         const std::vector<std::string>& image_cmd,
                                         const std::optional<std::string>& entrypoint_flag,
                                         const std::vector<std::string>& args);

// `strata run IMAGE`: what the command line gives beyond the image.
struct ContainerRunOptions {
  std::string image;  // reference or id
  std::string name;   // empty: generated by the store
  std::vector<std::string> args;
  std::optional<std::string> entrypoint;
  std::vector<std::string> env;        // added to (and overriding) the image's Env
  std::optional<std::string> workdir;  // else the image's WorkingDir, else "/"
  std::optional<std::string> user;     // else the image's User
  std::optional<std::string> hostname;  // else the first 12 hex digits of the container id
  bool tty = false;
  bool interactive = false;
  // `-i` (saved as OpenStdin): a detached run keeps a stdin of its own,
  // which `attach` writes to (lifecycle::open_container_stdin).
  bool open_stdin = false;
  bool remove = false;  // `--rm`
  Network network = Network::private_net;
  std::vector<PortMapping> ports;
  bool publish_all = false;         // `-P`: also every exposed port (the image's and `expose`) to a chosen port
  std::vector<std::string> expose;  // `--expose`: "80/tcp" keys added to the image's ExposedPorts
  std::vector<std::string> dns;
  std::vector<HostEntry> extra_hosts;
  std::vector<BindMount> volumes;  // named volumes are recorded with the container
  FillVolume fill_volume;          // RunSpec::fill_volume (not saved with the container)
  std::vector<TmpfsMount> tmpfs;
  bool read_only_root = false;  // `--read-only`
  std::uint64_t capabilities = default_capabilities();
  std::optional<SeccompProfile> seccomp = default_seccomp_profile();
  std::string seccomp_profile_text;  // the JSON of a profile from a file (kept with the container)
  bool init = false;                 // `--init`
  Resources resources;               // --memory, --memory-swap, --cpus, --pids-limit
  std::string stratafs;  // path of stratafs; empty: next to the running program, else $PATH
};

// The names of the named volumes among O's volumes, or with ANONYMOUS those
// of its anonymous volumes.
std::vector<std::string> volume_names(const ContainerRunOptions& o, bool anonymous = false);

// Adds to O an anonymous volume (no name yet) for each path of
// IMAGE_VOLUMES (the image config's Volumes) that none of O's volumes and
// tmpfs mounts covers, then orders O's volumes parents first. Throws Error
// naming the image for a path that is not absolute or is the root, and for
// more than kMaxImageVolumes paths.
void add_image_volumes(ContainerRunOptions& o, const std::vector<std::string>& image_volumes);

// Creates a container in the store at STORE_ROOT from the image, mounts its
// layers and upper with stratafs inside the container's mount namespace (the
// mount never exists on the host and ends with the container), and runs it.
// The container is kept for `strata commit` unless OPTIONS.remove; when the
// command cannot start (run() throws) it is removed as well. Returns run()'s
// status.
int run_image(const std::string& store_root, const ContainerRunOptions& options);

// `strata start`: runs the existing CONTAINER (name or id) again on its upper,
// with its image's ENTRYPOINT and CMD (OPTIONS.image, name, args and remove
// are not used). The container is kept whatever happens.
int start_container(const std::string& store_root, const std::string& container,
                    const ContainerRunOptions& options);

// Removes what run() recorded in STATE_DIR and left on the host when the
// process that ran the container was killed (its empty cgroup, slirp4netns's
// runtime directory): `strata rm`, `prune` and the next start call it.
// Errors are ignored; nothing outside those recorded paths is touched.
void remove_leftovers(const std::string& state_dir) noexcept;

// The cgroup name of the container with id ID: "strata-" + ID.
std::string container_cgroup_name(const std::string& id);

// `strata exec`: runs ARGV in the running container whose pid 1 is PID (as
// the host numbers it): in its namespaces (entered with setns through a
// pidfd, or /proc/PID/ns/* on kernels without it), chrooted to its root as
// it sees it (/proc/PID/root), with OPTIONS' capabilities and seccomp filter,
// as SPEC.user in SPEC.workdir with SPEC.env added to the container's
// settings. SPEC.rootfs, union_root, volumes, network, hostname and init are
// not used. Returns the command's status; throws as run() does.
int exec_in(pid_t pid, const RunSpec& spec);

}  // namespace strata::sandbox
