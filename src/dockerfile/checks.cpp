// Build checks: BuildKit's lint rules that need only the parsed Dockerfile,
// and the `check` directive that selects them. Rule names and messages are
// BuildKit's, so that a finding reads the same here and in `docker build`.
#include <algorithm>
#include <cctype>
#include <map>

#include "strata/dockerfile.hpp"
#include "strata/error.hpp"
#include "strata/text.hpp"

namespace strata::build {

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string upper(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

bool is_upper(std::string_view s) { return s == upper(s); }
bool is_lower(std::string_view s) { return s == lower(s); }

// A name's words (split at `_`, `-` and `.`), in lower case.
std::vector<std::string> name_words(std::string_view name) {
  std::vector<std::string> words;
  std::string cur;
  for (char c : name) {
    if (c == '_' || c == '-' || c == '.') {
      if (!cur.empty()) words.push_back(lower(cur));
      cur.clear();
    } else {
      cur += c;
    }
  }
  if (!cur.empty()) words.push_back(lower(cur));
  return words;
}

// An ARG or ENV name that looks like it holds a secret: one of its words is
// a secret word, and none says the value is public (PUBLIC_KEY is not).
bool looks_secret(std::string_view name) {
  static const std::set<std::string> secret_words = {"apikey", "auth", "credential", "credentials", "key",
                                                     "password", "pword", "passwd", "secret", "token"};
  bool secret = false;
  for (const auto& w : name_words(name)) {
    if (w == "public") return false;
    if (secret_words.count(w) != 0) secret = true;
  }
  return secret;
}

// What a stage inherits from an earlier stage it is FROM.
struct StageFacts {
  std::string name;          // lower case
  bool shell_set = false;    // a SHELL instruction: shell-form CMD is deliberate
  bool workdir_set = false;  // an absolute WORKDIR: relative ones are anchored
};

class Linter {
 public:
  explicit Linter(const Dockerfile& df) : df_(df) {}

  std::vector<CheckWarning> run() {
    casing();
    for (const auto& ins : df_.instructions) instruction(ins);
    end_stage();
    std::stable_sort(out_.begin(), out_.end(), [](const CheckWarning& a, const CheckWarning& b) { return a.line < b.line; });
    return out_;
  }

 private:
  void add(const Instruction& ins, std::string rule, std::string message) {
    out_.push_back({std::move(rule), std::move(message), ins.pos.line});
  }

  // ConsistentInstructionCasing: every keyword in the casing most keywords use.
  void casing() {
    int upper_count = 0, lower_count = 0;
    for (const auto& ins : df_.instructions) {
      if (is_upper(ins.keyword_as_written)) ++upper_count;
      else if (is_lower(ins.keyword_as_written)) ++lower_count;
    }
    bool majority_lower = lower_count > upper_count;
    for (const auto& ins : df_.instructions) {
      const std::string& kw = ins.keyword_as_written;
      if (majority_lower ? is_lower(kw) : is_upper(kw)) continue;
      add(ins, "ConsistentInstructionCasing",
          "Command '" + kw + "' should match the case of the command majority (" +
              (majority_lower ? "lowercase" : "uppercase") + ")");
    }
  }

  void instruction(const Instruction& ins) {
    const std::string& k = ins.keyword;
    if (k == "FROM") {
      from(ins);
      return;
    }
    if (k == "MAINTAINER") add(ins, "MaintainerDeprecated", "Maintainer instruction is deprecated in favor of using label");
    if (!in_stage_) {
      if (k == "ARG") secret_names(ins);
      return;
    }
    if (k == "CMD" || k == "ENTRYPOINT" || k == "HEALTHCHECK") last_of_kind_[k].push_back(&ins);
    if ((k == "CMD" || k == "ENTRYPOINT") && !ins.json && !stage_.shell_set) {
      add(ins, "JSONArgsRecommended",
          "JSON arguments recommended for " + k + " to prevent unintended behavior related to OS signals");
    }
    if (k == "SHELL") stage_.shell_set = true;
    if ((k == "ENV" || k == "LABEL") && ins.legacy_key_value) {
      add(ins, "LegacyKeyValueFormat",
          "\"" + k + " key=value\" should be used instead of legacy \"" + k + " key value\" format");
    }
    if (k == "ARG" || k == "ENV") secret_names(ins);
    if (k == "WORKDIR" && !ins.args.empty()) workdir(ins, ins.args[0].text);
    if (k == "EXPOSE") {
      for (const auto& a : ins.args) expose(ins, a.text);
    }
  }

  void secret_names(const Instruction& ins) {
    for (const auto& d : ins.arg_decls) {
      if (looks_secret(d.name.text)) secret(ins, "ARG", d.name.text);
    }
    for (const auto& kv : ins.pairs) {
      if (looks_secret(kv.key.text)) secret(ins, "ENV", kv.key.text);
    }
  }

  void secret(const Instruction& ins, const std::string& kind, const std::string& name) {
    add(ins, "SecretsUsedInArgOrEnv",
        "Do not use ARG or ENV instructions for sensitive data (" + kind + " \"" + name + "\")");
  }

  void from(const Instruction& ins) {
    end_stage();
    in_stage_ = true;
    stage_ = StageFacts{};
    stage_.name = ins.stage_name;
    if (!ins.args.empty()) {
      std::string base = lower(ins.args[0].text);
      for (const auto& earlier : stages_) {
        if (!earlier.name.empty() && earlier.name == base) {
          stage_.shell_set = earlier.shell_set;
          stage_.workdir_set = earlier.workdir_set;
        }
      }
    }
    if (!ins.as_keyword.empty()) {
      const std::string& from_kw = ins.keyword_as_written;
      const std::string& as_kw = ins.as_keyword;
      if ((is_upper(from_kw) && !is_upper(as_kw)) || (is_lower(from_kw) && !is_lower(as_kw))) {
        add(ins, "FromAsCasing", "'" + as_kw + "' and '" + from_kw + "' keywords' casing do not match");
      }
      if (!is_lower(ins.stage_name_as_written)) {
        add(ins, "StageNameCasing", "Stage name '" + ins.stage_name_as_written + "' should be lowercase");
      }
      for (const auto& earlier : stages_) {
        if (earlier.name == ins.stage_name) {
          add(ins, "DuplicateStageName",
              "Duplicate stage name \"" + ins.stage_name + "\", stage names should be unique");
          break;
        }
      }
      if (ins.stage_name == "scratch" || ins.stage_name == "context") {
        add(ins, "ReservedStageName",
            "Stage name should not use the same name as reserved stage \"" + ins.stage_name + "\"");
      }
    }
    if (const Flag* f = ins.flag("platform"); f != nullptr && f->value) platform(ins, *f->value);
  }

  void platform(const Instruction& ins, const std::string& value) {
    if (value == "$TARGETPLATFORM" || value == "${TARGETPLATFORM}") {
      add(ins, "RedundantTargetPlatform",
          "Setting platform to predefined " + value + " in FROM is redundant as this is the default behavior");
      return;
    }
    if (value.find('$') != std::string::npos) return;
    // A constant platform is fine for a stage named after it (build_amd64),
    // which a later FROM picks by $TARGETARCH.
    std::string lowered = lower(value);
    for (auto part : split(lowered, '/')) {
      if (!part.empty() && ins.stage_name.find(part) != std::string::npos) return;
    }
    add(ins, "FromPlatformFlagConstDisallowed", "FROM --platform flag should not use constant value \"" + value + "\"");
  }

  void workdir(const Instruction& ins, const std::string& path) {
    // A path with a variable is judged by its value, which only the
    // planner knows; it may well be absolute ($HOME/src).
    if (path.find('$') != std::string::npos) return;
    if (!path.empty() && path[0] == '/') {
      stage_.workdir_set = true;
      return;
    }
    if (!stage_.workdir_set) {
      add(ins, "WorkdirRelativePath",
          "Relative workdir \"" + path + "\" can have unexpected results if the base image changes");
    }
  }

  void expose(const Instruction& ins, const std::string& port) {
    if (port.find('$') != std::string::npos) return;
    auto slash = port.find('/');
    std::string ports = port.substr(0, slash);
    if (ports.find(':') != std::string::npos) {
      add(ins, "ExposeInvalidFormat",
          "EXPOSE instruction should not define an IP address or host-port mapping, found '" + port + "'");
    }
    if (slash != std::string::npos && !is_lower(port.substr(slash + 1))) {
      add(ins, "ExposeProtoCasing", "Defined protocol '" + port + "' in EXPOSE instruction should be lowercase");
    }
  }

  // MultipleInstructionsDisallowed: only the last CMD, ENTRYPOINT and
  // HEALTHCHECK of a stage count; the earlier ones are reported.
  void end_stage() {
    for (const auto& [kind, list] : last_of_kind_) {
      for (size_t i = 0; i + 1 < list.size(); ++i) {
        add(*list[i], "MultipleInstructionsDisallowed",
            "Multiple " + kind + " instructions should not be used in the same stage because only the last one will be used");
      }
    }
    last_of_kind_.clear();
    if (in_stage_) stages_.push_back(stage_);
  }

  const Dockerfile& df_;
  std::vector<CheckWarning> out_;
  bool in_stage_ = false;
  StageFacts stage_;
  std::vector<StageFacts> stages_;
  std::map<std::string, std::vector<const Instruction*>> last_of_kind_;
};

}  // namespace

CheckPolicy parse_check_policy(std::string_view text) {
  CheckPolicy policy;
  for (auto part : split(text, ';')) {
    std::string_view item = trim(part);
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string_view::npos) {
      throw Error("check " + quote(std::string(item)) + " is not KEY=VALUE (skip=RULES, error=true|false, experimental=RULES)");
    }
    std::string key = lower(trim(item.substr(0, eq)));
    std::string_view value = trim(item.substr(eq + 1));
    if (key == "skip") {
      for (auto rule : split(value, ',')) {
        std::string_view r = trim(rule);
        if (r == "all") policy.skip_all = true;
        else if (!r.empty()) policy.skip.insert(std::string(r));
      }
    } else if (key == "error") {
      std::string v = lower(value);
      if (v == "true" || v == "1") policy.error = true;
      else if (v == "false" || v == "0") policy.error = false;
      else throw Error("check error=" + std::string(value) + " is not true or false");
    } else if (key == "experimental") {
      // There are no experimental checks here to turn on.
    } else {
      throw Error("check key " + quote(key) + " is unknown (skip, error, experimental)");
    }
  }
  return policy;
}

std::vector<CheckWarning> lint_dockerfile(const Dockerfile& df) {
  Linter linter(df);
  return linter.run();
}

}  // namespace strata::build
