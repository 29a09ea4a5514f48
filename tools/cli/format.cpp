#include "format.hpp"

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <map>

#include "strata/error.hpp"

namespace strata::cli {

using oci::json;

namespace {

// Execution limits: a template is the user's own, but a short one can still
// ask for an astronomic amount of work ({{range $}} nested 60 deep).
constexpr std::size_t kMaxOutput = 64 * 1024 * 1024;
constexpr std::uint64_t kMaxSteps = 1'000'000;

[[noreturn]] void fail(const std::string& what) { throw UsageError("--format: " + what); }

// One argument of a command in a pipeline.
struct Arg {
  enum class Kind { dot, root, field, string, integer, boolean, function } kind = Kind::dot;
  bool from_root = false;            // field: $.A.B rather than .A.B
  std::vector<std::string> chain;    // field: {"A", "B"}
  std::string text;                  // string, function name
  std::int64_t number = 0;           // integer
  bool flag = false;                 // boolean
};

using Command = std::vector<Arg>;  // function and its arguments, or one operand
using Pipeline = std::vector<Command>;

const std::vector<std::string>& function_names() {
  static const std::vector<std::string> names{"json", "join",  "split", "lower", "upper", "title", "truncate", "pad",
                                              "len",  "index", "println", "eq",  "ne",    "not",   "and",      "or"};
  return names;
}

bool is_function(const std::string& name) {
  const auto& n = function_names();
  return std::find(n.begin(), n.end(), name) != n.end();
}

}  // namespace

struct Template::Node {
  enum class Kind { list, text, action, if_, range, with } kind = Kind::list;
  std::string text;               // text; the action's source for messages
  Pipeline pipeline;              // action, if, range, with
  std::vector<std::unique_ptr<Node>> body;       // list: children; if/range/with: the first branch
  std::vector<std::unique_ptr<Node>> otherwise;  // if/range/with: the {{else}} branch
};

namespace {

using Node = Template::Node;

// ------------------------------------------------------------------ lexing an action

class ActionLexer {
 public:
  ActionLexer(std::string_view src, std::string_view action) : s_(src), action_(action) {}

  bool at_end() {
    skip_space();
    return i_ == s_.size();
  }
  bool peek(char c) {
    skip_space();
    return i_ < s_.size() && s_[i_] == c;
  }
  std::string word() {
    skip_space();
    std::size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) != 0 || s_[i_] == '_')) ++i_;
    return std::string(s_.substr(b, i_ - b));
  }
  // The rest of the action after a keyword.
  std::string_view rest() const { return s_.substr(i_); }

  Pipeline pipeline() {
    Pipeline p;
    for (;;) {
      Command c = command();
      if (c.empty()) fail(quote(action_) + ": missing value");
      p.push_back(std::move(c));
      if (!peek('|')) break;
      ++i_;
    }
    if (!at_end()) fail(quote(action_) + ": unexpected " + quote(s_.substr(i_, 1)));
    for (std::size_t k = 0; k < p.size(); ++k) {
      const Command& c = p[k];
      if (c[0].kind != Arg::Kind::function && c.size() > 1)
        fail(quote(action_) + ": a value cannot take arguments (a function name or a '|' is missing)");
      if (c[0].kind != Arg::Kind::function && k > 0)
        fail(quote(action_) + ": only a function can follow '|'");
    }
    return p;
  }

 private:
  void skip_space() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\t' || s_[i_] == '\n' || s_[i_] == '\r')) ++i_;
  }

  Command command() {
    Command c;
    for (;;) {
      skip_space();
      if (i_ == s_.size() || s_[i_] == '|') break;
      c.push_back(arg());
    }
    return c;
  }

  std::vector<std::string> chain() {
    std::vector<std::string> names;
    while (i_ < s_.size() && s_[i_] == '.') {
      ++i_;
      std::size_t b = i_;
      while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) != 0 || s_[i_] == '_')) ++i_;
      if (b == i_) {
        if (names.empty()) break;  // "." alone
        fail(quote(action_) + ": a field name must follow '.'");
      }
      names.emplace_back(s_.substr(b, i_ - b));
    }
    return names;
  }

  Arg arg() {
    Arg a;
    char c = s_[i_];
    if (c == '.') {
      a.chain = chain();
      a.kind = a.chain.empty() ? Arg::Kind::dot : Arg::Kind::field;
    } else if (c == '$') {
      ++i_;
      if (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) != 0 || s_[i_] == '_'))
        fail(quote(action_) + ": variables are not supported (only $ itself)");
      a.chain = chain();
      a.kind = a.chain.empty() ? Arg::Kind::root : Arg::Kind::field;
      a.from_root = true;
    } else if (c == '"') {
      a.kind = Arg::Kind::string;
      a.text = quoted_string();
    } else if (c == '`') {
      std::size_t end = s_.find('`', i_ + 1);
      if (end == std::string_view::npos) fail(quote(action_) + ": unterminated raw string");
      a.kind = Arg::Kind::string;
      a.text = std::string(s_.substr(i_ + 1, end - i_ - 1));
      i_ = end + 1;
    } else if (std::isdigit(static_cast<unsigned char>(c)) != 0 || c == '-') {
      std::size_t b = i_++;
      while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_])) != 0) ++i_;
      std::string digits(s_.substr(b, i_ - b));
      if (digits == "-" || digits.size() > 18) fail(quote(action_) + ": bad number " + quote(digits));
      a.kind = Arg::Kind::integer;
      a.number = std::stoll(digits);
    } else if (std::isalpha(static_cast<unsigned char>(c)) != 0 || c == '_') {
      std::string w = word();
      if (w == "true" || w == "false") {
        a.kind = Arg::Kind::boolean;
        a.flag = w == "true";
      } else if (w == "nil") {
        fail(quote(action_) + ": nil is not a value");
      } else if (is_function(w)) {
        a.kind = Arg::Kind::function;
        a.text = w;
      } else {
        std::string known;
        for (const auto& n : function_names()) known += (known.empty() ? "" : ", ") + n;
        fail(quote(action_) + ": unknown function " + quote(w) + " (functions: " + known +
             "; a field is written .Name)");
      }
    } else if (c == '(' || c == ')') {
      fail(quote(action_) + ": parentheses are not supported");
    } else {
      fail(quote(action_) + ": unexpected " + quote(s_.substr(i_, 1)));
    }
    if (i_ < s_.size() && s_[i_] != ' ' && s_[i_] != '\t' && s_[i_] != '\n' && s_[i_] != '\r' && s_[i_] != '|')
      fail(quote(action_) + ": unexpected " + quote(s_.substr(i_, 1)));
    return a;
  }

  std::string quoted_string() {
    std::string out;
    ++i_;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ == s_.size()) break;
      char e = s_[i_++];
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case '\\': out += '\\'; break;
        case '"': out += '"'; break;
        default: fail(quote(action_) + ": unknown escape \\" + std::string(1, e) + " in a string");
      }
    }
    if (i_ == s_.size()) fail(quote(action_) + ": unterminated string");
    ++i_;
    return out;
  }

  std::string_view s_;
  std::string_view action_;
  std::size_t i_ = 0;
};

// ------------------------------------------------------------------ parsing the template

class Parser {
 public:
  explicit Parser(std::string_view text) : t_(text) {}

  std::unique_ptr<Node> parse() {
    auto root = std::make_unique<Node>();
    std::string stop = list(root->body, 0);
    if (!stop.empty()) fail("{{" + stop + "}} without a matching {{if}}, {{range}} or {{with}}");
    return root;
  }

 private:
  // Appends nodes to OUT until {{end}} or {{else...}} (returned: "end",
  // "else" or "else if ...") or the end of the template ("").
  std::string list(std::vector<std::unique_ptr<Node>>& out, int depth) {
    if (depth > Template::kMaxNesting)
      fail("blocks nested deeper than " + std::to_string(Template::kMaxNesting));
    for (;;) {
      std::size_t open = t_.find("{{", i_);
      std::string text(t_.substr(i_, open == std::string_view::npos ? std::string_view::npos : open - i_));
      if (trim_next_) {
        text.erase(0, std::min(text.size(), text.find_first_not_of(" \t\r\n")));
        trim_next_ = false;
      }
      if (open == std::string_view::npos) {
        add_text(out, text);
        i_ = t_.size();
        return "";
      }
      std::size_t inner = open + 2;
      bool trim_before = inner + 1 < t_.size() && t_[inner] == '-' && is_space(t_[inner + 1]);
      if (trim_before) {
        while (!text.empty() && is_space(text.back())) text.pop_back();
        inner += 2;
      }
      add_text(out, text);
      std::size_t close = action_end(inner, open);
      std::size_t content_end = close;
      if (close >= inner + 2 && t_[close - 1] == '-' && is_space(t_[close - 2])) {
        trim_next_ = true;
        content_end = close - 2;
      }
      std::string_view source = t_.substr(open, close + 2 - open);
      std::string_view content = t_.substr(inner, content_end - inner);
      i_ = close + 2;
      std::string stop = action(out, source, content, depth);
      if (!stop.empty()) return stop;
    }
  }

  static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

  static void add_text(std::vector<std::unique_ptr<Node>>& out, const std::string& text) {
    if (text.empty()) return;
    auto n = std::make_unique<Node>();
    n->kind = Node::Kind::text;
    n->text = text;
    out.push_back(std::move(n));
  }

  // The index of the "}}" that closes the action whose content starts at
  // FROM; quotes inside the action are skipped.
  std::size_t action_end(std::size_t from, std::size_t open) const {
    std::size_t k = from;
    if (t_.substr(k).starts_with("/*")) {
      std::size_t end = t_.find("*/", k + 2);
      if (end == std::string_view::npos) fail("unclosed comment starting at " + quote(t_.substr(open, 20)));
      k = end + 2;
    }
    char in_quote = 0;
    for (; k < t_.size(); ++k) {
      char c = t_[k];
      if (in_quote != 0) {
        if (c == '\\' && in_quote == '"') ++k;
        else if (c == in_quote) in_quote = 0;
        continue;
      }
      if (c == '"' || c == '`') in_quote = c;
      else if (c == '{' && k + 1 < t_.size() && t_[k + 1] == '{')
        fail("unclosed action " + quote(t_.substr(open, std::min<std::size_t>(k - open, 40))) + " ('{{' inside it)");
      else if (c == '}' && k + 1 < t_.size() && t_[k + 1] == '}')
        return k;
    }
    fail("unclosed action " + quote(t_.substr(open, 40)) + " (no '}}')");
  }

  std::string action(std::vector<std::unique_ptr<Node>>& out, std::string_view source, std::string_view content,
                     int depth) {
    std::string_view trimmed = content;
    while (!trimmed.empty() && is_space(trimmed.front())) trimmed.remove_prefix(1);
    while (!trimmed.empty() && is_space(trimmed.back())) trimmed.remove_suffix(1);
    if (trimmed.starts_with("/*")) {
      if (!trimmed.ends_with("*/")) fail(quote(source) + ": text after a comment");
      return "";
    }
    if (trimmed.empty()) fail(quote(source) + ": empty action");
    ActionLexer lex(trimmed, source);
    std::string_view keyword_src = trimmed;
    std::string keyword;
    if (std::isalpha(static_cast<unsigned char>(trimmed[0])) != 0) {
      ActionLexer probe(keyword_src, source);
      keyword = probe.word();
    }
    if (keyword == "end") {
      lex.word();
      if (!lex.at_end()) fail(quote(source) + ": text after end");
      return "end";
    }
    if (keyword == "else") {
      lex.word();
      if (lex.at_end()) return "else";
      std::string next = lex.word();
      if (next != "if") fail(quote(source) + ": else may only be followed by if");
      return std::string("else if ") + std::string(lex.rest());
    }
    if (keyword == "if" || keyword == "range" || keyword == "with") {
      lex.word();
      auto n = std::make_unique<Node>();
      n->kind = keyword == "if" ? Node::Kind::if_ : keyword == "range" ? Node::Kind::range : Node::Kind::with;
      n->text = std::string(source);
      n->pipeline = lex.pipeline();
      block(*n, source, depth);
      out.push_back(std::move(n));
      return "";
    }
    if (keyword == "define" || keyword == "template" || keyword == "block" || keyword == "break" ||
        keyword == "continue")
      fail(quote(source) + ": {{" + keyword + "}} is not supported");
    auto n = std::make_unique<Node>();
    n->kind = Node::Kind::action;
    n->text = std::string(source);
    n->pipeline = lex.pipeline();
    out.push_back(std::move(n));
    return "";
  }

  // The body of an if/range/with up to its {{end}}, with {{else}} and
  // {{else if}} (an if nested in the else branch, as Go does it).
  void block(Node& n, std::string_view source, int depth) {
    std::string stop = list(n.body, depth + 1);
    if (stop.empty()) fail(quote(source) + " has no {{end}}");
    if (stop == "end") return;
    if (stop == "else") {
      std::string after = list(n.otherwise, depth + 1);
      if (after != "end") fail(quote(source) + ": {{else}} must be followed by {{end}}");
      return;
    }
    if (n.kind != Node::Kind::if_) fail(quote(source) + ": {{else if}} only belongs to {{if}}");
    // "else if PIPELINE"
    std::string cond = stop.substr(8);
    auto nested = std::make_unique<Node>();
    nested->kind = Node::Kind::if_;
    nested->text = "{{else if " + cond + "}}";
    ActionLexer lex(cond, nested->text);
    nested->pipeline = lex.pipeline();
    block(*nested, nested->text, depth + 1);
    n.otherwise.push_back(std::move(nested));
  }

  std::string_view t_;
  std::size_t i_ = 0;
  bool trim_next_ = false;
};

// ------------------------------------------------------------------ values

bool truthy(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return false;
    case json::value_t::boolean: return v.get<bool>();
    case json::value_t::string: return !v.get_ref<const std::string&>().empty();
    case json::value_t::array:
    case json::value_t::object: return !v.empty();
    case json::value_t::number_integer: return v.get<std::int64_t>() != 0;
    case json::value_t::number_unsigned: return v.get<std::uint64_t>() != 0;
    case json::value_t::number_float: return v.get<double>() != 0.0;
    default: return true;
  }
}

std::string type_name(const json& v) {
  switch (v.type()) {
    case json::value_t::null: return "null";
    case json::value_t::boolean: return "a boolean";
    case json::value_t::string: return "a string";
    case json::value_t::array: return "a list";
    case json::value_t::object: return "an object";
    default: return "a number";
  }
}

std::string dump(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string field_list(const json& object) {
  std::string names;
  std::size_t n = 0;
  for (const auto& [k, unused] : object.items()) {
    if (++n > 16) {
      names += ", ...";
      break;
    }
    names += (names.empty() ? "" : ", ") + k;
  }
  return names.empty() ? "none" : names;
}

std::string chain_text(bool from_root, const std::vector<std::string>& chain, std::size_t upto) {
  std::string s = from_root ? "$" : "";
  for (std::size_t i = 0; i < upto; ++i) s += "." + chain[i];
  return s;
}

class Executor {
 public:
  Executor(const json& root, std::string& out) : root_(root), out_(out) {}

  void run(const std::vector<std::unique_ptr<Node>>& nodes, const json& dot) {
    for (const auto& n : nodes) run(*n, dot);
  }

 private:
  void step() {
    if (++steps_ > kMaxSteps) fail("the template takes too many steps (over " + std::to_string(kMaxSteps) + ")");
  }

  void emit(std::string_view s) {
    if (out_.size() + s.size() > kMaxOutput)
      fail("the output is over " + std::to_string(kMaxOutput / (1024 * 1024)) + " MiB");
    out_ += s;
  }

  void run(const Node& n, const json& dot) {
    step();
    switch (n.kind) {
      case Node::Kind::list: run(n.body, dot); break;
      case Node::Kind::text: emit(n.text); break;
      case Node::Kind::action: {
        // A null field (a config without Cmd) prints nothing, as an unset
        // field of docker's typed structs does, rather than Go's "<nil>".
        Value value = pipeline(n, dot);
        if (!value.get().is_null()) emit(go_string(value.get()));
        break;
      }
      case Node::Kind::if_:
        run(truthy(pipeline(n, dot).get()) ? n.body : n.otherwise, dot);
        break;
      case Node::Kind::with: {
        Value value = pipeline(n, dot);
        if (truthy(value.get())) run(n.body, value.get());
        else run(n.otherwise, dot);
        break;
      }
      case Node::Kind::range: {
        Value value = pipeline(n, dot);
        const json& v = value.get();
        if (!v.is_array() && !v.is_object() && !v.is_null())
          fail(quote(n.text) + ": cannot range over " + type_name(v));
        if (v.empty()) {
          run(n.otherwise, dot);
          break;
        }
        for (const auto& item : v) run(n.body, item);  // an object's values in key order
        break;
      }
    }
  }

  // The result of a pipeline: a function's own value, or the data itself
  // (no copy of a large object for every {{range $}}).
  struct Value {
    json owned;
    const json* ref = nullptr;
    const json& get() const { return ref != nullptr ? *ref : owned; }
  };

  Value pipeline(const Node& n, const json& dot) {
    if (n.pipeline.size() == 1 && n.pipeline[0][0].kind != Arg::Kind::function) {
      const Arg& a = n.pipeline[0][0];
      if (a.kind == Arg::Kind::dot) return {json(), &dot};
      if (a.kind == Arg::Kind::root) return {json(), &root_};
      if (a.kind == Arg::Kind::field) return {json(), &field(n, a, dot)};
    }
    return {pipeline_value(n, dot), nullptr};
  }

  json pipeline_value(const Node& n, const json& dot) {
    json value;
    bool have = false;
    for (const Command& c : n.pipeline) {
      if (c[0].kind == Arg::Kind::function) {
        std::vector<json> args;
        for (std::size_t i = 1; i < c.size(); ++i) args.push_back(operand(n, c[i], dot));
        if (have) args.push_back(std::move(value));
        value = call(n, c[0].text, args);
      } else {
        value = operand(n, c[0], dot);
      }
      have = true;
    }
    return value;
  }

  json operand(const Node& n, const Arg& a, const json& dot) {
    switch (a.kind) {
      case Arg::Kind::dot: return dot;
      case Arg::Kind::root: return root_;
      case Arg::Kind::string: return a.text;
      case Arg::Kind::integer: return a.number;
      case Arg::Kind::boolean: return a.flag;
      case Arg::Kind::function: return call(n, a.text, {});
      case Arg::Kind::field: break;
    }
    return field(n, a, dot);
  }

  const json& field(const Node& n, const Arg& a, const json& dot) const {
    const json* v = a.from_root ? &root_ : &dot;
    for (std::size_t i = 0; i < a.chain.size(); ++i) {
      const std::string& name = a.chain[i];
      std::string where = i == 0 ? "" : " in " + chain_text(a.from_root, a.chain, i);
      if (!v->is_object())
        fail(quote(n.text) + ": cannot take field " + quote(name) + " of " + type_name(*v) + where);
      auto it = v->find(name);
      if (it == v->end())
        fail(quote(n.text) + ": no field " + quote(name) + where + " (fields: " + field_list(*v) + ")");
      v = &*it;
    }
    return *v;
  }

  static std::int64_t integer_arg(const Node& n, const std::string& fn, const json& v) {
    if (!v.is_number_integer() && !v.is_number_unsigned()) fail(quote(n.text) + ": " + fn + " needs a number");
    return v.get<std::int64_t>();
  }

  static const std::string& string_arg(const Node& n, const std::string& fn, const json& v) {
    if (!v.is_string()) fail(quote(n.text) + ": " + fn + " needs a string, not " + type_name(v));
    return v.get_ref<const std::string&>();
  }

  static bool loosely_equal(const json& a, const json& b) {
    if (a.is_number() && b.is_number()) return a.get<double>() == b.get<double>();
    return a == b;
  }

  json call(const Node& n, const std::string& fn, const std::vector<json>& args) {
    auto want = [&](std::size_t count) {
      if (args.size() != count)
        fail(quote(n.text) + ": " + fn + " takes " + std::to_string(count) + " argument" + (count == 1 ? "" : "s") +
             ", not " + std::to_string(args.size()));
    };
    if (fn == "json") {
      want(1);
      return dump(args[0]);
    }
    if (fn == "join") {
      want(2);
      const std::string& sep = string_arg(n, fn, args[1]);
      if (args[0].is_string()) return args[0];
      if (!args[0].is_array() && !args[0].is_null()) fail(quote(n.text) + ": join needs a list, not " + type_name(args[0]));
      std::string s;
      bool first = true;
      for (const auto& e : args[0]) {
        s += (first ? "" : sep) + go_string(e);
        first = false;
      }
      return s;
    }
    if (fn == "split") {
      want(2);
      const std::string& s = string_arg(n, fn, args[0]);
      const std::string& sep = string_arg(n, fn, args[1]);
      json parts = json::array();
      if (sep.empty()) {
        for (char c : s) parts.push_back(std::string(1, c));
        return parts;
      }
      std::size_t b = 0;
      for (std::size_t e; (e = s.find(sep, b)) != std::string::npos; b = e + sep.size()) parts.push_back(s.substr(b, e - b));
      parts.push_back(s.substr(b));
      return parts;
    }
    if (fn == "lower" || fn == "upper" || fn == "title") {
      want(1);
      std::string s = go_string(args[0]);
      bool start = true;
      for (char& c : s) {
        auto u = static_cast<unsigned char>(c);
        if (fn == "lower") c = static_cast<char>(std::tolower(u));
        else if (fn == "upper") c = static_cast<char>(std::toupper(u));
        else if (start) c = static_cast<char>(std::toupper(u));
        start = std::isspace(u) != 0 || c == '-' || c == '_';
      }
      return s;
    }
    if (fn == "truncate") {
      want(2);
      std::string s = go_string(args[0]);
      std::int64_t len = integer_arg(n, fn, args[1]);
      if (len < 0) fail(quote(n.text) + ": truncate needs a length of 0 or more");
      // Cut at a character boundary: never in the middle of a UTF-8 sequence.
      std::size_t chars = 0;
      for (std::size_t i = 0; i < s.size(); ++i) {
        if ((static_cast<unsigned char>(s[i]) & 0xC0) == 0x80) continue;
        if (chars++ == static_cast<std::size_t>(len)) return s.substr(0, i);
      }
      return s;
    }
    if (fn == "pad") {
      want(3);
      std::int64_t left = integer_arg(n, fn, args[1]);
      std::int64_t right = integer_arg(n, fn, args[2]);
      if (left < 0 || right < 0 || left > 4096 || right > 4096) fail(quote(n.text) + ": pad takes 0 to 4096 spaces");
      return std::string(static_cast<std::size_t>(left), ' ') + go_string(args[0]) +
             std::string(static_cast<std::size_t>(right), ' ');
    }
    if (fn == "len") {
      want(1);
      if (args[0].is_string()) return args[0].get_ref<const std::string&>().size();
      if (args[0].is_array() || args[0].is_object() || args[0].is_null()) return args[0].size();
      fail(quote(n.text) + ": len of " + type_name(args[0]));
    }
    if (fn == "index") {
      if (args.empty()) want(1);
      json v = args[0];
      for (std::size_t i = 1; i < args.size(); ++i) {
        if (v.is_object() && args[i].is_string()) {
          auto it = v.find(args[i].get<std::string>());
          if (it == v.end()) fail(quote(n.text) + ": no key " + quote(args[i].get<std::string>()));
          v = *it;
        } else if (v.is_array() && (args[i].is_number_integer() || args[i].is_number_unsigned())) {
          std::int64_t k = args[i].get<std::int64_t>();
          if (k < 0 || static_cast<std::size_t>(k) >= v.size())
            fail(quote(n.text) + ": index " + std::to_string(k) + " out of range (length " + std::to_string(v.size()) +
                 ")");
          v = v[static_cast<std::size_t>(k)];
        } else {
          fail(quote(n.text) + ": cannot index " + type_name(v) + " with " + type_name(args[i]));
        }
      }
      return v;
    }
    if (fn == "println") {
      std::string s;
      for (std::size_t i = 0; i < args.size(); ++i) s += (i == 0 ? "" : " ") + go_string(args[i]);
      return s + "\n";
    }
    if (fn == "eq" || fn == "ne") {
      if (args.size() < 2) fail(quote(n.text) + ": " + fn + " takes at least 2 arguments");
      bool equal = false;
      for (std::size_t i = 1; i < args.size(); ++i) equal = equal || loosely_equal(args[0], args[i]);
      if (fn == "ne" && args.size() != 2) fail(quote(n.text) + ": ne takes 2 arguments");
      return fn == "eq" ? equal : !equal;
    }
    if (fn == "not") {
      want(1);
      return !truthy(args[0]);
    }
    // and, or: the first argument that decides, as Go returns it.
    if (args.empty()) fail(quote(n.text) + ": " + fn + " takes at least 1 argument");
    for (const auto& a : args)
      if (truthy(a) == (fn == "or")) return a;
    return args.back();
  }

  const json& root_;
  std::string& out_;
  std::uint64_t steps_ = 0;
};

// ------------------------------------------------------------------ headings

class HeadingWriter {
 public:
  HeadingWriter(const std::vector<std::pair<std::string, std::string>>& fields, std::string& out)
      : fields_(fields), out_(out) {}

  void run(const std::vector<std::unique_ptr<Node>>& nodes, bool top) {
    for (const auto& n : nodes) run(*n, top);
  }

 private:
  void run(const Node& n, bool top) {
    switch (n.kind) {
      case Node::Kind::list: run(n.body, top); break;
      case Node::Kind::text: out_ += n.text; break;
      case Node::Kind::action: out_ += heading(n, top); break;
      case Node::Kind::if_:
        check(n, top);
        run(n.body, top);
        break;
      case Node::Kind::range:
      case Node::Kind::with:
        // Inside, `.` is an element: its fields are not the row's.
        check(n, top);
        run(n.body, false);
        break;
    }
  }

  // Refuses a field of the row that the row does not have.
  void check(const Node& n, bool top) const {
    for (const Command& c : n.pipeline)
      for (const Arg& a : c)
        if (a.kind == Arg::Kind::field && (top || a.from_root)) label(n, a.chain[0]);
  }

  std::string label(const Node& n, const std::string& name) const {
    if (fields_.empty()) return name;
    for (const auto& [field, heading] : fields_)
      if (field == name) return heading;
    std::string known;
    for (const auto& f : fields_) known += (known.empty() ? "" : ", ") + f.first;
    fail(quote(n.text) + ": no field " + quote(name) + " (fields: " + known + ")");
  }

  std::string heading(const Node& n, bool top) const {
    check(n, top);
    if (!top) return "";
    for (const Command& c : n.pipeline)
      for (const Arg& a : c)
        if (a.kind == Arg::Kind::field) return label(n, a.chain[0]);
    return "";
  }

  const std::vector<std::pair<std::string, std::string>>& fields_;
  std::string& out_;
};

std::string unescape_format(std::string_view format) {
  std::string s;
  for (std::size_t i = 0; i < format.size(); ++i) {
    if (format[i] == '\\' && i + 1 < format.size() && (format[i + 1] == 't' || format[i + 1] == 'n')) {
      s += format[i + 1] == 't' ? '\t' : '\n';
      ++i;
    } else {
      s += format[i];
    }
  }
  return s;
}

std::string_view trim_spaces(std::string_view s) {
  while (!s.empty() && s.front() == ' ') s.remove_prefix(1);
  while (!s.empty() && s.back() == ' ') s.remove_suffix(1);
  return s;
}

}  // namespace

// ------------------------------------------------------------------ Template

Template::Template(std::string_view text) : text_(text) {
  if (text.size() > kMaxTemplateSize)
    fail("the template is " + std::to_string(text.size()) + " bytes; at most " + std::to_string(kMaxTemplateSize));
  root_ = Parser(text_).parse();
}

Template::~Template() = default;
Template::Template(Template&&) noexcept = default;
Template& Template::operator=(Template&&) noexcept = default;

std::string Template::render(const json& data) const {
  std::string out;
  Executor(data, out).run(root_->body, data);
  return out;
}

std::string Template::headings(const std::vector<std::pair<std::string, std::string>>& fields) const {
  std::string out;
  HeadingWriter(fields, out).run(root_->body, true);
  return out;
}

std::string go_string(const json& value) {
  switch (value.type()) {
    case json::value_t::null: return "<nil>";
    case json::value_t::string: return value.get<std::string>();
    case json::value_t::boolean: return value.get<bool>() ? "true" : "false";
    case json::value_t::array: {
      std::string s = "[";
      bool first = true;
      for (const auto& e : value) {
        s += (first ? "" : " ") + go_string(e);
        first = false;
      }
      return s + "]";
    }
    case json::value_t::object: {
      std::string s = "map[";
      bool first = true;
      for (const auto& [k, v] : value.items()) {
        s += (first ? "" : " ") + k + ":" + go_string(v);
        first = false;
      }
      return s + "]";
    }
    default: return dump(value);
  }
}

std::string align_columns(const std::string& text) {
  constexpr std::size_t kMinWidth = 10;
  constexpr std::size_t kPadding = 3;
  std::vector<std::vector<std::string>> lines;
  std::size_t b = 0;
  while (b < text.size()) {
    std::size_t e = text.find('\n', b);
    if (e == std::string::npos) e = text.size();
    std::vector<std::string> cells;
    std::size_t c = b;
    for (std::size_t t; (t = text.find('\t', c)) < e; c = t + 1) cells.push_back(text.substr(c, t - c));
    cells.push_back(text.substr(c, e - c));
    lines.push_back(std::move(cells));
    b = e + 1;
  }
  // Widths count characters, not bytes, so that "…" pads like one column.
  auto width = [](const std::string& s) {
    return static_cast<std::size_t>(std::count_if(s.begin(), s.end(), [](char ch) {
      return (static_cast<unsigned char>(ch) & 0xC0) != 0x80;
    }));
  };
  std::vector<std::size_t> widths;
  for (const auto& cells : lines)
    for (std::size_t i = 0; i + 1 < cells.size(); ++i) {
      if (widths.size() <= i) widths.push_back(kMinWidth);
      widths[i] = std::max(widths[i], width(cells[i]) + kPadding);
    }
  std::string out;
  for (const auto& cells : lines) {
    for (std::size_t i = 0; i < cells.size(); ++i) {
      out += cells[i];
      if (i + 1 < cells.size()) out.append(widths[i] - width(cells[i]), ' ');
    }
    // An empty last column leaves no trailing blanks.
    while (!out.empty() && out.back() == ' ') out.pop_back();
    out += '\n';
  }
  return out;
}

// ------------------------------------------------------------------ Format

Format::Format(std::string_view format, std::string_view default_table,
               std::vector<std::pair<std::string, std::string>> fields)
    : fields_(std::move(fields)) {
  std::string_view f = trim_spaces(format);
  if (f == "json") {
    json_ = true;
    return;
  }
  if (f.empty() || f == "table") f = default_table;
  if (f.starts_with("table ") || f.starts_with("table\t")) {
    table_ = true;
    f.remove_prefix(5);
  }
  template_ = std::make_unique<Template>(format_template(f));
  template_->headings(fields_);  // refuses unknown fields before anything is listed
}

std::string Format::render(const std::vector<json>& rows) const {
  std::string out;
  if (table_) out += template_->headings(fields_) + "\n";
  for (const auto& row : rows) out += template_->render(row) + "\n";
  return table_ ? align_columns(out.substr(0, out.size() - 1)) : out;
}

Template format_template(std::string_view format) { return Template(unescape_format(trim_spaces(format))); }

}  // namespace strata::cli
