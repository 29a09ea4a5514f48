// The build planner: evaluates a parsed Dockerfile into stages and steps with
// docker's semantics (see strata/build.hpp): stages and --target, build args
// and their scopes, expansion, ONBUILD triggers, and the config and history
// each step leaves. The config's JSON form is in image_config.cpp, the cache
// key of a step in cache_key.cpp.
#include <algorithm>
#include <csignal>
#include <cstring>
#include <set>

#include "git_source.hpp"
#include "strata/build.hpp"
#include "strata/dockerignore.hpp"
#include "strata/oci.hpp"

namespace strata::build {

namespace {

std::string go_quote(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : s) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\t': out += "\\t"; break;
      case '\r': out += "\\r"; break;
      default:
        if (c < 0x20 || c == 0x7f) {
          out += "\\x";
          out += hex[c >> 4];
          out += hex[c & 15];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// Go's %q of an int: a quoted rune ('\x03', 'A').
std::string go_quote_rune(int r) {
  static const char hex[] = "0123456789abcdef";
  if (r >= 0x20 && r < 0x7f && r != '\'' && r != '\\') return std::string("'") + static_cast<char>(r) + "'";
  if (r == '\'') return "'\\''";
  if (r == '\\') return "'\\\\'";
  if (r >= 0 && r < 0x100) return std::string("'\\x") + hex[(r >> 4) & 15] + hex[r & 15] + "'";
  return "'" + std::to_string(r) + "'";
}

std::string join(const std::vector<std::string>& items, std::string_view sep) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += sep;
    out += items[i];
  }
  return out;
}

std::string to_lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); });
}

// The build argument that sets the check policy, as the `check` directive does.
constexpr const char* kCheckArg = "BUILDKIT_DOCKERFILE_CHECK";
constexpr const char* kInlineCacheArg = "BUILDKIT_INLINE_CACHE";  // read by the CLI (--cache-to type=inline)

const std::set<std::string>& proxy_args() {
  static const std::set<std::string> names = {"HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy",
                                              "FTP_PROXY",  "ftp_proxy",  "NO_PROXY",    "no_proxy",
                                              "ALL_PROXY",  "all_proxy"};
  return names;
}

bool valid_signal(const std::string& raw) {
  if (all_digits(raw)) {
    long n = std::strtol(raw.c_str(), nullptr, 10);
    return n >= 1 && n <= 64;
  }
  std::string s = raw;
  for (auto& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (s.rfind("SIG", 0) == 0) s = s.substr(3);
  static const std::set<std::string> names = {
      "ABRT", "ALRM", "BUS",  "CHLD", "CLD",   "CONT", "FPE",  "HUP",  "ILL",  "INT",    "IO",   "IOT",
      "KILL", "PIPE", "POLL", "PROF", "PWR",   "QUIT", "SEGV", "STKFLT", "STOP", "SYS",  "TERM", "TRAP",
      "TSTP", "TTIN", "TTOU", "URG",  "USR1",  "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX"};
  if (names.count(s) != 0) return true;
  for (const char* base : {"RTMIN+", "RTMAX-"}) {
    size_t n = std::strlen(base);
    if (s.rfind(base, 0) == 0 && all_digits(s.substr(n))) {
      long k = std::strtol(s.c_str() + n, nullptr, 10);
      return k >= 1 && k <= 30;
    }
  }
  return false;
}

// docker's NormalizeWorkdir: a relative path is joined to the current one
// (and cleaned); an absolute one is kept as written.
std::string normalize_workdir(const std::string& current, const std::string& requested) {
  if (!requested.empty() && requested[0] == '/') return requested;
  return clean_path("/" + current + "/" + requested);
}

// Escapes backslashes that a shell here-document would keep, so that the
// word lexer (which drops every escape) leaves them: in an unquoted
// here-document only \$ \` \\ and \<newline> are escapes.
std::string heredoc_escape(std::string_view content) {
  std::string out;
  for (size_t i = 0; i < content.size(); ++i) {
    char c = content[i];
    if (c == '\\') {
      char next = i + 1 < content.size() ? content[i + 1] : '\0';
      if (next == '$' || next == '`' || next == '\\' || next == '\n') {
        out += c;
        out += next;
        ++i;
        continue;
      }
      out += "\\\\";
      continue;
    }
    out += c;
  }
  return out;
}

class Planner {
 public:
  Planner(const Dockerfile& df, const PlanOptions& options) : df_(df), opt_(options), arch_(native_arch()) {
    platform_ = "linux/" + arch_;
    auto_args_ = {{"BUILDPLATFORM", platform_}, {"BUILDOS", "linux"},     {"BUILDARCH", arch_},
                  {"BUILDVARIANT", ""},         {"TARGETPLATFORM", platform_}, {"TARGETOS", "linux"},
                  {"TARGETARCH", arch_},        {"TARGETVARIANT", ""}};
  }

  Plan plan() {
    split_stages();
    evaluate_global_args();
    int target = static_cast<int>(stage_starts_.size()) - 1;
    if (!opt_.target.empty()) {
      std::string wanted = to_lower(opt_.target);
      target = -1;
      for (size_t i = 0; i < stage_names_.size(); ++i) {
        if (stage_names_[i] == wanted) target = static_cast<int>(i);
      }
      if (target < 0) throw Error("target stage " + quote(opt_.target) + " could not be found in " + quote(df_.path));
    }
    evaluate(target);
    Plan plan;
    int number = 0;
    for (auto& [index, stage] : done_) {
      if (index == target) plan.target = static_cast<int>(plan.stages.size());
      for (auto& step : stage.steps) step.number = ++number;
      plan.stages.push_back(std::move(stage));
    }
    plan.total_steps = number;
    std::vector<std::string> unused;
    for (const auto& [name, value] : opt_.build_args) {
      if (consumed_.count(name) == 0 && proxy_args().count(name) == 0 && name != kCheckArg && name != kInlineCacheArg) {
        unused.push_back(name);
      }
    }
    if (!unused.empty()) {
      plan.warnings.push_back("one or more build-args [" + join(unused, " ") + "] were not consumed");
    }
    for (const auto& w : df_.warnings) plan.warnings.push_back(w);
    apply_check_policy(plan);
    return plan;
  }

 private:
  // The findings of every check, less those the policy skips.
  void apply_check_policy(Plan& plan) const {
    CheckPolicy policy;
    if (auto it = opt_.build_args.find(kCheckArg); it != opt_.build_args.end()) {
      try {
        policy = parse_check_policy(it->second);
      } catch (const Error& e) {
        throw Error("build argument " + std::string(kCheckArg) + ": " + e.what());
      }
    } else if (const Directive* d = df_.directive("check")) {
      try {
        policy = parse_check_policy(d->value);
      } catch (const Error& e) {
        throw DockerfileError(df_.path, {d->line, 1}, e.what(), "# check=" + d->value);
      }
      plan.check_directive_line = d->line;
    }
    if (policy.skip_all) return;
    std::vector<CheckWarning> all = lint_dockerfile(df_);
    all.insert(all.end(), df_.checks.begin(), df_.checks.end());
    all.insert(all.end(), found_.begin(), found_.end());
    std::stable_sort(all.begin(), all.end(), [](const CheckWarning& a, const CheckWarning& b) { return a.line < b.line; });
    for (auto& w : all) {
      if (policy.skip.count(w.rule) == 0) plan.checks.push_back(std::move(w));
    }
    plan.checks_are_errors = policy.error;
  }

  // UndefinedVar: NAMES were referenced unset in an instruction of the
  // stage being evaluated; those neither ENV nor ARG declares are reported.
  void note_undefined(const std::vector<std::string>& names, Position pos) {
    if (current_ == nullptr || names.empty()) return;
    const StageState& s = *current_;
    std::vector<std::string> known;
    for (const auto& e : s.stage.steps.back().config.env) known.push_back(e.substr(0, e.find('=')));
    for (const auto& a : s.args) known.push_back(a.first);
    for (const auto& name : names) {
      if (std::find(known.begin(), known.end(), name) != known.end()) continue;
      std::string message = "Usage of undefined variable '$" + name + "'";
      std::string hint = closest_name(name, known);
      if (!hint.empty()) message += " (did you mean $" + hint + "?)";
      CheckWarning w{"UndefinedVar", message, pos.line};
      bool seen = std::any_of(found_.begin(), found_.end(), [&](const CheckWarning& f) {
        return f.rule == w.rule && f.message == w.message && f.line == w.line;
      });
      if (!seen) found_.push_back(std::move(w));
    }
  }

  // UndefinedArgInFrom and InvalidDefaultArgInFrom for a FROM's WORD (the
  // image or --platform): the ARGs it names must be declared before the first
  // FROM, and the image must be a valid name with their defaults alone.
  void check_from_word(const Word& w, bool is_image) {
    std::vector<std::string> unset;
    ShellLexer lexer(df_.escape);
    lexer.unset_references = &unset;
    std::vector<std::string> declared;
    for (const auto& a : global_args_) declared.push_back(a.first);
    try {
      lexer.process_word(w.text, global_lookup());
    } catch (const ExpansionError&) {
      return;  // expand() reports it
    }
    for (const auto& name : unset) {
      if (std::find(declared.begin(), declared.end(), name) != declared.end() || auto_arg(name)) continue;
      std::string message = "FROM argument '" + name + "' is not declared";
      std::string hint = closest_name(name, declared);
      if (!hint.empty()) message += " (did you mean " + hint + "?)";
      found_.push_back({"UndefinedArgInFrom", message, w.pos.line});
    }
    if (!is_image || w.text.find('$') == std::string::npos) return;
    std::string with_defaults;
    try {
      with_defaults = ShellLexer(df_.escape).process_word(w.text, defaults_lookup());
    } catch (const ExpansionError&) {
      with_defaults.clear();
    }
    bool valid = !with_defaults.empty() &&
                 (to_lower(with_defaults) == "scratch" || stage_by_name(with_defaults, static_cast<int>(stage_names_.size())) ||
                  oci::Reference::try_parse(with_defaults));
    if (!valid) {
      found_.push_back({"InvalidDefaultArgInFrom",
                        "Default value for ARG " + w.text + " results in empty or invalid base image name", w.pos.line});
    }
  }

  [[noreturn]] void fail(Position pos, const std::string& message) const {
    throw DockerfileError(df_.path, pos, message, instruction_text(pos));
  }

  std::string instruction_text(Position pos) const {
    for (const auto& ins : df_.instructions) {
      if (ins.pos.line <= pos.line && pos.line <= ins.last_line) return ins.original;
    }
    return {};
  }

  void split_stages() {
    for (size_t i = 0; i < df_.instructions.size(); ++i) {
      const auto& ins = df_.instructions[i];
      if (ins.keyword == "FROM") {
        stage_starts_.push_back(i);
        stage_names_.push_back(ins.stage_name);
      } else if (stage_starts_.empty() && ins.keyword != "ARG") {
        fail(ins.pos, "no build stage in current context: " + ins.keyword + " before the first FROM");
      }
    }
    if (stage_starts_.empty()) {
      throw DockerfileError(df_.path, {1, 1}, "the Dockerfile has no FROM instruction", "");
    }
  }

  // Expands W; in a stage's own instructions, variables neither ENV nor ARG
  // declares are noted for the UndefinedVar check.
  std::string expand(const Word& w, const VariableLookup& lookup) {
    std::vector<std::string> unset;
    ShellLexer lexer(df_.escape);
    lexer.unset_references = &unset;
    try {
      std::string out = lexer.process_word(w.text, lookup);
      note_undefined(unset, w.pos);
      return out;
    } catch (const ExpansionError& e) {
      fail(w.pos, e.what());
    }
  }

  std::vector<std::string> expand_fields(const Word& w, const VariableLookup& lookup) {
    std::vector<std::string> unset;
    ShellLexer lexer(df_.escape);
    lexer.unset_references = &unset;
    try {
      auto out = lexer.process_words(w.text, lookup);
      note_undefined(unset, w.pos);
      return out;
    } catch (const ExpansionError& e) {
      fail(w.pos, e.what());
    }
  }

  std::optional<std::string> auto_arg(std::string_view name) const {
    for (const auto& [k, v] : auto_args_) {
      if (k == name) return v;
    }
    return std::nullopt;
  }

  VariableLookup global_lookup() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      for (auto it = global_args_.rbegin(); it != global_args_.rend(); ++it) {
        if (it->first == name) return it->second;
      }
      return auto_arg(name);
    };
  }

  // The global ARGs as their defaults alone make them (no --build-arg).
  VariableLookup defaults_lookup() const {
    return [this](std::string_view name) -> std::optional<std::string> {
      for (auto it = global_defaults_.rbegin(); it != global_defaults_.rend(); ++it) {
        if (it->first == name) return it->second;
      }
      return auto_arg(name);
    };
  }

  void evaluate_global_args() {
    for (size_t i = 0; i < (stage_starts_.empty() ? 0 : stage_starts_[0]); ++i) {
      const auto& ins = df_.instructions[i];
      std::vector<std::pair<std::string, std::optional<std::string>>> values;
      for (const auto& d : ins.arg_decls) {
        std::optional<std::string> value;
        if (auto it = opt_.build_args.find(d.name.text); it != opt_.build_args.end()) {
          value = it->second;
        } else if (d.value) {
          value = expand(*d.value, global_lookup());
        }
        consumed_.insert(d.name.text);
        values.emplace_back(d.name.text, value);
        // What the ARG holds when no --build-arg is given (InvalidDefaultArgInFrom).
        std::optional<std::string> default_value;
        if (d.value) {
          try {
            default_value = ShellLexer(df_.escape).process_word(d.value->text, defaults_lookup());
          } catch (const ExpansionError&) {
            default_value.reset();
          }
        }
        global_defaults_.emplace_back(d.name.text, default_value);
      }
      for (auto& v : values) global_args_.push_back(std::move(v));
    }
  }

  // The state of the stage being evaluated.
  struct StageState {
    Stage stage;
    bool cmd_set = false;
    std::vector<std::pair<std::string, std::optional<std::string>>> args;
  };

  VariableLookup stage_lookup(const StageState& s) const {
    return [&s](std::string_view name) -> std::optional<std::string> {
      // ENV always wins over an ARG of the same name.
      if (auto v = s.stage.steps.back().config.getenv(name)) return v;
      for (auto it = s.args.rbegin(); it != s.args.rend(); ++it) {
        if (it->first == name) return it->second;
      }
      return std::nullopt;
    };
  }

  std::optional<int> stage_by_name(const std::string& name, int before) const {
    std::string wanted = to_lower(name);
    for (int i = 0; i < before; ++i) {
      if (!stage_names_[static_cast<size_t>(i)].empty() && stage_names_[static_cast<size_t>(i)] == wanted) return i;
    }
    return std::nullopt;
  }

  const Stage& evaluate(int index) {
    if (auto it = done_.find(index); it != done_.end()) return it->second;
    size_t begin = stage_starts_[static_cast<size_t>(index)];
    size_t end = static_cast<size_t>(index) + 1 < stage_starts_.size() ? stage_starts_[static_cast<size_t>(index) + 1]
                                                                       : df_.instructions.size();
    StageState s;
    s.stage.index = index;
    s.stage.name = stage_names_[static_cast<size_t>(index)];
    // FROM expands with the global ARGs and ONBUILD triggers come from the
    // base image: neither is this stage's text for UndefinedVar.
    StageState* outer = current_;
    current_ = nullptr;
    dispatch_from(s, df_.instructions[begin]);
    run_triggers(s);
    current_ = &s;
    for (size_t i = begin + 1; i < end; ++i) dispatch(s, df_.instructions[i]);
    current_ = outer;
    s.stage.config = s.stage.steps.back().config;
    return done_.emplace(index, std::move(s.stage)).first->second;
  }

  Step new_step(const StageState& s, const Instruction& ins, StepKind kind) const {
    Step step;
    step.stage = s.stage.index;
    step.kind = kind;
    step.pos = ins.pos;
    step.keyword = ins.keyword;
    step.display = ins.original;
    step.config = s.stage.steps.empty() ? ImageConfig{} : s.stage.steps.back().config;
    return step;
  }

  void dispatch_from(StageState& s, const Instruction& ins) {
    Step step = new_step(s, ins, StepKind::from);
    if (const Flag* f = ins.flag("platform")) check_from_word({*f->value, f->pos}, false);
    check_from_word(ins.args[0], true);
    if (const Flag* f = ins.flag("platform")) {
      std::string platform = expand({*f->value, f->pos}, global_lookup());
      if (platform != platform_ && platform != platform_ + "/" && !platform.empty()) {
        fail(f->pos, "platform " + quote(platform) + " is not supported: strata builds for the native platform " +
                         platform_ + " only");
      }
    }
    std::string base = expand(ins.args[0], global_lookup());
    if (base.empty()) fail(ins.args[0].pos, "base name (" + ins.args[0].text + ") should not be blank");
    s.stage.base = base;
    if (auto earlier = stage_by_name(base, s.stage.index)) {
      const Stage& parent = evaluate(*earlier);
      s.stage.base_stage = *earlier;
      s.stage.needs.push_back(*earlier);
      step.config = parent.config;
      s.stage.author = parent.author;
    } else if (to_lower(base) == "scratch") {
      step.config = ImageConfig{};
      step.config.env = {kDefaultPath};
    } else {
      std::optional<BaseImage> image = opt_.resolve ? opt_.resolve(base) : std::nullopt;
      if (!image) {
        fail(ins.args[0].pos, "base image " + quote(base) +
                                  " is not in the local store; get it with 'strata import', 'strata load' or "
                                  "'strata pull'");
      }
      step.config = image->config;
      s.stage.author = image->author;
      s.stage.base_image = std::move(image);
    }
    step.normalized = nlohmann::json{{"FROM", base}}.dump();
    s.stage.steps.push_back(std::move(step));
  }

  // ONBUILD triggers of the base run first, as if written after FROM; the
  // new image does not inherit them.
  void run_triggers(StageState& s) {
    std::vector<std::string> triggers = s.stage.steps.back().config.on_build;
    if (triggers.empty()) return;
    s.stage.steps.back().config.on_build.clear();
    for (const auto& text : triggers) {
      Instruction trigger;
      try {
        trigger = parse_instruction(text, "ONBUILD trigger of " + s.stage.base);
      } catch (const DockerfileError& e) {
        fail(df_.instructions[stage_starts_[static_cast<size_t>(s.stage.index)]].pos, e.what());
      }
      if (trigger.keyword == "ONBUILD" || trigger.keyword == "FROM" || trigger.keyword == "MAINTAINER") {
        fail(df_.instructions[stage_starts_[static_cast<size_t>(s.stage.index)]].pos,
             trigger.keyword + " isn't allowed as an ONBUILD trigger (in " + quote(s.stage.base) + ")");
      }
      trigger.pos = df_.instructions[stage_starts_[static_cast<size_t>(s.stage.index)]].pos;
      size_t before = s.stage.steps.size();
      dispatch(s, trigger);
      for (size_t i = before; i < s.stage.steps.size(); ++i) s.stage.steps[i].display = "ONBUILD " + text;
    }
  }

  void add_history(Step& step, std::string created_by, bool empty_layer) const {
    step.history.created_by = std::move(created_by);
    step.history.empty_layer = empty_layer;
    step.has_history = true;
  }

  std::vector<std::string> with_shell(const ImageConfig& config, const Instruction& ins) const {
    std::vector<std::string> out;
    if (ins.json) {
      for (const auto& a : ins.args) out.push_back(a.text);
      return out;
    }
    out = config.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : config.shell;
    out.push_back(ins.args.empty() ? std::string() : ins.args[0].text);
    return out;
  }

  void dispatch(StageState& s, const Instruction& ins) {
    const std::string& k = ins.keyword;
    VariableLookup lookup = stage_lookup(s);
    if (k == "RUN") return dispatch_run(s, ins);
    if (k == "COPY" || k == "ADD") return dispatch_copy(s, ins);
    Step step = new_step(s, ins, k == "WORKDIR" ? StepKind::workdir : StepKind::config);
    ImageConfig& c = step.config;
    nlohmann::json norm = {{"op", k}};
    if (k == "ARG") {
      std::vector<std::pair<std::string, std::optional<std::string>>> values;
      for (const auto& d : ins.arg_decls) {
        std::optional<std::string> value;
        if (auto it = opt_.build_args.find(d.name.text); it != opt_.build_args.end()) {
          value = it->second;
        } else if (d.value) {
          value = expand(*d.value, lookup);
        } else {
          bool global = false;
          for (auto it2 = global_args_.rbegin(); it2 != global_args_.rend(); ++it2) {
            if (it2->first == d.name.text) {
              value = it2->second;
              global = true;
              break;
            }
          }
          if (!global) value = auto_arg(d.name.text);
        }
        consumed_.insert(d.name.text);
        values.emplace_back(d.name.text, value);
      }
      for (auto& v : values) {
        norm["args"].push_back({v.first, v.second ? nlohmann::json(*v.second) : nlohmann::json()});
        s.args.push_back(std::move(v));
      }
    } else if (k == "ENV" || k == "LABEL") {
      std::vector<std::pair<std::string, std::string>> pairs;
      for (const auto& kv : ins.pairs) pairs.emplace_back(expand(kv.key, lookup), expand(kv.value, lookup));
      std::vector<std::string> shown;
      for (const auto& [key, value] : pairs) {
        if (key.empty()) fail(ins.pos, k + " names can not be blank");
        if (k == "ENV") {
          c.setenv(key, value);
        } else {
          c.labels[key] = value;
        }
        shown.push_back(key + "=" + value);
        norm["pairs"].push_back({key, value});
      }
      add_history(step, k + " " + join(shown, " "), true);
    } else if (k == "USER") {
      c.user = expand(ins.args[0], lookup);
      if (c.user.empty()) fail(ins.args[0].pos, "USER requires a user name");
      norm["user"] = c.user;
      add_history(step, "USER " + c.user, true);
    } else if (k == "WORKDIR") {
      std::string requested = expand(ins.args[0], lookup);
      if (requested.empty()) fail(ins.args[0].pos, "WORKDIR requires a path: " + quote(ins.args[0].text) + " is empty");
      c.working_dir = normalize_workdir(c.working_dir, requested);
      step.path = c.working_dir;
      norm["path"] = c.working_dir;
      add_history(step, "WORKDIR " + c.working_dir, true);
    } else if (k == "CMD" || k == "ENTRYPOINT") {
      std::vector<std::string> args = with_shell(c, ins);
      if (k == "CMD") {
        c.cmd = args;
        s.cmd_set = true;
      } else {
        c.entrypoint = args;
        // A new ENTRYPOINT drops the CMD inherited from the base image
        // (but not one set earlier in this stage).
        if (!s.cmd_set) c.cmd.reset();
      }
      norm["args"] = args;
      add_history(step, k + " " + go_quote_list(args), true);
    } else if (k == "SHELL") {
      c.shell.clear();
      for (const auto& a : ins.args) c.shell.push_back(a.text);
      norm["shell"] = c.shell;
      add_history(step, "SHELL [" + join(c.shell, " ") + "]", true);
    } else if (k == "EXPOSE") {
      std::set<std::string> ports;
      for (const auto& a : ins.args) {
        for (const auto& spec : expand_fields(a, lookup)) {
          for (auto& p : parse_port_spec(spec, a.pos)) ports.insert(p);
        }
      }
      std::vector<std::string> shown;
      for (const auto& p : ports) {
        c.exposed_ports.insert(p);
        shown.push_back(p + ":{}");
      }
      norm["ports"] = ports;
      add_history(step, "EXPOSE map[" + join(shown, " ") + "]", true);
    } else if (k == "VOLUME") {
      std::vector<std::string> added;
      for (const auto& a : ins.args) {
        std::string v = expand(a, lookup);
        if (v.find_first_not_of(" \t") == std::string::npos) {
          fail(a.pos, "VOLUME specified can not be an empty string");
        }
        c.volumes.insert(v);
        added.push_back(v);
      }
      norm["volumes"] = added;
      add_history(step, "VOLUME [" + join(added, " ") + "]", true);
    } else if (k == "STOPSIGNAL") {
      std::string sig = expand(ins.args[0], lookup);
      if (!valid_signal(sig)) fail(ins.args[0].pos, "invalid signal: " + quote(sig));
      c.stop_signal = sig;
      norm["signal"] = sig;
      add_history(step, "STOPSIGNAL " + sig, true);
    } else if (k == "HEALTHCHECK") {
      HealthConfig h;
      h.test = ins.health.test;
      h.interval = ins.health.interval;
      h.timeout = ins.health.timeout;
      h.start_period = ins.health.start_period;
      h.start_interval = ins.health.start_interval;
      h.retries = ins.health.retries;
      c.healthcheck = h;
      norm["test"] = h.test;
      norm["times"] = {h.interval, h.timeout, h.start_period, h.start_interval, h.retries};
      // BuildKit records Go's %q of the health config.
      add_history(step,
                  "HEALTHCHECK &{" + go_quote_list(h.test) + " " + go_quote(format_go_duration(h.interval)) + " " +
                      go_quote(format_go_duration(h.timeout)) + " " + go_quote(format_go_duration(h.start_period)) +
                      " " + go_quote(format_go_duration(h.start_interval)) + " " + go_quote_rune(h.retries) + "}",
                  true);
    } else if (k == "ONBUILD") {
      c.on_build.push_back(ins.trigger_text);
      norm["trigger"] = ins.trigger_text;
      add_history(step, "ONBUILD " + ins.trigger_text, true);
    } else if (k == "MAINTAINER") {
      s.stage.author = ins.args[0].text;
      norm["author"] = s.stage.author;
      add_history(step, "MAINTAINER " + s.stage.author, true);
    } else {
      fail(ins.pos, "unknown instruction: " + k);
    }
    step.normalized = norm.dump();
    s.stage.steps.push_back(std::move(step));
  }

  std::vector<std::string> parse_port_spec(const std::string& spec, Position pos) const {
    std::string port = spec;
    std::string proto = "tcp";
    if (auto slash = spec.find('/'); slash != std::string::npos) {
      port = spec.substr(0, slash);
      proto = to_lower(spec.substr(slash + 1));
    }
    // IP:HOST:CONTAINER and HOST:CONTAINER expose the container port, as
    // docker does (the ExposeInvalidFormat check warns about them).
    if (auto colon = port.rfind(':'); colon != std::string::npos) port = port.substr(colon + 1);
    if (proto != "tcp" && proto != "udp" && proto != "sctp") fail(pos, "invalid proto: " + quote(proto));
    auto number = [&](const std::string& s) -> long {
      if (!all_digits(s) || s.size() > 5) fail(pos, "invalid containerPort: " + quote(port));
      long n = std::strtol(s.c_str(), nullptr, 10);
      if (n > 65535) fail(pos, "invalid containerPort: " + quote(port));
      return n;
    };
    long lo = 0, hi = 0;
    if (auto dash = port.find('-'); dash != std::string::npos) {
      lo = number(port.substr(0, dash));
      hi = number(port.substr(dash + 1));
      if (hi < lo) fail(pos, "invalid port range: " + quote(port));
    } else {
      lo = hi = number(port);
    }
    std::vector<std::string> out;
    for (long p = lo; p <= hi; ++p) out.push_back(std::to_string(p) + "/" + proto);
    return out;
  }

  // The build args a RUN sees: declared in this stage with a value, plus the
  // predefined proxy args given on the command line.
  void run_environment(const StageState& s, Step& step) {
    std::vector<std::string> env = step.config.env;
    std::vector<std::pair<std::string, std::string>> used;
    std::set<std::string> seen;
    for (const auto& [name, value] : s.args) {
      if (!value) continue;
      // The last declaration wins; keep the first position like docker.
      std::optional<std::string> latest;
      for (auto it = s.args.rbegin(); it != s.args.rend(); ++it) {
        if (it->first == name) {
          latest = it->second;
          break;
        }
      }
      if (!latest || !seen.insert(name).second) continue;
      used.emplace_back(name, *latest);
    }
    for (const auto& [name, value] : used) {
      if (!step.config.getenv(name)) env.push_back(name + "=" + value);
    }
    for (const auto& name : proxy_args()) {
      auto it = opt_.build_args.find(name);
      if (it != opt_.build_args.end() && !step.config.getenv(name) && seen.count(name) == 0) {
        env.push_back(name + "=" + it->second);
      }
    }
    bool has_path = std::any_of(env.begin(), env.end(), [](const std::string& e) { return e.rfind("PATH=", 0) == 0; });
    if (!has_path) env.insert(env.begin(), kDefaultPath);
    step.env = std::move(env);
    step.used_args = std::move(used);
  }

  // COPY --from and RUN --mount=...,from=: an earlier stage (by name or
  // index) or an image of the local store; the stage is evaluated and needed.
  void resolve_from(StageState& s, const std::string& from, Position pos, const std::string& what,
                    std::optional<int>& from_stage, std::string& from_image) {
    if (all_digits(from)) {
      long n = std::strtol(from.c_str(), nullptr, 10);
      if (n >= s.stage.index) {
        fail(pos, "invalid from flag value " + from + ": refers to the current or a later build stage");
      }
      from_stage = static_cast<int>(n);
    } else if (auto earlier = stage_by_name(from, s.stage.index)) {
      from_stage = *earlier;
    } else if (to_lower(from) == to_lower(s.stage.name)) {
      fail(pos, (what == "--from" ? "COPY --from" : what) + "=" + from + " refers to its own stage");
    } else {
      std::optional<BaseImage> image = opt_.resolve ? opt_.resolve(from) : std::nullopt;
      if (!image) {
        fail(pos, what + "=" + from + ": no build stage of that name and no such image in the local store; get "
                  "it with 'strata import', 'strata load' or 'strata pull'");
      }
      from_image = image->id;
      s.stage.images_needed.push_back(from);
    }
    if (from_stage) {
      evaluate(*from_stage);
      if (std::find(s.stage.needs.begin(), s.stage.needs.end(), *from_stage) == s.stage.needs.end()) {
        s.stage.needs.push_back(*from_stage);
      }
    }
  }

  void dispatch_run(StageState& s, const Instruction& ins) {
    Step step = new_step(s, ins, StepKind::run);
    const ImageConfig& c = step.config;
    const std::string mount_workdir = c.working_dir.empty() ? "/" : c.working_dir;
    for (const auto& f : ins.flags) {
      if (f.name == "mount") {
        // Variables expand; the quotes of the mount's CSV fields stay.
        ShellLexer lexer(df_.escape);
        lexer.process_quotes = false;
        std::string text;
        try {
          text = lexer.process_word(*f.value, stage_lookup(s));
        } catch (const ExpansionError& e) {
          fail(f.pos, e.what());
        }
        RunMount m;
        try {
          m = parse_run_mount(text, mount_workdir);
        } catch (const Error& e) {
          fail(f.pos, std::string("RUN --mount: ") + e.what());
        }
        if (m.type == MountType::bind && !m.from.empty()) {
          resolve_from(s, m.from, f.pos, "RUN --mount from", m.from_stage, m.from_image);
        }
        if (m.type == MountType::ssh && m.target.empty()) {
          // BuildKit numbers a RUN's ssh mounts from 0, in order.
          auto n = std::count_if(step.mounts.begin(), step.mounts.end(),
                                 [](const RunMount& other) { return other.type == MountType::ssh; });
          m.target = "/run/buildkit/ssh_agent." + std::to_string(n);
        }
        step.mounts.push_back(std::move(m));
      }
      if (f.name == "security") {
        if (*f.value != "sandbox" && *f.value != "insecure") {
          fail(f.pos, "RUN --security=" + *f.value + " is not valid (sandbox or insecure)");
        }
        step.insecure = *f.value == "insecure";
        if (step.insecure && !opt_.allow_insecure) {
          fail(f.pos, "RUN --security=insecure is not allowed: give strata build --allow security.insecure");
        }
      }
    }
    step.network = "default";
    if (const Flag* f = ins.flag("network")) {
      if (*f->value != "default" && *f->value != "none" && *f->value != "host") {
        fail(f->pos, "unsupported network mode " + quote(*f->value) + " (default, none or host)");
      }
      step.network = *f->value;
    }
    if (ins.json && ins.args.empty()) fail(ins.pos, "RUN requires a command");
    std::vector<std::string> shell = c.shell.empty() ? std::vector<std::string>{"/bin/sh", "-c"} : c.shell;
    if (ins.json) {
      for (const auto& a : ins.args) step.argv.push_back(a.text);
    } else if (ins.heredocs.empty()) {
      step.argv = shell;
      step.argv.push_back(ins.args[0].text);
    } else if (auto only = parse_heredoc_marker(ins.args[0].text); only && ins.heredocs.size() == 1) {
      // `RUN <<EOF`: the body is the script. With a #! line it is run as a
      // file; otherwise the shell runs it (docker ignores quoting here).
      std::string body = ins.heredocs[0].body();
      if (body.rfind("#!", 0) == 0) {
        RunFile file{"/dev/pipes/" + ins.heredocs[0].name, body};
        step.argv = {file.path};
        step.files.push_back(std::move(file));
      } else {
        step.argv = shell;
        step.argv.push_back(body);
      }
    } else {
      // Other here-documents are handed to the shell as written.
      std::string full = ins.args[0].text;
      for (const auto& doc : ins.heredocs) full += "\n" + doc.content + doc.name;
      step.argv = shell;
      step.argv.push_back(full);
    }
    step.user = c.user;
    step.workdir = c.working_dir.empty() ? "/" : c.working_dir;
    run_environment(s, step);
    std::string prefix;
    if (!step.used_args.empty()) {
      prefix = "|" + std::to_string(step.used_args.size());
      for (const auto& [name, value] : step.used_args) prefix += " " + name + "=" + value;
      prefix += " ";
    }
    add_history(step, "RUN " + prefix + join(step.argv, " ") + " # buildkit", false);
    nlohmann::json norm = {{"op", "RUN"}, {"argv", step.argv}, {"network", step.network}};
    if (step.insecure) norm["security"] = "insecure";
    for (const auto& f : step.files) norm["files"].push_back({f.path, f.content});
    for (const auto& m : step.mounts) norm["mounts"].push_back(run_mount_json(m));
    step.normalized = norm.dump();
    s.stage.steps.push_back(std::move(step));
  }

  void dispatch_copy(StageState& s, const Instruction& ins) {
    bool is_add = ins.keyword == "ADD";
    Step step = new_step(s, ins, is_add ? StepKind::add : StepKind::copy);
    VariableLookup lookup = stage_lookup(s);
    const ImageConfig& c = step.config;
    std::set<std::string> git_sources;
    for (size_t i = 0; i + 1 < ins.args.size(); ++i) {
      const Word& w = ins.args[i];
      if (!ins.json) {
        if (!ins.heredocs.empty() && (w.text == "<<" || w.text == "<<-")) {
          // The line has `<< NAME`, which only RUN takes as a here-document.
          fail(w.pos, ins.keyword + " takes a here-document as one word: write <<NAME, with no blank after <<");
        }
        if (auto marker = parse_heredoc_marker(w.text)) {
          const Heredoc* doc = nullptr;
          for (const auto& d : ins.heredocs) {
            if (d.name == marker->name) doc = &d;
          }
          if (doc == nullptr) fail(w.pos, "here-document " + quote(marker->name) + " has no body");
          // The name becomes a file name in the destination: never a path
          // that could lead out of it.
          if (marker->name.find('/') != std::string::npos || marker->name == "." || marker->name == "..") {
            fail(w.pos, "here-document " + quote(marker->name) + " cannot be a file name: it must not contain '/' or be '.' or '..'");
          }
          std::string content = marker->chomp ? doc->body() : doc->content;
          if (marker->expand) {
            ShellLexer lexer(df_.escape);
            lexer.process_quotes = false;
            try {
              content = lexer.process_word(heredoc_escape(content), lookup);
            } catch (const ExpansionError& e) {
              fail(w.pos, e.what());
            }
          }
          step.inline_sources.push_back({marker->name, content});
          continue;
        }
      }
      std::string src = expand(w, lookup);
      if (src.empty()) fail(w.pos, ins.keyword + " source " + quote(w.text) + " is empty after expansion");
      bool url = src.rfind("http://", 0) == 0 || src.rfind("https://", 0) == 0;
      if (url && !is_add) fail(w.pos, "COPY cannot copy from a URL; use ADD: " + quote(src));
      if (is_add) {
        try {
          if (parse_git_source(src)) git_sources.insert(src);
        } catch (const Error& e) {
          fail(w.pos, e.what());
        }
      }
      step.sources.push_back(src);
    }
    // Sources and here-documents are shown the way BuildKit records them.
    std::vector<std::string> history_sources = step.sources;
    // A repository's password stays out of the history and the progress lines.
    for (auto& src : history_sources) {
      if (git_sources.count(src) == 0) continue;
      std::string shown = redact_git_remote(src);
      for (std::size_t at; shown != src && (at = step.display.find(src)) != std::string::npos;) {
        step.display.replace(at, src.size(), shown);
      }
      src = shown;
    }
    for (const auto& in : step.inline_sources) history_sources.push_back("<<" + in.name);
    const Word& dest_word = ins.args.back();
    std::string dest = expand(dest_word, lookup);
    if (dest.empty()) fail(dest_word.pos, ins.keyword + " destination is empty");
    if (parse_heredoc_marker(dest_word.text) && !ins.json) {
      fail(dest_word.pos, ins.keyword + " cannot use a here-document as a destination");
    }
    step.dest_is_dir = dest.back() == '/' || dest == "." || (dest.size() >= 2 && dest.substr(dest.size() - 2) == "/.");
    std::string absolute = dest[0] == '/' ? dest : "/" + (c.working_dir.empty() ? std::string() : c.working_dir) + "/" + dest;
    step.dest = clean_path(absolute);
    if (step.sources.size() + step.inline_sources.size() > 1 && !step.dest_is_dir) {
      fail(dest_word.pos, "when using " + ins.keyword +
                              " with more than one source file, the destination must be a directory and end with a /");
    }
    auto flag_value = [&](const char* name) -> std::string {
      const Flag* f = ins.flag(name);
      if (f == nullptr) return {};
      return expand({*f->value, f->pos}, lookup);
    };
    step.chown = flag_value("chown");
    step.chmod = flag_value("chmod");
    if (!step.chmod.empty() && !ModeChange::parse(step.chmod)) {
      fail(ins.flag("chmod")->pos, "invalid --chmod " + quote(step.chmod) +
                                       ": an octal mode up to 7777 or a symbolic one (u=rwX,go=rX) is required");
    }
    if (const Flag* f = ins.flag("link")) step.link = *f->value == "true";
    if (const Flag* f = ins.flag("unpack")) step.unpack = *f->value == "true";
    if (const Flag* f = ins.flag("parents")) step.parents = *f->value == "true";
    if (const Flag* f = ins.flag("keep-git-dir")) step.keep_git_dir = *f->value == "true";
    for (const auto& f : ins.flags) {
      if (f.name == "exclude") step.excludes.push_back(expand({*f.value, f.pos}, lookup));
    }
    if (!step.excludes.empty()) {
      try {
        IgnoreMatcher::from_patterns(step.excludes, "--exclude");
      } catch (const Error& e) {
        fail(ins.flag("exclude")->pos, e.what());
      }
    }
    step.checksum = flag_value("checksum");
    if (!step.checksum.empty()) {
      const Position& pos = ins.flag("checksum")->pos;
      bool urls = !step.sources.empty() && std::all_of(step.sources.begin(), step.sources.end(), [](const std::string& src) {
        return src.rfind("http://", 0) == 0 || src.rfind("https://", 0) == 0;
      });
      if (!git_sources.empty()) {
        // For a repository the checksum is the commit its ref must name.
        if (std::any_of(step.sources.begin(), step.sources.end(), [&](const std::string& src) { return git_sources.count(src) == 0; })) {
          fail(pos, "ADD --checksum cannot mix a git repository with other sources");
        }
        std::transform(step.checksum.begin(), step.checksum.end(), step.checksum.begin(),
                       [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
        if (!is_commit_id(step.checksum)) {
          fail(pos, "invalid --checksum " + quote(step.checksum) + " for a git repository (expected a full commit id)");
        }
      } else {
        if (!urls) fail(pos, "ADD --checksum can only be used with HTTP(S) and git sources");
        if (step.checksum.rfind("sha256:", 0) != 0 || step.checksum.size() != 71) {
          fail(pos, "invalid --checksum " + quote(step.checksum) + " (expected sha256:<64 hex>)");
        }
      }
    }
    if (const Flag* f = ins.flag("from")) {
      std::string from = expand({*f->value, f->pos}, lookup);
      if (from.empty()) fail(f->pos, "--from needs a stage or an image");
      resolve_from(s, from, f->pos, "--from", step.from_stage, step.from_image);
    }
    add_history(step, ins.keyword + " " + join(history_sources, " ") + " " + dest + " # buildkit", false);
    nlohmann::json norm = {{"op", ins.keyword}, {"sources", step.sources}, {"dest", step.dest},
                           {"dir", step.dest_is_dir}, {"chown", step.chown}, {"chmod", step.chmod},
                           {"excludes", step.excludes}, {"checksum", step.checksum}};
    if (step.unpack) norm["unpack"] = *step.unpack;
    if (step.parents) norm["parents"] = true;  // the same sources land elsewhere
    if (step.keep_git_dir) norm["keep_git_dir"] = true;
    for (const auto& in : step.inline_sources) norm["inline"].push_back({in.name, in.content});
    if (step.from_stage) norm["from_stage"] = *step.from_stage;
    if (!step.from_image.empty()) norm["from_image"] = step.from_image;
    step.normalized = norm.dump();
    s.stage.steps.push_back(std::move(step));
  }

  const Dockerfile& df_;
  const PlanOptions& opt_;
  std::string arch_, platform_;
  std::vector<std::pair<std::string, std::string>> auto_args_;
  std::vector<size_t> stage_starts_;
  std::vector<std::string> stage_names_;
  std::vector<std::pair<std::string, std::optional<std::string>>> global_args_;
  std::vector<std::pair<std::string, std::optional<std::string>>> global_defaults_;  // without --build-arg
  std::set<std::string> consumed_;
  std::vector<CheckWarning> found_;  // the planner's own check findings
  StageState* current_ = nullptr;    // the stage whose instructions are being dispatched
  std::map<int, Stage> done_;
};

}  // namespace

std::string go_quote_list(const std::vector<std::string>& items) {
  std::string out = "[";
  for (size_t i = 0; i < items.size(); ++i) {
    if (i > 0) out += ' ';
    out += go_quote(items[i]);
  }
  return out + "]";
}

Plan plan_build(const Dockerfile& dockerfile, const PlanOptions& options) {
  Planner planner(dockerfile, options);
  return planner.plan();
}

}  // namespace strata::build
