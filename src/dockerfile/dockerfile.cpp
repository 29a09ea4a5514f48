// The Dockerfile parser: physical lines -> logical lines (directives,
// comments, continuations) -> instructions (flags, JSON or shell form,
// here-documents, per-instruction argument rules). Go durations (HEALTHCHECK)
// are in go_duration.cpp.
#include "strata/dockerfile.hpp"

#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

namespace strata::build {

DockerfileError::DockerfileError(const std::string& file, Position pos, const std::string& message,
                                 std::string_view text)
    : Error(file + ":" + std::to_string(pos.line) + ":" + std::to_string(pos.column) + ": " + message +
            (text.empty() ? std::string() : ": " + quote(text))),
      pos_(pos),
      reason_(message) {}

std::string Heredoc::body() const {
  if (!chomp) return content;
  // <<- removes leading tabs from every line.
  std::string out;
  bool line_start = true;
  for (char c : content) {
    if (line_start && c == '\t') continue;
    line_start = c == '\n';
    out += c;
  }
  return out;
}

const Flag* Instruction::flag(std::string_view name) const {
  const Flag* found = nullptr;
  for (const auto& f : flags) {
    if (f.name == name) found = &f;
  }
  return found;
}

const Directive* Dockerfile::directive(std::string_view name) const {
  for (const auto& d : directives) {
    if (d.name == name) return &d;
  }
  return nullptr;
}

std::vector<std::string> Instruction::flag_values(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& f : flags) {
    if (f.name == name) out.push_back(f.value.value_or(""));
  }
  return out;
}

namespace {

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\v' || c == '\f' || c == '\r'; }
bool is_space(char c) { return is_blank(c) || c == '\n'; }

std::string to_lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string to_upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// A piece of a logical line that came from one physical line.
struct Segment {
  size_t offset;  // in the logical line
  int line;       // physical line (1-based)
  int column;     // column of the piece's first byte in that line
};

struct LogicalLine {
  std::string text;
  std::vector<Segment> segments;
};

enum class FlagType { string, strings, boolean };

const std::map<std::string, std::map<std::string, FlagType>>& known_flags() {
  static const std::map<std::string, std::map<std::string, FlagType>> flags = {
      {"FROM", {{"platform", FlagType::string}}},
      {"RUN", {{"mount", FlagType::strings}, {"network", FlagType::string}, {"security", FlagType::string}}},
      {"COPY",
       {{"from", FlagType::string}, {"chown", FlagType::string}, {"chmod", FlagType::string},
        {"link", FlagType::boolean}, {"parents", FlagType::boolean}, {"exclude", FlagType::strings}}},
      {"ADD",
       {{"chown", FlagType::string}, {"chmod", FlagType::string}, {"link", FlagType::boolean},
        {"keep-git-dir", FlagType::boolean}, {"checksum", FlagType::string}, {"exclude", FlagType::strings},
        {"unpack", FlagType::boolean}}},
      {"HEALTHCHECK",
       {{"interval", FlagType::string}, {"timeout", FlagType::string}, {"start-period", FlagType::string},
        {"start-interval", FlagType::string}, {"retries", FlagType::string}}},
  };
  return flags;
}

const std::set<std::string>& instruction_names() {
  static const std::set<std::string> names = {"ADD",   "ARG",     "CMD",        "COPY", "ENTRYPOINT", "ENV",
                                              "EXPOSE", "FROM",   "HEALTHCHECK", "LABEL", "MAINTAINER", "ONBUILD",
                                              "RUN",   "SHELL",   "STOPSIGNAL", "USER", "VOLUME",     "WORKDIR"};
  return names;
}

// Levenshtein distance, for "did you mean" on unknown instructions.
size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

class Parser {
 public:
  Parser(std::string_view text, std::string path) : path_(std::move(path)) { split_lines(text); }

  Dockerfile parse() {
    Dockerfile df;
    df.path = path_;
    size_t i = 0;
    bool directives_done = false;
    while (i < lines_.size()) {
      std::string_view raw = strip_newline(lines_[i]);
      size_t lead = leading_blanks(raw);
      std::string_view stripped = raw.substr(lead);
      if (!directives_done) {
        if (auto d = match_directive(stripped)) {
          handle_directive(df, *d, static_cast<int>(i + 1), raw);
          ++i;
          continue;
        }
        directives_done = true;
      }
      if (!stripped.empty() && stripped[0] == '#') {  // a comment line
        ++i;
        continue;
      }
      // The first line of an instruction (or an empty line).
      LogicalLine logical;
      int first_line = static_cast<int>(i + 1);
      bool more = append_piece(logical, stripped, first_line, static_cast<int>(lead + 1));
      ++i;
      if (!more && trim(logical.text).empty()) continue;
      bool empty_continuation = false;
      while (more && i < lines_.size()) {
        std::string_view piece = strip_newline(lines_[i]);
        int line_no = static_cast<int>(i + 1);
        ++i;
        std::string_view piece_stripped = piece.substr(leading_blanks(piece));
        if (!piece_stripped.empty() && piece_stripped[0] == '#') continue;  // comments inside continuations vanish
        if (piece_stripped.empty()) {
          empty_continuation = true;  // docker skips these, and warns
          continue;
        }
        more = append_piece(logical, piece, line_no, 1);
      }
      if (trim(logical.text).empty()) continue;  // only continuations up to the end of the file
      if (empty_continuation) df.checks.push_back({"NoEmptyContinuation", "Empty continuation line", first_line});
      Instruction ins = parse_logical(logical, 0);
      ins.last_line = static_cast<int>(i);
      read_heredocs(ins, i, logical);
      ins.last_line = static_cast<int>(i);
      df.instructions.push_back(std::move(ins));
    }
    df.escape = escape_;
    df.directives = std::move(directives_);
    return df;
  }

  Instruction parse_single(std::string_view line) {
    LogicalLine logical;
    std::string_view raw = strip_newline(line);
    size_t lead = leading_blanks(raw);
    append_piece(logical, raw.substr(lead), 1, static_cast<int>(lead + 1));
    if (trim(logical.text).empty()) fail_at(logical, 0, "empty instruction");
    Instruction ins = parse_logical(logical, 0);
    ins.last_line = 1;
    if (!ins.heredocs.empty()) fail_at(logical, 0, "here-documents are not allowed here");
    return ins;
  }

 private:
  struct DirectiveMatch {
    std::string name;
    std::string value;
  };

  void split_lines(std::string_view text) {
    // A UTF-8 byte order mark before the first line is ignored.
    if (text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);
    size_t start = 0;
    while (start < text.size()) {
      size_t nl = text.find('\n', start);
      size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
      lines_.push_back(text.substr(start, end - start));
      start = end;
    }
  }

  static std::string_view strip_newline(std::string_view s) {
    if (!s.empty() && s.back() == '\n') s.remove_suffix(1);
    if (!s.empty() && s.back() == '\r') s.remove_suffix(1);
    return s;
  }

  static size_t leading_blanks(std::string_view s) {
    size_t n = 0;
    while (n < s.size() && is_blank(s[n])) ++n;
    return n;
  }

  // `#` blanks NAME blanks `=` blanks VALUE (trailing blanks dropped).
  static std::optional<DirectiveMatch> match_directive(std::string_view s) {
    if (s.empty() || s[0] != '#') return std::nullopt;
    size_t p = 1;
    while (p < s.size() && is_blank(s[p])) ++p;
    if (p >= s.size() || !std::isalpha(static_cast<unsigned char>(s[p]))) return std::nullopt;
    size_t name_start = p;
    while (p < s.size() && std::isalnum(static_cast<unsigned char>(s[p]))) ++p;
    std::string name = to_lower(s.substr(name_start, p - name_start));
    while (p < s.size() && is_blank(s[p])) ++p;
    if (p >= s.size() || s[p] != '=') return std::nullopt;
    ++p;
    std::string_view value = trim(s.substr(p));
    if (value.empty()) return std::nullopt;
    return DirectiveMatch{name, std::string(value)};
  }

  void handle_directive(Dockerfile& df, const DirectiveMatch& d, int line, std::string_view raw) {
    static const std::set<std::string> known = {"syntax", "escape", "check"};
    if (known.count(d.name) == 0) {
      // An unknown directive is a comment, and it ends the directives: any
      // directive after it is a comment too (the reference's rule).
      seen_unknown_directive_ = true;
    }
    if (seen_unknown_directive_) return;
    for (const auto& prev : directives_) {
      if (prev.name == d.name) {
        throw DockerfileError(path_, {line, 1}, "only one " + d.name + " parser directive can be used", raw);
      }
    }
    if (d.name == "escape") {
      if (d.value != "\\" && d.value != "`") {
        throw DockerfileError(path_, {line, 1}, "invalid escape token '" + d.value + "' does not match ` or \\", raw);
      }
      escape_ = d.value[0];
    }
    if (d.name == "syntax" && d.value.find("dockerfile") == std::string::npos) {
      df.warnings.push_back(path_ + ":" + std::to_string(line) + ": syntax directive " + quote(d.value) +
                            " ignored: the built-in Dockerfile frontend is used");
    }
    directives_.push_back({d.name, d.value, line});
  }

  // Appends PIECE; returns true when it ended with a line continuation
  // (the escape character followed only by blanks), which is removed. An
  // escape preceded by another escape (`\\` at the end) is no continuation.
  bool append_piece(LogicalLine& logical, std::string_view piece, int line, int column) const {
    size_t end = piece.size();
    while (end > 0 && (piece[end - 1] == ' ' || piece[end - 1] == '\t')) --end;
    bool continues = end > 0 && piece[end - 1] == escape_ && (end == 1 || piece[end - 2] != escape_);
    if (continues) piece = piece.substr(0, end - 1);
    logical.segments.push_back({logical.text.size(), line, column});
    logical.text += piece;
    return continues;
  }

  Position position(const LogicalLine& logical, size_t offset) const {
    const Segment* seg = &logical.segments.front();
    for (const auto& s : logical.segments) {
      if (s.offset <= offset) seg = &s;
    }
    return {seg->line, seg->column + static_cast<int>(offset - seg->offset)};
  }

  std::string_view physical_line(int line) const {
    if (line < 1 || static_cast<size_t>(line) > lines_.size()) return {};
    return strip_newline(lines_[static_cast<size_t>(line - 1)]);
  }

  [[noreturn]] void fail_at(const LogicalLine& logical, size_t offset, const std::string& message) const {
    Position pos = position(logical, offset);
    throw DockerfileError(path_, pos, message, trim(physical_line(pos.line)));
  }

  // ---- words ----

  struct RawWord {
    std::string text;
    size_t offset;
  };

  // Splits at unquoted whitespace, keeping quotes and escapes in the words
  // (docker's parseWords, used by ENV, LABEL and ARG).
  std::vector<RawWord> split_words(std::string_view rest, size_t base) const {
    std::vector<RawWord> words;
    std::string word;
    size_t word_start = 0;
    bool in_word = false, in_quote = false, blank_ok = false;
    char quote_char = 0;
    for (size_t pos = 0; pos < rest.size(); ++pos) {
      char c = rest[pos];
      if (!in_word && !in_quote) {
        if (is_space(c)) continue;
        in_word = true;
        word_start = pos;
      }
      if (in_quote) {
        if (c == quote_char) in_quote = false;
        if (c == escape_ && quote_char != '\'') {
          if (pos + 1 == rest.size()) {
            in_quote = false;
            continue;
          }
          word += c;
          c = rest[++pos];
        }
        word += c;
        continue;
      }
      if (is_space(c)) {
        if (blank_ok || !word.empty()) words.push_back({word, base + word_start});
        word.clear();
        in_word = false;
        blank_ok = false;
        continue;
      }
      if (c == '\'' || c == '"') {
        quote_char = c;
        blank_ok = true;
        in_quote = true;
      }
      if (c == escape_) {
        if (pos + 1 == rest.size()) continue;
        word += c;
        c = rest[++pos];
      }
      word += c;
    }
    if ((in_word || in_quote) && (blank_ok || !word.empty())) words.push_back({word, base + word_start});
    return words;
  }

  // Splits at runs of blanks (docker's parseStringsWhitespaceDelimited).
  static std::vector<RawWord> split_blanks(std::string_view rest, size_t base) {
    std::vector<RawWord> words;
    size_t pos = 0;
    while (pos < rest.size()) {
      while (pos < rest.size() && is_space(rest[pos])) ++pos;
      if (pos >= rest.size()) break;
      size_t start = pos;
      while (pos < rest.size() && !is_space(rest[pos])) ++pos;
      words.push_back({std::string(rest.substr(start, pos - start)), base + start});
    }
    return words;
  }

  Word word_at(const LogicalLine& logical, const RawWord& w) const { return {w.text, position(logical, w.offset)}; }

  // ---- instruction lines ----

  // Parses the instruction that starts at OFFSET of LOGICAL (0, or the
  // trigger of an ONBUILD).
  Instruction parse_logical(const LogicalLine& logical, size_t offset) {
    std::string_view text = logical.text;
    size_t p = offset;
    while (p < text.size() && is_space(text[p])) ++p;
    size_t kw_start = p;
    while (p < text.size() && !is_space(text[p])) ++p;
    Instruction ins;
    ins.keyword_as_written = std::string(text.substr(kw_start, p - kw_start));
    ins.keyword = to_upper(ins.keyword_as_written);
    ins.pos = position(logical, kw_start);
    ins.original = std::string(trim(text.substr(kw_start)));
    if (instruction_names().count(ins.keyword) == 0) {
      std::string message = "unknown instruction: " + std::string(text.substr(kw_start, p - kw_start));
      // Only for a word of three letters or more: "RU" suggests nothing.
      std::string best = ins.keyword.size() > 2 ? closest_name(ins.keyword, {instruction_names().begin(), instruction_names().end()}) : "";
      if (!best.empty()) message += " (did you mean " + to_lower(best) + "?)";
      fail_at(logical, kw_start, message);
    }
    size_t rest_start = parse_flags(logical, p, ins);
    std::string_view rest = text.substr(rest_start);
    // The arguments with surrounding whitespace removed, as docker's splitCommand.
    size_t lead = 0;
    while (lead < rest.size() && is_space(rest[lead])) ++lead;
    rest.remove_prefix(lead);
    rest_start += lead;
    while (!rest.empty() && is_space(rest.back())) rest.remove_suffix(1);
    check_flags(logical, ins);
    parse_arguments(logical, rest, rest_start, ins);
    return ins;
  }

  // Reads the leading `--flag[=value]` words (docker's extractBuilderFlags:
  // quotes and backslashes inside a flag word are processed). Returns the
  // offset where the arguments begin.
  size_t parse_flags(const LogicalLine& logical, size_t pos, Instruction& ins) const {
    std::string_view text = logical.text;
    for (;;) {
      while (pos < text.size() && is_space(text[pos])) ++pos;
      if (pos + 1 >= text.size() || text[pos] != '-' || text[pos + 1] != '-') return pos;
      size_t start = pos;
      std::string word;
      bool blank_ok = false;
      char quote_char = 0;
      while (pos < text.size()) {
        char c = text[pos];
        if (quote_char != 0) {
          if (c == quote_char) {
            quote_char = 0;
            ++pos;
            continue;
          }
        } else {
          if (is_space(c)) break;
          if (c == '\'' || c == '"') {
            quote_char = c;
            blank_ok = true;
            ++pos;
            continue;
          }
        }
        if (c == '\\') {
          if (pos + 1 == text.size()) {
            ++pos;
            continue;
          }
          c = text[++pos];
        }
        word += c;
        ++pos;
      }
      if (quote_char != 0) fail_at(logical, start, "unterminated quote in flag");
      if (word == "--") return pos;  // `--` ends the flags
      if (!blank_ok && word.empty()) continue;
      std::string body = word.substr(2);
      Flag f;
      f.pos = position(logical, start);
      auto eq = body.find('=');
      if (eq == std::string::npos) {
        f.name = body;
      } else {
        f.name = body.substr(0, eq);
        f.value = body.substr(eq + 1);
      }
      ins.flags.push_back(std::move(f));  // flag names are case-sensitive
    }
  }

  void check_flags(const LogicalLine& logical, Instruction& ins) const {
    const auto& table = known_flags();
    auto it = table.find(ins.keyword);
    std::set<std::string> seen;
    for (auto& f : ins.flags) {
      size_t offset = flag_offset(logical, f);
      if (it == table.end() || it->second.count(f.name) == 0) {
        fail_at(logical, offset, "unknown flag: --" + f.name + " for " + ins.keyword);
      }
      FlagType type = it->second.at(f.name);
      if (type != FlagType::strings && !seen.insert(f.name).second) {
        fail_at(logical, offset, "duplicate flag specified: --" + f.name);
      }
      if (type == FlagType::boolean) {
        if (f.value) {
          std::string v = to_lower(*f.value);
          if (v != "true" && v != "false") {
            fail_at(logical, offset, "expecting boolean value for flag --" + f.name + ", not: " + *f.value);
          }
          f.value = v;
        } else {
          f.value = "true";
        }
      } else if (!f.value) {
        fail_at(logical, offset, "missing a value on flag: --" + f.name);
      }
    }
  }

  // Tries the JSON (exec) form: a JSON array of strings. Invalid JSON falls
  // back to the shell form; a valid array with a non-string is an error.
  // As with docker, text after the array is ignored.
  std::optional<std::vector<std::string>> parse_json(const LogicalLine& logical, std::string_view rest,
                                                      size_t offset) const {
    if (rest.empty() || rest[0] != '[') return std::nullopt;
    nlohmann::json parsed;
    try {
      std::istringstream in{std::string(rest)};
      in >> parsed;
    } catch (const nlohmann::json::exception&) {
      return std::nullopt;
    }
    if (!parsed.is_array()) return std::nullopt;
    std::vector<std::string> out;
    for (const auto& element : parsed) {
      if (!element.is_string()) {
        fail_at(logical, offset, "when using JSON array syntax, arrays must be comprised of strings only");
      }
      out.push_back(element.get<std::string>());
    }
    return out;
  }

  void set_json_or_shell(const LogicalLine& logical, std::string_view rest, size_t offset, Instruction& ins,
                         bool list_form) const {
    Position pos = position(logical, offset);
    if (auto json = parse_json(logical, rest, offset)) {
      ins.json = true;
      for (auto& s : *json) ins.args.push_back({s, pos});
      return;
    }
    if (list_form) {
      for (const auto& w : split_blanks(rest, offset)) ins.args.push_back(word_at(logical, w));
    } else if (!rest.empty()) {
      ins.args.push_back({std::string(rest), pos});
    }
  }

  [[noreturn]] void fail_args(const LogicalLine& logical, size_t offset, const Instruction& ins,
                              const std::string& rule) const {
    fail_at(logical, offset, ins.keyword + " " + rule);
  }

  void parse_name_values(const LogicalLine& logical, std::string_view rest, size_t offset, Instruction& ins) const {
    auto words = split_words(rest, offset);
    if (words.empty()) fail_args(logical, offset, ins, "requires at least one argument");
    if (words[0].text.find('=') == std::string::npos) {
      // The legacy form `ENV name value...`: the value is the rest of the line.
      size_t p = 0;
      while (p < rest.size() && !is_space(rest[p])) ++p;
      size_t q = p;
      while (q < rest.size() && is_space(rest[q])) ++q;
      if (q >= rest.size()) fail_args(logical, offset, ins, "must have two arguments");
      ins.legacy_key_value = true;
      ins.pairs.push_back({{std::string(rest.substr(0, p)), position(logical, offset)},
                           {std::string(rest.substr(q)), position(logical, offset + q)}});
      return;
    }
    for (const auto& w : words) {
      auto eq = w.text.find('=');
      if (eq == std::string::npos) {
        fail_at(logical, w.offset,
                "syntax error - can't find = in " + quote(w.text) + ". Must be of the form: name=value");
      }
      ins.pairs.push_back({{w.text.substr(0, eq), position(logical, w.offset)},
                           {w.text.substr(eq + 1), position(logical, w.offset + eq + 1)}});
    }
    for (const auto& kv : ins.pairs) {
      if (kv.key.text.empty()) fail_at(logical, offset, ins.keyword + " names can not be blank");
    }
  }

  std::int64_t parse_interval(const LogicalLine& logical, const Instruction& ins, std::string_view name) const {
    const Flag* f = ins.flag(name);
    if (f == nullptr || f->value->empty()) return 0;
    auto ns = parse_go_duration(*f->value);
    size_t offset = flag_offset(logical, *f);
    if (!ns) fail_at(logical, offset, "invalid duration " + quote(*f->value) + " for --" + std::string(name));
    if (*ns == 0) return 0;
    if (*ns < 1000000) fail_at(logical, offset, "interval --" + std::string(name) + " cannot be less than 1ms");
    return *ns;
  }

  static size_t flag_offset(const LogicalLine& logical, const Flag& f) {
    for (const auto& s : logical.segments) {
      if (s.line == f.pos.line) return s.offset + static_cast<size_t>(f.pos.column - s.column);
    }
    return 0;
  }

  void parse_healthcheck(const LogicalLine& logical, std::string_view rest, size_t offset, Instruction& ins) const {
    size_t sep = 0;
    while (sep < rest.size() && !is_space(rest[sep])) ++sep;
    if (sep == 0) fail_args(logical, offset, ins, "requires at least one argument");
    size_t next = sep;
    while (next < rest.size() && is_space(rest[next])) ++next;
    std::string type = to_upper(rest.substr(0, sep));
    std::string_view cmd = rest.substr(next);
    if (type == "NONE") {
      if (!cmd.empty()) fail_at(logical, offset + next, "HEALTHCHECK NONE takes no arguments");
      if (!ins.flags.empty()) fail_at(logical, flag_offset(logical, ins.flags[0]), "HEALTHCHECK NONE takes no flags");
      ins.health.none = true;
      ins.health.test = {"NONE"};
      return;
    }
    if (type != "CMD") fail_at(logical, offset, "unknown type " + quote(type) + " in HEALTHCHECK (try CMD)");
    set_json_or_shell(logical, cmd, offset + next, ins, false);
    if (ins.args.empty()) fail_at(logical, offset, "missing command after HEALTHCHECK CMD");
    ins.health.test = {ins.json ? "CMD" : "CMD-SHELL"};
    for (const auto& a : ins.args) ins.health.test.push_back(a.text);
    ins.health.interval = parse_interval(logical, ins, "interval");
    ins.health.timeout = parse_interval(logical, ins, "timeout");
    ins.health.start_period = parse_interval(logical, ins, "start-period");
    ins.health.start_interval = parse_interval(logical, ins, "start-interval");
    if (const Flag* f = ins.flag("retries"); f != nullptr && !f->value->empty()) {
      const std::string& v = *f->value;
      char* end = nullptr;
      errno = 0;
      long long n = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end != '\0' || errno != 0 || n > INT32_MAX || n < INT32_MIN) {
        fail_at(logical, flag_offset(logical, *f), "invalid --retries value " + quote(v));
      }
      if (n < 0) fail_at(logical, flag_offset(logical, *f), "--retries cannot be negative (" + v + ")");
      ins.health.retries = static_cast<int>(n);
    }
  }

  static bool valid_stage_name(std::string_view name) {
    if (name.empty() || !std::islower(static_cast<unsigned char>(name[0]))) return false;
    return std::all_of(name.begin(), name.end(), [](char c) {
      return std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c)) || c == '-' ||
             c == '_' || c == '.';
    });
  }

  void parse_arguments(const LogicalLine& logical, std::string_view rest, size_t offset, Instruction& ins) {
    const std::string& k = ins.keyword;
    if (k == "RUN" || k == "CMD" || k == "ENTRYPOINT" || k == "SHELL") {
      set_json_or_shell(logical, rest, offset, ins, false);
      if (k == "SHELL") {
        if (ins.args.empty()) fail_args(logical, offset, ins, "requires at least one argument");
        if (!ins.json) fail_args(logical, offset, ins, "requires the arguments to be in JSON form");
      } else if (ins.args.empty() && !ins.json) {
        fail_args(logical, offset, ins, "requires at least one argument");
      }
      if (k == "RUN" && !ins.json) find_heredoc_markers(logical, ins);
    } else if (k == "COPY" || k == "ADD") {
      set_json_or_shell(logical, rest, offset, ins, true);
      if (!ins.json) find_heredoc_markers(logical, ins);
      if (ins.args.size() < 2) {
        fail_args(logical, offset, ins,
                  "requires at least two arguments, but only " + std::to_string(ins.args.size()) +
                      " was provided. Destination could not be determined");
      }
    } else if (k == "VOLUME") {
      set_json_or_shell(logical, rest, offset, ins, true);
      if (ins.args.empty()) fail_args(logical, offset, ins, "requires at least one argument");
      for (const auto& a : ins.args) {
        if (trim(a.text).empty()) fail_at(logical, offset, "VOLUME specified can not be an empty string");
      }
    } else if (k == "EXPOSE") {
      for (const auto& w : split_blanks(rest, offset)) ins.args.push_back(word_at(logical, w));
      if (ins.args.empty()) fail_args(logical, offset, ins, "requires at least one argument");
    } else if (k == "FROM") {
      auto words = split_blanks(rest, offset);
      if (words.size() == 3 && to_lower(words[1].text) == "as") {
        ins.as_keyword = words[1].text;
        ins.stage_name_as_written = words[2].text;
        ins.stage_name = to_lower(words[2].text);
        if (!valid_stage_name(ins.stage_name)) {
          fail_at(logical, words[2].offset,
                  "invalid name for build stage: " + quote(words[2].text) +
                      ", name can't start with a number or contain symbols");
        }
      } else if (words.size() != 1) {
        fail_args(logical, offset, ins, "requires either one or three arguments");
      }
      ins.args.push_back(word_at(logical, words[0]));
    } else if (k == "USER" || k == "WORKDIR" || k == "STOPSIGNAL" || k == "MAINTAINER") {
      // The whole rest of the line is the one argument, spaces included.
      if (rest.empty()) fail_args(logical, offset, ins, "requires exactly one argument");
      ins.args.push_back({std::string(rest), position(logical, offset)});
    } else if (k == "ENV" || k == "LABEL") {
      parse_name_values(logical, rest, offset, ins);
    } else if (k == "ARG") {
      auto words = split_words(rest, offset);
      if (words.empty()) fail_args(logical, offset, ins, "requires at least one argument");
      for (const auto& w : words) {
        ArgDecl d;
        auto eq = w.text.find('=');
        d.name = {w.text.substr(0, eq), position(logical, w.offset)};
        if (eq != std::string::npos) d.value = Word{w.text.substr(eq + 1), position(logical, w.offset + eq + 1)};
        if (d.name.text.empty()) fail_at(logical, w.offset, "ARG names can not be blank");
        ins.arg_decls.push_back(std::move(d));
      }
    } else if (k == "HEALTHCHECK") {
      parse_healthcheck(logical, rest, offset, ins);
    } else if (k == "ONBUILD") {
      if (rest.empty()) fail_args(logical, offset, ins, "requires at least one argument");
      size_t kw_end = 0;
      while (kw_end < rest.size() && !is_space(rest[kw_end])) ++kw_end;
      std::string trigger_kw = to_upper(rest.substr(0, kw_end));
      if (trigger_kw == "ONBUILD") fail_at(logical, offset, "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed");
      if (trigger_kw == "FROM" || trigger_kw == "MAINTAINER") {
        fail_at(logical, offset, trigger_kw + " isn't allowed as an ONBUILD trigger");
      }
      auto trigger = std::make_shared<Instruction>(parse_logical(logical, offset));
      ins.trigger_text = trigger->original;
      ins.heredocs = trigger->heredocs;
      ins.trigger = std::move(trigger);
    }
  }

  // Finds `<<NAME` words on a RUN/COPY/ADD line (shell form) and records the
  // here-documents they announce; their bodies are read by read_heredocs.
  void find_heredoc_markers(const LogicalLine& logical, Instruction& ins) const {
    if (ins.original.find("<<") == std::string::npos) return;
    ShellLexer lexer('\\');
    lexer.raw_quotes = true;
    lexer.raw_escapes = true;
    lexer.skip_unset = true;
    lexer.heredoc_words = true;
    std::vector<std::string> words;
    try {
      words = lexer.process_words(ins.original, nullptr);
    } catch (const ExpansionError& e) {
      fail_at(logical, 0, e.what());
    }
    for (const auto& w : words) {
      if (auto doc = heredoc_marker(w, logical)) ins.heredocs.push_back(std::move(*doc));
    }
  }

 private:
  std::optional<Heredoc> heredoc_marker(const std::string& word, const LogicalLine& logical) const {
    try {
      return parse_heredoc_marker(word);
    } catch (const ExpansionError& e) {
      fail_at(logical, 0, std::string("bad here-document marker: ") + e.what());
    }
  }

  // Reads the bodies of INS's here-documents from the lines after NEXT_LINE
  // (0-based index of the first line after the instruction), advancing it.
  void read_heredocs(Instruction& ins, size_t& next_line, const LogicalLine& logical) {
    auto fill = [&](std::vector<Heredoc>& docs) {
      for (auto& doc : docs) {
        bool terminated = false;
        while (next_line < lines_.size()) {
          std::string_view raw = lines_[next_line++];
          std::string_view candidate = strip_newline(raw);
          if (doc.chomp) {
            while (!candidate.empty() && candidate.front() == '\t') candidate.remove_prefix(1);
          }
          if (candidate == doc.name) {
            terminated = true;
            break;
          }
          doc.content += raw;
          if (raw.empty() || raw.back() != '\n') doc.content += '\n';
        }
        if (!terminated) fail_at(logical, 0, "unterminated heredoc " + quote(doc.name));
      }
    };
    fill(ins.heredocs);
    if (ins.trigger) {
      auto trigger = std::make_shared<Instruction>(*ins.trigger);
      trigger->heredocs = ins.heredocs;
      ins.trigger = std::move(trigger);
    }
  }

  std::string path_;
  std::vector<std::string_view> lines_;
  char escape_ = '\\';
  std::vector<Directive> directives_;
  bool seen_unknown_directive_ = false;
};

}  // namespace

// `[N]<<[-][blanks]WORD`: a here-document marker; quoting any part of WORD
// turns expansion of the body off (docker compares the word lexed with and
// without its quotes). `$` references in WORD stay as written.
std::optional<Heredoc> parse_heredoc_marker(std::string_view word) {
  size_t p = 0;
  while (p < word.size() && std::isdigit(static_cast<unsigned char>(word[p]))) ++p;
  if (word.substr(p, 2) != "<<") return std::nullopt;
  p += 2;
  Heredoc doc;
  if (p < word.size() && word[p] == '-') {
    doc.chomp = true;
    ++p;
  }
  while (p < word.size() && (word[p] == ' ' || word[p] == '\t' || word[p] == '\n' || word[p] == '\f' || word[p] == '\r')) {
    ++p;
  }
  std::string_view rest = word.substr(p);
  if (rest.empty() || rest.find('<') != std::string_view::npos) return std::nullopt;
  ShellLexer lexer('\\');
  lexer.skip_unset = true;
  auto plain = lexer.process_words(rest, nullptr);
  if (plain.size() != 1) return std::nullopt;
  lexer.raw_quotes = true;
  auto raw = lexer.process_words(rest, nullptr);
  if (raw.size() != 1) return std::nullopt;
  auto count_quotes = [](const std::string& s) {
    return std::count(s.begin(), s.end(), '\'') + std::count(s.begin(), s.end(), '"');
  };
  doc.name = plain[0];
  doc.expand = count_quotes(plain[0]) == count_quotes(raw[0]);
  return doc;
}

Dockerfile parse_dockerfile(std::string_view text, const std::string& path) {
  Parser parser(text, path);
  return parser.parse();
}

Instruction parse_instruction(std::string_view line, const std::string& origin) {
  Parser parser(line, origin);
  return parser.parse_single(line);
}

std::string closest_name(std::string_view name, const std::vector<std::string>& candidates) {
  // The same name in another case first ($path for PATH), else the nearest
  // within two edits (a swapped pair of letters is two), never a name that
  // shares nothing with it.
  for (const auto& c : candidates) {
    if (to_lower(c) == to_lower(name)) return c;
  }
  std::string best;
  size_t best_distance = 3;
  for (const auto& c : candidates) {
    size_t d = edit_distance(name, c);
    if (d < best_distance && d < name.size() && d < c.size()) {
      best = c;
      best_distance = d;
    }
  }
  return best;
}

}  // namespace strata::build
