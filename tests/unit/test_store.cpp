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

TEST_CASE("config changes parse as Dockerfile instructions") {
  json c = oci::empty_config();
  apply_config_change(c, "CMD [\"node\", \"app.js\"]");
  CHECK(c["config"]["Cmd"] == json::array({"node", "app.js"}));
  apply_config_change(c, "ENTRYPOINT /bin/run --x");
  CHECK(c["config"]["Entrypoint"] == json::array({"/bin/sh", "-c", "/bin/run --x"}));
  apply_config_change(c, "ENV A=1 B=\"two words\"");
  apply_config_change(c, "ENV A 3");
  CHECK(c["config"]["Env"] == json::array({"B=two words", "A=3"}));
  apply_config_change(c, "label x=y");
  CHECK(c["config"]["Labels"]["x"] == "y");
  apply_config_change(c, "EXPOSE 80 53/udp");
  CHECK(c["config"]["ExposedPorts"].contains("80/tcp"));
  CHECK(c["config"]["ExposedPorts"].contains("53/udp"));
  apply_config_change(c, "VOLUME /data");
  CHECK(c["config"]["Volumes"].contains("/data"));
  apply_config_change(c, "WORKDIR /app");
  apply_config_change(c, "USER 1000:1000");
  apply_config_change(c, "STOPSIGNAL SIGTERM");
  CHECK(c["config"]["WorkingDir"] == "/app");
  CHECK(c["config"]["User"] == "1000:1000");
  CHECK_THROWS_AS(apply_config_change(c, "RUN true"), UsageError);
  CHECK_THROWS_AS(apply_config_change(c, "ENV"), UsageError);
  CHECK_THROWS_AS(apply_config_change(c, "EXPOSE http"), UsageError);
}

TEST_CASE("a store: layer from a directory, image, tag, container, commit") {
  TempDir t("/tmp");
  Store s = Store::open(t.path() + "/root");
  CHECK(s.images().empty());
  std::string tree = t.path() + "/tree";
  mkdir(tree.c_str(), 0755);
  mkdir((tree + "/etc").c_str(), 0755);
  std::ofstream(tree + "/etc/hostname") << "box\n";
  Layer l = s.create_layer(tree, {false, std::nullopt});
  CHECK(l.diff_id == l.blob_digest);
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
  o.changes = {"CMD sh"};
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
