// The Dockerfile language: parser rules and word expansion, checked against
// the Dockerfile reference's examples and docker's documented behaviour.
#include <doctest/doctest.h>

#include <map>
#include <string>

#include "strata/dockerfile.hpp"

using namespace strata::build;

namespace {

Dockerfile parse(const std::string& text) { return parse_dockerfile(text, "Dockerfile"); }

// The message of the DockerfileError that parsing TEXT throws.
std::string parse_error(const std::string& text) {
  try {
    parse(text);
  } catch (const DockerfileError& e) {
    return e.what();
  }
  return "(no error)";
}

std::vector<std::string> arg_texts(const Instruction& ins) {
  std::vector<std::string> out;
  for (const auto& a : ins.args) out.push_back(a.text);
  return out;
}

VariableLookup vars(std::map<std::string, std::string> values) {
  return [values = std::move(values)](std::string_view name) -> std::optional<std::string> {
    auto it = values.find(std::string(name));
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

std::string expand(const std::string& word, const std::map<std::string, std::string>& values = {},
                   char escape = '\\') {
  return ShellLexer(escape).process_word(word, vars(values));
}

std::string expand_error(const std::string& word, const std::map<std::string, std::string>& values = {}) {
  try {
    expand(word, values);
  } catch (const ExpansionError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("instructions, keywords in any case, line numbers and original text") {
  auto df = parse("# a comment\nfrom busybox\n\nRUN echo hello\n  cmd [\"sh\"]\n");
  REQUIRE(df.instructions.size() == 3);
  CHECK(df.instructions[0].keyword == "FROM");
  CHECK(df.instructions[0].pos.line == 2);
  CHECK(df.instructions[0].pos.column == 1);
  CHECK(arg_texts(df.instructions[0]) == std::vector<std::string>{"busybox"});
  CHECK(df.instructions[1].original == "RUN echo hello");
  CHECK(df.instructions[1].pos.line == 4);
  CHECK(df.instructions[2].keyword == "CMD");
  CHECK(df.instructions[2].pos.column == 3);
  CHECK(df.instructions[2].json);
}

TEST_CASE("a byte order mark and CRLF line ends are accepted") {
  auto df = parse("\xEF\xBB\xBF" "FROM a\r\nRUN b\r\n");
  REQUIRE(df.instructions.size() == 2);
  CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"b"});
}

TEST_CASE("parser directives: only at the top, case-insensitive, whitespace allowed") {
  SUBCASE("escape backtick") {
    auto df = parse("# escape=`\nFROM a\nRUN echo `\n  hi\n");
    CHECK(df.escape == '`');
    REQUIRE(df.instructions.size() == 2);
    CHECK(df.instructions[1].original == "RUN echo   hi");
  }
  SUBCASE("the reference's whitespace variants") {
    CHECK(parse("#directive=value\n# escape=`\nFROM a\n").escape == '\\');  // unknown first: the rest are comments
    CHECK(parse("# ESCAPE=`\nFROM a\n").escape == '`');
    CHECK(parse("#\tescape =  `  \nFROM a\n").escape == '`');
  }
  SUBCASE("after a comment, an empty line or an instruction a directive is a comment") {
    CHECK(parse("# about\n# escape=`\nFROM a\n").escape == '\\');
    CHECK(parse("\n# escape=`\nFROM a\n").escape == '\\');
    CHECK(parse("FROM a\n# escape=`\nRUN x\n").escape == '\\');
  }
  SUBCASE("syntax and check are recorded") {
    auto df = parse("# syntax=docker/dockerfile:1\n# check=skip=JSONArgsRecommended\nFROM a\n");
    REQUIRE(df.directives.size() == 2);
    CHECK(df.directives[0].name == "syntax");
    CHECK(df.directives[0].value == "docker/dockerfile:1");
    CHECK(df.directives[1].name == "check");
    CHECK(df.warnings.empty());
  }
  SUBCASE("a repeated directive and a bad escape are errors") {
    CHECK(parse_error("# escape=\\\n# escape=`\nFROM a\n") ==
          "Dockerfile:2:1: only one escape parser directive can be used: '# escape=`'");
    CHECK(parse_error("# escape=x\nFROM a\n") ==
          "Dockerfile:1:1: invalid escape token 'x' does not match ` or \\: '# escape=x'");
  }
}

TEST_CASE("line continuations") {
  SUBCASE("backslash, with trailing blanks after it") {
    auto df = parse("FROM a\nRUN apt-get update && \\  \n    apt-get install x\n");
    REQUIRE(df.instructions.size() == 2);
    CHECK(df.instructions[1].original == "RUN apt-get update &&     apt-get install x");
    CHECK(df.instructions[1].last_line == 3);
  }
  SUBCASE("comment lines and empty lines inside a continuation are dropped (with a warning for empty)") {
    auto df = parse("FROM a\nRUN echo a \\\n# comment\n  \\\n\n  b\nUSER x\n");
    REQUIRE(df.instructions.size() == 3);
    // "  \\" is not empty: its blanks stay, as in docker.
    CHECK(df.instructions[1].original == "RUN echo a     b");
    CHECK(df.instructions[2].pos.line == 7);
    REQUIRE(df.checks.size() == 1);
    CHECK(df.checks[0].rule == "NoEmptyContinuation");
    CHECK(df.checks[0].message == "Empty continuation line");
    CHECK(df.checks[0].line == 2);
  }
  SUBCASE("a continuation at the end of the file ends the instruction") {
    auto df = parse("FROM a\nRUN echo \\");
    CHECK(df.instructions[1].original == "RUN echo");
  }
  SUBCASE("with the backtick escape, a backslash is an ordinary character") {
    auto df = parse("# escape=`\nFROM windows\nCOPY testfile.txt c:\\\nRUN dir c:\\\n");
    REQUIRE(df.instructions.size() == 3);
    CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"testfile.txt", "c:\\"});
  }
  SUBCASE("an escaped escape at the end of a line is no continuation") {
    auto df = parse("FROM a\nRUN echo a\\\\\nUSER x\n");
    REQUIRE(df.instructions.size() == 3);
    CHECK(df.instructions[1].original == "RUN echo a\\\\");
    CHECK(df.instructions[2].keyword == "USER");
    auto tick = parse("# escape=`\nFROM a\nRUN echo a`` \nUSER x\n");
    REQUIRE(tick.instructions.size() == 3);
    CHECK(tick.instructions[1].original == "RUN echo a``");
    // A lone escape on a line still continues it.
    auto lone = parse("FROM a\nRUN echo a \\\n\\\n b\n");
    REQUIRE(lone.instructions.size() == 2);
  }
  SUBCASE("positions point into the physical line") {
    auto df = parse("FROM a\nCOPY --chown=1 \\\n   src \\\n   dst\n");
    const auto& copy = df.instructions[1];
    REQUIRE(copy.args.size() == 2);
    CHECK(copy.args[0].pos.line == 3);
    CHECK(copy.args[0].pos.column == 4);
    CHECK(copy.args[1].pos.line == 4);
  }
}

TEST_CASE("JSON (exec) form and shell form") {
  auto df = parse(
      "FROM a\n"
      "CMD [\"echo\", \"a b\"]\n"
      "ENTRYPOINT echo  hi\n"
      "RUN [\"sh\", \"-c\", \"echo \\\"q\\\"\"]\n"
      "CMD [ 'single' ]\n"
      "RUN [\"a\"] trailing\n"
      "CMD []\n");
  CHECK(df.instructions[1].json);
  CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"echo", "a b"});
  CHECK_FALSE(df.instructions[2].json);
  CHECK(arg_texts(df.instructions[2]) == std::vector<std::string>{"echo  hi"});
  CHECK(arg_texts(df.instructions[3])[2] == "echo \"q\"");
  // Invalid JSON (single quotes) falls back to the shell form, as docker does.
  CHECK_FALSE(df.instructions[4].json);
  CHECK(arg_texts(df.instructions[4]) == std::vector<std::string>{"[ 'single' ]"});
  // docker decodes the first JSON value and ignores what follows it.
  CHECK(df.instructions[5].json);
  CHECK(arg_texts(df.instructions[5]) == std::vector<std::string>{"a"});
  CHECK(df.instructions[6].json);
  CHECK(df.instructions[6].args.empty());
  CHECK(parse_error("FROM a\nCMD [\"a\", 1]\n") ==
        "Dockerfile:2:5: when using JSON array syntax, arrays must be comprised of strings only: 'CMD [\"a\", 1]'");
}

TEST_CASE("COPY, ADD and VOLUME split at blanks in shell form") {
  auto df = parse("FROM a\nCOPY a b  /dest/\nADD [\"with space\", \"/d\"]\nVOLUME /var/log /data\nVOLUME [\"/x\"]\n");
  CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"a", "b", "/dest/"});
  CHECK(df.instructions[2].json);
  CHECK(arg_texts(df.instructions[2]) == std::vector<std::string>{"with space", "/d"});
  CHECK(arg_texts(df.instructions[3]) == std::vector<std::string>{"/var/log", "/data"});
  CHECK(arg_texts(df.instructions[4]) == std::vector<std::string>{"/x"});
  CHECK(parse_error("FROM a\nCOPY onlyone\n").find("COPY requires at least two arguments") != std::string::npos);
}

TEST_CASE("builder flags") {
  auto df = parse(
      "FROM --platform=linux/amd64 busybox AS build\n"
      "COPY --from=build --chown=1:2 --chmod=644 --link a /b\n"
      "COPY --link=false --exclude=*.md --exclude=*.txt . /c\n"
      "RUN --mount=type=cache,target=/root/.cache --network=none make\n"
      "COPY --chown=\"a b\" x y\n"
      "COPY \"--chown=c\" x y\n");
  const auto& from = df.instructions[0];
  REQUIRE(from.flag("platform") != nullptr);
  CHECK(*from.flag("platform")->value == "linux/amd64");
  CHECK(from.stage_name == "build");
  const auto& copy = df.instructions[1];
  CHECK(*copy.flag("from")->value == "build");
  CHECK(*copy.flag("chown")->value == "1:2");
  CHECK(*copy.flag("chmod")->value == "644");
  CHECK(*copy.flag("link")->value == "true");
  CHECK(copy.flag("parents") == nullptr);
  CHECK(arg_texts(copy) == std::vector<std::string>{"a", "/b"});
  CHECK(df.instructions[2].flag_values("exclude") == std::vector<std::string>{"*.md", "*.txt"});
  CHECK(*df.instructions[2].flag("link")->value == "false");
  CHECK(df.instructions[3].flag_values("mount") == std::vector<std::string>{"type=cache,target=/root/.cache"});
  CHECK(arg_texts(df.instructions[3]) == std::vector<std::string>{"make"});
  CHECK(*df.instructions[4].flag("chown")->value == "a b");
  // A word must start with -- to be a flag.
  CHECK(df.instructions[5].flags.empty());
  CHECK(arg_texts(df.instructions[5]).size() == 3);

  CHECK(parse_error("FROM a\nCOPY --frm=x a b\n") == "Dockerfile:2:6: unknown flag: --frm for COPY: 'COPY --frm=x a b'");
  // Flag names are case-sensitive.
  CHECK(parse_error("FROM a\nCOPY --FROM=x a b\n") == "Dockerfile:2:6: unknown flag: --FROM for COPY: 'COPY --FROM=x a b'");
  CHECK(parse_error("FROM a\nCOPY --Link a b\n").find("unknown flag: --Link for COPY") != std::string::npos);
  CHECK(parse_error("FROM a\nUSER --x root\n").find("unknown flag: --x for USER") != std::string::npos);
  CHECK(parse_error("FROM a\nCOPY --from=a --from=b x y\n").find("duplicate flag specified: --from") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nCOPY --chown x y\n").find("missing a value on flag: --chown") != std::string::npos);
  CHECK(parse_error("FROM a\nCOPY --link=maybe x y\n").find("expecting boolean value for flag --link") !=
        std::string::npos);
  // `--` ends the flags.
  auto dd = parse("FROM a\nRUN -- --not-a-flag\n");
  CHECK(arg_texts(dd.instructions[1]) == std::vector<std::string>{"--not-a-flag"});
}

TEST_CASE("FROM: image, AS name, arity") {
  auto df = parse("FROM scratch\nFROM busybox:1.36 as Builder\n");
  CHECK(df.instructions[1].stage_name == "builder");
  CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"busybox:1.36"});
  CHECK(parse_error("FROM a b\n").find("FROM requires either one or three arguments") != std::string::npos);
  CHECK(parse_error("FROM a AS 1x\n").find("invalid name for build stage: '1x'") != std::string::npos);
  CHECK(parse_error("FROM a AS x$y\n").find("invalid name for build stage") != std::string::npos);
}

TEST_CASE("ENV and LABEL: both syntaxes, quotes kept for expansion") {
  auto df = parse(
      "FROM a\n"
      "ENV MY_NAME=\"John Doe\" MY_DOG=Rex\\ The\\ Dog \\\n    MY_CAT=fluffy\n"
      "ENV MY_VAR my-value with spaces\n"
      "LABEL \"com.example.vendor\"=\"ACME Incorporated\" version=1.0\n"
      "LABEL description=\"This text illustrates \\\nthat label-values can span multiple lines.\"\n");
  const auto& env = df.instructions[1];
  REQUIRE(env.pairs.size() == 3);
  CHECK(env.pairs[0].key.text == "MY_NAME");
  CHECK(env.pairs[0].value.text == "\"John Doe\"");
  CHECK(env.pairs[1].value.text == "Rex\\ The\\ Dog");
  CHECK(env.pairs[2].key.text == "MY_CAT");
  CHECK(env.pairs[2].key.pos.line == 3);
  const auto& legacy = df.instructions[2];
  REQUIRE(legacy.pairs.size() == 1);
  CHECK(legacy.pairs[0].key.text == "MY_VAR");
  CHECK(legacy.pairs[0].value.text == "my-value with spaces");
  CHECK(df.instructions[3].pairs[0].key.text == "\"com.example.vendor\"");
  CHECK(df.instructions[4].pairs[0].value.text == "\"This text illustrates that label-values can span multiple lines.\"");

  CHECK(parse_error("FROM a\nENV X\n").find("ENV must have two arguments") != std::string::npos);
  CHECK(parse_error("FROM a\nENV a=b c\n").find("can't find = in 'c'") != std::string::npos);
  CHECK(parse_error("FROM a\nLABEL\n").find("LABEL requires at least one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nENV =x\n").find("ENV names can not be blank") != std::string::npos);
}

TEST_CASE("ARG: names with and without defaults, several per line") {
  auto df = parse("ARG VERSION=latest\nFROM busybox:$VERSION\nARG VERSION\nARG a b=\"x y\"\n");
  const auto& global = df.instructions[0];
  REQUIRE(global.arg_decls.size() == 1);
  CHECK(global.arg_decls[0].name.text == "VERSION");
  CHECK(global.arg_decls[0].value->text == "latest");
  CHECK_FALSE(df.instructions[2].arg_decls[0].value.has_value());
  const auto& two = df.instructions[3];
  REQUIRE(two.arg_decls.size() == 2);
  CHECK(two.arg_decls[1].value->text == "\"x y\"");
  CHECK(parse_error("FROM a\nARG\n").find("ARG requires at least one argument") != std::string::npos);
}

TEST_CASE("HEALTHCHECK: options, CMD forms and NONE") {
  auto df = parse(
      "FROM a\n"
      "HEALTHCHECK --interval=5m --timeout=3s --start-period=1m30s --start-interval=500ms --retries=4 \\\n"
      "  CMD curl -f http://localhost/ || exit 1\n"
      "HEALTHCHECK CMD [\"/bin/check\", \"-q\"]\n"
      "HEALTHCHECK NONE\n");
  const auto& h = df.instructions[1].health;
  CHECK(h.test == std::vector<std::string>{"CMD-SHELL", "curl -f http://localhost/ || exit 1"});
  CHECK(h.interval == 300'000'000'000LL);
  CHECK(h.timeout == 3'000'000'000LL);
  CHECK(h.start_period == 90'000'000'000LL);
  CHECK(h.start_interval == 500'000'000LL);
  CHECK(h.retries == 4);
  CHECK(df.instructions[2].health.test == std::vector<std::string>{"CMD", "/bin/check", "-q"});
  CHECK(df.instructions[3].health.none);
  CHECK(parse_error("FROM a\nHEALTHCHECK NONE x\n").find("HEALTHCHECK NONE takes no arguments") != std::string::npos);
  CHECK(parse_error("FROM a\nHEALTHCHECK CMD\n").find("missing command after HEALTHCHECK CMD") != std::string::npos);
  CHECK(parse_error("FROM a\nHEALTHCHECK RUN x\n").find("unknown type 'RUN' in HEALTHCHECK (try CMD)") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nHEALTHCHECK --interval=5 CMD x\n").find("invalid duration '5'") != std::string::npos);
  CHECK(parse_error("FROM a\nHEALTHCHECK --timeout=1us CMD x\n").find("cannot be less than 1ms") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nHEALTHCHECK --retries=-1 CMD x\n").find("--retries cannot be negative") !=
        std::string::npos);
}

TEST_CASE("ONBUILD stores its trigger; chaining, FROM and MAINTAINER are refused") {
  auto df = parse("FROM a\nONBUILD ADD . /app/src\nONBUILD RUN --network=none /usr/local/bin/python-build --dir /app/src\n");
  const auto& ob = df.instructions[1];
  REQUIRE(ob.trigger);
  CHECK(ob.trigger->keyword == "ADD");
  CHECK(ob.trigger_text == "ADD . /app/src");
  CHECK(arg_texts(*ob.trigger) == std::vector<std::string>{".", "/app/src"});
  CHECK(ob.trigger->pos.column == 9);
  CHECK(df.instructions[2].trigger->flag("network") != nullptr);
  CHECK(parse_error("FROM a\nONBUILD ONBUILD RUN x\n").find("chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nONBUILD FROM b\n").find("FROM isn't allowed as an ONBUILD trigger") != std::string::npos);
  CHECK(parse_error("FROM a\nONBUILD maintainer b\n").find("MAINTAINER isn't allowed as an ONBUILD trigger") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nONBUILD FOO b\n").find("unknown instruction: FOO") != std::string::npos);
}

TEST_CASE("SHELL needs the JSON form; one-argument instructions") {
  auto df = parse("FROM a\nSHELL [\"powershell\", \"-command\"]\nUSER app:staff\nWORKDIR /path with space\nSTOPSIGNAL SIGKILL\n");
  CHECK(arg_texts(df.instructions[1]) == std::vector<std::string>{"powershell", "-command"});
  CHECK(arg_texts(df.instructions[3]) == std::vector<std::string>{"/path with space"});
  CHECK(parse_error("FROM a\nSHELL /bin/bash -c\n").find("SHELL requires the arguments to be in JSON form") !=
        std::string::npos);
  CHECK(parse_error("FROM a\nSHELL []\n").find("SHELL requires at least one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nUSER\n").find("USER requires exactly one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nWORKDIR\n").find("WORKDIR requires exactly one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nRUN\n").find("RUN requires at least one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nEXPOSE\n").find("EXPOSE requires at least one argument") != std::string::npos);
  CHECK(parse_error("FROM a\nVOLUME [\"\"]\n").find("VOLUME specified can not be an empty string") !=
        std::string::npos);
}

TEST_CASE("unknown instructions name file, line, column and the line, with a suggestion") {
  CHECK(parse_error("FROM a\n\n  FRM b\n") ==
        "Dockerfile:3:3: unknown instruction: FRM (did you mean from?): 'FRM b'");
  CHECK(parse_error("FROM a\nFOOBARBAZ x\n") == "Dockerfile:2:1: unknown instruction: FOOBARBAZ: 'FOOBARBAZ x'");
}

TEST_CASE("here-documents") {
  SUBCASE("RUN <<EOF with the body kept verbatim") {
    auto df = parse("FROM a\nRUN <<EOF\necho hello\n  echo $HOME\nEOF\nUSER x\n");
    REQUIRE(df.instructions.size() == 3);
    const auto& run = df.instructions[1];
    REQUIRE(run.heredocs.size() == 1);
    CHECK(run.heredocs[0].name == "EOF");
    CHECK(run.heredocs[0].content == "echo hello\n  echo $HOME\n");
    CHECK(run.heredocs[0].expand);
    CHECK_FALSE(run.heredocs[0].chomp);
    CHECK(run.last_line == 5);
    CHECK(df.instructions[2].pos.line == 6);
  }
  SUBCASE("<<- strips leading tabs from the body and the delimiter line") {
    auto df = parse("FROM a\nRUN <<-EOT bash\n\techo a\n\t\tb\n\tEOT\n");
    const auto& doc = df.instructions[1].heredocs.at(0);
    CHECK(doc.chomp);
    CHECK(doc.body() == "echo a\nb\n");
    CHECK(doc.content == "\techo a\n\t\tb\n");
  }
  SUBCASE("quoting the delimiter turns expansion off") {
    auto df = parse("FROM a\nCOPY <<\"EOF\" <<'E2' <<E3 /dest/\n$x\nEOF\n$y\nE2\n$z\nE3\n");
    const auto& copy = df.instructions[1];
    REQUIRE(copy.heredocs.size() == 3);
    CHECK(copy.heredocs[0].name == "EOF");
    CHECK_FALSE(copy.heredocs[0].expand);
    CHECK(copy.heredocs[0].content == "$x\n");
    CHECK(copy.heredocs[1].name == "E2");
    CHECK_FALSE(copy.heredocs[1].expand);
    CHECK(copy.heredocs[2].expand);
    CHECK(copy.heredocs[2].content == "$z\n");
    CHECK(arg_texts(copy) == std::vector<std::string>{"<<\"EOF\"", "<<'E2'", "<<E3", "/dest/"});
  }
  SUBCASE("several here-documents on one RUN line, and file descriptors") {
    auto df = parse("FROM a\nRUN <<FILE1 cat > file1 && <<FILE2 cat > file2\nI am\nfirst\nFILE1\nI am\nsecond\nFILE2\n");
    const auto& run = df.instructions[1];
    REQUIRE(run.heredocs.size() == 2);
    CHECK(run.heredocs[0].content == "I am\nfirst\n");
    CHECK(run.heredocs[1].content == "I am\nsecond\n");
    auto fd = parse("FROM a\nRUN python3 3<<EOF\nx\nEOF\n");
    CHECK(fd.instructions[1].heredocs.at(0).name == "EOF");
  }
  SUBCASE("JSON form and other instructions have no here-documents") {
    auto df = parse("FROM a\nRUN [\"cat\", \"<<EOF\"]\nENV a=<<EOF\n");
    CHECK(df.instructions[1].heredocs.empty());
    CHECK(df.instructions[2].heredocs.empty());
  }
  SUBCASE("a shift without blanks or a quoted << is not a here-document") {
    auto df = parse("FROM a\nRUN echo $((1<<2)) '<<X' \"<< Y\"\n");
    CHECK(df.instructions[1].heredocs.empty());
  }
  SUBCASE("blanks between << and the delimiter") {
    auto df = parse("FROM a\nRUN << EOF\necho hi\nEOF\nRUN cat <<\t 'Q'  > f\n$x\nQ\nUSER u\n");
    REQUIRE(df.instructions.size() == 4);
    const auto& run = df.instructions[1];
    REQUIRE(run.heredocs.size() == 1);
    CHECK(run.heredocs[0].name == "EOF");
    CHECK(run.heredocs[0].content == "echo hi\n");
    CHECK(run.heredocs[0].expand);
    const auto& quoted = df.instructions[2].heredocs.at(0);
    CHECK(quoted.name == "Q");
    CHECK_FALSE(quoted.expand);
    CHECK(quoted.content == "$x\n");
    CHECK(df.instructions[3].keyword == "USER");
    // As in BuildKit, a spaced shift is then a marker too.
    CHECK(parse("FROM a\nRUN echo $((1 << 2))\nx\n2))\n").instructions[1].heredocs.at(0).name == "2))");
  }
  SUBCASE("<<- followed by a blank is not a here-document") {
    CHECK(parse_error("FROM a\nRUN cat <<- EOF\nhello\nEOF\n").find("unknown instruction: hello") != std::string::npos);
  }
  SUBCASE("$ in a delimiter is kept as written, never expanded") {
    auto df = parse("FROM a\nARG X=1\nRUN <<E$X\necho $X\nE$X\nCOPY <<\"E${X}\" <<'$Y' /d/\na\nE${X}\nb\n$Y\n");
    REQUIRE(df.instructions.size() == 4);
    const auto& run = df.instructions[2].heredocs.at(0);
    CHECK(run.name == "E$X");
    CHECK(run.expand);
    CHECK(run.content == "echo $X\n");
    const auto& copy = df.instructions[3];
    REQUIRE(copy.heredocs.size() == 2);
    CHECK(copy.heredocs[0].name == "E${X}");
    CHECK_FALSE(copy.heredocs[0].expand);
    CHECK(copy.heredocs[1].name == "$Y");
    CHECK(copy.heredocs[1].content == "b\n");
    // The delimiter line must be the marker as written: `E1` does not end it.
    CHECK(parse_error("FROM a\nRUN <<E$X\nE1\n") == "Dockerfile:2:1: unterminated heredoc 'E$X': 'RUN <<E$X'");
  }
  SUBCASE("ONBUILD carries its trigger's here-document") {
    auto df = parse("FROM a\nONBUILD RUN <<EOF\necho x\nEOF\n");
    REQUIRE(df.instructions.size() == 2);
    REQUIRE(df.instructions[1].trigger->heredocs.size() == 1);
    CHECK(df.instructions[1].trigger->heredocs[0].content == "echo x\n");
  }
  SUBCASE("an unterminated here-document is an error") {
    CHECK(parse_error("FROM a\nRUN <<EOF\necho\n") == "Dockerfile:2:1: unterminated heredoc 'EOF': 'RUN <<EOF'");
  }
  SUBCASE("markers") {
    CHECK(parse_heredoc_marker("<<EOF")->name == "EOF");
    CHECK_FALSE(parse_heredoc_marker("<<E\"O\"F")->expand);
    CHECK(parse_heredoc_marker("<<E\"O\"F")->name == "EOF");
    CHECK_FALSE(parse_heredoc_marker("<<").has_value());
    CHECK_FALSE(parse_heredoc_marker("<<<EOF").has_value());
    CHECK_FALSE(parse_heredoc_marker("x<<EOF").has_value());
    CHECK(parse_heredoc_marker("<<-EOF")->chomp);
    CHECK(parse_heredoc_marker("<< EOF")->name == "EOF");
    CHECK(parse_heredoc_marker("2<<\t\"EOF\"")->name == "EOF");
    CHECK(parse_heredoc_marker("<<E$X")->name == "E$X");
    CHECK(parse_heredoc_marker("<<${X:-y}")->name == "${X:-y}");
    CHECK_FALSE(parse_heredoc_marker("<<  ").has_value());
    CHECK_FALSE(parse_heredoc_marker("<< A B").has_value());
  }
}

TEST_CASE("parse_instruction parses one line (commit -c, ONBUILD triggers)") {
  auto ins = parse_instruction("CMD node app.js", "--change");
  CHECK(ins.keyword == "CMD");
  CHECK(arg_texts(ins) == std::vector<std::string>{"node app.js"});
  try {
    parse_instruction("BOGUS x", "--change");
    FAIL("expected an error");
  } catch (const DockerfileError& e) {
    CHECK(std::string(e.what()) == "--change:1:1: unknown instruction: BOGUS: 'BOGUS x'");
  }
}

TEST_CASE("expansion: the reference's examples") {
  std::map<std::string, std::string> env{{"FOO", "/bar"}, {"empty", ""}};
  CHECK(expand("$FOO") == "");
  CHECK(expand("$FOO", env) == "/bar");
  CHECK(expand("${FOO}/baz", env) == "/bar/baz");
  CHECK(expand("\\$FOO", env) == "$FOO");
  CHECK(expand("\\${FOO}", env) == "${FOO}");
  CHECK(expand("${unset:-word}", env) == "word");
  CHECK(expand("${empty:-word}", env) == "word");
  CHECK(expand("${empty-word}", env) == "");
  CHECK(expand("${unset-word}", env) == "word");
  CHECK(expand("${FOO:+word}", env) == "word");
  CHECK(expand("${empty:+word}", env) == "");
  CHECK(expand("${empty+word}", env) == "word");
  CHECK(expand("${unset+word}", env) == "");
  CHECK(expand("${FOO:-$empty}x", env) == "/barx");
  CHECK(expand("${unset:-${FOO}}", env) == "/bar");
  CHECK(expand("$unset${FOO}", env) == "/bar");
}

TEST_CASE("expansion: pattern removal and replacement") {
  std::map<std::string, std::string> env{{"string", "foobarbaz"}, {"path", "/usr/local/bin/tool.tar.gz"}};
  CHECK(expand("${string#*o}", env) == "obarbaz");
  CHECK(expand("${string##*o}", env) == "barbaz");
  CHECK(expand("${string%a*}", env) == "foobarb");
  CHECK(expand("${string%%a*}", env) == "foob");
  CHECK(expand("${path##*/}", env) == "tool.tar.gz");
  CHECK(expand("${path%.*}", env) == "/usr/local/bin/tool.tar");
  CHECK(expand("${path%%.*}", env) == "/usr/local/bin/tool");
  CHECK(expand("${string#x}", env) == "foobarbaz");
  CHECK(expand("${string#f?o}", env) == "barbaz");
  CHECK(expand("${string#[a-f]}", env) == "oobarbaz");
  CHECK(expand("${string#[!f]}", env) == "foobarbaz");
  CHECK(expand("${string/o/0}", env) == "f0obarbaz");
  CHECK(expand("${string//o/0}", env) == "f00barbaz");
  CHECK(expand("${string//a*/X}", env) == "foobX");
  CHECK(expand("${string/b?r/-}", env) == "foo-baz");
  CHECK(expand("${string#\\*}", {{"string", "*x"}}) == "x");
  CHECK(expand("${unset#x}") == "");
}

TEST_CASE("expansion: ${v:?} and ${v?} errors") {
  CHECK(expand_error("${x:?}") == "x: is not allowed to be unset");
  CHECK(expand_error("${x:?}", {{"x", ""}}) == "x: is not allowed to be empty");
  CHECK(expand_error("${x?must be set}") == "x: must be set");
  CHECK(expand("${x?}", {{"x", ""}}) == "");
  CHECK(expand("${x:?}", {{"x", "v"}}) == "v");
}

TEST_CASE("expansion: quotes and escapes") {
  std::map<std::string, std::string> env{{"v", "a b"}};
  CHECK(expand("'$v'", env) == "$v");
  CHECK(expand("\"$v\"", env) == "a b");
  CHECK(expand("\"\\$v\"", env) == "$v");
  CHECK(expand("\"a\\\"b\"") == "a\"b");
  CHECK(expand("\"a\\nb\"") == "a\\nb");  // other escapes stay inside double quotes
  CHECK(expand("a\\ b") == "a b");
  CHECK(expand("it\\'s") == "it's");
  CHECK(expand("'a\\'") == "a\\");
  CHECK(expand("x\\") == "x");
  CHECK(expand("$") == "$");
  CHECK(expand("a$") == "a$");
  CHECK(expand("$1x", {{"1", "one"}}) == "onex");
  CHECK(expand("`$v", env, '`') == "$v");
  CHECK(expand("C:\\dir", {}, '`') == "C:\\dir");
}

TEST_CASE("expansion: malformed substitutions") {
  CHECK(expand_error("'abc") == "unexpected end of statement while looking for matching single-quote");
  CHECK(expand_error("\"abc") == "unexpected end of statement while looking for matching double-quote");
  CHECK(expand_error("${abc") == "syntax error: missing '}'");
  CHECK(expand_error("${abc:-x") == "syntax error: missing '}'");
  CHECK(expand_error("${}") == "syntax error: bad substitution");
  CHECK(expand_error("${:x}") == "syntax error: bad substitution");
  CHECK(expand_error("${a:#x}") == "unsupported modifier (:#) in substitution");
  CHECK(expand_error("${a!x}") == "unsupported modifier (!) in substitution");
  CHECK(expand_error("${a/x") == "syntax error: missing '/' in ${}");
}

TEST_CASE("process_words splits variables' values, not quoted text") {
  ShellLexer lexer;
  auto lookup = vars({{"PORTS", "80/tcp  443"}});
  CHECK(lexer.process_words("$PORTS 8080", lookup) == std::vector<std::string>{"80/tcp", "443", "8080"});
  CHECK(lexer.process_words("\"$PORTS\"", lookup) == std::vector<std::string>{"80/tcp  443"});
  CHECK(lexer.process_words("a\\ b c", lookup) == std::vector<std::string>{"a b", "c"});
}

TEST_CASE("skip_unset leaves unknown references as written") {
  ShellLexer lexer;
  lexer.skip_unset = true;
  CHECK(lexer.process_word("$a ${b} ${c:-x} $d", vars({{"d", "D"}})) == "$a ${b} ${c:-x} D");
}

TEST_CASE("Go durations") {
  CHECK(parse_go_duration("30s") == 30'000'000'000LL);
  CHECK(parse_go_duration("1h2m3s") == 3'723'000'000'000LL);
  CHECK(parse_go_duration("1.5s") == 1'500'000'000LL);
  CHECK(parse_go_duration("250ms") == 250'000'000LL);
  CHECK(parse_go_duration("0") == 0);
  CHECK_FALSE(parse_go_duration("5").has_value());
  CHECK_FALSE(parse_go_duration("5x").has_value());
  CHECK_FALSE(parse_go_duration("").has_value());
  CHECK(format_go_duration(30'000'000'000LL) == "30s");
  CHECK(format_go_duration(90'000'000'000LL) == "1m30s");
  CHECK(format_go_duration(1'500'000'000LL) == "1.5s");
  CHECK(format_go_duration(250'000'000LL) == "250ms");
  CHECK(format_go_duration(3'600'000'000'000LL) == "1h0m0s");
}

TEST_CASE("shell patterns") {
  CHECK(shell_pattern_match("*.go", "main.go"));
  CHECK_FALSE(shell_pattern_match("*.go", "main.c"));
  CHECK(shell_pattern_match("a?c", "abc"));
  CHECK(shell_pattern_match("[a-c]x", "bx"));
  CHECK_FALSE(shell_pattern_match("[!a-c]x", "bx"));
  CHECK(shell_pattern_match("\\*", "*"));
  CHECK_FALSE(shell_pattern_match("\\*", "x"));
  CHECK(shell_pattern_match("*", ""));
}
