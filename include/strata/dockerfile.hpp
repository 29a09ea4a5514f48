// The Dockerfile language: a parser into an AST of instructions, and the
// shell-style word expansion ($v, ${v:-w}, ...) that the build applies to the
// instructions docker expands.
//
// The rules follow docker's builder (the Dockerfile reference and BuildKit's
// parser): parser directives only at the very top, comments, line
// continuations with the escape character, here-documents, JSON (exec) form
// with fallback to shell form when the JSON is invalid, builder flags, and
// per-instruction argument rules. The parser does no expansion: that needs the
// build's variables and happens when the planner evaluates an instruction.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "strata/error.hpp"

namespace strata::build {

// 1-based line and column in the Dockerfile (columns count bytes).
struct Position {
  int line = 0;
  int column = 0;
};

// A Dockerfile that cannot be parsed or evaluated. The message is one line:
// "FILE:LINE:COL: what is wrong: 'the offending line'".
class DockerfileError : public Error {
 public:
  DockerfileError(const std::string& file, Position pos, const std::string& message, std::string_view text);
  Position position() const noexcept { return pos_; }
  const std::string& reason() const noexcept { return reason_; }

 private:
  Position pos_;
  std::string reason_;
};

// A word as written in the Dockerfile: quotes and escapes are still in the
// text where docker keeps them until expansion.
struct Word {
  std::string text;
  Position pos;
};

// A builder flag: `--name=value` (value present) or `--name`.
struct Flag {
  std::string name;
  std::optional<std::string> value;
  Position pos;
};

// A here-document: `<<EOF`, `<<-EOF` (chomp: leading tabs removed from the
// content), `<<"EOF"` / `<<'EOF'` (quoted: no expansion of the content).
struct Heredoc {
  std::string name;     // the delimiter word, quotes removed
  std::string content;  // every line up to the delimiter, each with its newline
  bool expand = true;
  bool chomp = false;
  // The content as the command receives it (leading tabs removed for <<-).
  std::string body() const;
};

struct KeyValue {
  Word key;
  Word value;
};

struct ArgDecl {
  Word name;
  std::optional<Word> value;  // the default, unexpanded
};

// HEALTHCHECK's parsed arguments. Durations in nanoseconds (0: not given),
// as docker's image config stores them.
struct HealthcheckSpec {
  bool none = false;                // HEALTHCHECK NONE
  std::vector<std::string> test;    // {"CMD", args...} or {"CMD-SHELL", command}
  std::int64_t interval = 0, timeout = 0, start_period = 0, start_interval = 0;
  int retries = 0;
};

struct Instruction {
  std::string keyword;   // upper case: "RUN"
  std::string keyword_as_written;  // "run", "Run": the casing build checks look at
  Position pos;          // the keyword's first character
  int last_line = 0;     // last physical line (continuations, heredocs included)
  std::string original;  // the logical line: continuations joined, comment lines in them dropped
  std::vector<Flag> flags;
  bool json = false;     // exec form: the arguments were a JSON array

  // Arguments, by instruction:
  //  RUN CMD ENTRYPOINT SHELL: exec form: the array; shell form: one word, the rest of the line
  //  COPY ADD: sources then destination (heredoc sources as `<<NAME` words)
  //  VOLUME EXPOSE: the paths / ports; FROM: the image; USER WORKDIR STOPSIGNAL MAINTAINER: one word
  std::vector<Word> args;
  std::vector<KeyValue> pairs;     // ENV, LABEL
  std::vector<ArgDecl> arg_decls;  // ARG
  std::vector<Heredoc> heredocs;   // RUN, COPY, ADD (and through ONBUILD)
  std::string stage_name;          // FROM ... AS name (lower-cased, as docker does)
  std::string as_keyword;          // FROM: the AS word as written ("as", "AS"), or empty
  std::string stage_name_as_written;
  bool legacy_key_value = false;   // ENV, LABEL: `ENV name value` (no `=`)
  HealthcheckSpec health;          // HEALTHCHECK
  std::shared_ptr<const Instruction> trigger;  // ONBUILD: the instruction it stores
  std::string trigger_text;                    // ONBUILD: the text recorded in the image's OnBuild

  // The flag named NAME (the last one given), or null.
  const Flag* flag(std::string_view name) const;
  // Every value given for a repeatable flag (--mount, --exclude).
  std::vector<std::string> flag_values(std::string_view name) const;
};

struct Directive {
  std::string name;  // lower case
  std::string value;
  int line = 0;
};

// A finding of a build check (BuildKit's rule names and messages).
struct CheckWarning {
  std::string rule;     // "JSONArgsRecommended"
  std::string message;  // "JSON arguments recommended for CMD to ..."
  int line = 0;         // of the instruction (1-based)
};

struct Dockerfile {
  std::string path;  // as used in messages
  char escape = '\\';
  std::vector<Directive> directives;
  std::vector<Instruction> instructions;
  std::vector<std::string> warnings;  // "FILE:LINE: ..." for things docker warns about
  std::vector<CheckWarning> checks;   // the parser's own finding: NoEmptyContinuation

  // The directive NAME (lower case), or null.
  const Directive* directive(std::string_view name) const;
};

// Which build checks run and what a finding does: `# check=skip=A,B;error=true`
// or the build argument BUILDKIT_DOCKERFILE_CHECK with the same text.
struct CheckPolicy {
  bool skip_all = false;
  std::set<std::string> skip;  // rule names, as written (case-sensitive)
  bool error = false;          // a finding fails the build before any step runs
};
// Parses the check directive's value; throws Error naming what is wrong.
CheckPolicy parse_check_policy(std::string_view text);

// The build checks that need only the Dockerfile (every stage, used or not):
// casing, stage names, JSON arguments, MAINTAINER, repeated CMD/ENTRYPOINT/
// HEALTHCHECK, the legacy `ENV k v` form, secret-looking ARG/ENV names,
// relative WORKDIR, EXPOSE formats and FROM --platform values. The planner
// adds those that need expansion (UndefinedVar, UndefinedArgInFrom,
// InvalidDefaultArgInFrom). In line order.
std::vector<CheckWarning> lint_dockerfile(const Dockerfile& df);

// The declared name closest to NAME for a "did you mean" hint, or "".
std::string closest_name(std::string_view name, const std::vector<std::string>& candidates);

// Parses TEXT. PATH names the file in error messages. Throws DockerfileError.
Dockerfile parse_dockerfile(std::string_view text, const std::string& path);

// Parses one instruction outside a Dockerfile, as `strata commit -c` and the
// ONBUILD triggers of a base image need (escape `\`, no directives).
Instruction parse_instruction(std::string_view line, const std::string& origin);

// Recognises a here-document marker word (`<<EOF`, `<<-EOF`, `<<"EOF"`,
// `2<<EOF`, `<< EOF`); nullopt when WORD is not one. The content is left
// empty. Variables in the delimiter are not expanded: `<<E$X` ends at `E$X`.
// Throws ExpansionError when the delimiter's quoting or a substitution in it
// is malformed (`<<"EOF`, `<<${A:x}`).
std::optional<Heredoc> parse_heredoc_marker(std::string_view word);

// Parses a Go duration ("1m30s", "500ms", "1.5h") into nanoseconds, as
// HEALTHCHECK's options are written. Returns nullopt when malformed.
std::optional<std::int64_t> parse_go_duration(std::string_view text);

// Formats nanoseconds the way Go prints a time.Duration ("1m30s", "500ms").
std::string format_go_duration(std::int64_t ns);

// The failure of an expansion (unterminated quote, bad substitution,
// ${v:?msg}); the planner turns it into a DockerfileError with a position.
class ExpansionError : public Error {
 public:
  using Error::Error;
};

// Variable lookup for expansion: the value, or nullopt when unset.
using VariableLookup = std::function<std::optional<std::string>(std::string_view name)>;

// Shell-like word processing as docker's builder does it: quotes, the escape
// character and parameter expansion ($v ${v} ${v:-w} ${v-w} ${v:+w} ${v+w}
// ${v:?m} ${v?m} ${v#p} ${v##p} ${v%p} ${v%%p} ${v/p/r} ${v//p/r}).
class ShellLexer {
 public:
  explicit ShellLexer(char escape = '\\') : escape_(escape) {}

  bool raw_quotes = false;    // keep quote characters in the result
  bool raw_escapes = false;   // keep escape characters in the result
  bool skip_unset = false;    // leave references to unset variables as written
  bool process_quotes = true; // false: quotes are ordinary characters
  // `<<` keeps the blanks (space, tab, CR) after it and joins the next word,
  // as BuildKit splits a line when it looks for here-document markers
  // (`<< EOF` is one word).
  bool heredoc_words = false;
  // When set, receives the name of each variable referenced while unset in
  // a form without a fallback ($v, ${v}, ${v#p}, ${v/p/r}; not ${v:-w},
  // ${v+w} or ${v?m}): the UndefinedVar build check.
  std::vector<std::string>* unset_references = nullptr;

  // The word with quotes removed and variables expanded; no field splitting.
  std::string process_word(std::string_view word, const VariableLookup& lookup) const;
  // The same, split into fields at unquoted whitespace.
  std::vector<std::string> process_words(std::string_view word, const VariableLookup& lookup) const;

 private:
  char escape_;
};

// Shell pattern matching as ${v#p} and ${v/p/r} use it: * ? [...] and escapes.
bool shell_pattern_match(std::string_view pattern, std::string_view text, char escape = '\\');

}  // namespace strata::build
