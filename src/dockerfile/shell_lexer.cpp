// Shell-style word processing for Dockerfile instructions: quote removal,
// escapes and parameter expansion, with the rules of docker's builder (which
// implements a subset of POSIX sh word expansion: no command substitution, no
// arithmetic, no globbing of file names).
#include <cctype>
#include <string>
#include <vector>

#include "strata/dockerfile.hpp"

namespace strata::build {

namespace {

constexpr int kEnd = -1;

bool is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }

// Collects the fields of process_words: characters that came from a variable
// are split at whitespace, quoted and escaped ones never are.
class Fields {
 public:
  void add_char(char c) {
    if (is_space(static_cast<unsigned char>(c))) {
      if (in_word_ && !word_.empty()) {
        words_.push_back(std::move(word_));
        word_.clear();
        in_word_ = false;
      }
    } else {
      add_raw_char(c);
    }
  }
  void add_raw_char(char c) {
    word_ += c;
    in_word_ = true;
  }
  void add_string(std::string_view s) {
    for (char c : s) add_char(c);
  }
  void add_raw_string(std::string_view s) {
    word_ += s;
    in_word_ = true;
  }
  std::vector<std::string> take() {
    if (!word_.empty()) words_.push_back(std::move(word_));
    word_.clear();
    in_word_ = false;
    return std::move(words_);
  }

 private:
  std::string word_;
  std::vector<std::string> words_;
  bool in_word_ = false;
};

class WordProcessor {
 public:
  WordProcessor(std::string_view text, char escape, const ShellLexer& options, const VariableLookup& lookup)
      : text_(text), escape_(escape), opt_(options), lookup_(lookup), raw_escapes_(options.raw_escapes) {}

  // Processes up to STOP (kEnd: the whole text); returns the result and fills FIELDS.
  std::string process_until(int stop, bool raw_escapes, Fields* fields) {
    bool saved = raw_escapes_;
    raw_escapes_ = raw_escapes || opt_.raw_escapes;
    std::string result;
    Fields local;
    Fields& words = fields != nullptr ? *fields : local;
    while (peek() != kEnd) {
      int c = peek();
      if (stop != kEnd && c == stop) {
        next();
        raw_escapes_ = saved;
        return result;
      }
      if (c == '$') {
        std::string value = process_dollar();
        result += value;
        words.add_string(value);
      } else if (opt_.heredoc_words && c == '<' && peek(1) == '<') {
        std::string marker = "<<";
        pos_ += 2;
        while (peek() == ' ' || peek() == '\t' || peek() == '\r') marker += static_cast<char>(next());
        result += marker;
        words.add_raw_string(marker);
      } else if (opt_.process_quotes && c == '\'') {
        std::string value = process_single_quote();
        result += value;
        words.add_raw_string(value);
      } else if (opt_.process_quotes && c == '"') {
        std::string value = process_double_quote();
        result += value;
        words.add_raw_string(value);
      } else {
        next();
        if (c == escape_) {
          if (raw_escapes_) {
            words.add_raw_char(static_cast<char>(c));
            result += static_cast<char>(c);
          }
          c = next();
          if (c == kEnd) break;  // an escape at the very end is dropped
          words.add_raw_char(static_cast<char>(c));
        } else {
          words.add_char(static_cast<char>(c));
        }
        result += static_cast<char>(c);
      }
    }
    raw_escapes_ = saved;
    if (stop != kEnd) throw ExpansionError(std::string("unexpected end of statement while looking for matching ") + static_cast<char>(stop));
    return result;
  }

 private:
  int peek(size_t ahead = 0) const {
    return pos_ + ahead < text_.size() ? static_cast<unsigned char>(text_[pos_ + ahead]) : kEnd;
  }
  int next() { return pos_ < text_.size() ? static_cast<unsigned char>(text_[pos_++]) : kEnd; }

  std::string process_single_quote() {
    // Everything up to the next ' is literal; a ' cannot be escaped inside.
    next();
    std::string result;
    if (opt_.raw_quotes) result += '\'';
    for (;;) {
      int c = next();
      if (c == kEnd) throw ExpansionError("unexpected end of statement while looking for matching single-quote");
      if (c == '\'') break;
      result += static_cast<char>(c);
    }
    if (opt_.raw_quotes) result += '\'';
    return result;
  }

  std::string process_double_quote() {
    // Literal up to the next ", except $ expansions and the escapes \" \$ \\.
    next();
    std::string result;
    if (opt_.raw_quotes) result += '"';
    for (;;) {
      int c = peek();
      if (c == kEnd) throw ExpansionError("unexpected end of statement while looking for matching double-quote");
      if (c == '"') {
        next();
        break;
      }
      if (c == '$') {
        result += process_dollar();
        continue;
      }
      next();
      if (c == escape_) {
        int after = peek();
        if (after == kEnd) continue;
        if (after == '"' || after == '$' || after == escape_) {
          if (raw_escapes_) result += static_cast<char>(c);
          c = next();
        }
      }
      result += static_cast<char>(c);
    }
    if (opt_.raw_quotes) result += '"';
    return result;
  }

  static bool is_special_param(int c) {
    return c == '@' || c == '*' || c == '#' || c == '?' || c == '-' || c == '$' || c == '!' || c == '0';
  }

  std::string process_name() {
    std::string name;
    while (peek() != kEnd) {
      int c = peek();
      if (name.empty() && std::isdigit(c)) {
        while (peek() != kEnd && std::isdigit(peek())) name += static_cast<char>(next());
        return name;
      }
      if (name.empty() && is_special_param(c)) {
        name += static_cast<char>(next());
        return name;
      }
      if (!std::isalnum(c) && c != '_') break;
      name += static_cast<char>(next());
    }
    return name;
  }

  std::optional<std::string> get(const std::string& name) const {
    if (!lookup_) return std::nullopt;
    return lookup_(name);
  }

  // A reference with no fallback for an unset variable.
  std::optional<std::string> get_plain(const std::string& name) const {
    auto value = get(name);
    if (!value && opt_.unset_references != nullptr) opt_.unset_references->push_back(name);
    return value;
  }

  std::string process_dollar() {
    next();  // '$'
    if (peek() != '{') {
      std::string name = process_name();
      if (name.empty()) return "$";
      auto value = get_plain(name);
      if (!value && opt_.skip_unset) return "$" + name;
      return value.value_or("");
    }
    next();  // '{'
    int c = peek();
    if (c == kEnd) throw ExpansionError("syntax error: missing '}'");
    if (c == '{' || c == '}' || c == ':') throw ExpansionError("syntax error: bad substitution");
    std::string name = process_name();
    int op = next();
    if (op == '}') {
      auto value = get_plain(name);
      if (!value && opt_.skip_unset) return "${" + name + "}";
      return value.value_or("");
    }
    if (op == kEnd) throw ExpansionError("syntax error: missing '}'");
    std::string modifier(1, static_cast<char>(op));
    bool null_is_unset = false;
    if (op == ':') {
      null_is_unset = true;
      op = next();
      if (op == kEnd) throw ExpansionError("syntax error: missing '}'");
      modifier += static_cast<char>(op);
    }
    if (op == '/') {
      if (null_is_unset) throw ExpansionError("unsupported modifier (" + modifier + ") in substitution");
      return process_replace(name);
    }
    if (op != '-' && op != '+' && op != '?' && op != '#' && op != '%') {
      throw ExpansionError("unsupported modifier (" + modifier + ") in substitution");
    }
    bool pattern_op = op == '#' || op == '%';
    if (null_is_unset && pattern_op) throw ExpansionError("unsupported modifier (" + modifier + ") in substitution");
    std::string word = process_operand('}', pattern_op);
    auto value = pattern_op ? get_plain(name) : get(name);
    if (!value && opt_.skip_unset) return "${" + name + modifier + word + "}";
    bool absent = !value || (null_is_unset && value->empty());
    switch (op) {
      case '-':
        return absent ? word : *value;
      case '+':
        return absent ? std::string() : word;
      case '?':
        if (!value) throw ExpansionError(name + ": " + (word.empty() ? "is not allowed to be unset" : word));
        if (absent) throw ExpansionError(name + ": " + (word.empty() ? "is not allowed to be empty" : word));
        return *value;
      default: {
        // # and % take the shortest match, ## and %% the longest.
        bool longest = !word.empty() && word[0] == static_cast<char>(op);
        if (longest) word.erase(0, 1);
        std::string v = value.value_or("");
        if (op == '#') return trim_prefix(word, v, longest);
        return trim_suffix(word, v, longest);
      }
    }
  }

  std::string process_operand(int stop, bool raw_escapes) {
    try {
      return process_until(stop, raw_escapes, nullptr);
    } catch (const ExpansionError&) {
      if (peek() == kEnd) throw ExpansionError(stop == '/' ? "syntax error: missing '/' in ${}" : "syntax error: missing '}'");
      throw;
    }
  }

  std::string trim_prefix(const std::string& pattern, const std::string& value, bool longest) const {
    if (longest) {
      for (size_t n = value.size() + 1; n-- > 0;) {
        if (shell_pattern_match(pattern, std::string_view(value).substr(0, n), escape_)) return value.substr(n);
      }
    } else {
      for (size_t n = 0; n <= value.size(); ++n) {
        if (shell_pattern_match(pattern, std::string_view(value).substr(0, n), escape_)) return value.substr(n);
      }
    }
    return value;
  }

  std::string trim_suffix(const std::string& pattern, const std::string& value, bool longest) const {
    if (longest) {
      for (size_t start = 0; start <= value.size(); ++start) {
        if (shell_pattern_match(pattern, std::string_view(value).substr(start), escape_)) return value.substr(0, start);
      }
    } else {
      for (size_t start = value.size() + 1; start-- > 0;) {
        if (shell_pattern_match(pattern, std::string_view(value).substr(start), escape_)) return value.substr(0, start);
      }
    }
    return value;
  }

  std::string process_replace(const std::string& name) {
    bool all = peek() == '/';
    if (all) next();
    std::string pattern = process_operand('/', true);
    std::string replacement = process_operand('}', false);
    auto value = get_plain(name);
    if (!value && opt_.skip_unset) return "${" + name + (all ? "//" : "/") + pattern + "/" + replacement + "}";
    std::string v = value.value_or("");
    std::string out;
    size_t i = 0;
    bool replaced = false;
    while (i <= v.size()) {
      // Leftmost match, and at that position the longest one.
      size_t match_len = std::string::npos;
      if (!(replaced && !all)) {
        for (size_t n = v.size() - i + 1; n-- > 0;) {
          if (shell_pattern_match(pattern, std::string_view(v).substr(i, n), escape_)) {
            match_len = n;
            break;
          }
        }
      }
      if (match_len == std::string::npos || (match_len == 0 && pattern.empty())) {
        if (i < v.size()) out += v[i];
        ++i;
        continue;
      }
      out += replacement;
      replaced = true;
      if (match_len == 0) {
        if (i < v.size()) out += v[i];
        ++i;
      } else {
        i += match_len;
      }
    }
    return out;
  }

  std::string_view text_;
  char escape_;
  const ShellLexer& opt_;
  const VariableLookup& lookup_;
  bool raw_escapes_;
  size_t pos_ = 0;
};

// Matches PATTERN against all of TEXT. Bracket expressions: [abc] [a-z] [!x] [^x].
bool match_from(std::string_view p, std::string_view t, char escape) {
  size_t pi = 0, ti = 0;
  size_t star_p = std::string_view::npos, star_t = 0;
  while (ti < t.size() || pi < p.size()) {
    if (pi < p.size()) {
      char c = p[pi];
      if (c == '*') {
        star_p = pi++;
        star_t = ti;
        continue;
      }
      if (ti < t.size()) {
        if (c == '?') {
          ++pi;
          ++ti;
          continue;
        }
        if (c == '[') {
          size_t j = pi + 1;
          bool negate = j < p.size() && (p[j] == '!' || p[j] == '^');
          if (negate) ++j;
          bool matched = false;
          bool first = true;
          bool closed = false;
          while (j < p.size()) {
            if (p[j] == ']' && !first) {
              closed = true;
              break;
            }
            first = false;
            char lo = p[j];
            if (lo == escape && j + 1 < p.size()) lo = p[++j];
            char hi = lo;
            if (j + 2 < p.size() && p[j + 1] == '-' && p[j + 2] != ']') {
              hi = p[j + 2];
              if (hi == escape && j + 3 < p.size()) {
                hi = p[j + 3];
                ++j;
              }
              j += 2;
            }
            if (t[ti] >= lo && t[ti] <= hi) matched = true;
            ++j;
          }
          if (closed) {
            if (matched != negate) {
              pi = j + 1;
              ++ti;
              continue;
            }
          } else if (t[ti] == '[') {  // an unclosed [ is a literal
            ++pi;
            ++ti;
            continue;
          }
        } else {
          char lit = c;
          size_t width = 1;
          if (c == escape && pi + 1 < p.size()) {
            lit = p[pi + 1];
            width = 2;
          }
          if (lit == t[ti]) {
            pi += width;
            ++ti;
            continue;
          }
        }
      }
    }
    if (star_p != std::string_view::npos && star_t < t.size()) {
      pi = star_p + 1;
      ti = ++star_t;
      continue;
    }
    return false;
  }
  return true;
}

}  // namespace

bool shell_pattern_match(std::string_view pattern, std::string_view text, char escape) {
  return match_from(pattern, text, escape);
}

std::string ShellLexer::process_word(std::string_view word, const VariableLookup& lookup) const {
  WordProcessor p(word, escape_, *this, lookup);
  return p.process_until(kEnd, false, nullptr);
}

std::vector<std::string> ShellLexer::process_words(std::string_view word, const VariableLookup& lookup) const {
  WordProcessor p(word, escape_, *this, lookup);
  Fields fields;
  p.process_until(kEnd, false, &fields);
  return fields.take();
}

}  // namespace strata::build
