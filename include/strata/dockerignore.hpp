// .dockerignore: which files of a build context COPY and ADD may not see.
//
// docker's rules: one pattern per line; lines starting with `#` are comments;
// patterns are cleaned like Go's filepath.Clean and a leading `/` is dropped
// (paths are relative to the context); `*` and `?` never match `/`, `[...]`
// is a character class (`^` negates), `\` escapes, `**` matches any number of
// directories; a pattern matches a path or any of its parent directories;
// `!pattern` re-includes, and the last pattern that matches a path wins.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace strata::build {

// Go's path.Clean: the shortest equivalent of PATH ("" becomes ".").
std::string clean_path(std::string_view path);

class IgnorePattern {
 public:
  // PATTERN is already cleaned; throws Error when it is malformed.
  IgnorePattern(std::string pattern, bool exclusion);
  bool exclusion() const noexcept { return exclusion_; }
  const std::string& text() const noexcept { return text_; }
  bool matches(std::string_view path) const;

 private:
  enum class Op { literal, star, one, klass, any_dirs, any };
  struct Token {
    explicit Token(Op o, char ch = 0) : op(o), c(ch) {}
    Op op;
    char c = 0;                // literal
    std::string set;           // klass: members as pairs lo,hi
    bool negated = false;      // klass
  };
  // The (token, offset in the path) pairs known not to match.
  struct Failures {
    size_t path_size;
    std::vector<bool> seen;
  };
  bool match_from(size_t token, std::string_view s, Failures& failed) const;
  bool match_here(size_t token, std::string_view s, Failures& failed) const;

  std::string text_;
  bool exclusion_;
  std::vector<Token> tokens_;
};

class IgnoreMatcher {
 public:
  IgnoreMatcher() = default;
  // Parses .dockerignore TEXT; ORIGIN names the file in errors.
  static IgnoreMatcher parse(std::string_view text, const std::string& origin);
  // Patterns as given to COPY --exclude (cleaned the same way).
  static IgnoreMatcher from_patterns(const std::vector<std::string>& patterns, const std::string& origin);

  // True when PATH (relative to the context, `/`-separated) is excluded.
  bool excluded(std::string_view path) const;
  bool empty() const noexcept { return patterns_.empty(); }
  bool has_exclusions() const noexcept;
  const std::vector<IgnorePattern>& patterns() const noexcept { return patterns_; }

 private:
  void add(std::string_view line, const std::string& where);
  std::vector<IgnorePattern> patterns_;
};

// The ignore file for a build: DOCKERFILE.dockerignore beside the Dockerfile
// (CONTEXT/Dockerfile.dockerignore for the default one) if it exists, else
// CONTEXT/.dockerignore if it exists, else "". DOCKERFILE is "" or "-" when
// the Dockerfile comes from standard input.
std::string find_ignore_file(const std::string& context_dir, const std::string& dockerfile_path);

}  // namespace strata::build
