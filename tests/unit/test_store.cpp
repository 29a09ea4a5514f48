#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/store.hpp"

using namespace strata;
using namespace strata::store;
using oci::json;

TEST_CASE("a store: layer from a directory, image, tag, container, commit") {
  TempDir t("/tmp");
  Store s = Store::open(t.path() + "/root");
  CHECK(s.images().empty());
  std::string tree = t.path() + "/tree";
  mkdir(tree.c_str(), 0755);
  mkdir((tree + "/etc").c_str(), 0755);
  std::ofstream(tree + "/etc/hostname") << "box\n";
  Layer l = s.create_layer(tree, {false, std::nullopt});
  // Kept once, gzip-compressed: no uncompressed tar beside the blob.
  CHECK(l.media_type == oci::kMediaTypeLayerGzip);
  CHECK(!(l.diff_id == l.blob_digest));
  CHECK(access(s.blob_path(l.blob_digest).c_str(), F_OK) == 0);
  CHECK(access(s.blob_path(l.diff_id).c_str(), F_OK) != 0);
  CHECK(s.find_layer(l.diff_id)->dir == s.root() + "/layers/" + l.diff_id.hex());
  CHECK(access((l.dir + "/etc/hostname").c_str(), F_OK) == 0);
  // The same tree again is the same layer.
  CHECK(s.create_layer(tree, {false, std::nullopt}).diff_id == l.diff_id);

  json config = oci::empty_config();
  config["rootfs"]["diff_ids"].push_back(l.diff_id.str());
  config["history"].push_back(oci::History{"", "test", "", "", false}.to_json());
  Image img = s.write_image(config, {"test/img:1"});
  CHECK(img.names == std::vector<std::string>{"test/img:1"});
  CHECK(img.layer_dirs == std::vector<std::string>{l.dir});
  CHECK(s.image("docker.io/test/img:1").manifest_digest == img.manifest_digest);
  CHECK(s.image(img.id().substr(0, 8)).manifest_digest == img.manifest_digest);
  CHECK(s.image(img.manifest_digest.str()).config_digest == img.config_digest);
  CHECK_FALSE(s.find_image("test/img:2"));
  CHECK_THROWS_WITH_AS(s.image("nope"), "no such image: 'nope'", Error);

  s.tag(img, "other");
  CHECK(s.image("other:latest").names.size() == 2);

  Container c = s.create_container("other", "box");
  CHECK(s.container("box").id == c.id);
  CHECK(s.container(c.id.substr(0, 6)).name == "box");
  CHECK_THROWS_AS(s.create_container("other", "box"), Error);
  std::ofstream(c.upper + "/new") << "n";
  auto changes = s.diff("box");
  REQUIRE(changes.size() == 1);
  CHECK(changes[0].kind == 'A');
  CHECK(changes[0].path == "/new");

  CommitOptions o;
  o.message = "msg";
  o.edit_config = [](const json& image_config) {
    json out = image_config;
    out["config"]["Cmd"] = json::array({"sh"});
    return out;
  };
  Image next = s.commit("box", o, "next");
  CHECK(next.diff_ids.size() == 2);
  CHECK(next.layer_dirs.front() != l.dir);  // top first
  CHECK(next.layer_dirs.back() == l.dir);
  CHECK(next.history().back().comment == "msg");
  CHECK(s.container("box").image == next.manifest_digest);
  CHECK(s.diff("box").empty());

  // While the container's lock is held (as strata run holds it) it is running:
  // commit and rm refuse it, even forced, and leave it as it was.
  std::ofstream(c.upper + "/busy") << "b";
  {
    auto use = s.lock_container(c);
    CHECK(s.running(c));
    const char* busy = "container 'box' is running; stop it first";
    CHECK_THROWS_WITH_AS(s.lock_container(c), busy, ContainerRunning);
    CHECK_THROWS_WITH_AS(s.commit("box", o, "snap"), busy, ContainerRunning);
    CHECK_THROWS_WITH_AS(s.remove_container("box", true), busy, ContainerRunning);
    CHECK_FALSE(s.find_image("snap"));
    CHECK(s.diff("box").size() == 1);
  }
  CHECK_FALSE(s.running(c));
  std::remove((c.upper + "/busy").c_str());

  CHECK_THROWS_AS(s.remove_image("next", false), Error);  // the container uses it
  s.remove_container("box");
  CHECK_FALSE(s.find_container("box"));
  auto lines = s.remove_image("next", false);
  CHECK(lines.back().rfind("Deleted: ", 0) == 0);
  auto pr = s.prune();
  CHECK(pr.layers == 1);
  CHECK(s.images().size() == 1);
  CHECK(access((l.dir + "/etc/hostname").c_str(), F_OK) == 0);
}

TEST_CASE("default root") {
  setenv("STRATA_ROOT", "/x/y", 1);
  CHECK(default_root() == "/x/y");
  unsetenv("STRATA_ROOT");
  if (geteuid() == 0) CHECK(default_root() == "/var/lib/strata");
}

namespace {
std::string slurp_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}
bool present(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}
}  // namespace

TEST_CASE("squash_layers: the merge of layers applied in order, whiteouts and opaque dirs kept for the base") {
  TempDir t("/tmp");
  Store s = Store::open(t.path() + "/root");
  auto dir = [&](const std::string& p, mode_t mode = 0755) {
    REQUIRE(::mkdir(p.c_str(), 0755) == 0);
    REQUIRE(::chmod(p.c_str(), mode) == 0);
  };
  auto file = [&](const std::string& p, const std::string& body) { std::ofstream(p) << body; };
  std::string a = t.path() + "/a", b = t.path() + "/b", c = t.path() + "/c";
  dir(a);
  dir(a + "/d");
  file(a + "/d/x", "1");
  file(a + "/f", "file");
  dir(a + "/g");
  file(a + "/g/y", "y");
  file(a + "/h", "h1");
  file(a + "/link1", "hl");
  REQUIRE(::link((a + "/link1").c_str(), (a + "/link2").c_str()) == 0);
  dir(a + "/ro");
  file(a + "/ro/z", "z");
  REQUIRE(::chmod((a + "/ro").c_str(), 0555) == 0);
  dir(b);
  file(b + "/.wh.f", "");
  file(b + "/.wh.base", "");
  file(b + "/g", "now a file");
  file(b + "/h", "h2");
  dir(b + "/d");
  file(b + "/d/.wh..wh..opq", "");
  file(b + "/d/new", "new");
  dir(b + "/ro");
  file(b + "/ro/w", "w");
  REQUIRE(::chmod((b + "/ro").c_str(), 0555) == 0);
  dir(c);
  file(c + "/f", "again");
  dir(c + "/g", 0750);
  file(c + "/g/q", "q");
  std::vector<oci::Digest> ids;
  for (const auto& p : {a, b, c}) ids.push_back(s.create_layer(p, {false, std::nullopt}).diff_id);

  Layer m = s.squash_layers(ids);
  CHECK(m.diff_id != ids[0]);
  CHECK(slurp_file(m.dir + "/f") == "again");
  CHECK_FALSE(present(m.dir + "/.wh.f"));
  CHECK(present(m.dir + "/.wh.base"));
  CHECK(present(m.dir + "/d/.wh..wh..opq"));
  CHECK(slurp_file(m.dir + "/d/new") == "new");
  CHECK_FALSE(present(m.dir + "/d/x"));
  CHECK(present(m.dir + "/g/.wh..wh..opq"));  // a directory over a file hides the base's
  CHECK(slurp_file(m.dir + "/g/q") == "q");
  CHECK_FALSE(present(m.dir + "/g/y"));
  CHECK(slurp_file(m.dir + "/h") == "h2");
  struct stat s1 {}, s2 {}, sro {}, sg {};
  REQUIRE(::lstat((m.dir + "/link1").c_str(), &s1) == 0);
  REQUIRE(::lstat((m.dir + "/link2").c_str(), &s2) == 0);
  CHECK(s1.st_ino == s2.st_ino);
  REQUIRE(::lstat((m.dir + "/ro").c_str(), &sro) == 0);
  CHECK((sro.st_mode & 07777) == 0555);
  CHECK(slurp_file(m.dir + "/ro/z") == "z");
  CHECK(slurp_file(m.dir + "/ro/w") == "w");
  REQUIRE(::lstat((m.dir + "/g").c_str(), &sg) == 0);
  CHECK((sg.st_mode & 07777) == 0750);
  // The merged layers are untouched, and the merge is reproducible.
  CHECK(slurp_file(s.layer(ids[0]).dir + "/f") == "file");
  CHECK(s.squash_layers(ids).diff_id == m.diff_id);
  CHECK(s.squash_layers({ids[0]}).diff_id == ids[0]);
}
