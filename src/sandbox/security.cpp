// What a container's processes may do: the capability set (docker's default,
// --cap-add, --cap-drop, --privileged) and the seccomp filter (docker's
// default policy, or a profile in docker's JSON format), installed with
// libseccomp.
#include <linux/capability.h>
#include <sched.h>
#include <seccomp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>
#include <nlohmann/json.hpp>

#include "strata/error.hpp"
#include "strata/sandbox.hpp"

namespace strata::sandbox {

namespace {

// Index = capability number.
constexpr const char* kCapabilityNames[] = {
    "CHOWN",        "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER",        "FSETID",          "KILL",
    "SETGID",       "SETUID",       "SETPCAP",         "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN",    "NET_RAW",      "IPC_LOCK",        "IPC_OWNER",     "SYS_MODULE",      "SYS_RAWIO",
    "SYS_CHROOT",   "SYS_PTRACE",   "SYS_PACCT",       "SYS_ADMIN",     "SYS_BOOT",        "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME",     "SYS_TTY_CONFIG",  "MKNOD",         "LEASE",           "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP",     "MAC_OVERRIDE",    "MAC_ADMIN",     "SYSLOG",          "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ",  "PERFMON",         "BPF",           "CHECKPOINT_RESTORE",
};
constexpr int kCapabilityCount = static_cast<int>(sizeof kCapabilityNames / sizeof kCapabilityNames[0]);
constexpr std::uint64_t kAllCapabilities = (1ULL << kCapabilityCount) - 1;

constexpr std::uint64_t bit(int cap) { return 1ULL << cap; }

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

// The clone flags that make new namespaces (user aside, which needs no
// privilege): docker's default profile refuses them without CAP_SYS_ADMIN.
constexpr std::uint64_t kNamespaceFlags = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
                                          CLONE_NEWNET | CLONE_NEWCGROUP;

SeccompRule deny(std::vector<std::string> names, std::vector<int> unless = {}, int err = EPERM) {
  SeccompRule r;
  r.names = std::move(names);
  r.action = SeccompAction::errno_return;
  r.errno_value = err;
  for (int cap : unless) r.excludes_caps |= bit(cap);
  return r;
}

// personality(2) as docker allows it: PER_LINUX (0), PER_LINUX32 (0x8),
// UNAME26 (0x20000), their union, and 0xffffffff (which only reads the
// persona). Any other flag, such as ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC,
// would switch off address-space randomisation or make data executable.
// A filter rule holds one comparison per argument, so "none of these five
// values" is written as rules that each refuse a part of the rest:
//  - a value above 32 bits;
//  - for the 30 bits outside 0x20008 taken in a ring, one that is set while
//    the next is clear (matches any value with such a bit set, unless all 30
//    are set);
//  - all 30 set (bit 0 among them) but bit 3 or bit 17 clear.
// None of them matches an allowed value: those have no bit outside 0x20008,
// or (0xffffffff) no bit clear.
std::vector<SeccompRule> personality_rules() {
  constexpr std::uint64_t kAllowedFlags = 0x20008;
  std::vector<SeccompRule> rules;
  auto refuse = [&](SeccompArg arg) {
    SeccompRule r = deny({"personality"});
    r.args = {arg};
    rules.push_back(std::move(r));
  };
  refuse({0, 0xffffffffULL, 0, SeccompCompare::gt});
  std::vector<std::uint64_t> ring;
  for (unsigned i = 0; i < 32; ++i) {
    if (((kAllowedFlags >> i) & 1U) == 0) ring.push_back(1ULL << i);
  }
  for (std::size_t k = 0; k < ring.size(); ++k) {
    std::uint64_t set = ring[k], clear = ring[(k + 1) % ring.size()];
    refuse({0, set | clear, set, SeccompCompare::masked_eq});
  }
  for (std::uint64_t flag : {0x8ULL, 0x20000ULL}) refuse({0, 1 | flag, 1, SeccompCompare::masked_eq});
  return rules;
}

std::uint32_t action_value(SeccompAction action, int errno_value) {
  switch (action) {
    case SeccompAction::allow: return SCMP_ACT_ALLOW;
    case SeccompAction::errno_return: return SCMP_ACT_ERRNO(static_cast<std::uint32_t>(errno_value));
    case SeccompAction::kill_thread: return SCMP_ACT_KILL_THREAD;
    case SeccompAction::kill_process: return SCMP_ACT_KILL_PROCESS;
    case SeccompAction::trap: return SCMP_ACT_TRAP;
    case SeccompAction::log: return SCMP_ACT_LOG;
  }
  return SCMP_ACT_KILL_PROCESS;
}

SeccompAction parse_action(const std::string& name, const std::string& what) {
  if (name == "SCMP_ACT_ALLOW") return SeccompAction::allow;
  if (name == "SCMP_ACT_ERRNO") return SeccompAction::errno_return;
  if (name == "SCMP_ACT_KILL" || name == "SCMP_ACT_KILL_THREAD") return SeccompAction::kill_thread;
  if (name == "SCMP_ACT_KILL_PROCESS") return SeccompAction::kill_process;
  if (name == "SCMP_ACT_TRAP") return SeccompAction::trap;
  if (name == "SCMP_ACT_LOG") return SeccompAction::log;
  throw Error(what + ": unsupported action " + quote(name), ExitCode::run_failed);
}

SeccompCompare parse_op(const std::string& name, const std::string& what) {
  static const std::pair<const char*, SeccompCompare> ops[] = {
      {"SCMP_CMP_NE", SeccompCompare::ne}, {"SCMP_CMP_LT", SeccompCompare::lt},
      {"SCMP_CMP_LE", SeccompCompare::le}, {"SCMP_CMP_EQ", SeccompCompare::eq},
      {"SCMP_CMP_GE", SeccompCompare::ge}, {"SCMP_CMP_GT", SeccompCompare::gt},
      {"SCMP_CMP_MASKED_EQ", SeccompCompare::masked_eq}};
  for (const auto& [n, op] : ops) {
    if (name == n) return op;
  }
  throw Error(what + ": unsupported argument operator " + quote(name), ExitCode::run_failed);
}

scmp_compare compare_value(SeccompCompare op) {
  switch (op) {
    case SeccompCompare::ne: return SCMP_CMP_NE;
    case SeccompCompare::lt: return SCMP_CMP_LT;
    case SeccompCompare::le: return SCMP_CMP_LE;
    case SeccompCompare::eq: return SCMP_CMP_EQ;
    case SeccompCompare::ge: return SCMP_CMP_GE;
    case SeccompCompare::gt: return SCMP_CMP_GT;
    case SeccompCompare::masked_eq: return SCMP_CMP_MASKED_EQ;
  }
  return SCMP_CMP_EQ;
}

std::uint64_t caps_of(const nlohmann::json& filter, const std::string& what) {
  std::uint64_t mask = 0;
  if (!filter.is_object() || !filter.contains("caps")) return mask;
  for (const auto& c : filter["caps"]) {
    if (!c.is_string()) throw Error(what + ": a capability is not a string", ExitCode::run_failed);
    mask |= capability_mask(c.get<std::string>());
  }
  return mask;
}

}  // namespace

std::uint64_t capability_mask(std::string_view name) {
  std::string n = upper(name);
  if (n.rfind("CAP_", 0) == 0) n = n.substr(4);
  if (n == "ALL") return kAllCapabilities;
  for (int cap = 0; cap < kCapabilityCount; ++cap) {
    if (n == kCapabilityNames[cap]) return bit(cap);
  }
  throw Error("unknown capability " + quote(name), ExitCode::run_failed);
}

std::uint64_t default_capabilities() {
  return bit(CAP_CHOWN) | bit(CAP_DAC_OVERRIDE) | bit(CAP_FSETID) | bit(CAP_FOWNER) | bit(CAP_MKNOD) |
         bit(CAP_NET_RAW) | bit(CAP_SETGID) | bit(CAP_SETUID) | bit(CAP_SETFCAP) | bit(CAP_SETPCAP) |
         bit(CAP_NET_BIND_SERVICE) | bit(CAP_SYS_CHROOT) | bit(CAP_KILL) | bit(CAP_AUDIT_WRITE);
}

std::uint64_t capability_set(const std::vector<std::string>& add, const std::vector<std::string>& drop,
                             bool privileged) {
  if (privileged) return kAllCapabilities;
  std::uint64_t set = default_capabilities();
  // docker: drops apply first, so `--cap-drop ALL --cap-add X` leaves X.
  for (const auto& d : drop) set &= ~capability_mask(d);
  for (const auto& a : add) set |= capability_mask(a);
  return set;
}

std::string capability_name(int cap) {
  return cap >= 0 && cap < kCapabilityCount ? std::string("CAP_") + kCapabilityNames[cap] : std::to_string(cap);
}

SeccompProfile default_seccomp_profile() {
  SeccompProfile p;
  p.default_action = SeccompAction::allow;
  // Following the list of syscalls docker's default profile blocks, each
  // allowed again where docker allows it: with the capability that makes
  // it meaningful.
  p.syscalls = {
      // Keys are not namespaced: a container could read or fill the host's.
      deny({"add_key", "keyctl", "request_key"}),
      // Kernel modules, kexec, reboot.
      deny({"create_module", "delete_module", "finit_module", "init_module", "get_kernel_syms", "query_module"},
           {CAP_SYS_MODULE}),
      deny({"kexec_file_load", "kexec_load", "reboot"}, {CAP_SYS_BOOT}),
      // Time is not namespaced.
      deny({"clock_adjtime", "clock_settime", "settimeofday", "stime"}, {CAP_SYS_TIME}),
      // Mounts, namespaces and the host's file systems.
      deny({"mount", "umount", "umount2", "pivot_root", "setns", "unshare", "swapon", "swapoff", "quotactl",
            "fsopen", "fsconfig", "fsmount", "fspick", "move_mount", "open_tree", "mount_setattr",
            "lookup_dcookie", "nfsservctl", "sysfs", "_sysctl", "ustat", "fanotify_init", "vm86", "vm86old"},
           {CAP_SYS_ADMIN}),
      deny({"open_by_handle_at", "name_to_handle_at"}, {CAP_DAC_READ_SEARCH}),
      // Inspecting and writing other processes.
      deny({"ptrace", "process_vm_readv", "process_vm_writev", "kcmp"}, {CAP_SYS_PTRACE}),
      // Kernel memory, tracing, I/O ports, accounting, NUMA policy.
      deny({"bpf"}, {CAP_SYS_ADMIN, CAP_BPF}),
      deny({"perf_event_open"}, {CAP_SYS_ADMIN, CAP_PERFMON}),
      deny({"iopl", "ioperm"}, {CAP_SYS_RAWIO}),
      deny({"acct"}, {CAP_SYS_PACCT}),
      deny({"get_mempolicy", "mbind", "set_mempolicy", "move_pages"}, {CAP_SYS_NICE}),
      deny({"uselib", "userfaultfd"}),
      // clone3 passes its flags in memory, which a filter cannot read:
      // ENOSYS makes the C library fall back to clone, whose flags it can.
      deny({"clone3"}, {CAP_SYS_ADMIN}, ENOSYS),
  };
  // AF_VSOCK (40) reaches the hypervisor and other guests, which no
  // namespace separates.
  SeccompRule vsock = deny({"socket"});
  vsock.args = {{0, AF_VSOCK, 0, SeccompCompare::eq}};
  p.syscalls.push_back(std::move(vsock));
  for (auto& r : personality_rules()) p.syscalls.push_back(std::move(r));
  // x86-64 passes clone's flags as the first argument. MASKED_EQ compares
  // (arg & value) == valueTwo: one rule per flag, so that any one is refused.
  for (std::uint64_t flag = 1; flag != 0; flag <<= 1) {
    if ((kNamespaceFlags & flag) == 0) continue;
    SeccompRule r = deny({"clone"}, {CAP_SYS_ADMIN});
    r.args = {{0, flag, flag, SeccompCompare::masked_eq}};
    p.syscalls.push_back(std::move(r));
  }
  return p;
}

SeccompProfile parse_seccomp_profile(std::string_view text, const std::string& what) {
  nlohmann::json doc = nlohmann::json::parse(text, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) throw Error(what + ": not a JSON object", ExitCode::run_failed);
  SeccompProfile p;
  try {
    p.default_action = parse_action(doc.value("defaultAction", std::string()), what);
    p.default_errno = doc.value("defaultErrnoRet", EPERM);
    if (doc.contains("syscalls")) {
      for (const auto& s : doc["syscalls"]) {
        SeccompRule r;
        if (s.contains("names")) r.names = s["names"].get<std::vector<std::string>>();
        if (s.contains("name")) r.names.push_back(s["name"].get<std::string>());
        r.action = parse_action(s.value("action", std::string()), what);
        r.errno_value = s.value("errnoRet", EPERM);
        if (s.contains("args") && s["args"].is_array()) {
          for (const auto& a : s["args"]) {
            SeccompArg arg;
            arg.index = a.value("index", 0U);
            if (arg.index > 5) throw Error(what + ": argument index above 5", ExitCode::run_failed);
            arg.value = a.value("value", std::uint64_t{0});
            arg.value_two = a.value("valueTwo", std::uint64_t{0});
            arg.op = parse_op(a.value("op", std::string()), what);
            r.args.push_back(arg);
          }
        }
        if (s.contains("includes")) r.includes_caps = caps_of(s["includes"], what);
        if (s.contains("excludes")) r.excludes_caps = caps_of(s["excludes"], what);
        p.syscalls.push_back(std::move(r));
      }
    }
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": " + e.what(), ExitCode::run_failed);
  }
  return p;
}

void apply_seccomp(const SeccompProfile& profile, std::uint64_t capabilities) {
  std::uint32_t default_action = action_value(profile.default_action, profile.default_errno);
  scmp_filter_ctx ctx = seccomp_init(default_action);
  if (ctx == nullptr) throw Error("cannot start a seccomp filter", ExitCode::run_failed);
  struct Release {
    scmp_filter_ctx c;
    ~Release() { seccomp_release(c); }
  } release{ctx};
  for (const auto& rule : profile.syscalls) {
    // docker: a rule applies when the container has every capability it
    // includes and none it excludes.
    if ((capabilities & rule.includes_caps) != rule.includes_caps) continue;
    if ((capabilities & rule.excludes_caps) != 0) continue;
    std::uint32_t action = action_value(rule.action, rule.errno_value);
    if (action == default_action) continue;  // libseccomp refuses rules that change nothing
    std::vector<scmp_arg_cmp> cmps;
    for (const auto& a : rule.args) {
      cmps.push_back(scmp_arg_cmp{a.index, compare_value(a.op), a.value, a.value_two});
    }
    for (const auto& name : rule.names) {
      int nr = seccomp_syscall_resolve_name(name.c_str());
      // Unknown, or not a syscall of this architecture (a negative pseudo number).
      if (nr < 0) continue;
      int rc = seccomp_rule_add_array(ctx, action, nr, static_cast<unsigned>(cmps.size()), cmps.data());
      if (rc != 0 && rc != -EEXIST) {
        throw Error("seccomp rule for " + quote(name) + ": " + std::strerror(-rc), ExitCode::run_failed);
      }
    }
  }
  int rc = seccomp_load(ctx);
  if (rc != 0) throw Error(std::string("load the seccomp filter: ") + std::strerror(-rc), ExitCode::run_failed);
}

}  // namespace strata::sandbox
