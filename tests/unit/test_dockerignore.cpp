// .dockerignore matching: the Dockerfile reference's examples and the rules
// of docker's pattern matcher.
#include <doctest/doctest.h>
#include <fcntl.h>
#include <unistd.h>

#include <string>

#include "strata/dockerignore.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"

using namespace strata::build;

namespace {
IgnoreMatcher ignore(const std::string& text) { return IgnoreMatcher::parse(text, ".dockerignore"); }

std::string ignore_error(const std::string& text) {
  try {
    ignore(text);
  } catch (const strata::Error& e) {
    return e.what();
  }
  return "(no error)";
}

void write_file(const std::string& path, const std::string& text) {
  strata::UniqueFd fd(::open(path.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0644));
  REQUIRE(fd);
  REQUIRE(::write(fd.get(), text.data(), text.size()) == static_cast<ssize_t>(text.size()));
}
}  // namespace

TEST_CASE("clean_path follows Go's path.Clean") {
  CHECK(clean_path("") == ".");
  CHECK(clean_path("a//b/./c/") == "a/b/c");
  CHECK(clean_path("a/../../b") == "../b");
  CHECK(clean_path("/../x") == "/x");
  CHECK(clean_path("/") == "/");
  CHECK(clean_path("./") == ".");
  CHECK(clean_path("a/b/..") == "a");
}

TEST_CASE("the reference's example: */temp* */*/temp* temp?") {
  auto m = ignore("# comment\n*/temp*\n*/*/temp*\ntemp?\n");
  CHECK(m.patterns().size() == 3);
  CHECK(m.excluded("somedir/temporary.txt"));
  CHECK(m.excluded("somedir/temp"));
  CHECK(m.excluded("somedir/temp/inside/file"));  // a parent directory matches
  CHECK(m.excluded("somedir/subdir/temporary.txt"));
  CHECK(m.excluded("tempa"));
  CHECK_FALSE(m.excluded("temp"));
  CHECK_FALSE(m.excluded("temporary.txt"));
  CHECK_FALSE(m.excluded("a/b/c/temp1"));
  CHECK_FALSE(m.excluded("# comment"));
}

TEST_CASE("* and ? do not cross directories; ** does") {
  auto m = ignore("*.md\n");
  CHECK(m.excluded("README.md"));
  CHECK_FALSE(m.excluded("docs/guide.md"));
  auto all = ignore("**/*.go\n");
  CHECK(all.excluded("main.go"));
  CHECK(all.excluded("a/b/c/main.go"));
  CHECK_FALSE(all.excluded("a/main.c"));
  auto mid = ignore("a/**/z\n");
  CHECK(mid.excluded("a/z"));
  CHECK(mid.excluded("a/b/c/z"));
  CHECK_FALSE(mid.excluded("b/z"));
  auto under = ignore("build/**\n");
  CHECK(under.excluded("build/x"));
  CHECK(under.excluded("build/x/y"));
  CHECK_FALSE(under.excluded("build"));
  CHECK(ignore("**\n").excluded("anything/at/all"));
}

TEST_CASE("patterns with many * and ** are matched in polynomial time") {
  // Found by fuzz_dockerignore: backtracking over every way to split the
  // path between the stars took time exponential in their number (this
  // case ran for hours).
  std::string stars, path(60, 'a');
  for (int i = 0; i < 16; ++i) stars += "*a";
  CHECK_FALSE(ignore(stars + "*b\n").excluded(path));
  CHECK(ignore(stars + "*\n").excluded(path));
  std::string deep, dirs;
  for (int i = 0; i < 16; ++i) deep += "**/a";
  for (int i = 0; i < 40; ++i) dirs += "a/";
  CHECK_FALSE(ignore(deep + "/**/b\n").excluded(dirs + "c"));
  CHECK(ignore(deep + "\n").excluded(dirs + "a"));
}

TEST_CASE("a directory pattern excludes everything below it") {
  auto m = ignore("node_modules\n/.git/\n");
  CHECK(m.excluded("node_modules"));
  CHECK(m.excluded("node_modules/a/b.js"));
  CHECK(m.excluded(".git/config"));
  CHECK_FALSE(m.excluded("src/node_modules"));  // patterns are anchored at the context root
}

TEST_CASE("exceptions with !, and the last matching line wins (the reference's examples)") {
  auto m = ignore("*.md\n!README*.md\nREADME-secret.md\n");
  CHECK(m.excluded("CHANGES.md"));
  CHECK_FALSE(m.excluded("README.md"));
  CHECK_FALSE(m.excluded("README-public.md"));
  CHECK(m.excluded("README-secret.md"));
  auto later = ignore("*.md\nREADME-secret.md\n!README*.md\n");
  CHECK_FALSE(later.excluded("README-secret.md"));
  CHECK(later.excluded("other.md"));
  auto keep = ignore("dir\n!dir/keep\n");
  CHECK(keep.excluded("dir/other"));
  CHECK_FALSE(keep.excluded("dir/keep"));
  CHECK_FALSE(keep.excluded("dir/keep/deeper"));
  CHECK(keep.has_exclusions());
  auto reverse = ignore("!a\na\n");
  CHECK(reverse.excluded("a"));
}

TEST_CASE("character classes, escapes, cleaning of patterns and whitespace") {
  auto m = ignore("file[0-9].txt\nx[^a]y\nlit\\*\n  spaced  \n./dot/../clean/\n");
  CHECK(m.excluded("file7.txt"));
  CHECK_FALSE(m.excluded("fileA.txt"));
  CHECK(m.excluded("xby"));
  CHECK_FALSE(m.excluded("xay"));
  CHECK(m.excluded("lit*"));
  CHECK_FALSE(m.excluded("litx"));
  CHECK(m.excluded("spaced"));
  CHECK(m.excluded("clean/x"));
  CHECK(m.patterns()[4].text() == "clean");
  // Regex-special characters are ordinary.
  auto dots = ignore("a.b+(c)\n");
  CHECK(dots.excluded("a.b+(c)"));
  CHECK_FALSE(dots.excluded("axb+(c)"));
}

TEST_CASE("malformed patterns name the file and line") {
  CHECK(ignore_error("ok\n[a\n") == ".dockerignore:2: syntax error in pattern '[a'");
  CHECK(ignore_error("trailing\\\n") == ".dockerignore:1: syntax error in pattern 'trailing\\\\'");
  CHECK(ignore_error("!\n") == ".dockerignore:1: illegal exclusion pattern: \"!\"");
  CHECK(ignore_error("[z-a]\n").find("syntax error in pattern") != std::string::npos);
}

TEST_CASE("COPY --exclude patterns use the same rules") {
  auto m = IgnoreMatcher::from_patterns({"*.txt", "!keep.txt"}, "--exclude");
  CHECK(m.excluded("a.txt"));
  CHECK_FALSE(m.excluded("keep.txt"));
  CHECK_FALSE(m.excluded("a.md"));
}

TEST_CASE("the ignore file: NAME.dockerignore beside a named Dockerfile wins over the context's") {
  strata::TempDir dir("/tmp");
  std::string ctx = dir.path();
  CHECK(find_ignore_file(ctx, ctx + "/Dockerfile") == "");
  write_file(ctx + "/.dockerignore", "x\n");
  CHECK(find_ignore_file(ctx, ctx + "/Dockerfile") == ctx + "/.dockerignore");
  write_file(ctx + "/Dockerfile.dev.dockerignore", "y\n");
  CHECK(find_ignore_file(ctx, ctx + "/Dockerfile.dev") == ctx + "/Dockerfile.dev.dockerignore");
  CHECK(find_ignore_file(ctx, "-") == ctx + "/.dockerignore");
  CHECK(find_ignore_file(ctx, "") == ctx + "/.dockerignore");
  write_file(ctx + "/Dockerfile.dockerignore", "z\n");
  CHECK(find_ignore_file(ctx, ctx + "/Dockerfile") == ctx + "/Dockerfile.dockerignore");
}
