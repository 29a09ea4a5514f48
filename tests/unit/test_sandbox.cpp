#include <doctest/doctest.h>

#include <sys/personality.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <functional>
#include <random>

#include "strata/error.hpp"
#include "strata/lifecycle.hpp"
#include "strata/sandbox.hpp"

using namespace strata;
using namespace strata::sandbox;

namespace {

const char* kPasswd =
    "root:x:0:0:root:/root:/bin/sh\n"
    "# a comment\n"
    "daemon:x:1:1:daemon:/usr/sbin:/bin/false\n"
    "broken line without fields\n"
    "app:x:1000:1000:app:/home/app:/bin/sh\n"
    "nohome:x:1001:1001:::/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n";
const char* kGroup =
    "root:x:0:\n"
    "daemon:x:1:\n"
    "wheel:x:10:app,daemon\n"
    "audio:x:29:app\n"
    "app:x:1000:\n"
    "bad:x:notanumber:app\n"
    "nogroup:x:65534:\n";

}  // namespace

TEST_CASE("subid files: owner, start and count per line; junk is skipped") {
  auto r = parse_subid_file("alice:100000:65536\n# comment\n\nbob:200000:1000\nbad:line\n1002:300000:5\nzero:1:0\n");
  REQUIRE(r.size() == 3);
  CHECK(r[0].owner == "alice");
  CHECK(r[0].start == 100000);
  CHECK(r[0].count == 65536);
  CHECK(r[1].owner == "bob");
  CHECK(r[2].owner == "1002");
}

TEST_CASE("subid files: overflowing ranges are ignored") {
  CHECK(parse_subid_file("x:4294967295:2\n").empty());
  CHECK(parse_subid_file("x:-1:2\n").empty());
  CHECK(parse_subid_file("x:10:2junk\n").empty());
}

TEST_CASE("find_subid_range matches by name or by numeric id, first wins") {
  auto r = parse_subid_file("alice:100000:65536\nalice:900000:10\n1002:300000:5\n");
  auto a = find_subid_range(r, "alice", 1001);
  REQUIRE(a);
  CHECK(a->start == 100000);
  auto b = find_subid_range(r, "bob", 1002);
  REQUIRE(b);
  CHECK(b->start == 300000);
  CHECK_FALSE(find_subid_range(r, "carol", 1003));
}

TEST_CASE("id map plan: root is identity mapped") {
  auto p = plan_id_maps(0, 0, "root", "root:100000:65536\n", "root:100000:65536\n");
  CHECK(p.kind == IdMapPlan::Kind::identity);
  CHECK(format_id_map(p.uids) == "0 0 4294967295\n");
}

TEST_CASE("id map plan: a user with ranges in both files gets 0 -> self and 1.. -> the range") {
  auto p = plan_id_maps(1000, 1001, "alice", "alice:100000:65536\n", "alice:200000:1000\n");
  CHECK(p.kind == IdMapPlan::Kind::subordinate);
  CHECK(format_id_map(p.uids) == "0 1000 1\n1 100000 65536\n");
  CHECK(format_id_map(p.gids) == "0 1001 1\n1 200000 1000\n");
}

TEST_CASE("id map plan: a range in only one file, or none, gives a single-id map") {
  auto p = plan_id_maps(1000, 1000, "alice", "alice:100000:65536\n", "");
  CHECK(p.kind == IdMapPlan::Kind::single);
  CHECK(format_id_map(p.uids) == "0 1000 1\n");
  CHECK(format_id_map(p.gids) == "0 1000 1\n");
  CHECK(plan_id_maps(1000, 1000, "alice", "bob:1:2\n", "bob:1:2\n").kind == IdMapPlan::Kind::single);
}

TEST_CASE("container_owners: host ids back to the container's, unmapped ones to 65534") {
  auto sub = container_owners(plan_id_maps(1000, 1001, "alice", "alice:100000:65536\n", "alice:200000:1000\n"));
  REQUIRE(sub);
  std::uint32_t uid = 1000, gid = 1001;
  sub(uid, gid);
  CHECK(uid == 0);
  CHECK(gid == 0);
  uid = 100000 + 65535, gid = 200000 + 41;
  sub(uid, gid);
  CHECK(uid == 65536);
  CHECK(gid == 42);
  uid = 99999, gid = 201000;  // just outside both ranges
  sub(uid, gid);
  CHECK(uid == 65534);
  CHECK(gid == 65534);
  auto single = container_owners(plan_id_maps(1000, 1000, "alice", "", ""));
  REQUIRE(single);
  uid = 1000, gid = 5;
  single(uid, gid);
  CHECK(uid == 0);
  CHECK(gid == 65534);
  CHECK_FALSE(container_owners(plan_id_maps(0, 0, "root", "", "")));
}

TEST_CASE("resolve_user: empty spec is root with root's home") {
  auto u = resolve_user("", kPasswd, kGroup);
  CHECK(u.uid == 0);
  CHECK(u.gid == 0);
  CHECK(u.home == "/root");
  CHECK(u.groups.empty());
}

TEST_CASE("resolve_user: a name gives its uid, primary gid, home and member groups") {
  auto u = resolve_user("app", kPasswd, kGroup);
  CHECK(u.uid == 1000);
  CHECK(u.gid == 1000);
  CHECK(u.home == "/home/app");
  CHECK(u.groups == std::vector<gid_t>{10, 29});
}

TEST_CASE("resolve_user: a numeric uid in passwd takes its entry; one not in passwd gets gid 0 and home /") {
  auto u = resolve_user("1000", kPasswd, kGroup);
  CHECK(u.gid == 1000);
  CHECK(u.home == "/home/app");
  auto v = resolve_user("4242", kPasswd, kGroup);
  CHECK(v.uid == 4242);
  CHECK(v.gid == 0);
  CHECK(v.home == "/");
  CHECK(v.groups.empty());
}

TEST_CASE("resolve_user: an empty home field falls back to /") {
  CHECK(resolve_user("nohome", kPasswd, kGroup).home == "/");
}

TEST_CASE("resolve_user: USER:GROUP by name and by number") {
  auto u = resolve_user("app:wheel", kPasswd, kGroup);
  CHECK(u.uid == 1000);
  CHECK(u.gid == 10);
  CHECK(u.groups == std::vector<gid_t>{10, 29});  // membership, as docker reads it
  auto v = resolve_user("nobody:4321", kPasswd, kGroup);
  CHECK(v.uid == 65534);
  CHECK(v.gid == 4321);
  auto w = resolve_user("77:88", "", "");
  CHECK(w.uid == 77);
  CHECK(w.gid == 88);
}

TEST_CASE("resolve_user: unknown names are errors with docker's exit code 125") {
  try {
    resolve_user("ghost", kPasswd, kGroup);
    FAIL("no error");
  } catch (const Error& e) {
    CHECK(e.code() == ExitCode::run_failed);
    CHECK(std::string(e.what()) == "unable to find user 'ghost': no matching entries in passwd file");
  }
  CHECK_THROWS_AS(resolve_user("app:ghosts", kPasswd, kGroup), Error);
  CHECK_THROWS_AS(resolve_user("app:", kPasswd, kGroup), Error);
  // A group line whose gid does not parse is not a match.
  CHECK_THROWS_AS(resolve_user("app:bad", kPasswd, kGroup), Error);
}

TEST_CASE("resolve_user: no passwd file at all still runs root and numeric users") {
  CHECK(resolve_user("", "", "").home == "/");
  CHECK_THROWS_AS(resolve_user("root", "", ""), Error);
}

TEST_CASE("complete_env: defaults, overrides and order") {
  auto env = complete_env({"A=1", "PATH=/x", "A=2"}, "box", "/home/app", false);
  CHECK(env == std::vector<std::string>{"PATH=/x", "HOSTNAME=box", "A=2", "HOME=/home/app"});
  auto tty = complete_env({"HOME=/h", "TERM=vt100"}, "box", "/root", true);
  CHECK(tty == std::vector<std::string>{std::string("PATH=") + kDefaultPath, "HOSTNAME=box", "HOME=/h", "TERM=vt100"});
  auto term = complete_env({}, "h", "/", true);
  CHECK(term.back() == "HOME=/");
  CHECK(term[2] == "TERM=xterm");
}

TEST_CASE("combine_command follows docker: entrypoint + args, else entrypoint + cmd") {
  std::vector<std::string> ep = {"/entry", "-x"}, cmd = {"default", "arg"};
  using V = std::vector<std::string>;
  CHECK(combine_command(ep, cmd, std::nullopt, {}) == V{"/entry", "-x", "default", "arg"});
  CHECK(combine_command(ep, cmd, std::nullopt, {"mine"}) == V{"/entry", "-x", "mine"});
  CHECK(combine_command({}, cmd, std::nullopt, {}) == V{"default", "arg"});
  CHECK(combine_command({}, cmd, std::nullopt, {"ls", "-l"}) == V{"ls", "-l"});
  // --entrypoint replaces the image's entrypoint and drops its CMD.
  CHECK(combine_command(ep, cmd, std::string("sh"), {}) == V{"sh"});
  CHECK(combine_command(ep, cmd, std::string("sh"), {"-c", "x"}) == V{"sh", "-c", "x"});
  // --entrypoint '' clears it.
  CHECK(combine_command(ep, cmd, std::string(), {}).empty());
  CHECK(combine_command(ep, cmd, std::string(), {"true"}) == V{"true"});
  CHECK(combine_command({}, {}, std::nullopt, {}).empty());
}

TEST_CASE("resolve_user: 4294967295, (uid_t)-1, is refused however it is named") {
  const std::string passwd = std::string(kPasswd) + "huge:x:4294967295:0::/:/bin/sh\nhugegid:x:5:4294967295::/:/bin/sh\n";
  const std::string group = std::string(kGroup) + "hugegrp:x:4294967295:app\n";
  for (const char* spec : {"4294967295", "0:4294967295", "4294967295:0", "4294967296", "huge", "hugegid",
                           "app:hugegrp", "root:4294967295"}) {
    CAPTURE(spec);
    try {
      resolve_user(spec, passwd, group);
      FAIL("accepted");
    } catch (const Error& e) {
      CHECK(e.code() == ExitCode::run_failed);
      CHECK(std::string(e.what()).find("429496729") != std::string::npos);
    }
  }
  // A group line with the id does not add it to the user's groups.
  CHECK(resolve_user("app", passwd, group).groups == std::vector<gid_t>{10, 29});
  CHECK(resolve_user("4294967294", passwd, group).uid == 4294967294U);
}

TEST_CASE("capability sets: docker's default, --cap-drop before --cap-add, ALL, --privileged") {
  CHECK(default_capabilities() == 0xA80425FBULL);
  CHECK(capability_set({}, {"chown"}, false) == (0xA80425FBULL & ~1ULL));
  CHECK(capability_set({"CAP_KILL"}, {"ALL"}, false) == (1ULL << 5));
  CHECK(capability_set({"SYS_ADMIN"}, {}, false) == (0xA80425FBULL | (1ULL << 21)));
  CHECK(capability_set({}, {"ALL"}, true) == capability_mask("all"));
  CHECK(capability_name(21) == "CAP_SYS_ADMIN");
  CHECK_THROWS_AS(capability_set({"NO_SUCH"}, {}, false), Error);
}

TEST_CASE("seccomp: docker's JSON profile format") {
  auto p = parse_seccomp_profile(R"({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
      "architectures": ["SCMP_ARCH_X86_64"],
      "syscalls": [{"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                   {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                    "excludes": {"caps": ["CAP_SYS_ADMIN"]}}]})",
                                  "profile");
  CHECK(p.default_action == SeccompAction::errno_return);
  CHECK(p.default_errno == 38);
  REQUIRE(p.syscalls.size() == 2);
  CHECK(p.syscalls[0].names == std::vector<std::string>{"read", "write"});
  CHECK(p.syscalls[0].action == SeccompAction::allow);
  REQUIRE(p.syscalls[1].args.size() == 1);
  CHECK(p.syscalls[1].args[0].value == 2114060288U);
  CHECK(p.syscalls[1].args[0].op == SeccompCompare::masked_eq);
  CHECK(p.syscalls[1].excludes_caps == (1ULL << 21));
  CHECK_THROWS_AS(parse_seccomp_profile("{", "p"), Error);
  CHECK_THROWS_AS(parse_seccomp_profile(R"({"defaultAction": "SCMP_ACT_NOPE"})", "p"), Error);
  CHECK_THROWS_AS(parse_seccomp_profile(R"({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["x"],
      "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 0, "op": "SCMP_CMP_EQ"}]}]})", "p"), Error);
  auto d = default_seccomp_profile();
  CHECK(d.default_action == SeccompAction::allow);
  bool blocks_keyctl = false;
  for (const auto& r : d.syscalls) {
    for (const auto& n : r.names) blocks_keyctl = blocks_keyctl || (n == "keyctl" && r.excludes_caps == 0);
  }
  CHECK(blocks_keyctl);
}

namespace {

// Whether the default profile's rules refuse personality(VALUE), read from
// the rules as the kernel would apply them (every comparison must hold).
bool default_profile_refuses_personality(const SeccompProfile& p, std::uint64_t value) {
  for (const auto& r : p.syscalls) {
    if (std::find(r.names.begin(), r.names.end(), "personality") == r.names.end()) continue;
    bool all = true;
    for (const auto& a : r.args) {
      bool holds = a.op == SeccompCompare::gt          ? value > a.value
                   : a.op == SeccompCompare::masked_eq ? (value & a.value) == a.value_two
                   : a.op == SeccompCompare::eq        ? value == a.value
                                                       : false;
      all = all && holds;
    }
    if (all) return true;
  }
  return false;
}

// Runs CALL in a child under the default filter; true when it failed with EPERM.
template <class Call>
bool refused_under_default_filter(Call call) {
  pid_t pid = ::fork();
  if (pid == 0) {
    apply_seccomp(default_seccomp_profile(), default_capabilities());
    errno = 0;
    long r = call();
    ::_exit(r == -1 && errno == EPERM ? 1 : 0);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) && WEXITSTATUS(status) == 1;
}

}  // namespace

TEST_CASE("seccomp: the default profile allows docker's five personalities and nothing else") {
  auto p = default_seccomp_profile();
  const std::uint64_t allowed[] = {0, 0x8, 0x20000, 0x20008, 0xffffffff};
  for (std::uint64_t v : allowed) CHECK_MESSAGE(!default_profile_refuses_personality(p, v), v);
  // Every value of one or two bits, and random ones, outside the five.
  std::vector<std::uint64_t> others;
  for (unsigned i = 0; i < 64; ++i) {
    for (unsigned j = i; j < 64; ++j) others.push_back((1ULL << i) | (1ULL << j));
  }
  std::mt19937_64 random(42);
  for (int i = 0; i < 20000; ++i) others.push_back(random() >> (random() % 64));
  for (int i = 0; i < 32; ++i) others.push_back(0xffffffffULL & ~(1ULL << i));
  for (std::uint64_t v : others) {
    if (std::find(std::begin(allowed), std::end(allowed), v) != std::end(allowed)) continue;
    CHECK_MESSAGE(default_profile_refuses_personality(p, v), v);
  }
}

TEST_CASE("seccomp: under the default filter ADDR_NO_RANDOMIZE and AF_VSOCK are refused, the usual calls are not") {
  CHECK_FALSE(refused_under_default_filter([] { return ::syscall(SYS_personality, 0xffffffffUL); }));
  CHECK_FALSE(refused_under_default_filter([] { return ::syscall(SYS_personality, PER_LINUX32); }));
  CHECK_FALSE(refused_under_default_filter([] { return ::syscall(SYS_personality, UNAME26); }));
  CHECK(refused_under_default_filter([] { return ::syscall(SYS_personality, ADDR_NO_RANDOMIZE); }));
  CHECK(refused_under_default_filter([] { return ::syscall(SYS_personality, READ_IMPLIES_EXEC); }));
  CHECK(refused_under_default_filter([] { return ::syscall(SYS_personality, 0x8UL | 0x40000UL); }));
  CHECK(refused_under_default_filter([] { return ::syscall(SYS_personality, 0x100000000UL); }));
  CHECK(refused_under_default_filter([] { return static_cast<long>(::socket(AF_VSOCK, SOCK_STREAM, 0)); }));
  CHECK_FALSE(refused_under_default_filter([] { return static_cast<long>(::socket(AF_UNIX, SOCK_STREAM, 0)); }));
}

// ---- lifecycle: signals, log options, STATUS -------------------------------

TEST_CASE("parse_signal takes names with or without SIG, any case, and numbers") {
  CHECK(strata::lifecycle::parse_signal("TERM") == SIGTERM);
  CHECK(strata::lifecycle::parse_signal("sigkill") == SIGKILL);
  CHECK(strata::lifecycle::parse_signal("SIGUSR1") == SIGUSR1);
  CHECK(strata::lifecycle::parse_signal("9") == 9);
  for (const char* bad : {"", "SIG", "NOPE", "0", "65", "999", "-9", "TERM ", "1e1"}) {
    CHECK_THROWS_AS(strata::lifecycle::parse_signal(bad), strata::UsageError);
  }
}

TEST_CASE("parse_log_opt: sizes with suffixes, file counts, and refusals") {
  strata::lifecycle::LogOptions o;
  strata::lifecycle::parse_log_opt(o, "max-size=4k");
  CHECK(o.max_size == 4096);
  strata::lifecycle::parse_log_opt(o, "max-size=10m");
  CHECK(o.max_size == 10u << 20);
  strata::lifecycle::parse_log_opt(o, "max-file=3");
  CHECK(o.max_files == 3);
  for (const char* bad : {"max-size=", "max-size=huge", "max-size=10x", "max-size=100", "max-file=0", "max-file=2k",
                          "mode=non-blocking", "max-size=99999999999999999999g"}) {
    CHECK_THROWS_AS(strata::lifecycle::parse_log_opt(o, bad), strata::UsageError);
  }
}

TEST_CASE("status_text reads as docker's STATUS column") {
  strata::lifecycle::State s;
  CHECK(strata::lifecycle::status_text(s) == "Created");
  s.status = "running";
  s.started_at = strata::lifecycle::rfc3339_nano_now();
  CHECK(strata::lifecycle::status_text(s) == "Up Less than a second");
  s.started_at = "2000-01-01T00:00:00Z";
  CHECK(strata::lifecycle::status_text(s).find(" years") != std::string::npos);
  s.status = "exited";
  s.exit_code = 137;
  s.finished_at = s.started_at;
  CHECK(strata::lifecycle::status_text(s).rfind("Exited (137) ", 0) == 0);
  CHECK(strata::lifecycle::status_text(s).find(" years ago") != std::string::npos);
}

TEST_CASE("parse_network: docker's bridge is private; unknown names are refused") {
  CHECK(parse_network("private") == Network::private_net);
  CHECK(parse_network("bridge") == Network::private_net);
  CHECK(parse_network("host") == Network::host);
  CHECK(parse_network("none") == Network::none);
  CHECK_THROWS_AS(parse_network("Host"), UsageError);
  CHECK_THROWS_AS(parse_network(""), UsageError);
  CHECK(std::string(network_name(Network::private_net)) == "private");
}

namespace {

// The one mapping SPEC gives.
PortMapping publish_one(const std::string& spec) {
  auto ports = parse_publish(spec);
  REQUIRE(ports.size() == 1);
  return ports[0];
}

// What throws UsageError, with the message.
std::string usage_message(const std::function<void()>& f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

}  // namespace

TEST_CASE("parse_publish: [[HOSTIP:]HOSTPORT:]CONTAINERPORT[/PROTO]") {
  PortMapping p = publish_one("8080:80");
  CHECK(p.host_ip == "0.0.0.0");
  CHECK(p.host_port == 8080);
  CHECK(p.container_port == 80);
  CHECK(p.protocol == "tcp");
  p = publish_one("127.0.0.1:65535:1/udp");
  CHECK(format_port(p) == "127.0.0.1:65535->1/udp");
  // No host port: one is chosen (0 until the container starts).
  CHECK(publish_one("80") == PortMapping{"0.0.0.0", 0, 80, "tcp"});
  CHECK(publish_one("53/udp") == PortMapping{"0.0.0.0", 0, 53, "udp"});
  CHECK(publish_one("127.0.0.1::80") == PortMapping{"127.0.0.1", 0, 80, "tcp"});
  for (const char* bad : {"", "0:80", "80:0", "65536:80", "80:65536", "a:80", "80:b", "+80:80", "80:80/sctp", "80:80/",
                          "::1:80:80", "300.1.1.1:80:80", "1.2.3.4:80:", ":80", "99999999999999999999:80", "0", "70000:80",
                          "80-70:80-70", "80-:80", "-80:80", "8080-8082:80", "8080:80-82", "8080-8081:80-82", ":::80",
                          "[::1]:8080:80", "[::1]::80", "[nonsense]:80:80", "[::1:8080:80", "[", ":8080:80", "1.2.3.4:5:6:7", "80:80/tcp/udp",
                          "a-b", "80--81", "1-2-3:1-2-3"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_publish(bad), UsageError);
  }
}

TEST_CASE("parse_publish: ranges, one mapping a port; the errors say why") {
  auto ports = parse_publish("8080-8082:80-82/udp");
  REQUIRE(ports.size() == 3);
  CHECK(ports[0] == PortMapping{"0.0.0.0", 8080, 80, "udp"});
  CHECK(ports[2] == PortMapping{"0.0.0.0", 8082, 82, "udp"});
  ports = parse_publish("127.0.0.1::9000-9001");
  REQUIRE(ports.size() == 2);
  CHECK(ports[1] == PortMapping{"127.0.0.1", 0, 9001, "tcp"});
  CHECK(parse_publish("1-1000").size() == 1000);
  CHECK(usage_message([] { parse_publish("1-1001"); }).find("1001 ports (at most 1000)") != std::string::npos);
  CHECK(usage_message([] { parse_publish("8080-8082:80"); }).find("a host range needs a container range of the same length") !=
        std::string::npos);
  CHECK(usage_message([] { parse_publish("80-70:80-70"); }).find("goes down") != std::string::npos);
  CHECK(usage_message([] { parse_publish("[::1]:8080:80"); }).find("IPv6 host addresses cannot be published") !=
        std::string::npos);
  CHECK(usage_message([] { parse_publish(":::80"); }).find("IPv6") != std::string::npos);
  CHECK(usage_message([] { parse_publish("0:80"); }).find("leave the host port out") != std::string::npos);
}

TEST_CASE("format_ports: docker's PORTS column, consecutive ports as ranges") {
  CHECK(format_ports({}) == "");
  CHECK(format_ports(parse_publish("127.0.0.1:8080-8082:80-82")) == "127.0.0.1:8080-8082->80-82/tcp");
  std::vector<PortMapping> ports = parse_publish("8080-8081:80-81/udp");
  ports.push_back({"0.0.0.0", 8082, 90, "udp"});  // the host port goes on, the container port does not
  ports.push_back({"0.0.0.0", 9000, 91, "tcp"});
  ports.push_back({"127.0.0.1", 9001, 92, "tcp"});  // another address
  CHECK(format_ports(ports) ==
        "0.0.0.0:8080-8081->80-81/udp, 0.0.0.0:8082->90/udp, 0.0.0.0:9000->91/tcp, 127.0.0.1:9001->92/tcp");
}

TEST_CASE("check_ports: no host port twice, at most kMaxPublishedPorts") {
  CHECK_NOTHROW(check_ports({{"0.0.0.0", 8080, 80, "tcp"}, {"0.0.0.0", 8080, 80, "udp"}, {"0.0.0.0", 0, 80, "tcp"},
                             {"0.0.0.0", 0, 81, "tcp"}, {"127.0.0.1", 9000, 1, "tcp"}, {"127.0.0.2", 9000, 2, "tcp"}}));
  CHECK(usage_message([] { check_ports({{"0.0.0.0", 8080, 80, "tcp"}, {"0.0.0.0", 8080, 81, "tcp"}}); })
            .find("host port 8080/tcp is published twice") != std::string::npos);
  CHECK_THROWS_AS(check_ports({{"127.0.0.1", 8080, 80, "tcp"}, {"0.0.0.0", 8080, 81, "tcp"}}), UsageError);
  std::vector<PortMapping> many(kMaxPublishedPorts + 1, PortMapping{"0.0.0.0", 0, 80, "tcp"});
  CHECK_THROWS_AS(check_ports(many), UsageError);
}

TEST_CASE("make_port checks what a saved container holds") {
  CHECK(make_port("127.0.0.1", 0, 80, "udp") == PortMapping{"127.0.0.1", 0, 80, "udp"});
  CHECK_THROWS_AS(make_port("::1", 8080, 80, "tcp"), UsageError);
  CHECK_THROWS_AS(make_port("0.0.0.0", 65536, 80, "tcp"), UsageError);
  CHECK_THROWS_AS(make_port("0.0.0.0", 8080, 0, "tcp"), UsageError);
  CHECK_THROWS_AS(make_port("0.0.0.0", 8080, 80, "sctp"), UsageError);
  CHECK_THROWS_AS(make_port("", 8080, 80, "tcp"), UsageError);
}

TEST_CASE("parse_expose and publish_exposed (-P)") {
  CHECK(parse_expose("80") == std::vector<std::string>{"80/tcp"});
  CHECK(parse_expose("53/udp") == std::vector<std::string>{"53/udp"});
  CHECK(parse_expose("8000-8001") == std::vector<std::string>{"8000/tcp", "8001/tcp"});
  for (const char* bad : {"", "0", "80/sctp", "a", "90-80", "8080:80", "1-2000"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_expose(bad), UsageError);
  }
  auto ports = publish_exposed({{"127.0.0.1", 8080, 80, "tcp"}}, {"80/tcp", "80/udp", "443", "nonsense", "99999/tcp", "7/sctp"});
  REQUIRE(ports.size() == 3);
  CHECK(ports[0] == PortMapping{"127.0.0.1", 8080, 80, "tcp"});
  CHECK(ports[1] == PortMapping{"0.0.0.0", 0, 80, "udp"});
  CHECK(ports[2] == PortMapping{"0.0.0.0", 0, 443, "tcp"});
}

TEST_CASE("parse_add_host and check_dns_server take IPv4 and IPv6 addresses only") {
  HostEntry e = parse_add_host("db:192.0.2.7");
  CHECK(e.name == "db");
  CHECK(e.ip == "192.0.2.7");
  CHECK(parse_add_host("v6:2001:db8::1").ip == "2001:db8::1");
  CHECK(parse_add_host("gw:host-gateway").ip == kPrivateGateway);
  for (const char* bad : {"db", ":1.2.3.4", "db:", "db:1.2.3", "a b:1.2.3.4", "a\n1.2.3.4 evil:1.2.3.4"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(parse_add_host(bad), UsageError);
  }
  CHECK_NOTHROW(check_dns_server("10.0.2.3"));
  CHECK_NOTHROW(check_dns_server("::1"));
  CHECK_THROWS_AS(check_dns_server("10.0.2"), UsageError);
  CHECK_THROWS_AS(check_dns_server("1.1.1.1\nnameserver 6.6.6.6"), UsageError);
}

TEST_CASE("container_resolv_conf and container_hosts") {
  const char* host = "# generated\nsearch example.test\nnameserver 127.0.0.53\noptions edns0\n";
  CHECK(container_resolv_conf(host, {}, Network::host) == "nameserver 127.0.0.53\nsearch example.test\noptions edns0\n");
  CHECK(container_resolv_conf(host, {}, Network::private_net) == "nameserver 10.0.2.3\nsearch example.test\noptions edns0\n");
  CHECK(container_resolv_conf(host, {"192.0.2.1", "::1"}, Network::private_net) ==
        "nameserver 192.0.2.1\nnameserver ::1\nsearch example.test\noptions edns0\n");
  CHECK(container_hosts("127.0.0.1 localhost", "box", Network::host, {{"db", "192.0.2.7"}}) ==
        "127.0.0.1 localhost\n192.0.2.7\tdb\n");
  CHECK(container_hosts("ignored", "box", Network::private_net, {}) ==
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n10.0.2.100\tbox\n");
  CHECK(container_hosts("ignored", "box", Network::none, {}) == "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
}

TEST_CASE("parse_memory_size: docker's sizes in powers of 1024") {
  CHECK(parse_memory_size("4096", "--memory") == 4096);
  CHECK(parse_memory_size("32m", "--memory") == 32 << 20);
  CHECK(parse_memory_size("32M", "--memory") == 32 << 20);
  CHECK(parse_memory_size("32mb", "--memory") == 32 << 20);
  CHECK(parse_memory_size("32MiB", "--memory") == 32 << 20);
  CHECK(parse_memory_size("1.5g", "--memory") == 3LL << 29);
  CHECK(parse_memory_size("512k", "--memory") == 512 << 10);
  CHECK(parse_memory_size("10b", "--memory") == 10);
  for (const char* bad : {"", "1x", "m", "-5m", "1.m", ".5m", "1bb", "1kk", "1 m", "1e3", "0x10", "9999999999p"})
    CHECK_THROWS_AS(parse_memory_size(bad, "--memory"), UsageError);
  CHECK(parse_memory_swap("-1") == -1);
  CHECK_THROWS_AS(parse_memory_swap("-2"), UsageError);
}

TEST_CASE("parse_cpus and cpu_max: a decimal number of CPUs in periods of 100000") {
  CHECK(parse_cpus("0.5") == 500000000);
  CHECK(cpu_max(parse_cpus("0.5")) == "50000 100000");
  CHECK(cpu_max(parse_cpus("1")) == "100000 100000");
  CHECK(cpu_max(parse_cpus("0.01")) == "1000 100000");
  for (const char* bad : {"", "-1", "0", "0.001", "abc", "1e3", "100000", ".5"}) CHECK_THROWS_AS(parse_cpus(bad), UsageError);
}

TEST_CASE("parse_pids_limit and check_resources") {
  CHECK(parse_pids_limit("10") == 10);
  CHECK(parse_pids_limit("0") == 0);
  CHECK(parse_pids_limit("-1") == 0);
  for (const char* bad : {"", "abc", "-2", "1.5", " 10"}) CHECK_THROWS_AS(parse_pids_limit(bad), UsageError);
  Resources r;
  CHECK_FALSE(r.any());
  r.pids_limit = 10;
  CHECK(r.any());
  check_resources(r);
  r.memory_swap = 64 << 20;
  CHECK_THROWS_AS(check_resources(r), UsageError);  // swap without memory
  r.memory = 128 << 20;
  CHECK_THROWS_AS(check_resources(r), UsageError);  // less than memory
  r.memory_swap = -1;
  check_resources(r);
  r.memory = 1 << 20;
  CHECK_THROWS_AS(check_resources(r), UsageError);  // below 6m
}

TEST_CASE("clean_volume_target: absolute, cleaned, never the root") {
  CHECK(clean_volume_target("/data") == "/data");
  CHECK(clean_volume_target("/a/../b/") == "/b");
  CHECK(clean_volume_target("/../../etc/./x") == "/etc/x");
  CHECK(clean_volume_target("//srv//") == "/srv");
  CHECK_FALSE(clean_volume_target("/"));
  CHECK_FALSE(clean_volume_target("/a/.."));
  CHECK_FALSE(clean_volume_target("/.."));
  CHECK_FALSE(clean_volume_target("relative"));
  CHECK_FALSE(clean_volume_target(""));
}

TEST_CASE("add_image_volumes: what no mount covers, parents first, hostile lists refused") {
  ContainerRunOptions o;
  o.image = "img";
  BindMount named;
  named.target = "/srv/";
  named.volume = "mine";
  o.volumes.push_back(named);
  o.tmpfs.push_back(parse_tmpfs("/tmp"));
  add_image_volumes(o, {"/srv", "/tmp/", "/var/lib/db", "/var", "/var/../var", "/data"});
  std::vector<std::string> targets;
  for (const auto& v : o.volumes) targets.push_back(v.target + (v.anonymous ? "+" : ""));
  CHECK(targets == std::vector<std::string>{"/srv/", "/var+", "/data+", "/var/lib/db+"});
  CHECK(volume_names(o) == std::vector<std::string>{"mine"});

  ContainerRunOptions bad;
  CHECK_THROWS_WITH_AS(add_image_volumes(bad, {"rel"}), doctest::Contains("not an absolute path"), Error);
  CHECK_THROWS_WITH_AS(add_image_volumes(bad, {"/x/.."}), doctest::Contains("over its root"), Error);
  std::vector<std::string> many(kMaxImageVolumes + 1, "/v");
  CHECK_THROWS_WITH_AS(add_image_volumes(bad, many), doctest::Contains("(at most 128)"), Error);
  CHECK(bad.volumes.empty());
}
