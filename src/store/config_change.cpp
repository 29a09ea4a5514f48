// `-c` changes (commit, import): Dockerfile-style instructions applied to an
// image config.
#include "strata/store.hpp"

#include <algorithm>

#include "strata/error.hpp"
#include "store_internal.hpp"

namespace strata::store {

using oci::json;

namespace {

std::vector<std::string> split_words(std::string_view s, std::string_view what) {
  std::vector<std::string> out;
  std::string cur;
  bool in_word = false;
  char q = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    char c = s[i];
    if (q != 0) {
      if (c == q) {
        q = 0;
      } else if (c == '\\' && q == '"' && i + 1 < s.size()) {
        cur += s[++i];
      } else {
        cur += c;
      }
      continue;
    }
    if (c == '"' || c == '\'') {
      q = c;
      in_word = true;
    } else if (c == '\\' && i + 1 < s.size()) {
      cur += s[++i];
      in_word = true;
    } else if (c == ' ' || c == '\t') {
      if (in_word) out.push_back(cur), cur.clear(), in_word = false;
    } else {
      cur += c;
      in_word = true;
    }
  }
  if (q != 0) throw UsageError("unterminated quote in " + quote(what));
  if (in_word) out.push_back(cur);
  return out;
}

std::string trim(std::string_view s) {
  auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

}  // namespace

void apply_config_change(json& config, std::string_view instruction) {
  std::string text = trim(instruction);
  auto sp = text.find_first_of(" \t");
  std::string kw = text.substr(0, sp);
  std::string rest = sp == std::string::npos ? "" : trim(std::string_view(text).substr(sp));
  for (auto& ch : kw) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
  if (!config.contains("config") || !config["config"].is_object()) config["config"] = json::object();
  json& c = config["config"];
  auto bad = [&](const std::string& why) { return UsageError("invalid change " + quote(instruction) + ": " + why); };
  auto exec_form = [&]() -> json {
    if (!rest.empty() && rest[0] == '[') {
      try {
        json j = json::parse(rest);
        if (j.is_array() && std::all_of(j.begin(), j.end(), [](const json& x) { return x.is_string(); })) return j;
      } catch (const std::exception&) {
      }
    }
    if (rest.empty()) throw bad("needs a command");
    return json::array({"/bin/sh", "-c", rest});
  };
  auto key_values = [&]() {
    std::vector<std::pair<std::string, std::string>> kv;
    auto words = split_words(rest, instruction);
    if (words.empty()) throw bad("needs KEY=VALUE");
    if (words[0].find('=') == std::string::npos) {
      // Legacy form: KEY VALUE...
      auto sp2 = rest.find_first_of(" \t");
      if (sp2 == std::string::npos) throw bad("needs a value");
      kv.emplace_back(words[0], trim(std::string_view(rest).substr(sp2)));
      return kv;
    }
    for (const auto& w : words) {
      auto eq = w.find('=');
      if (eq == std::string::npos || eq == 0) throw bad("expected KEY=VALUE, got " + quote(w));
      kv.emplace_back(w.substr(0, eq), w.substr(eq + 1));
    }
    return kv;
  };
  if (kw == "CMD") {
    c["Cmd"] = exec_form();
  } else if (kw == "ENTRYPOINT") {
    c["Entrypoint"] = exec_form();
  } else if (kw == "ENV") {
    json env = c.contains("Env") && c["Env"].is_array() ? c["Env"] : json::array();
    for (const auto& [k, v] : key_values()) {
      json out = json::array();
      for (const auto& e : env)
        if (!(e.is_string() && e.get<std::string>().rfind(k + "=", 0) == 0)) out.push_back(e);
      out.push_back(k + "=" + v);
      env = out;
    }
    c["Env"] = env;
  } else if (kw == "LABEL") {
    if (!c.contains("Labels") || !c["Labels"].is_object()) c["Labels"] = json::object();
    for (const auto& [k, v] : key_values()) c["Labels"][k] = v;
  } else if (kw == "WORKDIR") {
    if (rest.empty()) throw bad("needs a directory");
    c["WorkingDir"] = rest;
  } else if (kw == "USER") {
    if (rest.empty()) throw bad("needs a user");
    c["User"] = rest;
  } else if (kw == "STOPSIGNAL") {
    if (rest.empty()) throw bad("needs a signal");
    c["StopSignal"] = rest;
  } else if (kw == "EXPOSE") {
    auto words = split_words(rest, instruction);
    if (words.empty()) throw bad("needs a port");
    if (!c.contains("ExposedPorts") || !c["ExposedPorts"].is_object()) c["ExposedPorts"] = json::object();
    for (auto w : words) {
      if (w.find('/') == std::string::npos) w += "/tcp";
      std::string port = w.substr(0, w.find('/'));
      if (port.empty() || port.find_first_not_of("0123456789-") != std::string::npos) throw bad("bad port " + quote(w));
      c["ExposedPorts"][w] = json::object();
    }
  } else if (kw == "VOLUME") {
    json vols = json::array();
    if (!rest.empty() && rest[0] == '[') {
      try {
        vols = json::parse(rest);
      } catch (const std::exception&) {
        throw bad("bad JSON list");
      }
    } else {
      for (const auto& w : split_words(rest, instruction)) vols.push_back(w);
    }
    if (vols.empty()) throw bad("needs a path");
    if (!c.contains("Volumes") || !c["Volumes"].is_object()) c["Volumes"] = json::object();
    for (const auto& v : vols) {
      if (!v.is_string()) throw bad("bad path");
      c["Volumes"][v.get<std::string>()] = json::object();
    }
  } else {
    throw bad("only CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, STOPSIGNAL, USER, VOLUME and WORKDIR can be changed");
  }
}

}  // namespace strata::store
