#include <doctest/doctest.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include <string>
#include <vector>

#include "strata/error.hpp"
#include "strata/fs.hpp"

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

