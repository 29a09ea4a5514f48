// --format: the Go-template syntax docker and podman take, applied to JSON
// values (one per listed row, or one per inspected object).
//
// Supported (a subset of Go's text/template, the part people put on a
// command line):
//   literal text; {{.}}; {{.Field}} and {{.Field.Sub}}; {{$}} and {{$.Field}}
//   (the value the template started from); "string", `raw`, integer, true
//   and false arguments; pipelines ({{.Names | json}}); comments
//   {{/* ... */}}; trim markers {{- and -}};
//   {{if P}} ... {{else if P}} ... {{else}} ... {{end}},
//   {{range P}} ... {{else}} ... {{end}} (over an array, or an object's
//   values by key), {{with P}} ... {{else}} ... {{end}};
//   functions json, join LIST SEP, split STRING SEP, lower, upper, title,
//   truncate STRING N, pad STRING LEFT RIGHT, len, index X KEY..., println,
//   eq, ne, not, and, or.
// Values print as Go's %v prints decoded JSON: strings as they are, numbers,
// true/false, arrays as [a b c], objects as map[k:v ...] with sorted keys,
// null as <nil> inside them; a null printed by itself prints nothing (as an
// unset string of docker's structs does), so {{.Config.User}} of an image
// without a user is "".
//
// A field that does not exist is an error naming the field (docker's
// "map has no entry for key"), never an empty string: a typo in a script
// must not pass silently. Every error is a one-line UsageError that names
// the template.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "strata/oci.hpp"

namespace strata::cli {

class Template {
 public:
  // Parses TEXT as it is (no escape processing, see Format). Throws
  // UsageError for unbalanced braces, an unknown function or action, an
  // unclosed {{if}}/{{range}}, a template over kMaxTemplateSize bytes or
  // nested deeper than kMaxNesting.
  explicit Template(std::string_view text);
  ~Template();
  Template(Template&&) noexcept;
  Template& operator=(Template&&) noexcept;

  // Executes the template with DATA as `.`. Throws UsageError for a field
  // that does not exist, a field of something that is not an object, a
  // function given the wrong arguments.
  std::string render(const oci::json& data) const;

  // The column headings of a `table` format: the template executed with
  // every field chain replaced by HEADING(first field name) (a function
  // value, "" for {{.}}), functions and conditions left out, a range body
  // taken once. Throws UsageError when a top-level field is not in FIELDS
  // (when FIELDS is not empty), so that a typo is caught even when there
  // are no rows.
  std::string headings(const std::vector<std::pair<std::string, std::string>>& fields) const;

  static constexpr std::size_t kMaxTemplateSize = 64 * 1024;
  static constexpr int kMaxNesting = 64;

  struct Node;

 private:
  std::string text_;
  std::unique_ptr<Node> root_;
};

// Go's %v of a decoded JSON value (see above).
std::string go_string(const oci::json& value);

// Aligns cells separated by '\t' in LINES as docker's tabwriter does
// (minimum width 10, padding 3, spaces; the text after a line's last tab is
// not a cell and is not padded).
std::string align_columns(const std::string& text);

// A listing verb's --format (images, ps, history, ...):
//   "" or "table"       the verb's default table (DEFAULT_TABLE)
//   "json"              the verb's JSON document (is_json(); the verb prints it)
//   "table TEMPLATE"    a heading line, then TEMPLATE for each row, aligned
//   TEMPLATE            TEMPLATE for each row, one line each
// As docker's CLI does, the two-character sequences \t and \n in the format
// become a tab and a newline, and spaces around it are dropped.
class Format {
 public:
  // FIELDS: the field names of a row, in order, with their column headings
  // ({"ID", "IMAGE ID"}, ...); a template naming another field is refused
  // here, before anything is listed.
  Format(std::string_view format, std::string_view default_table,
         std::vector<std::pair<std::string, std::string>> fields);

  bool is_json() const noexcept { return json_; }
  // The output for ROWS (each an object with FIELDS): every line ends in a
  // newline. Not for is_json().
  std::string render(const std::vector<oci::json>& rows) const;

 private:
  bool json_ = false;
  bool table_ = false;
  std::vector<std::pair<std::string, std::string>> fields_;
  std::unique_ptr<Template> template_;
};

// The template of an --format that is neither "json" nor empty, with \t
// and \n turned into a tab and a newline (inspect, version, info).
Template format_template(std::string_view format);

}  // namespace strata::cli
