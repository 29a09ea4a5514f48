#include <doctest/doctest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include <mutex>
#include <shared_mutex>
#include <string>
#include <vector>

#include "lock_order.hpp"
#include "strata/error.hpp"
#include "strata/fs.hpp"
#include "strata/stratafs_client.hpp"

using namespace strata::fs;

namespace {
MountOptions parse(std::vector<const char*> args, CommandLineAction want = CommandLineAction::mount) {
  args.insert(args.begin(), "stratafs");
  MountOptions o;
  CHECK(parse_command_line(static_cast<int>(args.size()), args.data(), o) == want);
  return o;
}
std::string usage_error(std::vector<const char*> args) {
  args.insert(args.begin(), "stratafs");
  MountOptions o;
  try {
    parse_command_line(static_cast<int>(args.size()), args.data(), o);
  } catch (const strata::UsageError& e) {
    return e.what();
  }
  return "(no error)";
}
}  // namespace

TEST_CASE("overlayfs-style command lines") {
  auto o = parse({"-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/mnt"});
  CHECK(o.lowerdirs == std::vector<std::string>{"/a", "/b"});
  CHECK(o.upperdir == "/u");
  CHECK(o.workdir == "/w");
  CHECK(o.mountpoint == "/mnt");
  CHECK_FALSE(o.foreground);
  CHECK(o.passthrough);

  // As mount.fuse3 calls it: SOURCE MOUNTPOINT -o OPTS, with mount's own options mixed in.
  o = parse({"layers", "/mnt", "-o", "rw,nosuid,nodev,lowerdir=/a,allow_other,x-systemd.automount"});
  CHECK(o.source == "layers");
  CHECK(o.mountpoint == "/mnt");
  CHECK(o.allow_other);

  o = parse({"-f", "-olowerdir=/a", "-o", "ro", "-d", "/m"});
  CHECK(o.foreground);
  CHECK(o.debug);
  CHECK(o.read_only);

  o = parse({"-o", "lowerdir=/a,nopassthrough", "/m"});
  CHECK_FALSE(o.passthrough);

  // Other users: asked for, refused, or left to the default (on as root); the last word wins.
  o = parse({"-o", "lowerdir=/a", "/m"});
  CHECK_FALSE(o.allow_other);
  CHECK_FALSE(o.deny_other);
  o = parse({"-o", "lowerdir=/a,allow_other,noallow_other", "/m"});
  CHECK_FALSE(o.allow_other);
  CHECK(o.deny_other);
  o = parse({"-o", "lowerdir=/a,noallow_other", "-o", "allow_other", "/m"});
  CHECK(o.allow_other);
  CHECK_FALSE(o.deny_other);

  parse({"--help"}, CommandLineAction::help);
  parse({"-V"}, CommandLineAction::version);
}

TEST_CASE("bad command lines name what is wrong") {
  CHECK(usage_error({"/mnt"}) == "no lowerdir given: use -o lowerdir=TOP:...:BOTTOM");
  CHECK(usage_error({"-o", "lowerdir=/a,bogus", "/m"}) == "unknown option 'bogus' (see 'stratafs --help')");
  CHECK(usage_error({"-o", "lowerdir=/a"}) == "no mount point given (see 'stratafs --help')");
  CHECK(usage_error({"-o", "lowerdir=/a,upperdir=/u", "/m"}) == "upperdir given without workdir");
  CHECK(usage_error({"-o", "lowerdir=/a::/b", "/m"}) == "empty directory in layer list '/a::/b'");
  CHECK(usage_error({"-x", "/m"}) == "unknown option '-x' (see 'stratafs --help')");
  std::string many = "lowerdir=";
  for (int i = 0; i < 256; ++i) many += (i ? ":/l" : "/l") + std::to_string(i);
  CHECK(usage_error({"-o", many.c_str(), "/m"}) == "too many lower layers: 256 (at most 255)");
}

TEST_CASE("layer lists escape colons and backslashes") {
  CHECK(split_layer_list("a\\:b:c\\\\d") == std::vector<std::string>{"a:b", "c\\d"});
}

TEST_CASE("id maps work both ways, fuse-overlayfs syntax") {
  IdMap m = IdMap::parse("0:1000:1:1:100000:65536", "uidmapping");
  CHECK(m.to_container(1000) == 0);
  CHECK(m.to_container(100000) == 1);
  CHECK(m.to_container(100009) == 10);
  CHECK(m.to_container(5) == 65534);
  CHECK(m.to_host(0).value() == 1000);
  CHECK(m.to_host(10).value() == 100009);
  CHECK_FALSE(m.to_host(70000).has_value());
  CHECK_THROWS_AS(IdMap::parse("0:1000", "uidmapping"), strata::UsageError);
  CHECK_THROWS_AS(IdMap::parse("0:x:1", "uidmapping"), strata::UsageError);
  // 4294967295 is (uid_t)-1: chown's "no change", never an id to map to or from.
  CHECK_THROWS_AS(IdMap::parse("0:4294967295:1", "uidmapping"), strata::UsageError);
  CHECK_THROWS_AS(IdMap::parse("4294967295:0:1", "uidmapping"), strata::UsageError);
  CHECK_THROWS_AS(IdMap::parse("0:0:4294967296", "uidmapping"), strata::UsageError);
  CHECK_THROWS_AS(IdMap::parse("1:0:4294967295", "uidmapping"), strata::UsageError);
  CHECK(IdMap::parse("0:0:4294967295", "uidmapping").to_host(4294967294).value() == 4294967294U);
  CHECK(IdMap::parse("4294967294:1:1", "uidmapping").to_container(1) == 4294967294U);
}


// ---- the client's -o string, read back by the parser ----------------------

namespace {
// Formats M, parses `stratafs -o STRING /mnt` and checks every field came back.
MountOptions round_trip(const StratafsMount& m) {
  std::string opts = format_mount_options(m);
  MountOptions o = parse({"-o", opts.c_str(), "/mnt"});
  CHECK(o.lowerdirs == m.lowerdirs);
  CHECK(o.upperdir == m.upperdir);
  CHECK(o.workdir == m.workdir);
  CHECK(o.read_only == m.read_only);
  CHECK(o.allow_other == m.allow_other);
  CHECK(o.volatile_upper == m.volatile_upper);
  CHECK(o.owner_pid == m.owner_pid);
  CHECK(o.mountpoint == "/mnt");
  return o;
}
std::string format_error(const StratafsMount& m) {
  try {
    return "(no error: " + format_mount_options(m) + ")";
  } catch (const strata::Error& e) {
    return e.what();
  }
}
}  // namespace

TEST_CASE("stratafs client: plain options round-trip through the parser") {
  StratafsMount m;
  m.lowerdirs = {"/store/layers/a", "/store/layers/b"};
  round_trip(m);
  CHECK(format_mount_options(m) == "lowerdir=/store/layers/a:/store/layers/b");
  // A layer an image holds twice is mounted at its topmost place only.
  StratafsMount twice;
  twice.lowerdirs = {"/store/layers/a", "/store/layers/b", "/store/layers/a", "/store/layers/c", "/store/layers/b"};
  CHECK(format_mount_options(twice) == "lowerdir=/store/layers/a:/store/layers/b:/store/layers/c");
  m.upperdir = "/c/upper";
  m.workdir = "/c/work";
  m.allow_other = true;
  m.owner_pid = 4242;
  round_trip(m);
  CHECK(format_mount_options(m) == "lowerdir=/store/layers/a:/store/layers/b,upperdir=/c/upper,workdir=/c/work,allow_other,owner=4242");
  m.volatile_upper = true;
  round_trip(m);
  CHECK(format_mount_options(m) == "lowerdir=/store/layers/a:/store/layers/b,upperdir=/c/upper,workdir=/c/work,allow_other,volatile,owner=4242");
  m.volatile_upper = false;
  m.upperdir.clear();
  m.workdir.clear();
  m.read_only = true;
  m.allow_other = false;
  round_trip(m);
}

TEST_CASE("stratafs client: ':', '\\', spaces and '=' in paths survive the parser") {
  StratafsMount m;
  m.lowerdirs = {"/a:b/c", "/back\\slash", "/ends\\", "/with space/x", "/x=y", "/::", "/\\:\\"};
  m.upperdir = "/up:per\\ dir=1";
  m.workdir = "/wo:rk\\";
  m.owner_pid = 1;
  round_trip(m);
  // The lower list escapes; upperdir= and workdir= are taken verbatim.
  CHECK(format_mount_options(m).starts_with("lowerdir=/a\\:b/c:/back\\\\slash:/ends\\\\:"));
  CHECK(format_mount_options(m).find(",upperdir=/up:per\\ dir=1,workdir=/wo:rk\\,") != std::string::npos);
  CHECK(escape_lower_dir("/a:b\\c") == "/a\\:b\\\\c");
}

TEST_CASE("stratafs client: what the -o grammar cannot carry is refused") {
  StratafsMount m;
  CHECK(format_error(m) == "no lower directory to mount");
  m.lowerdirs = {"/a,ro"};
  CHECK(format_error(m) == "the layer directory '/a,ro' contains ',', which stratafs options cannot carry");
  m.lowerdirs = {"/a", ""};
  CHECK(format_error(m) == "the layer directory path is empty");
  m.lowerdirs = {"/a"};
  m.upperdir = "/u,allow_other";
  m.workdir = "/w";
  CHECK(format_error(m).find("upper directory '/u,allow_other' contains ','") != std::string::npos);
  m.upperdir = "/u";
  m.workdir = "/w,x";
  CHECK(format_error(m).find("work directory '/w,x' contains ','") != std::string::npos);
  m.workdir.clear();
  CHECK(format_error(m) == "an upper directory '/u' without a work directory");
  m.upperdir.clear();
  m.workdir = "/w";
  CHECK(format_error(m) == "a work directory '/w' without an upper directory");
  m.workdir.clear();
  m.lowerdirs.clear();
  for (std::size_t i = 0; i < kMaxLowerLayers; ++i) m.lowerdirs.push_back("/l" + std::to_string(i));
  round_trip(m);
  m.lowerdirs.push_back("/l");
  CHECK(format_error(m).starts_with("too many lower directories to mount: 256"));
  m.lowerdirs = {"/a"};
  m.owner_pid = -1;
  CHECK(format_error(m).starts_with("bad owner process id -1"));
}

// The lock order is checked only where asserts are (no NDEBUG), as in the
// test builds.
#ifndef NDEBUG
namespace {
struct LockOrderViolation {
  Lock held, taking;
};
[[noreturn]] void throw_violation(Lock held, Lock taking) { throw LockOrderViolation{held, taking}; }
// A violation throws instead of aborting while one of these lives.
struct ThrowOnViolation {
  lock_order::Failure previous = lock_order::set_failure(throw_violation);
  ~ThrowOnViolation() { lock_order::set_failure(previous); }
};
}  // namespace

TEST_CASE("lock order: tree_mu_ then one leaf passes, any other order is caught") {
  ThrowOnViolation on_violation;
  Ranked<Lock::tree, std::shared_mutex> tree;
  Ranked<Lock::children> children;
  Ranked<Lock::children> other_children;
  Ranked<Lock::backing> backing;

  SUBCASE("the right order") {
    {
      std::shared_lock t(tree);
      { std::lock_guard c(children); }
      { std::lock_guard b(backing); }
    }
    std::unique_lock t(tree, std::defer_lock);
    t.lock();
    std::lock_guard b(backing);
  }
  SUBCASE("a leaf under another leaf: both are named, the second is not taken") {
    std::shared_lock t(tree);
    std::lock_guard c(children);
    try {
      std::lock_guard b(backing);
      FAIL("backing_mu_ was taken under children_mu");
    } catch (const LockOrderViolation& v) {
      CHECK(v.held == Lock::children);
      CHECK(v.taking == Lock::backing);
      CHECK(std::string(lock_name(v.held)) == "Node::children_mu");
      CHECK(std::string(lock_name(v.taking)) == "backing_mu_");
    }
  }
  SUBCASE("two leaves of one kind") {
    std::lock_guard c(children);
    CHECK_THROWS_AS(other_children.lock(), LockOrderViolation);
  }
  SUBCASE("tree_mu_ under a leaf") {
    std::lock_guard b(backing);
    CHECK_THROWS_AS(tree.lock_shared(), LockOrderViolation);
    CHECK_THROWS_AS(tree.lock(), LockOrderViolation);
  }
  SUBCASE("tree_mu_ under itself") {
    std::shared_lock t(tree);
    CHECK_THROWS_AS(tree.lock_shared(), LockOrderViolation);
  }
  SUBCASE("a lock let go is forgotten, in any order") {
    std::unique_lock t(tree);
    std::unique_lock c(children);
    t.unlock();
    CHECK_THROWS_AS(tree.lock(), LockOrderViolation);  // children_mu is still held
    c.unlock();
    t.lock();
    std::lock_guard b(backing);
  }
}

TEST_CASE("lock order: a violation aborts by default, naming both locks") {
  int out[2];
  REQUIRE(::pipe(out) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::dup2(out[1], STDERR_FILENO);
    Ranked<Lock::listing> listing;
    Ranked<Lock::shard> shard;
    std::lock_guard l(listing);
    std::lock_guard s(shard);
    ::_exit(0);
  }
  ::close(out[1]);
  std::string err;
  char buf[512];
  for (ssize_t n; (n = ::read(out[0], buf, sizeof buf)) > 0;) err.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status));
  CHECK(WTERMSIG(status) == SIGABRT);
  CHECK(err.find("lock order violated: Shard::mu taken while listing_mu_ is held") != std::string::npos);
}
#endif
