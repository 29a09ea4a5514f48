#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <string>
#include <vector>

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
  m.upperdir = "/c/upper";
  m.workdir = "/c/work";
  m.allow_other = true;
  m.owner_pid = 4242;
  round_trip(m);
  CHECK(format_mount_options(m) == "lowerdir=/store/layers/a:/store/layers/b,upperdir=/c/upper,workdir=/c/work,allow_other,owner=4242");
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
  m.lowerdirs.assign(kMaxLowerLayers, "/l");
  round_trip(m);
  m.lowerdirs.push_back("/l");
  CHECK(format_error(m).starts_with("too many lower directories to mount: 256"));
  m.lowerdirs = {"/a"};
  m.owner_pid = -1;
  CHECK(format_error(m).starts_with("bad owner process id -1"));
}
