// .dockerignore matching with docker's rules (see strata/dockerignore.hpp).
#include "strata/dockerignore.hpp"

#include <sys/stat.h>

#include <fstream>
#include <sstream>

#include "strata/error.hpp"

namespace strata::build {

std::string clean_path(std::string_view path) {
  if (path.empty()) return ".";
  bool rooted = path[0] == '/';
  std::vector<std::string_view> parts;
  size_t i = 0;
  while (i < path.size()) {
    size_t j = path.find('/', i);
    if (j == std::string_view::npos) j = path.size();
    std::string_view part = path.substr(i, j - i);
    i = j + 1;
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty() && parts.back() != "..") {
        parts.pop_back();
      } else if (!rooted) {
        parts.push_back(part);
      }
      continue;
    }
    parts.push_back(part);
  }
  std::string out = rooted ? "/" : "";
  for (size_t k = 0; k < parts.size(); ++k) {
    if (k > 0) out += '/';
    out += parts[k];
  }
  return out.empty() ? "." : out;
}

IgnorePattern::IgnorePattern(std::string pattern, bool exclusion) : text_(std::move(pattern)), exclusion_(exclusion) {
  const std::string& p = text_;
  size_t i = 0;
  auto bad = [&]() { throw Error("syntax error in pattern " + quote(text_)); };
  while (i < p.size()) {
    char c = p[i];
    if (c == '*') {
      if (i + 1 < p.size() && p[i + 1] == '*') {
        i += 2;
        if (i < p.size() && p[i] == '/') ++i;  // `**/` is `**`
        tokens_.emplace_back(i >= p.size() ? Op::any : Op::any_dirs);
      } else {
        tokens_.emplace_back(Op::star);
        ++i;
      }
    } else if (c == '?') {
      tokens_.emplace_back(Op::one);
      ++i;
    } else if (c == '\\') {
      if (i + 1 >= p.size()) bad();
      tokens_.emplace_back(Op::literal, p[i + 1]);
      i += 2;
    } else if (c == '[') {
      Token t(Op::klass);
      ++i;
      if (i < p.size() && p[i] == '^') {
        t.negated = true;
        ++i;
      }
      bool closed = false;
      bool first = true;
      while (i < p.size()) {
        if (p[i] == ']' && !first) {
          closed = true;
          ++i;
          break;
        }
        first = false;
        char lo = p[i];
        if (lo == '\\') {
          if (i + 1 >= p.size()) bad();
          lo = p[++i];
        }
        ++i;
        char hi = lo;
        if (i + 1 < p.size() && p[i] == '-' && p[i + 1] != ']') {
          hi = p[i + 1];
          i += 2;
          if (hi == '\\') {
            if (i >= p.size()) bad();
            hi = p[i++];
          }
          if (hi < lo) bad();
        }
        t.set += lo;
        t.set += hi;
      }
      if (!closed || t.set.empty()) bad();
      tokens_.push_back(std::move(t));
    } else {
      tokens_.emplace_back(Op::literal, c);
      ++i;
    }
  }
}

bool IgnorePattern::match_from(size_t k, std::string_view s, Failures& failed) const {
  // Each (token, position) pair is tried once: without this, patterns with
  // many `*` or `**` take time exponential in their length.
  size_t state = k * (failed.path_size + 1) + (failed.path_size - s.size());
  if (failed.seen[state]) return false;
  bool matched = match_here(k, s, failed);
  if (!matched) failed.seen[state] = true;
  return matched;
}

bool IgnorePattern::match_here(size_t k, std::string_view s, Failures& failed) const {
  while (k < tokens_.size()) {
    const Token& t = tokens_[k];
    switch (t.op) {
      case Op::literal:
        if (s.empty() || s[0] != t.c) return false;
        s.remove_prefix(1);
        break;
      case Op::one:
        if (s.empty() || s[0] == '/') return false;
        s.remove_prefix(1);
        break;
      case Op::klass: {
        if (s.empty()) return false;
        bool in = false;
        for (size_t m = 0; m + 1 < t.set.size(); m += 2) {
          if (s[0] >= t.set[m] && s[0] <= t.set[m + 1]) in = true;
        }
        if (in == t.negated) return false;
        s.remove_prefix(1);
        break;
      }
      case Op::star:
        // Any run of characters other than '/'.
        for (size_t n = 0;; ++n) {
          if (match_from(k + 1, s.substr(n), failed)) return true;
          if (n >= s.size() || s[n] == '/') return false;
        }
      case Op::any:
        return true;
      case Op::any_dirs:
        // Nothing, or anything ending with '/'.
        if (match_from(k + 1, s, failed)) return true;
        for (size_t n = 0; n < s.size(); ++n) {
          if (s[n] == '/' && match_from(k + 1, s.substr(n + 1), failed)) return true;
        }
        return false;
    }
    ++k;
  }
  return s.empty();
}

bool IgnorePattern::matches(std::string_view path) const {
  // docker matches `**/name` (a literal after a leading **) as a plain
  // suffix, so `**foo` also matches "barfoo".
  if (text_.size() > 2 && text_.compare(0, 2, "**") == 0 &&
      text_.find_first_of("*?[\\", 2) == std::string::npos) {
    std::string_view suffix = std::string_view(text_).substr(2);
    if (path.size() >= suffix.size() && path.substr(path.size() - suffix.size()) == suffix) return true;
    return suffix[0] == '/' && path == suffix.substr(1);
  }
  Failures failed{path.size(), std::vector<bool>((tokens_.size() + 1) * (path.size() + 1))};
  return match_from(0, path, failed);
}

void IgnoreMatcher::add(std::string_view line, const std::string& where) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
    return s;
  };
  std::string_view pattern = trim(line);
  if (pattern.empty()) return;
  bool exclusion = pattern[0] == '!';
  if (exclusion) pattern = trim(pattern.substr(1));
  if (exclusion && pattern.empty()) throw Error(where + ": illegal exclusion pattern: \"!\"");
  std::string cleaned = clean_path(pattern);
  if (cleaned.size() > 1 && cleaned[0] == '/') cleaned.erase(0, 1);
  try {
    patterns_.emplace_back(cleaned, exclusion);
  } catch (const Error& e) {
    throw Error(where + ": " + e.what());
  }
}

IgnoreMatcher IgnoreMatcher::parse(std::string_view text, const std::string& origin) {
  IgnoreMatcher m;
  if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
  size_t start = 0;
  int line_no = 0;
  while (start <= text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string_view::npos) nl = text.size();
    std::string_view line = text.substr(start, nl - start);
    ++line_no;
    start = nl + 1;
    if (!line.empty() && line[0] == '#') continue;  // a comment only when # is the first character
    m.add(line, origin + ":" + std::to_string(line_no));
    if (nl == text.size()) break;
  }
  return m;
}

IgnoreMatcher IgnoreMatcher::from_patterns(const std::vector<std::string>& patterns, const std::string& origin) {
  IgnoreMatcher m;
  for (const auto& p : patterns) m.add(p, origin);
  return m;
}

bool IgnoreMatcher::has_exclusions() const noexcept {
  for (const auto& p : patterns_) {
    if (p.exclusion()) return true;
  }
  return false;
}

bool IgnoreMatcher::excluded(std::string_view raw_path) const {
  std::string path = clean_path(raw_path);
  if (path.size() > 1 && path[0] == '/') path.erase(0, 1);
  bool matched = false;
  size_t slash = path.rfind('/');
  std::string parent = slash == std::string::npos ? "." : path.substr(0, slash);
  for (const auto& p : patterns_) {
    // A later pattern can only change the answer: an inclusion when nothing
    // matched yet, an exclusion (`!`) when something did.
    if (p.exclusion() != matched) continue;
    bool match = p.matches(path);
    if (!match && parent != ".") {
      for (size_t pos = 0; pos != std::string::npos && !match;) {
        pos = parent.find('/', pos + 1);
        match = p.matches(std::string_view(parent).substr(0, pos == std::string::npos ? parent.size() : pos));
      }
    }
    if (match) matched = !p.exclusion();
  }
  return matched;
}

std::string find_ignore_file(const std::string& context_dir, const std::string& dockerfile_path) {
  struct stat st {};
  if (!dockerfile_path.empty() && dockerfile_path != "-") {
    std::string beside = dockerfile_path + ".dockerignore";
    if (::stat(beside.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return beside;
  }
  std::string in_context = context_dir + "/.dockerignore";
  if (::stat(in_context.c_str(), &st) == 0 && S_ISREG(st.st_mode)) return in_context;
  return "";
}

}  // namespace strata::build
