// The build executor and its pure parts: --chown resolution, context source
// expansion and digests, safe tar extraction, the cache files, and whole
// builds against an in-memory store with a mounter that needs no FUSE.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <sstream>

#include "strata/build_executor.hpp"
#include "strata/fd.hpp"
#include "tar_fixture.hpp"

using namespace strata::build;
using strata::TempDir;
using strata::UniqueFd;

using strata::testing::make_tar;

namespace {

void write(const std::string& path, const std::string& content, mode_t mode = 0644) {
  std::ofstream(path, std::ios::binary) << content;
  ::chmod(path.c_str(), mode);
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::lstat(path.c_str(), &st) == 0;
}

std::string extract_error(const std::string& tar, const std::string& dest) {
  UniqueFd in(::open(tar.c_str(), O_RDONLY));
  UniqueFd d(::open(dest.c_str(), O_RDONLY | O_DIRECTORY));
  try {
    extract_tar_beneath(in.get(), d.get(), "ADD x.tar", std::nullopt);
  } catch (const strata::Error& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("--chown: names from the image's passwd and group, numbers as given") {
  const std::string passwd = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n";
  const std::string group = "root:x:0:\nstaff:x:50:\n";
  auto o = resolve_chown("app", passwd, group);
  CHECK(o.uid == 1000);
  CHECK(o.gid == 1000);  // docker: no group given -> the uid's number
  o = resolve_chown("app:staff", passwd, group);
  CHECK(o.gid == 50);
  o = resolve_chown("app", passwd, group, true);
  CHECK((o.uid == 1000 && o.gid == 1001));  // USER: the primary group
  o = resolve_chown("7:8", "", "");
  CHECK((o.uid == 7 && o.gid == 8));
  CHECK_THROWS_WITH(resolve_chown("nobody", passwd, group),
                    "--chown 'nobody': no user 'nobody' in the image's /etc/passwd");
  CHECK_THROWS_WITH(resolve_chown("app:wheel", passwd, group),
                    "--chown 'app:wheel': no group 'wheel' in the image's /etc/group");
}

TEST_CASE("--chown: a name whose id is 4294967295 ((uid_t)-1) is refused, not reported missing") {
  const std::string passwd = "root:x:0:0:root:/root:/bin/sh\nhuge:x:4294967295:0::/:/bin/sh\n";
  const std::string group = "root:x:0:\nhugegrp:x:4294967295:\n";
  CHECK_THROWS_WITH(resolve_chown("huge", passwd, group),
                    "user 'huge' has the id '4294967295' in /etc/passwd, which cannot be used (ids go from 0 to "
                    "4294967294)");
  CHECK_THROWS_WITH(resolve_chown("root:hugegrp", passwd, group),
                    "group 'hugegrp' has the id '4294967295' in /etc/group, which cannot be used (ids go from 0 to "
                    "4294967294)");
  CHECK_THROWS_WITH(resolve_chown("4294967295", passwd, group), doctest::Contains("out of range"));
  CHECK_THROWS_WITH(resolve_chown("0:4294967295", passwd, group), doctest::Contains("out of range"));
}

TEST_CASE("sources: globs, .dockerignore, and no way out of the context") {
  TempDir ctx("/tmp");
  ::mkdir((ctx.path() + "/src").c_str(), 0755);
  write(ctx.path() + "/src/a.txt", "a");
  write(ctx.path() + "/src/b.txt", "b");
  write(ctx.path() + "/src/c.md", "c");
  UniqueFd root(::open(ctx.path().c_str(), O_RDONLY | O_DIRECTORY));
  IgnoreMatcher none;
  CHECK(expand_sources(root.get(), "src/*.txt", none) == std::vector<std::string>{"src/a.txt", "src/b.txt"});
  CHECK(expand_sources(root.get(), "./src/../src/c.md", none) == std::vector<std::string>{"src/c.md"});
  auto ignore = IgnoreMatcher::parse("src/b.txt\n", ".dockerignore");
  CHECK(expand_sources(root.get(), "src/*.txt", ignore) == std::vector<std::string>{"src/a.txt"});
  CHECK_THROWS_WITH(expand_sources(root.get(), "../etc/passwd", none),
                    "forbidden path outside the build context: '../etc/passwd'");
  CHECK_THROWS_WITH(expand_sources(root.get(), "src/../../x", none),
                    "forbidden path outside the build context: 'src/../../x'");
}

TEST_CASE("source digests change with content and mode, not with mtime, and skip ignored files") {
  TempDir ctx("/tmp");
  write(ctx.path() + "/f", "one");
  ::mkdir((ctx.path() + "/d").c_str(), 0755);
  write(ctx.path() + "/d/g", "two");
  write(ctx.path() + "/d/ignored", "x");
  UniqueFd root(::open(ctx.path().c_str(), O_RDONLY | O_DIRECTORY));
  auto ignore = IgnoreMatcher::parse("d/ignored\n", ".dockerignore");
  std::string d1 = digest_sources(root.get(), {"f", "d"}, ignore);
  CHECK(d1.size() == 32);
  struct timespec t[2] = {{1, 0}, {1, 0}};
  ::utimensat(AT_FDCWD, (ctx.path() + "/f").c_str(), t, 0);
  CHECK(digest_sources(root.get(), {"f", "d"}, ignore) == d1);
  write(ctx.path() + "/d/ignored", "changed");
  CHECK(digest_sources(root.get(), {"f", "d"}, ignore) == d1);
  write(ctx.path() + "/d/g", "TWO");
  std::string d2 = digest_sources(root.get(), {"f", "d"}, ignore);
  CHECK(d2 != d1);
  ::chmod((ctx.path() + "/f").c_str(), 0755);
  CHECK(digest_sources(root.get(), {"f", "d"}, ignore) != d2);
}

TEST_CASE("ADD tar: recognised, extracted, hostile entries refused") {
  TempDir dir("/tmp");
  std::string good = make_tar(dir.path(), {{"top/", 'd', ""}, {"top/file", 'f', "hello"}, {"top/link", 'l', "file"},
                                           {"top/hard", 'h', "top/file"}});
  {
    UniqueFd fd(::open(good.c_str(), O_RDONLY));
    CHECK(is_tar_archive(fd.get()));
    write(dir.path() + "/plain", "not a tar at all");
    UniqueFd p(::open((dir.path() + "/plain").c_str(), O_RDONLY));
    CHECK_FALSE(is_tar_archive(p.get()));
  }
  ::mkdir((dir.path() + "/out").c_str(), 0755);
  CHECK(extract_error(good, dir.path() + "/out") == "(no error)");
  CHECK(slurp(dir.path() + "/out/top/file") == "hello");
  CHECK(slurp(dir.path() + "/out/top/hard") == "hello");

  ::mkdir((dir.path() + "/evil").c_str(), 0755);
  ::mkdir((dir.path() + "/evil/dest").c_str(), 0755);
  std::string dest = dir.path() + "/evil/dest";
  std::string dotdot = make_tar(dir.path(), {{"../escaped", 'f', "x"}});
  CHECK(extract_error(dotdot, dest) == "ADD x.tar: refusing entry '../escaped': path contains '..'");
  CHECK_FALSE(exists(dir.path() + "/evil/escaped"));
  std::string abs = make_tar(dir.path(), {{"/tmp/strata-abs-escape", 'f', "x"}});
  CHECK(extract_error(abs, dest) == "ADD x.tar: refusing entry '/tmp/strata-abs-escape': absolute path");
  std::string through = make_tar(dir.path(), {{"link", 'l', ".."}, {"link/escaped", 'f', "x"}});
  CHECK(extract_error(through, dest) ==
        "ADD x.tar: refusing entry 'link/escaped': 'link' on its path is a symlink or not a directory");
  CHECK_FALSE(exists(dir.path() + "/evil/escaped"));
  std::string hard = make_tar(dir.path(), {{"h", 'h', "../../etc/passwd"}});
  CHECK(extract_error(hard, dest) == "ADD x.tar: refusing hardlink target '../../etc/passwd': path contains '..'");
  std::string later = make_tar(dir.path(), {{"h2", 'h', "later"}, {"later", 'f', "x"}});
  CHECK(extract_error(later, dest).find("is not in the archive before it") != std::string::npos);
  std::string big_id = make_tar(dir.path(), {{"f", 'f', "x", 4294967295LL, 0}});
  CHECK(extract_error(big_id, dest) ==
        "ADD x.tar: refusing 'f': owner uid 4294967295 is not a valid id (0 to 4294967294)");
}

TEST_CASE("ADD tar: merges into the destination; .wh. names and the root entry are not special") {
  TempDir dir("/tmp");
  std::string dest = dir.path() + "/dest";
  ::mkdir(dest.c_str(), 0750);
  ::mkdir((dest + "/keep").c_str(), 0755);
  write(dest + "/keep/old", "old");
  write(dest + "/replaced", "before");
  std::string tar = make_tar(dir.path(), {{"./", 'd', ""},
                                          {"keep/", 'd', ""},
                                          {"keep/new", 'f', "new"},
                                          {"replaced", 'f', "after"},
                                          {".wh.keep", 'f', ""},
                                          {"keep/.wh..wh..opq", 'f', ""}});
  CHECK(extract_error(tar, dest) == "(no error)");
  CHECK(slurp(dest + "/keep/old") == "old");  // merged, not replaced
  CHECK(slurp(dest + "/keep/new") == "new");
  CHECK(slurp(dest + "/replaced") == "after");
  CHECK(exists(dest + "/.wh.keep"));  // an ordinary file for ADD
  CHECK(exists(dest + "/keep/.wh..wh..opq"));
  struct stat st {};
  REQUIRE(::stat(dest.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0750);  // "./" does not change the destination
}

TEST_CASE("ADD tar --chown: every entry and the parents it needs take the owner") {
  if (::geteuid() != 0) return;  // chown needs root
  TempDir dir("/tmp");
  std::string dest = dir.path() + "/dest";
  ::mkdir(dest.c_str(), 0755);
  std::string tar = make_tar(dir.path(), {{"a/b/file", 'f', "x", 7, 8}, {"a/b/link", 'l', "file", 9, 9}});
  UniqueFd in(::open(tar.c_str(), O_RDONLY));
  UniqueFd d(::open(dest.c_str(), O_RDONLY | O_DIRECTORY));
  extract_tar_beneath(in.get(), d.get(), "ADD x.tar", Owner{1000, 1001});
  for (const char* p : {"/a", "/a/b", "/a/b/file", "/a/b/link"}) {
    struct stat st {};
    REQUIRE(::lstat((dest + p).c_str(), &st) == 0);
    CHECK(st.st_uid == 1000);
    CHECK(st.st_gid == 1001);
  }
  in = UniqueFd(::open(tar.c_str(), O_RDONLY));
  extract_tar_beneath(in.get(), d.get(), "ADD x.tar", std::nullopt);
  struct stat st {};
  REQUIRE(::lstat((dest + "/a/b/file").c_str(), &st) == 0);
  CHECK(st.st_uid == 7);
  CHECK(st.st_gid == 8);
}

TEST_CASE("cache entries: written atomically, read back, bad keys refused") {
  TempDir dir("/tmp");
  std::string key(32, 'a');
  CHECK_FALSE(read_cache_entry(dir.path() + "/cache", key).has_value());
  write_cache_entry(dir.path() + "/cache", dir.path(), key, "{\"layer\":\"\"}");
  CHECK(read_cache_entry(dir.path() + "/cache", key) == std::optional<std::string>("{\"layer\":\"\"}"));
  CHECK_THROWS_WITH(read_cache_entry(dir.path() + "/cache", "../x"), "invalid build cache key '../x'");
}

// ---- whole builds against fakes ----

namespace {

// "Mounts" by leaving the target empty (lower layers are not shown) and, on
// unmount, moving what was written into the upper directory.
class FakeMounter : public Mounter {
 public:
  std::map<std::string, std::string> uppers;
  int mounts = 0;
  void mount(const MountRequest& r) override {
    ++mounts;
    uppers[r.target] = r.upper;
  }
  void unmount(const std::string& target) noexcept override {
    const std::string& upper = uppers[target];
    if (upper.empty()) return;
    std::string cmd = "cd '" + target + "' && for f in * .[!.]*; do [ -e \"$f\" ] || [ -L \"$f\" ] && mv \"$f\" '" + upper + "/'; done";
    if (std::system(cmd.c_str()) != 0) return;
  }
};

class FakeStore : public BuildStore {
 public:
  explicit FakeStore(std::string dir) : dir_(std::move(dir)) { ::mkdir((dir_ + "/layers").c_str(), 0755); }
  std::map<std::string, nlohmann::json> images;
  std::map<std::string, std::string> cache, tags;
  int layers = 0;

  nlohmann::json image_config(const std::string& id) override { return images.at(id); }
  bool has_image(const std::string& id) override { return images.count(id) != 0; }
  std::optional<std::string> layer_path(const std::string& diff_id) override {
    std::string p = dir_ + "/layers/" + diff_id.substr(7);
    return exists(p) ? std::optional<std::string>(p) : std::nullopt;
  }
  std::string temp_parent() override { return dir_; }
  std::string commit_layer(const std::string& upper) override {
    std::string id = "sha256:" + std::string(63, '0') + std::to_string(++layers);
    std::string cmd = "cp -a '" + upper + "' '" + dir_ + "/layers/" + id.substr(7) + "'";
    REQUIRE(std::system(cmd.c_str()) == 0);
    return id;
  }
  std::vector<std::vector<std::string>> squashed;
  std::string squash_layers(const std::vector<std::string>& diff_ids) override {
    squashed.push_back(diff_ids);
    std::string id = "sha256:" + std::string(63, '0') + std::to_string(++layers);
    REQUIRE(::mkdir((dir_ + "/layers/" + id.substr(7)).c_str(), 0755) == 0);
    return id;
  }
  std::string write_image(const nlohmann::json& config) override {
    std::string id = "sha256:" + std::to_string(std::hash<std::string>()(config.dump()));
    images[id] = config;
    return id;
  }
  void tag(const std::string& id, const std::string& ref) override { tags[ref] = id; }
  std::optional<std::string> cache_get(const std::string& key) override {
    auto it = cache.find(key);
    return it == cache.end() ? std::nullopt : std::optional<std::string>(it->second);
  }
  void cache_put(const std::string& key, const std::string& value) override { cache[key] = value; }

 private:
  std::string dir_;
};

struct Fixture {
  TempDir dir{"/tmp"};
  std::string ctx = dir.path() + "/ctx";
  std::string storedir = dir.path() + "/store";
  FakeStore* store = nullptr;
  FakeMounter mounter;
  std::vector<RunRequest> runs;
  std::unique_ptr<FakeStore> owned;
  bool squash = false;

  Fixture() {
    ::mkdir(ctx.c_str(), 0755);
    ::mkdir(storedir.c_str(), 0755);
    owned = std::make_unique<FakeStore>(storedir);
    store = owned.get();
  }

  BuildResult build(const std::string& text, bool no_cache = false, std::string* output = nullptr) {
    Dockerfile df = parse_dockerfile(text, "Dockerfile");
    PlanOptions popt;
    Plan plan = plan_build(df, popt);
    ExecuteOptions eo;
    eo.context_dir = ctx;
    eo.tags = {"app:1"};
    eo.no_cache = no_cache;
    eo.squash = squash;
    std::ostringstream out;
    eo.out = &out;
    eo.store = store;
    eo.mounter = &mounter;
    eo.run = [this](const RunRequest& r) {
      runs.push_back(r);
      if (r.argv.back() == "exit 3") return 3;
      // The command "writes" a file through the union: into the upper.
      write(r.rootfs + "/ran", r.argv.back());
      return 0;
    };
    BuildResult res = execute_plan(plan, "Dockerfile", eo);
    if (output != nullptr) *output = out.str();
    return res;
  }

  nlohmann::json image(const BuildResult& r) { return store->images.at(r.image_id); }
  std::string layer(const nlohmann::json& img, size_t i) {
    return storedir + "/layers/" + img["rootfs"]["diff_ids"][i].get<std::string>().substr(7);
  }
};

}  // namespace

TEST_CASE("a build: config, history and layers like docker's; COPY rules; RUN through the runner") {
  Fixture f;
  write(f.ctx + "/hello.txt", "hello\n", 0640);
  ::mkdir((f.ctx + "/dir").c_str(), 0755);
  write(f.ctx + "/dir/inner", "inner");
  std::string out;
  auto r = f.build(
      "FROM scratch\n"
      "ENV GREETING=hi\n"
      "COPY hello.txt /etc/\n"
      "COPY --chmod=600 dir /opt/d\n"
      "RUN echo $GREETING\n"
      "CMD [\"sh\"]\n",
      false, &out);
  CHECK(r.steps_run == 3);
  // BuildKit's plain progress: FROM scratch is no vertex; the steps that make a layer are [I/4].
  CHECK(out.find("#1 [2/4] COPY hello.txt /etc/\n") == 0);
  CHECK(out.find("#2 [3/4] COPY --chmod=600 dir /opt/d\n") != std::string::npos);
  CHECK(out.find("#3 [4/4] RUN echo $GREETING\n") != std::string::npos);
  CHECK(out.find("#4 exporting to image\n") != std::string::npos);
  CHECK(out.find("#4 naming to app:1 done\n") != std::string::npos);
  CHECK(out.find("ENV") == std::string::npos);
  auto img = f.image(r);
  CHECK(img["config"]["Env"] == nlohmann::json({kDefaultPath, "GREETING=hi"}));
  CHECK(img["config"]["Cmd"] == nlohmann::json({"sh"}));
  REQUIRE(img["rootfs"]["diff_ids"].size() == 3);
  REQUIRE(img["history"].size() == 5);
  CHECK(img["history"][0]["created_by"] == "ENV GREETING=hi");
  CHECK(img["history"][0]["empty_layer"] == true);
  CHECK(img["history"][1]["created_by"] == "COPY hello.txt /etc/ # buildkit");
  CHECK_FALSE(img["history"][1].contains("empty_layer"));
  CHECK(slurp(f.layer(img, 0) + "/etc/hello.txt") == "hello\n");
  struct stat st {};
  REQUIRE(::stat((f.layer(img, 0) + "/etc/hello.txt").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0640);
  CHECK(slurp(f.layer(img, 1) + "/opt/d/inner") == "inner");  // a directory's contents, not the directory
  REQUIRE(::stat((f.layer(img, 1) + "/opt/d/inner").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  REQUIRE(f.runs.size() == 1);
  CHECK(f.runs[0].argv == std::vector<std::string>{"/bin/sh", "-c", "echo $GREETING"});
  CHECK(f.runs[0].workdir == "/");
  CHECK(f.store->tags.at("app:1") == r.image_id);
}

TEST_CASE("the cache: a rebuild reuses every step and gives the same image; a changed source invalidates from there") {
  Fixture f;
  write(f.ctx + "/a", "1");
  write(f.ctx + "/b", "1");
  const std::string df = "FROM scratch\nCOPY a /a\nRUN build\nCOPY b /b\nRUN test\n";
  auto first = f.build(df);
  CHECK(first.steps_run == 4);
  int layers = f.store->layers;
  auto again = f.build(df);
  CHECK(again.steps_run == 0);
  CHECK(again.steps_cached == 4);
  CHECK(again.image_id == first.image_id);
  CHECK(f.store->layers == layers);
  CHECK(f.runs.size() == 2);
  write(f.ctx + "/b", "2");
  auto changed = f.build(df);
  CHECK(changed.steps_cached == 2);
  CHECK(changed.steps_run == 2);
  CHECK(changed.image_id != first.image_id);
  auto none = f.build(df, true);
  CHECK(none.steps_run == 4);
}

TEST_CASE("--squash: the final stage's own layers become one; history kept; the cache keeps the steps") {
  Fixture f;
  write(f.ctx + "/a", "1");
  write(f.ctx + "/b", "2");
  const std::string df =
      "FROM scratch AS base\nCOPY a /a\n"
      "FROM base\nCOPY b /b\nENV X=1\nRUN one\nRUN two\nCMD [\"sh\"]\n";
  auto plain = f.build(df);
  auto pimg = f.image(plain);
  REQUIRE(pimg["rootfs"]["diff_ids"].size() == 4);
  f.squash = true;
  auto sq = f.build(df);
  CHECK(sq.steps_run == 0);
  CHECK(sq.steps_cached == 4);
  REQUIRE(f.store->squashed.size() == 1);
  std::vector<std::string> own;
  for (size_t i = 1; i < 4; ++i) own.push_back(pimg["rootfs"]["diff_ids"][i]);
  CHECK(f.store->squashed[0] == own);
  auto img = f.image(sq);
  REQUIRE(img["rootfs"]["diff_ids"].size() == 2);
  CHECK(img["rootfs"]["diff_ids"][0] == pimg["rootfs"]["diff_ids"][0]);
  CHECK(img["rootfs"]["diff_ids"][1] != pimg["rootfs"]["diff_ids"][3]);
  REQUIRE(img["history"].size() == pimg["history"].size());
  std::vector<size_t> with_layer;
  for (size_t i = 0; i < img["history"].size(); ++i) {
    CHECK(img["history"][i]["created_by"] == pimg["history"][i]["created_by"]);
    if (!img["history"][i].value("empty_layer", false)) with_layer.push_back(i);
  }
  // COPY a (the base stage's), then RUN two: the last of the stage's own.
  CHECK(with_layer == std::vector<size_t>{0, 4});
  CHECK(f.store->tags.at("app:1") == sq.image_id);
  // A stage that adds one layer or none is left as it is.
  auto single = f.build("FROM scratch\nCOPY a /a\n");
  CHECK(f.store->squashed.size() == 1);
  CHECK(f.image(single)["rootfs"]["diff_ids"].size() == 1);
}

TEST_CASE("a failing RUN names the step and its exit code, and writes no image") {
  Fixture f;
  try {
    f.build("FROM scratch\nENV A=1\nRUN exit 3\n");
    FAIL("no error");
  } catch (const DockerfileError& e) {
    CHECK(std::string(e.what()) ==
          "Dockerfile:3:1: the command '/bin/sh -c exit 3' returned a non-zero code: 3: 'RUN exit 3'");
  }
  CHECK(f.store->images.empty());
  CHECK(f.store->tags.empty());
}

TEST_CASE("COPY of a missing or escaping source fails at its line") {
  Fixture f;
  auto err = [&](const std::string& df) {
    try {
      f.build(df);
    } catch (const strata::Error& e) {
      return std::string(e.what());
    }
    return std::string("(no error)");
  };
  CHECK(err("FROM scratch\nCOPY nothere /x\n") ==
        "Dockerfile:2:1: file not found in build context or excluded by .dockerignore: 'nothere': 'COPY nothere /x'");
  CHECK(err("FROM scratch\nCOPY ../outside /x\n") ==
        "Dockerfile:2:1: forbidden path outside the build context: '../outside': 'COPY ../outside /x'");
  // A symlink in the context resolves inside the context.
  ::symlink("/etc/passwd", (f.ctx + "/link").c_str());
  CHECK(err("FROM scratch\nCOPY link /x\n").find("file not found in build context") != std::string::npos);
}

TEST_CASE("multi-stage: COPY --from a stage, here-documents, WORKDIR") {
  Fixture f;
  write(f.ctx + "/a", "A");
  auto r = f.build(
      "FROM scratch AS one\nCOPY a /built/a\n"
      "FROM scratch\nWORKDIR /app\nCOPY <<EOF conf.txt\nx=1\nEOF\n");
  auto img = f.image(r);
  CHECK(img["config"]["WorkingDir"] == "/app");
  REQUIRE(img["rootfs"]["diff_ids"].size() == 2);
  CHECK(exists(f.layer(img, 0) + "/app"));
  CHECK(slurp(f.layer(img, 1) + "/app/conf.txt") == "x=1\n");
}

TEST_CASE("COPY --exclude leaves out matching files") {
  Fixture f;
  ::mkdir((f.ctx + "/src").c_str(), 0755);
  write(f.ctx + "/src/keep.c", "c");
  write(f.ctx + "/src/drop.o", "o");
  ::mkdir((f.ctx + "/src/sub").c_str(), 0755);
  write(f.ctx + "/src/sub/deep.o", "o");
  auto r = f.build("FROM scratch\nCOPY --exclude=*.o --exclude=**/*.o src /src\n");
  auto img = f.image(r);
  CHECK(exists(f.layer(img, 0) + "/src/keep.c"));
  CHECK_FALSE(exists(f.layer(img, 0) + "/src/drop.o"));
  CHECK_FALSE(exists(f.layer(img, 0) + "/src/sub/deep.o"));
  CHECK(exists(f.layer(img, 0) + "/src/sub"));
}

TEST_CASE("inline cache entries: only the image's own layers, only well-formed entries") {
  nlohmann::json doc = {
      {"rootfs", {{"type", "layers"}, {"diff_ids", {"sha256:aa", "sha256:bb"}}}},
      {kInlineCacheKey,
       {{{"key", "k1"}, {"layer", "sha256:aa"}, {"created", "2026-01-01T00:00:00Z"}},
        {{"key", "k2"}, {"layer", ""}, {"created", "2026-01-01T00:00:00Z"}},
        {{"key", "k3"}, {"layer", "sha256:not-in-the-image"}, {"created", "2026-01-01T00:00:00Z"}},
        {{"key", 4}, {"layer", "sha256:bb"}, {"created", "2026-01-01T00:00:00Z"}},
        {{"key", "k5"}, {"layer", "sha256:bb"}},
        "not an object"}}};
  auto entries = inline_cache_entries(doc);
  REQUIRE(entries.size() == 2);
  CHECK(entries.at("k1")["layer"] == "sha256:aa");
  CHECK(entries.at("k2")["layer"] == "");
  CHECK(inline_cache_entries(nlohmann::json::object()).empty());
  CHECK(inline_cache_entries(nlohmann::json{{kInlineCacheKey, "x"}}).empty());
}
