// The build planner: stages and --target, build args and their scopes, the
// config and history each instruction leaves, and the cache key.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "git_source.hpp"
#include "strata/build.hpp"
#include "strata/error.hpp"

using namespace strata::build;

namespace {

std::optional<BaseImage> fake_store(const std::string& ref) {
  if (ref == "busybox" || ref == "busybox:latest") {
    BaseImage img;
    img.id = "sha256:busybox";
    img.config.env = {"PATH=/bin:/usr/bin"};
    img.config.cmd = std::vector<std::string>{"sh"};
    img.config.working_dir = "/home";
    return img;
  }
  if (ref == "onbuild-base") {
    BaseImage img;
    img.id = "sha256:onbuild";
    img.config.env = {"PATH=/bin"};
    img.config.on_build = {"ENV TRIGGERED=yes", "RUN echo from-trigger"};
    return img;
  }
  if (ref == "tools:1") {
    BaseImage img;
    img.id = "sha256:tools";
    return img;
  }
  return std::nullopt;
}

Plan plan(const std::string& text, std::map<std::string, std::string> args = {}, std::string target = "") {
  static Dockerfile df;  // the plan refers to nothing in it, but keep it alive anyway
  df = parse_dockerfile(text, "Dockerfile");
  PlanOptions opt;
  opt.build_args = std::move(args);
  opt.target = std::move(target);
  opt.resolve = fake_store;
  return plan_build(df, opt);
}

std::string plan_error(const std::string& text, std::map<std::string, std::string> args = {}, std::string target = "") {
  try {
    plan(text, std::move(args), std::move(target));
  } catch (const strata::Error& e) {
    return e.what();
  }
  return "(no error)";
}

// What the build checks found, each as "RULE@LINE: MESSAGE".
std::vector<std::string> findings(const std::string& text, std::map<std::string, std::string> args = {}) {
  std::vector<std::string> out;
  for (const auto& c : plan(text, std::move(args)).checks) out.push_back(c.rule + "@" + std::to_string(c.line) + ": " + c.message);
  return out;
}

const ImageConfig& final_config(const Plan& p) { return p.stages[static_cast<size_t>(p.target)].config; }

std::vector<std::string> history(const Plan& p) {
  std::vector<std::string> out;
  for (const auto& st : p.stages[static_cast<size_t>(p.target)].steps) {
    if (st.has_history) out.push_back(st.history.created_by);
  }
  return out;
}

}  // namespace

TEST_CASE("stages, names and --target: only the stages the target needs") {
  const std::string df =
      "FROM busybox AS base\nRUN echo base\n"
      "FROM busybox AS unrelated\nRUN echo unrelated\n"
      "FROM base AS build\nRUN echo build\n"
      "FROM scratch AS final\nCOPY --from=build /out /out\n";
  auto all = plan(df);
  REQUIRE(all.stages.size() == 3);  // base, build, final; not "unrelated"
  CHECK(all.stages[0].name == "base");
  CHECK(all.stages[1].name == "build");
  CHECK(all.stages[1].base_stage == 0);
  CHECK(all.stages[2].needs == std::vector<int>{2});
  CHECK(all.target == 2);
  CHECK(all.total_steps == 6);
  CHECK(all.stages[0].steps[0].number == 1);
  CHECK(all.stages[2].steps[1].number == 6);
  auto only = plan(df, {}, "unrelated");
  REQUIRE(only.stages.size() == 1);
  CHECK(only.stages[0].name == "unrelated");
  CHECK(only.total_steps == 2);
  CHECK(plan_error(df, {}, "nope") == "target stage 'nope' could not be found in 'Dockerfile'");
}

TEST_CASE("COPY --from by name, by index and by image") {
  auto p = plan(
      "FROM busybox\nRUN make\n"
      "FROM busybox AS two\n"
      "COPY --from=0 /a /a\nCOPY --from=tools:1 /t /t\n");
  const auto& steps = p.stages.back().steps;
  CHECK(steps[1].from_stage == 0);
  CHECK(steps[2].from_image == "sha256:tools");
  CHECK(p.stages.back().images_needed == std::vector<std::string>{"tools:1"});
  CHECK(plan_error("FROM busybox\nCOPY --from=0 /a /a\n").find("refers to the current or a later build stage") !=
        std::string::npos);
  CHECK(plan_error("FROM busybox\nCOPY --from=nothere /a /a\n")
            .find("Dockerfile:2:6: --from=nothere: no build stage of that name and no such image") != std::string::npos);
}

TEST_CASE("a missing base image names it and says how to get it") {
  CHECK(plan_error("FROM alpine:3.20\nRUN x\n") ==
        "Dockerfile:1:6: base image 'alpine:3.20' is not in the local store; get it with 'strata import', "
        "'strata load' or 'strata pull': 'FROM alpine:3.20'");
  CHECK(plan_error("RUN x\nFROM busybox\n").find("no build stage in current context") != std::string::npos);
  CHECK(plan_error("ARG a\n").find("has no FROM instruction") != std::string::npos);
}

TEST_CASE("ARG: global args in FROM, redeclared in a stage, --build-arg, ENV wins") {
  const std::string df =
      "ARG BASE=busybox\nARG TAG\n"
      "FROM ${BASE}${TAG:+:$TAG}\n"
      "RUN echo $BASE\n"            // not declared in the stage: not visible
      "ARG BASE\n"                  // takes the global default
      "ARG LOCAL=x-${BASE}\n"
      "ENV FROM_ARG=$LOCAL\n"
      "ARG OVER=arg\nENV OVER=env\nENV SEEN=$OVER\n";
  auto p = plan(df);
  CHECK(p.stages[0].base == "busybox");
  const auto& c = final_config(p);
  CHECK(c.getenv("FROM_ARG") == "x-busybox");
  CHECK(c.getenv("SEEN") == "env");
  CHECK_FALSE(c.getenv("LOCAL").has_value());  // args are not in the image config
  auto with_args = plan(df, {{"TAG", "latest"}, {"LOCAL", "cli"}, {"UNUSED", "1"}});
  CHECK(with_args.stages[0].base == "busybox:latest");
  CHECK(final_config(with_args).getenv("FROM_ARG") == "cli");
  REQUIRE(with_args.warnings.size() == 1);
  CHECK(with_args.warnings[0] == "one or more build-args [UNUSED] were not consumed");
  CHECK(plan_error("ARG B\nFROM $B\n") == "Dockerfile:2:6: base name ($B) should not be blank: 'FROM $B'");
}

TEST_CASE("RUN: environment, build args in history, proxy args, shell, heredocs") {
  auto p = plan(
      "FROM busybox\nARG V=1\nARG EMPTY\nENV E=e\n"
      "RUN make $V\n"
      "SHELL [\"/bin/bash\", \"-eu\", \"-c\"]\n"
      "RUN [\"ls\", \"-l\"]\nRUN echo hi\n",
      {{"http_proxy", "http://proxy:3128"}});
  const auto& steps = p.stages[0].steps;
  const Step& run = steps[4];
  CHECK(run.kind == StepKind::run);
  CHECK(run.argv == std::vector<std::string>{"/bin/sh", "-c", "make $V"});
  CHECK(run.env == std::vector<std::string>{"PATH=/bin:/usr/bin", "E=e", "V=1", "http_proxy=http://proxy:3128"});
  CHECK(run.used_args == std::vector<std::pair<std::string, std::string>>{{"V", "1"}});
  CHECK(run.history.created_by == "RUN |1 V=1 /bin/sh -c make $V # buildkit");
  CHECK_FALSE(run.history.empty_layer);
  CHECK(run.workdir == "/home");
  CHECK(steps[6].argv == std::vector<std::string>{"ls", "-l"});
  CHECK(steps[7].argv == std::vector<std::string>{"/bin/bash", "-eu", "-c", "echo hi"});
  CHECK(p.warnings.empty());

  auto h = plan(
      "FROM busybox\n"
      "RUN <<EOF\necho one\nEOF\n"
      "RUN <<EOF\n#!/usr/bin/env python3\nprint(1)\nEOF\n"
      "RUN cat <<A > /a && cat <<B > /b\nx\nA\ny\nB\n");
  const auto& hs = h.stages[0].steps;
  CHECK(hs[1].argv == std::vector<std::string>{"/bin/sh", "-c", "echo one\n"});
  CHECK(hs[2].argv == std::vector<std::string>{"/dev/pipes/EOF"});
  REQUIRE(hs[2].files.size() == 1);
  CHECK(hs[2].files[0].content == "#!/usr/bin/env python3\nprint(1)\n");
  CHECK(hs[3].argv == std::vector<std::string>{"/bin/sh", "-c", "cat <<A > /a && cat <<B > /b\nx\nA\ny\nB"});
  // Blanks after << and $ in the delimiter, as BuildKit reads them; the
  // delimiter's $X is not the ARG's value.
  auto spaced = plan(
      "FROM busybox\nARG X=1\n"
      "RUN << EOF\necho two\nEOF\n"
      "RUN <<E$X\n#!/bin/sh\necho $X\nE$X\n"
      "RUN cat <<  'Q' > /q\n$X\nQ\n");
  const auto& ss = spaced.stages[0].steps;
  CHECK(ss[2].argv == std::vector<std::string>{"/bin/sh", "-c", "echo two\n"});
  CHECK(ss[3].argv == std::vector<std::string>{"/dev/pipes/E$X"});
  CHECK(ss[3].files.at(0).content == "#!/bin/sh\necho $X\n");
  CHECK(ss[4].argv == std::vector<std::string>{"/bin/sh", "-c", "cat <<  'Q' > /q\n$X\nQ"});
  CHECK(plan_error("FROM busybox\nCOPY << EOF /x\nhi\nEOF\n") ==
        "Dockerfile:2:6: COPY takes a here-document as one word: write <<NAME, with no blank after <<: 'COPY << EOF /x'");
  CHECK(plan_error("FROM busybox\nRUN --mount=type=tmpfs,target=/x,size=lots make\n").find("RUN --mount: invalid mount option size") !=
        std::string::npos);
  CHECK(plan_error("FROM busybox\nRUN --network=bridge x\n").find("unsupported network mode 'bridge'") !=
        std::string::npos);
}

TEST_CASE("ENV: the reference's example, expanded with the values before the instruction") {
  auto p = plan("FROM busybox\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\nENV legacy a \"b\" c\n");
  const auto& c = final_config(p);
  CHECK(c.getenv("def") == "hello");
  CHECK(c.getenv("ghi") == "bye");
  CHECK(c.getenv("legacy") == "a b c");
  CHECK(c.env.front() == "PATH=/bin:/usr/bin");
  CHECK(history(p)[1] == "ENV abc=bye def=hello");
}

TEST_CASE("CMD and ENTRYPOINT: forms, and ENTRYPOINT resets an inherited CMD") {
  auto inherited = plan("FROM busybox\nENTRYPOINT [\"/bin/app\"]\n");
  CHECK_FALSE(final_config(inherited).cmd.has_value());
  CHECK(final_config(inherited).entrypoint == std::vector<std::string>{"/bin/app"});
  auto kept = plan("FROM busybox\nCMD [\"--help\"]\nENTRYPOINT /bin/app -v\n");
  CHECK(final_config(kept).cmd == std::vector<std::string>{"--help"});
  CHECK(final_config(kept).entrypoint == std::vector<std::string>{"/bin/sh", "-c", "/bin/app -v"});
  CHECK(history(kept)[0] == "CMD [\"--help\"]");
  CHECK(history(kept)[1] == "ENTRYPOINT [\"/bin/sh\" \"-c\" \"/bin/app -v\"]");
  auto cleared = plan("FROM busybox\nCMD []\n");
  CHECK(final_config(cleared).cmd == std::vector<std::string>{});
  CHECK(plan("FROM busybox\nCMD [\"sh\"]\nFROM busybox\n").stages.size() == 1);
}

TEST_CASE("WORKDIR, USER, LABEL, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER") {
  auto p = plan(
      "FROM busybox\nENV DIRPATH=/path DIRNAME=project\n"
      "WORKDIR /a\nWORKDIR b\nWORKDIR c/../d\nWORKDIR $DIRPATH/$DIRNAME\nWORKDIR rel\n"
      "USER ${NAME:-app}:staff\n"
      "LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0 multi=\"a b\"\n"
      "EXPOSE 80 443/udp 8000-8002/TCP\n"
      "VOLUME [\"/data\"]\nVOLUME /var/log $DIRPATH\n"
      "STOPSIGNAL SIGKILL\n"
      "HEALTHCHECK --interval=30s --timeout=3s --retries=3 CMD curl -f http://localhost/\n"
      "ONBUILD RUN echo later\n"
      "MAINTAINER someone@example.com\n");
  const auto& st = p.stages[0];
  CHECK(st.steps[2].config.working_dir == "/a");
  CHECK(st.steps[3].config.working_dir == "/a/b");
  CHECK(st.steps[4].config.working_dir == "/a/b/d");
  CHECK(st.steps[5].config.working_dir == "/path/project");
  CHECK(st.steps[6].config.working_dir == "/path/project/rel");
  CHECK(st.steps[6].kind == StepKind::workdir);
  CHECK(st.steps[6].path == "/path/project/rel");
  const auto& c = final_config(p);
  CHECK(c.user == "app:staff");
  CHECK(c.labels.at("com.example.vendor") == "ACME Inc");
  CHECK(c.labels.at("multi") == "a b");
  CHECK(c.exposed_ports == std::set<std::string>{"80/tcp", "443/udp", "8000/tcp", "8001/tcp", "8002/tcp"});
  CHECK(c.volumes == std::set<std::string>{"/data", "/var/log", "/path"});
  CHECK(c.stop_signal == "SIGKILL");
  REQUIRE(c.healthcheck.has_value());
  CHECK(c.healthcheck->test == std::vector<std::string>{"CMD-SHELL", "curl -f http://localhost/"});
  CHECK(c.healthcheck->interval == 30'000'000'000LL);
  CHECK(c.healthcheck->retries == 3);
  CHECK(c.on_build == std::vector<std::string>{"RUN echo later"});
  CHECK(p.stages[0].author == "someone@example.com");
  auto h = history(p);
  CHECK(h[1] == "WORKDIR /a");
  CHECK(h[6] == "USER app:staff");
  CHECK(h[7] == "LABEL com.example.vendor=ACME Inc version=1.0 multi=a b");
  CHECK(h[8] == "EXPOSE map[443/udp:{} 80/tcp:{} 8000/tcp:{} 8001/tcp:{} 8002/tcp:{}]");
  CHECK(h[9] == "VOLUME [/data]");
  CHECK(h[10] == "VOLUME [/var/log /path]");
  CHECK(h[11] == "STOPSIGNAL SIGKILL");
  CHECK(h[12] == "HEALTHCHECK &{[\"CMD-SHELL\" \"curl -f http://localhost/\"] \"30s\" \"3s\" \"0s\" \"0s\" '\\x03'}");
  CHECK(h[13] == "ONBUILD RUN echo later");
  CHECK(h[14] == "MAINTAINER someone@example.com");
  CHECK(plan_error("FROM busybox\nEXPOSE 80/tcpx\n").find("invalid proto: 'tcpx'") != std::string::npos);
  CHECK(plan_error("FROM busybox\nEXPOSE 99999\n").find("invalid containerPort: '99999'") != std::string::npos);
  // A host mapping exposes its container port, as in docker (a build check warns).
  CHECK(final_config(plan("FROM busybox\nEXPOSE 8080:80 127.0.0.1::81/udp\n")).exposed_ports ==
        std::set<std::string>{"80/tcp", "81/udp"});
  CHECK(plan_error("FROM busybox\nSTOPSIGNAL SIGFOO\n").find("invalid signal: 'SIGFOO'") != std::string::npos);
  CHECK(plan_error("FROM busybox\nUSER ${X:?needs X}\n") ==
        "Dockerfile:2:6: X: needs X: 'USER ${X:?needs X}'");
  auto none = plan("FROM busybox\nHEALTHCHECK NONE\n");
  CHECK(final_config(none).healthcheck->test == std::vector<std::string>{"NONE"});
}

TEST_CASE("ONBUILD triggers of the base image run first and are not inherited") {
  auto p = plan("FROM onbuild-base\nRUN echo mine\n");
  const auto& steps = p.stages[0].steps;
  REQUIRE(steps.size() == 4);
  CHECK(steps[1].display == "ONBUILD ENV TRIGGERED=yes");
  CHECK(steps[2].kind == StepKind::run);
  CHECK(steps[2].argv == std::vector<std::string>{"/bin/sh", "-c", "echo from-trigger"});
  CHECK(final_config(p).getenv("TRIGGERED") == "yes");
  CHECK(final_config(p).on_build.empty());
}

TEST_CASE("COPY and ADD: a here-document name that is not a plain file name is refused") {
  for (const char* name : {"../../../../tmp/x", "/tmp/x", "a/b", "..", "."}) {
    std::string df = std::string("FROM busybox\nCOPY <<") + name + " /d/\nbody\n" + name + "\n";
    CHECK_MESSAGE(plan_error(df).find("cannot be a file name") != std::string::npos, name);
  }
  auto p = plan("FROM busybox\nCOPY <<file.txt /d/\nbody\nfile.txt\n", {});
  CHECK(p.stages[0].steps[1].inline_sources.at(0).name == "file.txt");
}

TEST_CASE("COPY and ADD: expansion, destination rules, flags, heredoc sources") {
  auto p = plan(
      "FROM busybox\nARG SRC=app\nWORKDIR /srv\n"
      "COPY --chown=1:1 --chmod=0640 $SRC rel/\n"
      "COPY a b /abs/\n"
      "COPY <<EOF <<'RAW' ./inline/\nhome=$HOME \\$x \\d\nEOF\nraw $HOME\nRAW\n"
      "ADD --checksum=sha256:0000000000000000000000000000000000000000000000000000000000000000 "
      "https://example.com/f.tgz /f.tgz\n"
      "COPY --exclude=*.md . .\n",
      {});
  const auto& s = p.stages[0].steps;
  CHECK(s[3].sources == std::vector<std::string>{"app"});
  CHECK(s[3].dest == "/srv/rel");
  CHECK(s[3].dest_is_dir);
  CHECK(s[3].chown == "1:1");
  CHECK(s[3].chmod == "0640");
  CHECK(s[3].history.created_by == "COPY app rel/ # buildkit");
  CHECK(s[4].dest == "/abs");
  REQUIRE(s[5].inline_sources.size() == 2);
  CHECK(s[5].inline_sources[0].content == "home= $x \\d\n");
  CHECK(s[5].inline_sources[1].content == "raw $HOME\n");
  CHECK(s[5].history.created_by == "COPY <<EOF <<RAW ./inline/ # buildkit");
  CHECK(s[6].kind == StepKind::add);
  CHECK(s[7].excludes == std::vector<std::string>{"*.md"});
  CHECK(s[7].dest == "/srv");
  CHECK(plan_error("FROM busybox\nCOPY a b /notadir\n").find("the destination must be a directory and end with a /") !=
        std::string::npos);
  CHECK(plan_error("FROM busybox\nCOPY --chmod=u+z a /b\n").find("invalid --chmod 'u+z'") != std::string::npos);
  CHECK(plan_error("FROM busybox\nCOPY --chmod=10000 a /b\n").find("invalid --chmod '10000'") != std::string::npos);
  CHECK(plan("FROM busybox\nARG M=go-w\nADD --chmod=u=rwX,$M a /b\n").stages[0].steps[2].chmod == "u=rwX,go-w");
  auto unpack = plan("FROM busybox\nADD a /b\nADD --unpack=false a /b\nADD --unpack a /b\n").stages[0].steps;
  CHECK_FALSE(unpack[1].unpack.has_value());
  CHECK(unpack[2].unpack == false);
  CHECK(unpack[3].unpack == true);
  CHECK(unpack[1].normalized != unpack[2].normalized);  // a different cache key
  CHECK(plan_error("FROM busybox\nCOPY http://x/y /y\n").find("COPY cannot copy from a URL") != std::string::npos);
  CHECK(plan_error("FROM busybox\nADD --checksum=sha256:00 a /b\n").find("only be used with HTTP(S) and git sources") !=
        std::string::npos);
}

TEST_CASE("which ADD sources are git repositories, and what their fragments say") {
  auto git = [](const std::string& src) { return parse_git_source(src); };
  CHECK_FALSE(git("app"));
  CHECK_FALSE(git("./x.git"));
  CHECK_FALSE(git("/abs/x.git"));
  CHECK_FALSE(git("https://example.com/archive.tgz"));
  CHECK_FALSE(git("https://example.com/x.git/file"));  // the path must end in .git
  CHECK_FALSE(git("ftp://example.com/x.git"));
  CHECK_FALSE(git("github.com/moby/buildkit"));  // indistinguishable from a local path
  auto g = git("https://example.com/org/repo.git#v1.2:docs/api");
  REQUIRE(g);
  CHECK(g->remote == "https://example.com/org/repo.git");
  CHECK(g->ref == "v1.2");
  CHECK(g->subdir == "docs/api");
  g = git("HTTPS://example.com/repo.git");
  REQUIRE(g);
  CHECK(g->ref.empty());
  g = git("git@example.com:org/repo.git#main");
  REQUIRE(g);
  CHECK(g->remote == "git@example.com:org/repo.git");
  CHECK(g->ref == "main");
  REQUIRE(git("git://example.com/repo"));
  REQUIRE(git("ssh://git@example.com/repo"));
  std::string sha(40, 'a');
  g = git("git://h/r.git##ref=refs/tags/v1,commit=" + std::string(40, 'A') + ",subdir=/a/./b/");
  REQUIRE(g);
  CHECK(g->ref == "refs/tags/v1");
  CHECK(g->commit == sha);
  CHECK(g->subdir == "a/b");
  g = git("git://h/r.git##commit=" + sha);
  REQUIRE(g);
  CHECK(g->ref == sha);
  for (const char* bad : {"git://h/r.git#-upload-pack=x", "git://h/r.git#main:../x",
                          "git://h/r.git#HEAD~1", "git://h/r.git#a^{}", "git://h/r.git#a..b", "git://h/r.git#x@{1}",
                          "git://h/r.git##ref=a b", "git://h/r.git##path=x", "git://h/r.git##commit=abc",
                          "git://h/r.git##ref", "git://h/r .git"}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(git(bad), strata::Error);
  }
  CHECK(redact_git_remote("https://u:secret@h/r.git") == "https://u:xxxxx@h/r.git");
  CHECK(redact_git_remote("https://TOKEN@h/r.git") == "https://xxxxx@h/r.git");
  CHECK(redact_git_remote("http://bob:S3c@ret@h/x.git#main") == "http://bob:xxxxx@h/x.git#main");
  CHECK(redact_git_remote("git@h:r.git") == "git@h:r.git");
  CHECK_THROWS_AS(git("https://h/r.git?ref=main"), strata::Error);
  auto redacted = plan("FROM busybox\nADD https://u:pw@h/r.git#main /src\n").stages[0].steps[1];
  CHECK(redacted.history.created_by == "ADD https://u:xxxxx@h/r.git#main /src # buildkit");
  CHECK(redacted.display.find("pw") == std::string::npos);
  CHECK(redact_git_remote("https://h/a@b:c") == "https://h/a@b:c");

  auto steps = plan("FROM busybox\nADD --keep-git-dir https://h/r.git#main /src\nADD https://h/r.git#main /src\n"
                    "ADD --checksum=" + std::string(40, 'B') + " https://h/r.git /c\n").stages[0].steps;
  CHECK(steps[1].keep_git_dir);
  CHECK_FALSE(steps[2].keep_git_dir);
  CHECK(steps[1].normalized != steps[2].normalized);
  CHECK(steps[3].checksum == std::string(40, 'b'));
  CHECK(plan_error("FROM busybox\nADD --checksum=sha256:" + std::string(64, '0') + " https://h/r.git /c\n")
            .find("expected a full commit id") != std::string::npos);
  CHECK(plan_error("FROM busybox\nADD --checksum=" + sha + " https://h/r.git a /c/\n")
            .find("cannot mix a git repository with other sources") != std::string::npos);
  CHECK(plan_error("FROM busybox\nADD https://h/r.git#--x /c\n").find("Dockerfile:2") != std::string::npos);
}

TEST_CASE("FROM --platform accepts the native platform only") {
  std::string native = "linux/" + native_arch();
  CHECK(plan("FROM --platform=" + native + " busybox\n").stages.size() == 1);
  CHECK(plan("FROM --platform=$BUILDPLATFORM busybox\n").stages.size() == 1);
  CHECK(plan_error("FROM --platform=windows/arm busybox\n").find("is not supported") != std::string::npos);
  auto p = plan("FROM busybox\nARG TARGETARCH\nENV ARCH=$TARGETARCH\n");
  CHECK(final_config(p).getenv("ARCH") == native_arch());
}

TEST_CASE("scratch starts with an empty config and the default PATH") {
  auto p = plan("FROM scratch\nCMD [\"/app\"]\n");
  CHECK(final_config(p).env == std::vector<std::string>{kDefaultPath});
  CHECK(final_config(p).cmd == std::vector<std::string>{"/app"});
  CHECK_FALSE(p.stages[0].base_image.has_value());
}

TEST_CASE("config JSON round trip keeps unknown fields") {
  nlohmann::json j = {{"Env", {"A=1"}}, {"Cmd", {"sh"}}, {"ExposedPorts", {{"80/tcp", nlohmann::json::object()}}},
                      {"Healthcheck", {{"Test", {"CMD", "x"}}, {"Interval", 5}}}, {"ArgsEscaped", true}};
  ImageConfig c = config_from_json(j);
  CHECK(c.env == std::vector<std::string>{"A=1"});
  CHECK(c.exposed_ports.count("80/tcp") == 1);
  CHECK(c.healthcheck->interval == 5);
  c.user = "u";
  c.cmd.reset();
  nlohmann::json back = config_to_json(c);
  CHECK(back["User"] == "u");
  CHECK_FALSE(back.contains("Cmd"));
  CHECK(back["ArgsEscaped"] == true);
  CHECK(back["Healthcheck"]["Test"] == nlohmann::json({"CMD", "x"}));
}

TEST_CASE("cache keys: XXH3-128 over every input, each of which changes the key") {
  std::vector<std::pair<std::string, std::string>> args{{"V", "1"}};
  std::string key = cache_key("sha256:parent", "{\"op\":\"RUN\"}", args, "");
  CHECK(key.size() == 32);
  CHECK(key.find_first_not_of("0123456789abcdef") == std::string::npos);
  CHECK(key == cache_key("sha256:parent", "{\"op\":\"RUN\"}", args, ""));
  CHECK(key != cache_key("sha256:other", "{\"op\":\"RUN\"}", args, ""));
  CHECK(key != cache_key("sha256:parent", "{\"op\":\"RUN \"}", args, ""));
  CHECK(key != cache_key("sha256:parent", "{\"op\":\"RUN\"}", {{"V", "2"}}, ""));
  CHECK(key != cache_key("sha256:parent", "{\"op\":\"RUN\"}", {}, ""));
  CHECK(key != cache_key("sha256:parent", "{\"op\":\"RUN\"}", args, "sources"));
  // Field boundaries matter: moving bytes between fields changes the key.
  CHECK(cache_key("ab", "c", {}, "") != cache_key("a", "bc", {}, ""));
}

TEST_CASE("the normalised instruction is the expanded one") {
  auto a = plan("FROM busybox\nARG D=/x\nCOPY f $D/\n");
  auto b = plan("FROM busybox\nARG D=/x\nCOPY f $D/\n", {{"D", "/y"}});
  CHECK(a.stages[0].steps[2].normalized != b.stages[0].steps[2].normalized);
  auto c = plan("FROM busybox\nARG D=/x\nCOPY f /x/\n");
  CHECK(a.stages[0].steps[2].normalized == c.stages[0].steps[2].normalized);
}

TEST_CASE("go_quote_list formats like Go's %q") {
  CHECK(go_quote_list({"/bin/sh", "-c", "echo \"hi\"\n"}) == "[\"/bin/sh\" \"-c\" \"echo \\\"hi\\\"\\n\"]");
  CHECK(go_quote_list({}) == "[]");
}

TEST_CASE("commit -c changes mean what the same Dockerfile lines mean") {
  using nlohmann::json;
  json base = {{"architecture", "amd64"},
               {"os", "linux"},
               {"config", {{"Env", {"PATH=/usr/bin:/bin", "HOME=/root"}}}},
               {"rootfs", {{"type", "layers"}, {"diff_ids", json::array()}}}};
  json c = apply_config_changes(
      base, {"CMD [\"node\", \"app.js\"]", "ENTRYPOINT /bin/run --x", "ENV A=1 B=\"two words\"", "ENV A 3",
             "ENV PATH=$PATH:/opt/bin", "label x=y", "EXPOSE 80 53/udp", "VOLUME /data", "WORKDIR /app",
             "WORKDIR sub", "USER 1000:1000", "STOPSIGNAL SIGTERM"});
  const json& k = c["config"];
  CHECK(k["Cmd"] == json::array({"node", "app.js"}));
  CHECK(k["Entrypoint"] == json::array({"/bin/sh", "-c", "/bin/run --x"}));
  CHECK(k["Env"] == json::array({"PATH=/usr/bin:/bin:/opt/bin", "HOME=/root", "A=3", "B=two words"}));
  CHECK(k["Labels"]["x"] == "y");
  CHECK(k["ExposedPorts"].contains("80/tcp"));
  CHECK(k["ExposedPorts"].contains("53/udp"));
  CHECK(k["Volumes"].contains("/data"));
  CHECK(k["WorkingDir"] == "/app/sub");
  CHECK(k["User"] == "1000:1000");
  CHECK(k["StopSignal"] == "SIGTERM");
  // Everything outside "config" is kept.
  CHECK(c["rootfs"] == base["rootfs"]);
  CHECK(apply_config_changes(base, {}) == base);
  CHECK_THROWS_AS(apply_config_changes(base, {"RUN true"}), strata::UsageError);
  CHECK_THROWS_AS(apply_config_changes(base, {"COPY a /b"}), strata::UsageError);
  CHECK_THROWS_AS(apply_config_changes(base, {"FROM x"}), strata::UsageError);
  CHECK_THROWS_AS(apply_config_changes(base, {"ENV"}), strata::UsageError);
  CHECK_THROWS_AS(apply_config_changes(base, {"EXPOSE http"}), strata::UsageError);
  CHECK_THROWS_AS(apply_config_changes(base, {"CMD a\nRUN b"}), strata::UsageError);
  try {
    apply_config_changes(base, {"ENV A=1", "EXPOSE http"});
    FAIL("no error");
  } catch (const strata::UsageError& e) {
    CHECK(std::string(e.what()).find("'EXPOSE http'") != std::string::npos);
  }
}

TEST_CASE("--chmod modes: octal replaces, symbolic changes each entry's own mode") {
  auto change = [](const std::string& text) {
    auto m = ModeChange::parse(text);
    REQUIRE_MESSAGE(m.has_value(), text);
    return *m;
  };
  auto file = [&](const std::string& text, std::uint32_t mode) { return change(text).apply(mode, false); };
  auto dir = [&](const std::string& text, std::uint32_t mode) { return change(text).apply(mode, true); };
  CHECK(file("755", 0600) == 0755);
  CHECK(dir("0644", 0755) == 0644);
  CHECK(file("04755", 0) == 04755);
  CHECK(file("0", 0777) == 0);
  // u=rwX,go=rX: directories 755, files 644 unless already executable
  CHECK(dir("u=rwX,go=rX", 0700) == 0755);
  CHECK(file("u=rwX,go=rX", 0600) == 0644);
  CHECK(file("u=rwX,go=rX", 0700) == 0755);
  CHECK(file("u=rwX,go=rX", 0666) == 0644);
  CHECK(file("+x", 0644) == 0755);
  CHECK(file("a-w", 0664) == 0444);
  CHECK(file("-w", 0664) == 0444);
  CHECK(dir("g+s", 0755) == 02755);
  CHECK(file("u+s", 0755) == 04755);
  CHECK(file("o+s", 0755) == 0755);
  CHECK(dir("+t", 0777) == 01777);
  CHECK(file("g=u", 0740) == 0770);
  CHECK(file("go=u-w", 0640) == 0644);
  CHECK(file("o=", 0777) == 0770);
  CHECK(file("u+r-w", 0200) == 0400);
  CHECK(file("ug+rw,o-rwx", 0007) == 0660);
  CHECK(file("=r", 06777) == 0444);
  CHECK(file("u=rwx,g=rx,o=", 04000) == 0750);
  // X looks at the mode as the earlier clauses left it
  CHECK(file("a-x,a+X", 0755) == 0644);
  CHECK(file("u+x,go+X", 0600) == 0711);
  for (const char* bad : {"", "u", "ugo", "z", "u+z", "u+x,", ",u+x", "u+x,,g+x", "8", "10000", "077777", "+x y",
                          "u+ug", "a=rwxq", "0x755", "-0755"}) {
    CHECK_FALSE_MESSAGE(ModeChange::parse(bad).has_value(), bad);
  }
}

TEST_CASE("RUN --mount: the mount spec parser") {
  RunMount c = parse_run_mount("type=cache,target=/root/.cache,sharing=locked,mode=0700,uid=1000,gid=100", "/");
  CHECK(c.type == MountType::cache);
  CHECK(c.target == "/root/.cache");
  CHECK(c.id == "/root/.cache");  // the id defaults to the target
  CHECK(c.sharing == CacheSharing::locked);
  CHECK(c.mode == 0700U);
  CHECK(c.uid == 1000U);
  CHECK(c.gid == 100U);
  CHECK_FALSE(c.read_only);
  RunMount b = parse_run_mount("source=../../etc,dst=rel", "/work");
  CHECK(b.type == MountType::bind);  // the default type
  CHECK(b.target == "/work/rel");
  CHECK(b.source == "/etc");  // cleaned: `..` never climbs out of the source root
  CHECK(b.read_only);
  CHECK_FALSE(parse_run_mount("type=bind,target=/x,rw", "/").read_only);
  CHECK_FALSE(parse_run_mount("type=bind,target=/x,readwrite=true", "/").read_only);
  CHECK(parse_run_mount("type=cache,target=/x,ro", "/").read_only);
  CHECK(parse_run_mount("type=tmpfs,target=/t,size=64m", "/").size == 64ULL << 20);
  RunMount s = parse_run_mount("type=secret,id=tok", "/");
  CHECK(s.target == "/run/secrets/tok");
  CHECK(s.mode == std::nullopt);
  RunMount e = parse_run_mount("type=secret,id=tok,env=TOKEN,required", "/");
  CHECK(e.target.empty());
  CHECK(e.env == "TOKEN");
  CHECK(e.required);
  CHECK(parse_run_mount("type=secret,target=/a/key", "/").id == "key");
  CHECK(parse_run_mount("\"type=cache\",\"target=/a,b\"", "/").target == "/a,b");
  CHECK(parse_run_mount("type=cache,target=/../../etc", "/").target == "/etc");
  CHECK(parse_run_mount("type=cache,id=../../x,target=/c", "/").id == "../../x");  // never used as a path

  auto error = [](const std::string& spec) {
    try {
      parse_run_mount(spec, "/");
    } catch (const strata::Error& err) {
      return std::string(err.what());
    }
    return std::string("no error");
  };
  CHECK(error("type=nfs,target=/x").find("unsupported mount type 'nfs'") != std::string::npos);
  CHECK(error("type=cache,target=/x,colour=red").find("unexpected key 'colour'") != std::string::npos);
  CHECK(error("type=tmpfs,target=/x,id=a").find("'id' does not apply to type=tmpfs") != std::string::npos);
  CHECK(error("type=cache").find("needs a target") != std::string::npos);
  CHECK(error("type=cache,target=/").find("root directory") != std::string::npos);
  CHECK(error("type=cache,target=/x,sharing=all").find("sharing") != std::string::npos);
  CHECK(error("type=cache,target=/x,mode=999").find("mode") != std::string::npos);
  CHECK(error("type=cache,target=/x,uid=-1").find("uid") != std::string::npos);
  CHECK(error("type=cache,target=/x,from=stage").find("not supported") != std::string::npos);
  CHECK(error("type=ssh,env=X").find("'env' does not apply to type=ssh") != std::string::npos);
  CHECK(error("type=ssh,source=/x").find("'source' does not apply to type=ssh") != std::string::npos);
  RunMount ssh = parse_run_mount("type=ssh,mode=0640,uid=7,required", "/");
  CHECK(ssh.id == "default");
  CHECK(ssh.target.empty());
  CHECK(ssh.required);
  CHECK(ssh.mode == 0640U);
  CHECK(ssh.uid == 7U);
  CHECK(parse_run_mount("type=ssh,id=gh,target=agent", "/w").target == "/w/agent");
  CHECK(error("type=bind,target=/x,ro=maybe").find("true or false") != std::string::npos);
  CHECK(error("type=bind,target=\"/x").find("quote") != std::string::npos);
  CHECK(error("type=secret").find("needs an id or a target") != std::string::npos);
}

TEST_CASE("RUN --mount in a plan: errors name the line, the spec is in the key, from= is a stage") {
  CHECK(plan_error("FROM busybox\nRUN --mount=type=nfs,target=/x true\n").find("Dockerfile:2:") != std::string::npos);
  Plan with_ssh = plan("FROM busybox\nRUN --mount=type=ssh --mount=type=ssh,id=b,target=/s --mount=type=ssh,id=c true\n");
  const Step& ssh_run = with_ssh.stages.back().steps.back();
  REQUIRE(ssh_run.mounts.size() == 3);
  CHECK(ssh_run.mounts[0].target == "/run/buildkit/ssh_agent.0");
  CHECK(ssh_run.mounts[1].target == "/s");
  CHECK(ssh_run.mounts[2].target == "/run/buildkit/ssh_agent.2");
  Plan p = plan("FROM busybox AS a\nFROM busybox\nARG T=/c\nRUN --mount=type=cache,target=$T --mount=from=a,target=/a true\n");
  const Step& run = p.stages.back().steps.back();
  REQUIRE(run.mounts.size() == 2);
  CHECK(run.mounts[0].target == "/c");
  CHECK(run.mounts[1].from_stage == 0);
  CHECK(run.normalized.find("\"mounts\"") != std::string::npos);
  CHECK(run.history.created_by.find("mount") == std::string::npos);
  Plan q = plan("FROM busybox\nRUN --mount=type=cache,target=/d true\n");
  CHECK(q.stages.back().steps.back().normalized != plan("FROM busybox\nRUN --mount=type=cache,target=/e true\n").stages.back().steps.back().normalized);
}

TEST_CASE("build checks: a Dockerfile written as the reference advises has no findings") {
  CHECK(findings("FROM busybox AS build\nWORKDIR /src\nARG VERSION=1\nENV PATH=$PATH:/src/bin V=$VERSION\n"
                 "COPY . .\nRUN make ${TARGET:-all} && echo $UNDECLARED_IN_RUN\n"
                 "FROM busybox\nCOPY --from=build /src/app /app\nENTRYPOINT [\"/app\"]\nCMD [\"--help\"]\n")
            .empty());
}

TEST_CASE("build checks: casing of instructions, AS and stage names") {
  CHECK(findings("FROM busybox\nrun echo\nRUN echo\n") ==
        std::vector<std::string>{"ConsistentInstructionCasing@2: Command 'run' should match the case of the command majority (uppercase)"});
  CHECK(findings("from busybox\nrun echo\nRun echo\n") ==
        std::vector<std::string>{"ConsistentInstructionCasing@3: Command 'Run' should match the case of the command majority (lowercase)"});
  CHECK(findings("FROM busybox as base\nFROM base\n") ==
        std::vector<std::string>{"FromAsCasing@1: 'as' and 'FROM' keywords' casing do not match"});
  CHECK(findings("from busybox AS base\nfrom base\n") ==
        std::vector<std::string>{"FromAsCasing@1: 'AS' and 'from' keywords' casing do not match"});
  CHECK(findings("FROM busybox AS Base\nFROM base\n") ==
        std::vector<std::string>{"StageNameCasing@1: Stage name 'Base' should be lowercase"});
}

TEST_CASE("build checks: duplicate and reserved stage names") {
  CHECK(findings("FROM busybox AS a\nFROM busybox AS a\n") ==
        std::vector<std::string>{"DuplicateStageName@2: Duplicate stage name \"a\", stage names should be unique"});
  CHECK(findings("FROM busybox AS context\n") ==
        std::vector<std::string>{"ReservedStageName@1: Stage name should not use the same name as reserved stage \"context\""});
}

TEST_CASE("build checks: shell-form CMD and ENTRYPOINT, unless SHELL chose the shell; repeated CMD") {
  CHECK(findings("FROM busybox\nENTRYPOINT my-program start\n") ==
        std::vector<std::string>{"JSONArgsRecommended@2: JSON arguments recommended for ENTRYPOINT to prevent unintended behavior related to OS signals"});
  CHECK(findings("FROM busybox\nSHELL [\"/bin/sh\", \"-c\"]\nCMD echo hello\n").empty());
  // A stage built FROM a stage that set SHELL inherits it.
  CHECK(findings("FROM busybox AS base\nSHELL [\"/bin/sh\", \"-c\"]\nFROM base\nCMD echo hello\n").empty());
  CHECK(findings("FROM busybox\nCMD [\"a\"]\nHEALTHCHECK CMD [\"true\"]\nCMD [\"b\"]\n") ==
        std::vector<std::string>{"MultipleInstructionsDisallowed@2: Multiple CMD instructions should not be used in the same stage because only the last one will be used"});
  // Each stage has its own CMD.
  CHECK(findings("FROM busybox AS a\nCMD [\"a\"]\nFROM busybox\nCMD [\"b\"]\n").empty());
}

TEST_CASE("build checks: MAINTAINER, legacy ENV and LABEL, secret-looking names") {
  CHECK(findings("FROM busybox\nMAINTAINER me\n") ==
        std::vector<std::string>{"MaintainerDeprecated@2: Maintainer instruction is deprecated in favor of using label"});
  CHECK(findings("FROM busybox\nENV A b c\nLABEL x y\nENV B=c\n") ==
        std::vector<std::string>{"LegacyKeyValueFormat@2: \"ENV key=value\" should be used instead of legacy \"ENV key value\" format",
                                 "LegacyKeyValueFormat@3: \"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format"});
  CHECK(findings("ARG GITHUB_TOKEN\nFROM busybox\nARG AWS_SECRET_ACCESS_KEY\nENV DB_PASSWORD=x\n") ==
        std::vector<std::string>{"SecretsUsedInArgOrEnv@1: Do not use ARG or ENV instructions for sensitive data (ARG \"GITHUB_TOKEN\")",
                                 "SecretsUsedInArgOrEnv@3: Do not use ARG or ENV instructions for sensitive data (ARG \"AWS_SECRET_ACCESS_KEY\")",
                                 "SecretsUsedInArgOrEnv@4: Do not use ARG or ENV instructions for sensitive data (ENV \"DB_PASSWORD\")"});
  // A word that only contains a secret word, and a public key, are fine.
  CHECK(findings("FROM busybox\nENV KEYBOARD=us PUBLIC_KEY=x MONKEY=1\n").empty());
}

TEST_CASE("build checks: relative WORKDIR, EXPOSE formats") {
  CHECK(findings("FROM busybox\nWORKDIR app\n") ==
        std::vector<std::string>{"WorkdirRelativePath@2: Relative workdir \"app\" can have unexpected results if the base image changes"});
  CHECK(findings("FROM busybox AS base\nWORKDIR /srv\nWORKDIR app\nFROM base\nWORKDIR more\n").empty());
  CHECK(findings("FROM busybox\nEXPOSE 80/TCP 127.0.0.1:8080:80\n") ==
        std::vector<std::string>{"ExposeProtoCasing@2: Defined protocol '80/TCP' in EXPOSE instruction should be lowercase",
                                 "ExposeInvalidFormat@2: EXPOSE instruction should not define an IP address or host-port mapping, found '127.0.0.1:8080:80'"});
}

TEST_CASE("build checks: FROM --platform, undeclared and invalid ARGs in FROM") {
  std::string native = "linux/" + native_arch();
  CHECK(findings("FROM --platform=" + native + " busybox\n") ==
        std::vector<std::string>{"FromPlatformFlagConstDisallowed@1: FROM --platform flag should not use constant value \"" + native + "\""});
  CHECK(findings("FROM --platform=" + native + " busybox AS build_" + native_arch() + "\n").empty());
  CHECK(findings("FROM --platform=$TARGETPLATFORM busybox\n") ==
        std::vector<std::string>{"RedundantTargetPlatform@1: Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"});
  CHECK(findings("FROM --platform=$BUILDPLATFORM busybox\n").empty());
  CHECK(findings("ARG SUFIX\nFROM busybox${SUFFIX}\n") ==
        std::vector<std::string>{"UndefinedArgInFrom@2: FROM argument 'SUFFIX' is not declared (did you mean SUFIX?)"});
  CHECK(findings("ARG TAG\nFROM busybox:${TAG}\n", {{"TAG", "latest"}}) ==
        std::vector<std::string>{"InvalidDefaultArgInFrom@2: Default value for ARG busybox:${TAG} results in empty or invalid base image name"});
  CHECK(findings("ARG TAG=latest\nFROM busybox:${TAG}\n").empty());
  CHECK(findings("ARG VARIANT\nFROM busybox${VARIANT}\n").empty());
}

TEST_CASE("build checks: variables neither ENV nor ARG declares") {
  CHECK(findings("FROM busybox\nLABEL a=$foo\n") ==
        std::vector<std::string>{"UndefinedVar@2: Usage of undefined variable '$foo'"});
  CHECK(findings("FROM busybox\nENV PATH=$PAHT:/app/bin\n") ==
        std::vector<std::string>{"UndefinedVar@2: Usage of undefined variable '$PAHT' (did you mean $PATH?)"});
  // Declared without a value, or with a fallback: no finding.
  CHECK(findings("FROM busybox\nARG foo\nLABEL a=$foo b=${bar:-x} c=${baz+y}\nCOPY ${src:-.} /x\n").empty());
  // A global ARG is not in scope in a stage until the stage declares it.
  CHECK(findings("ARG V=1\nFROM busybox\nLABEL v=$V\n") ==
        std::vector<std::string>{"UndefinedVar@3: Usage of undefined variable '$V'"});
}

TEST_CASE("build checks: the check directive and BUILDKIT_DOCKERFILE_CHECK") {
  const std::string text = "FROM busybox\nCMD echo\nMAINTAINER me\n";
  CHECK(findings("# check=skip=JSONArgsRecommended\n" + text) ==
        std::vector<std::string>{"MaintainerDeprecated@4: Maintainer instruction is deprecated in favor of using label"});
  CHECK(findings("# check=skip=all\n" + text).empty());
  // Rule names are case-sensitive, as in BuildKit.
  CHECK(findings("# check=skip=jsonargsrecommended\n" + text).size() == 2);
  Plan p = plan("# check=skip=MaintainerDeprecated;error=true\n" + text);
  CHECK(p.checks.size() == 1);
  CHECK(p.checks_are_errors);
  CHECK(p.check_directive_line == 1);
  CHECK_FALSE(plan(text).checks_are_errors);
  // The build argument wins over the directive and is never "not consumed".
  Plan q = plan("# check=error=true\n" + text, {{"BUILDKIT_DOCKERFILE_CHECK", "skip=all"}});
  CHECK(q.checks.empty());
  CHECK_FALSE(q.checks_are_errors);
  CHECK(q.warnings.empty());
  CHECK(plan_error("# check=bogus\n" + text).find("Dockerfile:1:1: check 'bogus' is not KEY=VALUE") == 0);
  CHECK(plan_error("# check=error=maybe\n" + text).find("Dockerfile:1:1: check error=maybe is not true or false") == 0);
  CHECK(plan_error(text, {{"BUILDKIT_DOCKERFILE_CHECK", "nope=1"}}) ==
        "build argument BUILDKIT_DOCKERFILE_CHECK: check key 'nope' is unknown (skip, error, experimental)");
  CHECK(findings("FROM busybox\nRUN echo a \\\n\n  b\n") ==
        std::vector<std::string>{"NoEmptyContinuation@2: Empty continuation line"});
}

TEST_CASE("RUN --security=insecure needs --allow security.insecure and is part of the key") {
  CHECK(plan_error("FROM busybox\nRUN --security=insecure mount -t tmpfs none /mnt\n") ==
        "Dockerfile:2:5: RUN --security=insecure is not allowed: give strata build --allow security.insecure: "
        "'RUN --security=insecure mount -t tmpfs none /mnt'");
  CHECK(plan_error("FROM busybox\nRUN --security=lax true\n").find("RUN --security=lax is not valid (sandbox or insecure)") !=
        std::string::npos);
  static Dockerfile df;
  df = parse_dockerfile("FROM busybox\nRUN --security=insecure true\nRUN --security=sandbox true\nRUN true\n", "Dockerfile");
  PlanOptions opt;
  opt.resolve = fake_store;
  opt.allow_insecure = true;
  Plan p = plan_build(df, opt);
  const auto& steps = p.stages[0].steps;
  CHECK(steps[1].insecure);
  CHECK_FALSE(steps[2].insecure);
  CHECK(steps[1].normalized != steps[2].normalized);
  CHECK(steps[2].normalized == steps[3].normalized);
}
