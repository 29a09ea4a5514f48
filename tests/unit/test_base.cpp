#include <doctest/doctest.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "strata/error.hpp"
#include "strata/fd.hpp"

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
