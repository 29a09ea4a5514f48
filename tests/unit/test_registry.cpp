#include <doctest/doctest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"
#include "strata/registry.hpp"

using namespace strata;
using namespace strata::registry;
using oci::json;

TEST_CASE("WWW-Authenticate: Bearer with quoted parameters") {
  auto c = parse_www_authenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull")");
  REQUIRE(c.size() == 1);
  CHECK(c[0].scheme == "bearer");
  CHECK(c[0].params["realm"] == "https://auth.docker.io/token");
  CHECK(c[0].params["service"] == "registry.docker.io");
  CHECK(c[0].params["scope"] == "repository:library/alpine:pull");
}

TEST_CASE("WWW-Authenticate: several challenges, tokens, escapes, odd spacing") {
  auto c = parse_www_authenticate(R"(Basic realm="Registry \"x\"", charset=UTF-8 ,  Bearer realm=https://h/t , service = s)");
  REQUIRE(c.size() == 2);
  CHECK(c[0].scheme == "basic");
  CHECK(c[0].params["realm"] == "Registry \"x\"");
  CHECK(c[0].params["charset"] == "UTF-8");
  CHECK(c[1].scheme == "bearer");
  CHECK(c[1].params["realm"] == "https://h/t");
  CHECK(c[1].params["service"] == "s");
  // Scheme and parameter names are case-insensitive.
  c = parse_www_authenticate(R"(BASIC Realm="r")");
  REQUIRE(c.size() == 1);
  CHECK(c[0].scheme == "basic");
  CHECK(c[0].params["realm"] == "r");
  // A bare scheme, and garbage, never throw.
  CHECK(parse_www_authenticate("Negotiate").size() == 1);
  CHECK(parse_www_authenticate("").empty());
  CHECK_NOTHROW(parse_www_authenticate("=,,\"unterminated"));
  CHECK_NOTHROW(parse_www_authenticate("Bearer realm=\"never closed"));
}

TEST_CASE("credential keys normalise docker.io's spellings") {
  CHECK(credential_key("docker.io") == "docker.io");
  CHECK(credential_key("https://index.docker.io/v1/") == "docker.io");
  CHECK(credential_key("registry-1.docker.io") == "docker.io");
  CHECK(credential_key("LOCALHOST:5000") == "localhost:5000");
  CHECK(credential_key("http://127.0.0.1:5000/v2/") == "127.0.0.1:5000");
  CHECK_THROWS_AS(credential_key("https://"), UsageError);
}

TEST_CASE("auth.json: save, find, replace, remove; mode 0600; other content kept") {
  TempDir t("/tmp");
  std::string path = t.path() + "/sub/auth.json";
  AuthFiles files{{path}, path};
  CHECK_FALSE(find_credentials(files, "localhost:5000"));
  save_credentials(path, "localhost:5000", {"alice", "s3cret:with:colons"});
  struct stat st {};
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto c = find_credentials(files, "localhost:5000", "team/app");
  REQUIRE(c);
  CHECK(c->username == "alice");
  CHECK(c->password == "s3cret:with:colons");
  // The file is what podman writes: base64 of USER:PASSWORD under "auths".
  json j = json::parse(read_file(path));
  CHECK(j["auths"]["localhost:5000"]["auth"] == "YWxpY2U6czNjcmV0OndpdGg6Y29sb25z");
  // Fields strata does not know survive a save.
  j["credHelpers"] = {{"x", "y"}};
  std::ofstream(path) << j.dump();
  save_credentials(path, "localhost:5000", {"bob", "pw"});
  j = json::parse(read_file(path));
  CHECK(j["credHelpers"]["x"] == "y");
  CHECK(find_credentials(files, "localhost:5000")->username == "bob");
  CHECK(remove_credentials(path, "localhost:5000"));
  CHECK_FALSE(remove_credentials(path, "localhost:5000"));
  CHECK_FALSE(find_credentials(files, "localhost:5000"));
}

TEST_CASE("auth.json: docker's spellings and repository entries are found; bad files are named") {
  TempDir t("/tmp");
  std::string docker = t.path() + "/config.json";
  std::ofstream(docker) << R"({"auths":{"https://index.docker.io/v1/":{"auth":"dTpw"},
                                "quay.io/team":{"auth":"dGVhbTp0"}, "quay.io":{"auth":"YW55OmE="}}})";
  std::string empty = t.path() + "/missing.json";
  AuthFiles files{{empty, docker}, empty};
  auto c = find_credentials(files, "docker.io", "library/debian");
  REQUIRE(c);
  CHECK(c->username == "u");
  CHECK(c->password == "p");
  CHECK(find_credentials(files, "quay.io", "team/app")->username == "team");
  CHECK(find_credentials(files, "quay.io", "other/app")->username == "any");
  std::ofstream(docker) << "{not json";
  CHECK_THROWS_WITH_AS(find_credentials(files, "docker.io"), doctest::Contains("config.json"), Error);
  std::ofstream(docker, std::ios::trunc) << R"({"auths":{"x.io":{"auth":"!!!"}}})";
  CHECK_THROWS_WITH_AS(find_credentials(files, "x.io"), doctest::Contains("not base64"), Error);
}

TEST_CASE("AuthFiles: --authfile and REGISTRY_AUTH_FILE choose one file") {
  CHECK(AuthFiles::standard("/x/auth.json").read == std::vector<std::string>{"/x/auth.json"});
  CHECK(AuthFiles::standard("/x/auth.json").write == "/x/auth.json");
  ::setenv("REGISTRY_AUTH_FILE", "/y/a.json", 1);
  CHECK(AuthFiles::standard().write == "/y/a.json");
  ::unsetenv("REGISTRY_AUTH_FILE");
  ::setenv("XDG_RUNTIME_DIR", "/run/user/77", 1);
  ::setenv("HOME", "/home/h", 1);
  ::unsetenv("XDG_CONFIG_HOME");
  auto f = AuthFiles::standard();
  CHECK(f.write == "/run/user/77/containers/auth.json");
  CHECK(f.read == std::vector<std::string>{"/run/user/77/containers/auth.json", "/home/h/.config/containers/auth.json",
                                           "/home/h/.docker/config.json"});
}

TEST_CASE("registries.conf: search list, registries, aliases, errors with lines") {
  auto conf = RegistriesConf::parse(R"(
unqualified-search-registries = ["quay.io", "docker.io"]
short-name-mode = "enforcing"

[[registry]]
location = "localhost:5000"
insecure = true

[[registry]]
prefix = "evil.example.com/team"
location = "evil.example.com/team"
blocked = true

[[registry]]
location = "*.internal"
insecure = true

[aliases]
"app" = "localhost:5000/app"
)",
                                    "test.conf");
  REQUIRE(conf.unqualified_search);
  CHECK(*conf.unqualified_search == std::vector<std::string>{"quay.io", "docker.io"});
  REQUIRE(conf.registries.size() == 3);
  CHECK(conf.find("localhost:5000/x/y")->insecure);
  CHECK(conf.find("localhost:5000")->insecure);
  CHECK(conf.find("localhost:50001/x") == nullptr);
  CHECK(conf.find("evil.example.com/team/app")->blocked);
  CHECK(conf.find("evil.example.com/teammate/app") == nullptr);
  CHECK(conf.find("a.b.internal:443/x")->insecure);
  CHECK(conf.find("internal/x") == nullptr);
  CHECK(conf.aliases.at("app") == "localhost:5000/app");

  CHECK_THROWS_WITH_AS(RegistriesConf::parse("unqualified-search-registries = \"docker.io\"\n", "a.conf"),
                       doctest::Contains("a.conf: line 1: unqualified-search-registries must be an array"), Error);
  CHECK_THROWS_WITH_AS(RegistriesConf::parse("\n[[registry]]\nlocation = 5\n", "b.conf"),
                       doctest::Contains("b.conf: line 3: location must be a string"), Error);
  CHECK_THROWS_WITH_AS(RegistriesConf::parse("x = [\n", "c.conf"), doctest::Contains("c.conf: line"), Error);
  // Version 1 of the format.
  auto v1 = RegistriesConf::parse("[registries.search]\nregistries = ['r.io']\n[registries.insecure]\nregistries = ['i.io']\n",
                                  "v1.conf");
  CHECK(*v1.unqualified_search == std::vector<std::string>{"r.io"});
  CHECK(v1.find("i.io/x")->insecure);
}

TEST_CASE("registries.conf: drop-ins merge over the main file") {
  auto conf = RegistriesConf::parse("unqualified-search-registries = ['a.io']\n[[registry]]\nlocation='x.io'\n", "main");
  conf.merge(RegistriesConf::parse("[[registry]]\nlocation='x.io'\ninsecure=true\n[aliases]\nk='x.io/k'\n", "drop"));
  CHECK(*conf.unqualified_search == std::vector<std::string>{"a.io"});
  CHECK(conf.registries.size() == 1);
  CHECK(conf.find("x.io/y")->insecure);
  CHECK(conf.aliases.at("k") == "x.io/k");
}

TEST_CASE("short names resolve through aliases, then the search list, else docker.io") {
  RegistriesConf none;
  auto r = resolve_reference("debian", none);
  REQUIRE(r.size() == 1);
  CHECK(r[0].str() == "docker.io/library/debian:latest");
  CHECK(has_domain("localhost/app"));
  CHECK(has_domain("127.0.0.1:5000/app"));
  CHECK_FALSE(has_domain("app:1"));
  CHECK_FALSE(has_domain("team/app"));

  auto conf = RegistriesConf::parse(
      "unqualified-search-registries = ['quay.io', 'docker.io']\n[aliases]\n'app' = 'localhost:5000/team/app'\n", "t");
  r = resolve_reference("app:2", conf);
  REQUIRE(r.size() == 1);
  CHECK(r[0].str() == "localhost:5000/team/app:2");
  std::string digest = "sha256:" + std::string(64, 'a');
  r = resolve_reference("app@" + digest, conf);
  CHECK(r[0].str() == "localhost:5000/team/app@" + digest);
  r = resolve_reference("debian:12", conf);
  REQUIRE(r.size() == 2);
  CHECK(r[0].str() == "quay.io/debian:12");
  CHECK(r[1].str() == "docker.io/library/debian:12");
  // A name with a registry is taken as it is.
  r = resolve_reference("localhost:5000/x:1", conf);
  REQUIRE(r.size() == 1);
  CHECK(r[0].str() == "localhost:5000/x:1");
  // No search registries at all is an error for a short name.
  auto empty = RegistriesConf::parse("unqualified-search-registries = []\n", "e");
  CHECK_THROWS_WITH_AS(resolve_reference("debian", empty), doctest::Contains("unqualified-search-registries"), UsageError);
  CHECK_THROWS_AS(resolve_reference("UPPER", none), UsageError);
  CHECK(api_host("docker.io") == "registry-1.docker.io");
  CHECK(api_host("localhost:5000") == "localhost:5000");
}

namespace {
json index_of(std::initializer_list<json> platforms) {
  json idx = {{"schemaVersion", 2}, {"mediaType", oci::kMediaTypeIndex}, {"manifests", json::array()}};
  int n = 0;
  for (const auto& p : platforms) {
    std::string hex(64, static_cast<char>('a' + n++));
    idx["manifests"].push_back(
        {{"mediaType", oci::kMediaTypeManifest}, {"digest", "sha256:" + hex}, {"size", 100}, {"platform", p}});
  }
  return idx;
}
}  // namespace

TEST_CASE("platforms: parse, host, and the entry of an index that runs here") {
  auto p = Platform::parse("linux/arm64/v8");
  CHECK(p.os == "linux");
  CHECK(p.architecture == "arm64");
  CHECK(p.variant == "v8");
  CHECK(p.str() == "linux/arm64/v8");
  CHECK(Platform::parse("Linux/AMD64").str() == "linux/amd64");
  CHECK_THROWS_AS(Platform::parse("linux"), UsageError);
  CHECK_THROWS_AS(Platform::parse("linux//v7"), UsageError);
  CHECK_THROWS_AS(Platform::parse("a/b/c/d"), UsageError);
  CHECK(Platform::host().architecture == oci::host_architecture());

  json idx = index_of({{{"os", "linux"}, {"architecture", "amd64"}},
                       {{"os", "linux"}, {"architecture", "arm"}, {"variant", "v6"}},
                       {{"os", "linux"}, {"architecture", "arm"}, {"variant", "v7"}},
                       {{"os", "linux"}, {"architecture", "arm64"}},
                       {{"os", "windows"}, {"architecture", "amd64"}},
                       {{"os", "unknown"}, {"architecture", "unknown"}}});
  CHECK(select_platform(idx, Platform::parse("linux/amd64"))->digest.hex() == std::string(64, 'a'));
  CHECK(select_platform(idx, Platform::parse("linux/arm/v6"))->digest.hex() == std::string(64, 'b'));
  CHECK(select_platform(idx, Platform::parse("linux/arm/v7"))->digest.hex() == std::string(64, 'c'));
  // No variant asked: the architecture's default one (arm: v7; arm64: v8 matches an entry without one).
  CHECK(select_platform(idx, Platform::parse("linux/arm"))->digest.hex() == std::string(64, 'c'));
  CHECK(select_platform(idx, Platform::parse("linux/arm64/v8"))->digest.hex() == std::string(64, 'd'));
  CHECK(select_platform(idx, Platform::parse("windows/amd64"))->digest.hex() == std::string(64, 'e'));
  CHECK_FALSE(select_platform(idx, Platform::parse("linux/s390x")));
  CHECK_FALSE(select_platform(idx, Platform::parse("linux/arm/v5")));
  // Entries that are not image manifests are skipped.
  idx["manifests"][0]["mediaType"] = oci::kMediaTypeIndex;
  CHECK_FALSE(select_platform(idx, Platform::parse("linux/amd64")));
}

TEST_CASE("platforms: an index entry whose platform fields are not strings is skipped") {
  json idx = index_of({{{"os", "linux"}, {"architecture", 64}},
                       {{"os", json::array()}, {"architecture", "amd64"}},
                       {{"os", "linux"}, {"architecture", "amd64"}, {"variant", nullptr}},
                       {{"os", "linux"}, {"architecture", "amd64"}}});
  auto chosen = select_platform(idx, Platform::parse("linux/amd64"));
  REQUIRE(chosen);
  CHECK(chosen->digest.hex() == std::string(64, 'd'));
}

namespace {
json image_manifest(const char* type = oci::kMediaTypeManifest) {
  std::string d = "sha256:" + std::string(64, 'f');
  return {{"schemaVersion", 2},
          {"mediaType", type},
          {"config", {{"mediaType", oci::kMediaTypeConfig}, {"digest", d}, {"size", 10}}},
          {"layers", json::array({{{"mediaType", oci::kMediaTypeLayerGzip}, {"digest", d}, {"size", 20}}})}};
}
}  // namespace

TEST_CASE("manifests: kinds, media types, size limit, schema 1, foreign layers") {
  auto info = check_manifest(image_manifest().dump(), "", "r");
  CHECK(info.kind == ManifestKind::image);
  CHECK(info.media_type == oci::kMediaTypeManifest);
  json docker = image_manifest(oci::kMediaTypeDockerManifest);
  docker["config"]["mediaType"] = oci::kMediaTypeDockerConfig;
  docker["layers"][0]["mediaType"] = oci::kMediaTypeDockerLayerGzip;
  CHECK(check_manifest(docker.dump(), oci::kMediaTypeDockerManifest, "r").media_type == oci::kMediaTypeDockerManifest);
  // No mediaType field: the Content-Type header, else the shape.
  json bare = image_manifest();
  bare.erase("mediaType");
  CHECK(check_manifest(bare.dump(), "application/vnd.oci.image.manifest.v1+json; charset=utf-8", "r").kind ==
        ManifestKind::image);
  CHECK(check_manifest(bare.dump(), "application/json", "r").media_type == oci::kMediaTypeManifest);
  json idx = index_of({{{"os", "linux"}, {"architecture", "amd64"}}});
  CHECK(check_manifest(idx.dump(), "", "r").kind == ManifestKind::index);
  idx["mediaType"] = oci::kMediaTypeDockerManifestList;
  CHECK(check_manifest(idx.dump(), "", "r").kind == ManifestKind::index);

  CHECK_THROWS_WITH_AS(check_manifest(std::string(kMaxManifestSize + 1, ' '), "", "app:1"),
                       doctest::Contains("app:1: the manifest is larger than 4 MiB"), Error);
  CHECK_THROWS_WITH_AS(check_manifest(R"({"schemaVersion":1,"name":"x","fsLayers":[]})", "", "old:1"),
                       doctest::Contains("schema 1"), Error);
  CHECK_THROWS_WITH_AS(check_manifest("{}", "application/vnd.docker.distribution.manifest.v1+prettyjws", "old:1"),
                       doctest::Contains("schema 1"), Error);
  json odd = image_manifest("application/vnd.example.thing+json");
  CHECK_THROWS_WITH_AS(check_manifest(odd.dump(), "", "x"), doctest::Contains("unknown manifest media type"), Error);
  CHECK_THROWS_WITH_AS(check_manifest("not json", "", "x"), doctest::Contains("not a JSON object"), Error);
  json helm = image_manifest();
  helm["config"]["mediaType"] = "application/vnd.cncf.helm.config.v1+json";
  CHECK_THROWS_WITH_AS(check_manifest(helm.dump(), "", "x"), doctest::Contains("not a container image"), Error);
  json foreign = docker;
  foreign["layers"][0]["mediaType"] = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
  CHECK_THROWS_WITH_AS(check_manifest(foreign.dump(), "", "x"), doctest::Contains("cannot store"), Error);
  CHECK(known_layer_media_type(oci::kMediaTypeLayerZstd));
  CHECK_FALSE(known_layer_media_type("application/octet-stream"));
}
