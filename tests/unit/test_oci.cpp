#include <doctest/doctest.h>

#include "strata/error.hpp"
#include "strata/oci.hpp"

using namespace strata;
using namespace strata::oci;

TEST_CASE("sha256 of known inputs") {
  CHECK(sha256("").str() == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256("abc").hex() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  Sha256 h;
  h.update("a");
  h.update("bc");
  CHECK(h.finish() == sha256("abc"));
}

TEST_CASE("digests parse strictly") {
  std::string hex(64, 'a');
  CHECK(Digest::parse("sha256:" + hex).hex() == hex);
  CHECK_FALSE(Digest::try_parse("sha256:" + hex.substr(1)));
  CHECK_FALSE(Digest::try_parse("sha256:" + std::string(64, 'A')));
  CHECK_FALSE(Digest::try_parse(hex));
  CHECK_THROWS_WITH_AS(Digest::parse("sha512:" + hex), doctest::Contains("unsupported digest algorithm"), Error);
}

TEST_CASE("references follow docker's normalisation") {
  auto r = Reference::parse("alpine");
  CHECK(r.str() == "docker.io/library/alpine:latest");
  CHECK(r.familiar() == "alpine:latest");
  CHECK(r.familiar_name() == "alpine");
  r = Reference::parse("team/app:1.2");
  CHECK(r.str() == "docker.io/team/app:1.2");
  CHECK(r.familiar() == "team/app:1.2");
  r = Reference::parse("localhost:5000/x/y:z");
  CHECK(r.domain == "localhost:5000");
  CHECK(r.path == "x/y");
  CHECK(r.tag == "z");
  CHECK(r.familiar() == "localhost:5000/x/y:z");
  r = Reference::parse("localhost/app");
  CHECK(r.domain == "localhost");
  CHECK(r.tag == "latest");
  std::string hex(64, 'b');
  r = Reference::parse("quay.io/a/b@sha256:" + hex);
  CHECK(r.tag.empty());
  CHECK(r.digest->hex() == hex);
  CHECK(r.str() == "quay.io/a/b@sha256:" + hex);
  r = Reference::parse("index.docker.io/library/busybox:1");
  CHECK(r.familiar() == "busybox:1");
  r = Reference::parse("a__b.c-d---e");
  CHECK(r.path == "library/a__b.c-d---e");
}

TEST_CASE("a docker.io path whose first component looks like a host keeps its domain in the familiar form") {
  auto r = Reference::parse("docker.io/my.org/app:1");
  CHECK(r.familiar() == "docker.io/my.org/app:1");
  CHECK(Reference::parse(r.familiar()).str() == r.str());
  CHECK(Reference::parse("docker.io/localhost/app").familiar_name() == "docker.io/localhost/app");
  CHECK(Reference::parse("docker.io/team/app").familiar_name() == "team/app");
  CHECK(Reference::parse("docker.io/library/alpine").familiar_name() == "alpine");
}

TEST_CASE("the 255-character limit is on the normalised name, which str() prints") {
  // Found by fuzz_reference: "x" * 250 was accepted, and its str()
  // "docker.io/library/xxx..." was not.
  std::string long_path(250, 'x');
  CHECK_THROWS_WITH_AS(Reference::parse(long_path), doctest::Contains("longer than 255"), UsageError);
  std::string fits(255 - std::string("docker.io/library/").size(), 'x');
  auto r = Reference::parse(fits);
  CHECK(r.name().size() == 255);
  CHECK(Reference::parse(r.str()).str() == r.str());
}

TEST_CASE("invalid references are usage errors") {
  for (const char* bad : {"", "UPPER", "a:", ":tag", "a/../b", "a//b", "-a", "a-", "a@sha256:12", "a:b:c", "a b",
                          "a:-tag", "host:port/x"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(Reference::parse(bad), UsageError);
  }
  CHECK_THROWS_WITH(Reference::parse("UPPER"), doctest::Contains("must be lowercase"));
}

TEST_CASE("rfc3339") {
  CHECK(parse_rfc3339("1970-01-01T00:00:00Z") == 0);
  CHECK(parse_rfc3339("2024-01-01T00:00:00.123456789Z") == 1704067200);
  CHECK(parse_rfc3339("2024-01-01T01:00:00+01:00") == 1704067200);
  CHECK_FALSE(parse_rfc3339("yesterday"));
  CHECK_FALSE(parse_rfc3339("2024-01-01T00:00:00"));
}

TEST_CASE("manifest JSON round trip and validation") {
  Manifest m;
  m.config.media_type = kMediaTypeConfig;
  m.config.digest = sha256("{}");
  m.config.size = 2;
  Descriptor l;
  l.media_type = kMediaTypeLayer;
  l.digest = sha256("layer");
  l.size = 5;
  m.layers.push_back(l);
  auto back = Manifest::from_json(m.to_json(), "test");
  CHECK(back.config.digest == m.config.digest);
  REQUIRE(back.layers.size() == 1);
  CHECK(back.layers[0].size == 5);
  json bad = m.to_json();
  bad["layers"][0]["digest"] = "sha256:nothex";
  CHECK_THROWS_WITH_AS(Manifest::from_json(bad, "x"), doctest::Contains("invalid descriptor in x"), Error);
  bad = m.to_json();
  bad["schemaVersion"] = 1;
  CHECK_THROWS_AS(Manifest::from_json(bad, "x"), Error);
}

TEST_CASE("manifest and descriptor fields of the wrong JSON type are refused with Error") {
  Manifest m;
  m.config.media_type = kMediaTypeConfig;
  m.config.digest = sha256("{}");
  m.config.size = 2;
  const json good = m.to_json();
  json bad = good;
  bad["mediaType"] = 1;
  CHECK_THROWS_WITH_AS(Manifest::from_json(bad, "x"), "invalid manifest in x: mediaType is not a string", Error);
  bad = good;
  bad["schemaVersion"] = "2";
  CHECK_THROWS_WITH_AS(Manifest::from_json(bad, "x"), "invalid manifest in x: schemaVersion is not 2", Error);
  bad = good;
  bad["schemaVersion"] = 2.5;
  CHECK_THROWS_AS(Manifest::from_json(bad, "x"), Error);
  bad = good;
  bad["config"]["mediaType"] = json::array();
  CHECK_THROWS_WITH_AS(Manifest::from_json(bad, "x"), doctest::Contains("mediaType is not a string"), Error);
  // A size that is no int64 (UBSan: float-cast-overflow before).
  bad = good;
  bad["config"]["size"] = 1e300;
  CHECK_THROWS_WITH_AS(Manifest::from_json(bad, "x"), doctest::Contains("size is not an integer"), Error);
  bad["config"]["size"] = 2.0;
  CHECK_THROWS_AS(Manifest::from_json(bad, "x"), Error);
}

TEST_CASE("config helpers") {
  json c = empty_config();
  CHECK(c["os"] == "linux");
  c["rootfs"]["diff_ids"].push_back(sha256("a").str());
  c["history"].push_back(History{"2024-01-01T00:00:00Z", "RUN x", "", "msg", false}.to_json());
  CHECK(config_diff_ids(c).size() == 1);
  auto h = config_history(c);
  REQUIRE(h.size() == 1);
  CHECK(h[0].created_by == "RUN x");
  CHECK(h[0].comment == "msg");
}
