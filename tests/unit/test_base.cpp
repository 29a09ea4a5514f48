#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/idfile.hpp"
#include "strata/override_stat.hpp"
#include "strata/process.hpp"
#include "strata/text.hpp"

using namespace strata;
using strata::quote;
using strata::TempDir;
using strata::UniqueFd;

TEST_CASE("quote escapes what would break a one-line message") {
  CHECK(quote("plain/name") == "'plain/name'");
  CHECK(quote("a\nb") == "'a\\x0ab'");
  CHECK(quote("it's") == "'it\\'s'");
  CHECK(quote("\xff") == "'\\xff'");
}

TEST_CASE("SysError names the call and the errno") {
  strata::SysError e(ENOENT, "open 'x'");
  CHECK(std::string(e.what()) == "open 'x': No such file or directory");
  CHECK(e.err() == ENOENT);
  CHECK(e.code() == strata::ExitCode::failure);
}

TEST_CASE("UniqueFd closes on destruction and on reset") {
  int raw = -1;
  {
    UniqueFd fd(::open("/dev/null", O_RDONLY | O_CLOEXEC));
    REQUIRE(fd);
    raw = fd.get();
  }
  CHECK(::fcntl(raw, F_GETFD) == -1);
  UniqueFd a(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  UniqueFd b = std::move(a);
  CHECK_FALSE(a);
  CHECK(b);
}

TEST_CASE("TempDir removes its tree, including read-only subdirectories, but not through symlinks") {
  TempDir outside("/tmp");
  int fd = ::open((outside.path() + "/keep").c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::string path;
  {
    TempDir t("/tmp");
    path = t.path();
    REQUIRE(::mkdir((path + "/sub").c_str(), 0755) == 0);
    REQUIRE(::mkdir((path + "/sub/deep").c_str(), 0755) == 0);
    REQUIRE(::symlink(outside.path().c_str(), (path + "/sub/link").c_str()) == 0);
    REQUIRE(::chmod((path + "/sub").c_str(), 0500) == 0);
  }
  struct stat st {};
  CHECK(::lstat(path.c_str(), &st) == -1);
  CHECK(::lstat((outside.path() + "/keep").c_str(), &st) == 0);
}

TEST_CASE("open_at reports the path it could not open") {
  try {
    strata::open_at(AT_FDCWD, "/nonexistent/strata-test", O_RDONLY);
    FAIL("expected an error");
  } catch (const strata::SysError& e) {
    CHECK(std::string(e.what()) == "open '/nonexistent/strata-test': No such file or directory");
  }
}

TEST_CASE("override_stat values round-trip in containers/storage format") {
  auto o = parse_override_stat("0:0:0755:dir");
  REQUIRE(o);
  CHECK(o->mode == (S_IFDIR | 0755));
  o = parse_override_stat("1000:100:0644");
  REQUIRE(o);
  CHECK(o->uid == 1000);
  CHECK(o->gid == 100);
  CHECK_FALSE(o->has_type);
  o = parse_override_stat("0:5:0620:char-4-1");
  REQUIRE(o);
  CHECK(S_ISCHR(o->mode));
  CHECK(o->rdev == makedev(4, 1));
  CHECK(format_override_stat(*o) == "0:5:0620:char-4-1");
  OverrideStat f{12, 34, S_IFREG | 04755, 0, true};
  CHECK(format_override_stat(f) == "12:34:4755:file");
  CHECK_FALSE(parse_override_stat("a:b:c"));
  CHECK_FALSE(parse_override_stat("0:0:0644:weird"));
  // File-type bits in MODE, as some writers store them, give the type.
  o = parse_override_stat("0:0:40755");
  REQUIRE(o);
  CHECK(S_ISDIR(o->mode));
  CHECK((o->mode & 07777) == 0755);
  CHECK_FALSE(parse_override_stat("0:0:40755:file"));  // the two types disagree
  CHECK_FALSE(parse_override_stat("0:0:170755"));      // not a file type
  // (uid_t)-1 would mean "unchanged" to chown: never an owner.
  CHECK_FALSE(parse_override_stat("4294967295:0:0644"));
  CHECK_FALSE(parse_override_stat("0:4294967295:0644"));
  CHECK(parse_override_stat("4294967294:0:0644"));
  CHECK(parse_override_stat(std::string("1:2:0644\0", 9)));  // a stored NUL terminator
}

TEST_CASE("split, content_lines and parse_unsigned") {
  CHECK(split("a::b", ':') == std::vector<std::string_view>{"a", "", "b"});
  CHECK(split("", ':') == std::vector<std::string_view>{""});
  CHECK(content_lines("a\r\n\n# c\nb") == std::vector<std::string_view>{"a", "b"});
  CHECK(parse_unsigned("755", 8) == 0755U);
  CHECK_FALSE(parse_unsigned("+1"));
  CHECK_FALSE(parse_unsigned(" 1"));
  CHECK_FALSE(parse_unsigned("11", 10, 10));
  CHECK_FALSE(parse_unsigned(""));
}

TEST_CASE("idfile reads passwd and group and refuses the id that means no change") {
  auto users = idfile::parse_passwd(
      "root:x:0:0:root:/root:/bin/sh\n# comment\nbad line\nnobody:x:4294967295:0::/:/bin/false\n"
      "app:x:1000:100:App:/home/app:/bin/sh\n");
  REQUIRE(users.size() == 2);  // nobody's uid is (uid_t)-1: it can name no one
  CHECK(idfile::find_user(users, "app")->home == "/home/app");
  CHECK(idfile::find_user(users, 1000U)->name == "app");
  CHECK(idfile::find_user(users, "nobody") == nullptr);
  auto groups = idfile::parse_group("wheel:x:10:root,app\nstaff:x:50:\n");
  REQUIRE(groups.size() == 2);
  CHECK(idfile::find_group(groups, "wheel")->members == std::vector<std::string>{"root", "app"});
  CHECK(idfile::find_group(groups, "staff")->members.empty());
  CHECK(idfile::parse_id("1000") == 1000U);
  CHECK_FALSE(idfile::parse_id("app"));
  CHECK_FALSE(idfile::parse_id("-1"));  // not digits: a name, which passwd will not have
  CHECK(idfile::parse_id("4294967294") == 4294967294U);
  CHECK_THROWS_AS(idfile::parse_id("4294967295"), Error);
  CHECK_THROWS_AS(idfile::parse_id("99999999999999999999"), Error);
}

TEST_CASE("list_dir, read_dir_entries and write_all") {
  TempDir dir("/tmp");
  CHECK(list_dir(dir.path() + "/missing").empty());
  for (const char* n : {"b", "a", "c"}) {
    UniqueFd fd = open_at(AT_FDCWD, dir.path() + "/" + n, O_WRONLY | O_CREAT, 0600);
    write_all(fd.get(), std::string_view("hello"), n);
  }
  ::mkdir((dir.path() + "/d").c_str(), 0700);
  CHECK(list_dir(dir.path()) == std::vector<std::string>{"a", "b", "c", "d"});
  UniqueFd d = open_at(AT_FDCWD, dir.path(), O_RDONLY | O_DIRECTORY);
  auto entries = read_dir_entries(d.get(), dir.path());
  REQUIRE(entries.size() == 4);
  CHECK((entries[3].type == DT_DIR || entries[3].type == DT_UNKNOWN));
  CHECK(read_file(dir.path() + "/a") == "hello");
  UniqueFd f = open_at(AT_FDCWD, dir.path() + "/a", O_WRONLY);
  pwrite_all(f.get(), "J", 1, 0, "a");
  CHECK(read_file(dir.path() + "/a") == "Jello");
  CHECK_THROWS_AS(write_all(-1, std::string_view("x"), "nothing"), SysError);
}

TEST_CASE("resolve_in_root follows links as if the directory were /, dangling ones included") {
  TempDir t("/tmp");
  const std::string r = t.path();
  REQUIRE(::mkdir((r + "/srv").c_str(), 0755) == 0);
  REQUIRE(::symlink("/srv/app", (r + "/abs").c_str()) == 0);                 // dangling, absolute
  REQUIRE(::symlink("../../../../srv/../srv/x", (r + "/srv/rel").c_str()) == 0);  // dangling, escaping
  REQUIRE(::symlink("/", (r + "/root").c_str()) == 0);
  REQUIRE(::symlink("loop2", (r + "/loop1").c_str()) == 0);
  REQUIRE(::symlink("loop1", (r + "/loop2").c_str()) == 0);
  strata::UniqueFd root(::open(r.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  REQUIRE(root);
  CHECK(strata::resolve_in_root(root.get(), "/abs/sub") == "/srv/app/sub");
  CHECK(strata::resolve_in_root(root.get(), "srv/rel") == "/srv/x");
  CHECK(strata::resolve_in_root(root.get(), "/root/../../srv/./") == "/srv");
  CHECK(strata::resolve_in_root(root.get(), "/") == "/");
  CHECK(strata::resolve_in_root(root.get(), "/missing/../abs") == "/srv/app");
  CHECK(strata::resolve_in_root(root.get(), "/missing/abs") == "/missing/abs");  // below a missing name: created
  CHECK_THROWS_AS(strata::resolve_in_root(root.get(), "/loop1/x"), strata::SysError);
}

TEST_CASE("run_program keeps both streams, sets the environment and umask, and passes no descriptor") {
  UniqueFd held = open_at(AT_FDCWD, "/dev/null", O_RDONLY);
  ::fcntl(held.get(), F_SETFD, 0);  // not close-on-exec: run_program must close it anyway
  ProgramOptions o;
  o.env["STRATA_RUN_PROGRAM_SET"] = "yes";
  o.env["HOME"] = std::nullopt;
  o.umask = 027;
  o.cwd = "/";
  ProgramOutput r = run_program(
      {"sh", "-c",
       "echo out:$STRATA_RUN_PROGRAM_SET:${HOME-unset}; umask; pwd; ls /proc/self/fd | wc -l; "
       "head -c 200000 /dev/zero | tr '\\0' x; echo; echo first >&2; echo; echo last >&2; read x || exit 3"},
      o);
  CHECK(WIFEXITED(r.status));
  CHECK(WEXITSTATUS(r.status) == 3);  // stdin is /dev/null: read sees the end
  CHECK_FALSE(r.succeeded());
  CHECK(r.out.rfind("out:yes:unset\n0027\n/\n4\n", 0) == 0);  // 0-2 and the fd ls opens
  CHECK(r.out.size() > 200000);  // more than a pipe holds: nothing stalls
  CHECK(r.err == "first\nlast\n");
  CHECK(r.why("sh") == "last");
  ProgramOutput missing = run_program({"/nonexistent/program"});
  CHECK(WEXITSTATUS(missing.status) == 127);
  CHECK(missing.why("program").find("cannot run /nonexistent/program") != std::string::npos);
  ProgramOutput quiet = run_program({"false"});
  CHECK(quiet.why("false") == "false exited 1");
}
