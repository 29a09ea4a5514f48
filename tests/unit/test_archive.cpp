#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <fstream>

#include "strata/archive.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "tar_fixture.hpp"

using namespace strata;

using strata::testing::make_tar;

namespace {

void put(const std::string& path, const std::string& data) {
  std::ofstream(path, std::ios::binary) << data;
}

archive::LayerDigests extract(const std::string& tar, const std::string& dest) {
  UniqueFd fd = open_at(AT_FDCWD, tar, O_RDONLY);
  return archive::extract_layer(fd.get(), dest);
}

}  // namespace

TEST_CASE("the same tree gives the same layer digest, whatever the creation order") {
  TempDir t("/tmp");
  std::string a = t.path() + "/a", b = t.path() + "/b";
  for (const auto& [dir, order] : {std::pair{a, 0}, std::pair{b, 1}}) {
    mkdir(dir.c_str(), 0755);
    mkdir((dir + "/sub").c_str(), 0755);
    std::vector<std::string> names = {"x", "y", "z"};
    if (order == 1) std::reverse(names.begin(), names.end());
    for (const auto& n : names) put(dir + "/sub/" + n, n);
    for (const auto& p : {dir + "/sub/x", dir + "/sub/y", dir + "/sub/z", dir + "/sub", dir}) {
      timespec ts[2] = {{1700000000, 5}, {1700000000, 5}};
      utimensat(AT_FDCWD, p.c_str(), ts, AT_SYMLINK_NOFOLLOW);
    }
  }
  UniqueFd n1(::open("/dev/null", O_WRONLY)), n2(::open("/dev/null", O_WRONLY));
  auto d1 = archive::write_layer(a, n1.get());
  auto d2 = archive::write_layer(b, n2.get());
  CHECK(d1.diff_id == d2.diff_id);
  CHECK(d1.blob_digest == d1.diff_id);
}

TEST_CASE("a changeset's whiteouts and opaque dirs become OCI markers and extract back") {
  if (geteuid() != 0) return;  // mknod of the 0/0 whiteout needs privilege
  TempDir t("/tmp");
  std::string up = t.path() + "/up";
  mkdir(up.c_str(), 0755);
  mkdir((up + "/etc").c_str(), 0755);
  REQUIRE(mknod((up + "/etc/gone").c_str(), S_IFCHR | 0600, makedev(0, 0)) == 0);
  mkdir((up + "/opq").c_str(), 0755);
  REQUIRE(setxattr((up + "/opq").c_str(), "trusted.overlay.opaque", "y", 1, 0) == 0);
  put(up + "/opq/keep", "k");
  std::string tar = t.path() + "/l.tar";
  {
    UniqueFd out(::open(tar.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644));
    archive::write_layer(up, out.get());
  }
  std::string dest = t.path() + "/dest";
  mkdir(dest.c_str(), 0755);
  extract(tar, dest);
  struct stat st {};
  CHECK(lstat((dest + "/etc/.wh.gone").c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(lstat((dest + "/opq/.wh..wh..opq").c_str(), &st) == 0);
  CHECK(lstat((dest + "/opq/keep").c_str(), &st) == 0);
  char v[4];
  CHECK(lgetxattr((dest + "/opq").c_str(), "trusted.overlay.opaque", v, sizeof v) < 0);
}

TEST_CASE("extraction refuses names and links that leave the destination") {
  TempDir t("/tmp");
  std::string dest = t.path() + "/dest";
  auto fresh = [&]() {
    remove_tree_at(AT_FDCWD, dest);
    mkdir(dest.c_str(), 0755);
  };
  fresh();
  CHECK_THROWS_WITH_AS(extract(make_tar(t.path(), {{"../x", 'f', "e"}}), dest), doctest::Contains("'..'"), Error);
  fresh();
  CHECK_THROWS_WITH_AS(extract(make_tar(t.path(), {{"/abs", 'f', "e"}}), dest), doctest::Contains("absolute"), Error);
  fresh();
  CHECK_THROWS_WITH_AS(extract(make_tar(t.path(), {{"l", 'l', t.path()}, {"l/x", 'f', "e"}}), dest),
                       doctest::Contains("symlink"), Error);
  CHECK(access((t.path() + "/x").c_str(), F_OK) != 0);
  fresh();
  CHECK_THROWS_WITH_AS(extract(make_tar(t.path(), {{"h", 'h', "../../etc/passwd"}}), dest), doctest::Contains("'..'"),
                       Error);
  fresh();
  CHECK_THROWS_AS(extract(make_tar(t.path(), {{"h", 'h', "missing"}}), dest), Error);
  // A symlink replaced by a file is replaced, never written through.
  fresh();
  put(t.path() + "/victim", "safe");
  extract(make_tar(t.path(), {{"v", 'l', t.path() + "/victim"}, {"v", 'f', "new"}}), dest);
  std::ifstream victim(t.path() + "/victim");
  std::string content;
  victim >> content;
  CHECK(content == "safe");
}

TEST_CASE("extract reports the digests of what it read") {
  TempDir t("/tmp");
  std::string dest = t.path() + "/dest";
  mkdir(dest.c_str(), 0755);
  std::string tar = make_tar(t.path(), {{"a", 'f', "hello"}, {"b", 'h', "a"}});
  auto d = extract(tar, dest);
  UniqueFd fd = open_at(AT_FDCWD, tar, O_RDONLY);
  CHECK(d.diff_id == oci::sha256_fd(fd.get()));
  CHECK(d.blob_digest == d.diff_id);
  struct stat sa {}, sb {};
  lstat((dest + "/a").c_str(), &sa);
  lstat((dest + "/b").c_str(), &sb);
  CHECK(sa.st_ino == sb.st_ino);
}

TEST_CASE("image archives whose JSON fields have the wrong type are refused with Error naming the file") {
  TempDir t("/tmp");
  const std::string& dir = t.path();
  // docker-archive: Config and Layers must be a file name and a list of them.
  put(dir + "/manifest.json", R"([{"Config":1,"Layers":[]}])");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("manifest.json"), Error);
  put(dir + "/c.json", "{}");
  put(dir + "/manifest.json", R"([{"Config":"c.json","Layers":[7]}])");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("a layer is not a file name"), Error);
  put(dir + "/manifest.json", R"([{"Config":"c.json","Layers":"c.json"}])");
  CHECK_THROWS_AS(archive::read_image_archive(dir), Error);
  unlink((dir + "/manifest.json").c_str());

  // OCI layout: the version, a manifest's mediaType and an entry's platform.
  mkdir((dir + "/blobs").c_str(), 0755);
  mkdir((dir + "/blobs/sha256").c_str(), 0755);
  put(dir + "/oci-layout", R"({"imageLayoutVersion":1})");
  put(dir + "/index.json", R"({"manifests":[]})");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("unsupported OCI layout version"), Error);
  put(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
  auto blob = [&](const std::string& text) {
    oci::Digest d = oci::sha256(text);
    put(dir + "/blobs/sha256/" + d.hex(), text);
    return R"({"mediaType":"application/vnd.oci.image.manifest.v1+json","size":1,"digest":")" + d.str() + "\"";
  };
  put(dir + "/index.json", R"({"manifests":[)" + blob(R"({"mediaType":7})") + "}]}");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("mediaType is not a string"), Error);
  put(dir + "/index.json", R"({"manifests":[)" + blob("[]") + "}]}");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("not a JSON object"), Error);
  // An entry whose platform fields are not strings is for no machine: skipped.
  put(dir + "/index.json", R"({"manifests":[)" + blob("{}") + R"(,"platform":{"architecture":64,"os":"linux"}}]})");
  CHECK_THROWS_WITH_AS(archive::read_image_archive(dir), doctest::Contains("no image for this platform"), Error);
}
