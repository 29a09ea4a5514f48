#include <doctest/doctest.h>

#include <string>

#include "format.hpp"
#include "strata/error.hpp"

using strata::UsageError;
using strata::cli::Format;
using strata::cli::Template;
using strata::cli::format_template;
using strata::oci::json;

namespace {

std::string render(const std::string& text, const json& data) { return Template(text).render(data); }

// The message of the UsageError that F throws ("" when none).
template <typename F>
std::string usage_error(F f) {
  try {
    f();
  } catch (const UsageError& e) {
    return e.what();
  }
  return "";
}

const json kImage = {{"ID", "0123456789ab"},
                     {"Repository", "alpine"},
                     {"Tag", "3.20"},
                     {"Size", "7.8MB"},
                     {"Config", {{"Cmd", {"/bin/sh", "-c", "echo hi"}}, {"Env", json::array()}, {"User", ""}}},
                     {"Labels", {{"b", "2"}, {"a", "1"}}},
                     {"Count", 3},
                     {"Empty", nullptr}};

const std::vector<std::pair<std::string, std::string>> kFields{
    {"ID", "IMAGE ID"}, {"Repository", "REPOSITORY"}, {"Tag", "TAG"}, {"Size", "SIZE"}};

}  // namespace

TEST_CASE("fields, nested fields and literal text") {
  CHECK(render("{{.ID}}", kImage) == "0123456789ab");
  CHECK(render("{{.Repository}}:{{.Tag}}", kImage) == "alpine:3.20");
  CHECK(render("id={{ .ID }} end", kImage) == "id=0123456789ab end");
  CHECK(render("{{.Config.Cmd}}", kImage) == "[/bin/sh -c echo hi]");
  CHECK(render("{{.Config.User}}|", kImage) == "|");
  CHECK(render("no actions at all", kImage) == "no actions at all");
  CHECK(render("{{$.Tag}}", kImage) == "3.20");
  CHECK(render("}} alone is text", kImage) == "}} alone is text");
}

TEST_CASE("values print as Go's %v prints decoded JSON") {
  CHECK(render("{{.Labels}}", kImage) == "map[a:1 b:2]");
  CHECK(render("{{.Count}}", kImage) == "3");
  CHECK(render("{{.Empty}}", kImage).empty());
  CHECK(render("{{json .Empty}} {{.Config}}", json{{"Empty", nullptr}, {"Config", {nullptr}}}) == "null [<nil>]");
  CHECK(render("{{.Config.Env}}", kImage) == "[]");
  CHECK(render("{{true}} {{42}} {{\"s\"}}", kImage) == "true 42 s");
}

TEST_CASE("json of the whole value and of a field") {
  CHECK(json::parse(render("{{json .}}", kImage)) == kImage);
  CHECK(render("{{json .Config.Cmd}}", kImage) == R"(["/bin/sh","-c","echo hi"])");
  CHECK(render("{{json .Tag}}", kImage) == R"("3.20")");
  CHECK(render("{{.Config.Cmd | json}}", kImage) == R"(["/bin/sh","-c","echo hi"])");
}

TEST_CASE("functions") {
  CHECK(render(R"({{join .Config.Cmd ","}})", kImage) == "/bin/sh,-c,echo hi");
  CHECK(render("{{upper .Repository}} {{lower \"ABC\"}} {{title \"hello world\"}}", kImage) == "ALPINE abc Hello World");
  CHECK(render("{{truncate .ID 4}}", kImage) == "0123");
  CHECK(render("{{truncate \"h\xc3\xa9llo\" 2}}", kImage) == "h\xc3\xa9");
  CHECK(render("{{len .Config.Cmd}} {{len .Labels}} {{len .Tag}}", kImage) == "3 2 4");
  CHECK(render("{{index .Config.Cmd 2}} {{index .Labels \"a\"}}", kImage) == "echo hi 1");
  CHECK(render(R"({{split "a:b:c" ":"}})", kImage) == "[a b c]");
  CHECK(render("[{{pad .Tag 1 2}}]", kImage) == "[ 3.20  ]");
  CHECK(render("{{println .Tag .Count}}", kImage) == "3.20 3\n");
  CHECK(usage_error([] { render("{{index .Config.Cmd 9}}", kImage); }).find("out of range") != std::string::npos);
  CHECK(usage_error([] { render("{{join .Tag}}", kImage); }).find("join takes 2 arguments") != std::string::npos);
}

TEST_CASE("if, else if, else, range, with, comments and trim markers") {
  CHECK(render("{{if .Tag}}tagged{{else}}none{{end}}", kImage) == "tagged");
  CHECK(render("{{if .Empty}}a{{else if .Config.User}}b{{else}}c{{end}}", kImage) == "c");
  CHECK(render(R"({{if eq .Repository "alpine"}}yes{{end}})", kImage) == "yes");
  CHECK(render(R"({{if ne .Count 3}}yes{{else}}no{{end}})", kImage) == "no");
}

TEST_CASE("range, with, comments and trim markers") {
  CHECK(render("{{range .Config.Cmd}}<{{.}}>{{end}}", kImage) == "</bin/sh><-c><echo hi>");
  CHECK(render("{{range .Labels}}{{.}};{{end}}", kImage) == "1;2;");
  CHECK(render("{{range .Config.Env}}x{{else}}empty{{end}}", kImage) == "empty");
  CHECK(render("{{range .Config.Cmd}}{{$.Tag}}{{end}}", kImage) == "3.203.203.20");
  CHECK(render("{{with .Config}}{{.User}}|{{len .Cmd}}{{end}}", kImage) == "|3");
  CHECK(render("a{{/* a comment */}}b", kImage) == "ab");
  CHECK(render("a  {{- .Tag -}}  b", kImage) == "a3.20b");
  CHECK(render("{{if not .Empty}}{{or .Empty .Tag}}{{end}}", kImage) == "3.20");
}

TEST_CASE("a field that does not exist is an error naming it") {
  std::string e = usage_error([] { render("{{.Nope}}", kImage); });
  CHECK(e.find("no field 'Nope'") != std::string::npos);
  CHECK(e.find("Repository") != std::string::npos);  // lists what there is
  CHECK(e.find('\n') == std::string::npos);
  e = usage_error([] { render("{{.Config.Cmnd}}", kImage); });
  CHECK(e.find("no field 'Cmnd' in .Config") != std::string::npos);
  e = usage_error([] { render("{{.Tag.Major}}", kImage); });
  CHECK(e.find("cannot take field 'Major' of a string in .Tag") != std::string::npos);
  // Also in a branch that runs.
  CHECK(!usage_error([] { render("{{if .Tag}}{{.Nope}}{{end}}", kImage); }).empty());
}

TEST_CASE("malformed templates are refused with one line") {
  const char* bad[] = {"{{.ID",          "{{.ID}",         "{{",         "{{}}",           "{{.ID {{.Tag}}",
                       "{{if .ID}}x",    "{{end}}",        "{{else}}",   "{{range .ID}}",  "{{nosuch .ID}}",
                       "{{.ID .Tag}}",   "{{\"open}}",     "{{.}}{{/*}}", "{{$x := .ID}}", "{{.ID | .Tag}}",
                       "{{(.ID)}}",      "{{.ID.}}",       "{{define \"x\"}}{{end}}", "{{{.ID}}}", "{{.ID}}}}{{"};
  for (const char* t : bad) {
    CAPTURE(t);
    std::string e = usage_error([&] { Template tmpl(t); });
    CHECK(e.starts_with("--format: "));
    CHECK(e.find('\n') == std::string::npos);
  }
  CHECK(usage_error([] { Template t("{{if .ID}}x"); }).find("no {{end}}") != std::string::npos);
  CHECK(usage_error([] { Template t("{{nosuch .ID}}"); }).find("unknown function 'nosuch'") != std::string::npos);
  CHECK(usage_error([] { render("{{range .Tag}}x{{end}}", kImage); }).find("cannot range over a string") !=
        std::string::npos);
}

TEST_CASE("huge and deep templates are bounded") {
  CHECK(usage_error([] { Template t(std::string(Template::kMaxTemplateSize + 1, 'x')); }).find("at most") !=
        std::string::npos);
  std::string deep;
  for (int i = 0; i < 1000; ++i) deep += "{{if .ID}}";
  CHECK(usage_error([&] { Template t(deep); }).find("nested deeper") != std::string::npos);
  // A short template that asks for astronomic work stops with an error.
  std::string explode;
  for (int i = 0; i < 30; ++i) explode += "{{range $}}";
  for (int i = 0; i < 30; ++i) explode += "{{end}}";
  CHECK(usage_error([&] { render(explode, kImage); }).find("too many steps") != std::string::npos);
  // Many plain actions are fine.
  std::string many;
  for (int i = 0; i < 2000; ++i) many += "{{.Tag}}";
  CHECK(render(many, kImage).size() == 2000 * 4);
}

TEST_CASE("Format: json, table, table TEMPLATE, TEMPLATE and escapes") {
  const char* def = "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}\\t{{.Size}}";
  std::vector<json> rows{kImage, json{{"ID", "fedcba987654"}, {"Repository", "a-much-longer-repository-name"},
                                      {"Tag", "latest"}, {"Size", "1kB"}}};
  CHECK(Format("json", def, kFields).is_json());
  std::string table = Format("", def, kFields).render(rows);
  CHECK(table ==
        "REPOSITORY                      TAG       IMAGE ID       SIZE\n"
        "alpine                          3.20      0123456789ab   7.8MB\n"
        "a-much-longer-repository-name   latest    fedcba987654   1kB\n");
  CHECK(Format("table", def, kFields).render(rows) == table);
  CHECK(Format("table {{.ID}}\\t{{.Repository}}:{{.Tag}}", def, kFields).render(rows) ==
        "IMAGE ID       REPOSITORY:TAG\n"
        "0123456789ab   alpine:3.20\n"
        "fedcba987654   a-much-longer-repository-name:latest\n");
  CHECK(Format("{{.Repository}}\\t{{.Tag}}", def, kFields).render(rows) ==
        "alpine\t3.20\na-much-longer-repository-name\tlatest\n");
  CHECK(Format("  {{.ID}}\\n  ", def, kFields).render({kImage}) == "0123456789ab\n\n");
  CHECK(Format("{{.ID}}", def, kFields).render({}).empty());
  CHECK(Format("table {{.ID}}", def, kFields).render({}) == "IMAGE ID\n");
}

TEST_CASE("Format refuses an unknown field before any row is listed") {
  const char* def = "table {{.ID}}";
  std::string e = usage_error([&] { Format f("{{.Repo}}", def, kFields); });
  CHECK(e.find("no field 'Repo'") != std::string::npos);
  CHECK(e.find("Repository") != std::string::npos);
  CHECK(!usage_error([&] { Format f("table {{.ID}}\\t{{.Nope}}", def, kFields); }).empty());
  CHECK(!usage_error([&] { Format f("{{if .Nope}}x{{end}}", def, kFields); }).empty());
  // Inside range and with, fields belong to the element, not the row.
  CHECK(usage_error([&] { Format f("{{range .Repository}}{{.Anything}}{{end}}", def, kFields); }).empty());
}

TEST_CASE("format_template turns \\t and \\n into characters and trims spaces") {
  CHECK(format_template(" {{.Tag}}\\t{{.ID}}\\n ").render(kImage) == "3.20\t0123456789ab\n");
  CHECK(format_template("a\\\\b").render(kImage) == "a\\\\b");
}
