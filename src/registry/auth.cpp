// src/registry/auth: WWW-Authenticate challenges and the credential files
// podman and docker share (auth.json, config.json).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>

#include "util.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/registry.hpp"

namespace strata::registry {

using oci::json;

// ---------------------------------------------------------------- challenges

namespace {

bool token_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}

// A cursor over a header value.
struct Scanner {
  std::string_view s;
  std::size_t i = 0;
  void spaces() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  }
  bool done() const { return i >= s.size(); }
  std::string token() {
    std::size_t b = i;
    while (i < s.size() && token_char(s[i])) ++i;
    return std::string(s.substr(b, i - b));
  }
  // A quoted-string (the opening quote at i) or a token.
  std::string value() {
    if (i < s.size() && s[i] == '"') {
      std::string out;
      ++i;
      while (i < s.size() && s[i] != '"') {
        if (s[i] == '\\' && i + 1 < s.size()) ++i;
        out += s[i++];
      }
      if (i < s.size()) ++i;  // closing quote
      return out;
    }
    std::size_t b = i;
    while (i < s.size() && (token_char(s[i]) || s[i] == '/' || s[i] == ':' || s[i] == '=')) ++i;
    return std::string(s.substr(b, i - b));
  }
};

}  // namespace

std::vector<Challenge> parse_www_authenticate(std::string_view value) {
  std::vector<Challenge> out;
  Scanner sc{value};
  while (!sc.done()) {
    // Skip separators between challenges and anything unparseable.
    while (!sc.done() && !token_char(sc.s[sc.i])) ++sc.i;
    std::string scheme = sc.token();
    if (scheme.empty()) break;
    Challenge ch;
    ch.scheme = lower(scheme);
    for (;;) {
      sc.spaces();
      std::size_t start = sc.i;
      std::string name = sc.token();
      sc.spaces();
      if (name.empty() || sc.done() || sc.s[sc.i] != '=') {
        // Not a parameter: a token68 (kept as no parameter) or the next challenge.
        if (!name.empty() && ch.params.empty() && !sc.done() && sc.s[sc.i] != ',') {
          sc.i = start;
          break;
        }
        sc.i = start;
        if (!name.empty()) break;  // the next challenge's scheme
        while (!sc.done() && sc.s[sc.i] == ',') ++sc.i, sc.spaces();
        if (sc.done() || !token_char(sc.s[sc.i])) break;
        continue;
      }
      ++sc.i;  // '='
      sc.spaces();
      ch.params[lower(name)] = sc.value();
      sc.spaces();
      if (sc.done()) break;
      if (sc.s[sc.i] != ',') break;
      ++sc.i;
      // After a comma: a parameter of this challenge or a new scheme.
      sc.spaces();
      std::size_t next = sc.i;
      std::string t = sc.token();
      sc.spaces();
      bool param = !t.empty() && !sc.done() && sc.s[sc.i] == '=';
      sc.i = next;
      if (!param) break;
    }
    out.push_back(std::move(ch));
  }
  return out;
}

// ---------------------------------------------------------------- credential files

namespace {

std::string home_dir() {
  const char* h = std::getenv("HOME");
  return h != nullptr ? h : "";
}

// The parsed file at PATH; an empty object when it does not exist.
json read_auth_file(const std::string& path) {
  std::string text;
  try {
    text = read_file(path);
  } catch (const Error&) {
    struct stat st {};
    if (::stat(path.c_str(), &st) != 0 && errno == ENOENT) return json::object();
    throw;
  }
  json j = json::parse(text, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw Error("credential file " + quote(path) + " is not a JSON object");
  return j;
}

std::optional<Credentials> entry_credentials(const json& entry, const std::string& path, const std::string& key) {
  if (!entry.is_object()) return std::nullopt;
  if (entry.contains("auth") && entry["auth"].is_string()) {
    auto text = base64_decode(entry["auth"].get<std::string>());
    auto colon = text ? text->find(':') : std::string::npos;
    if (!text || colon == std::string::npos)
      throw Error("credential file " + quote(path) + ": the entry for " + quote(key) + " is not base64 of USER:PASSWORD");
    return Credentials{text->substr(0, colon), text->substr(colon + 1)};
  }
  if (entry.contains("username") && entry["username"].is_string() && entry.contains("password") &&
      entry["password"].is_string())
    return Credentials{entry["username"].get<std::string>(), entry["password"].get<std::string>()};
  return std::nullopt;
}

// What an "auths" key names: a registry's credential_key(), or
// "host/repository" for an entry that applies to one repository; "" when
// the key is unusable.
std::string entry_key(const std::string& key) {
  if (key.find('/') != std::string::npos && key.find("://") == std::string::npos) return key;
  try {
    return credential_key(key);
  } catch (const UsageError&) {
    return {};
  }
}

// Removes every entry of AUTHS whose key names KEY, however spelt.
bool erase_entries(json& auths, std::string_view key) {
  bool removed = false;
  for (auto it = auths.begin(); it != auths.end();) {
    if (entry_key(it.key()) == key) {
      it = auths.erase(it);
      removed = true;
    } else {
      ++it;
    }
  }
  return removed;
}

}  // namespace

AuthFiles AuthFiles::standard(const std::string& authfile) {
  AuthFiles f;
  std::string only = authfile;
  if (only.empty())
    if (const char* e = std::getenv("REGISTRY_AUTH_FILE"); e != nullptr && *e != '\0') only = e;
  if (!only.empty()) {
    f.read = {only};
    f.write = only;
    return f;
  }
  std::string runtime;
  if (const char* x = std::getenv("XDG_RUNTIME_DIR"); x != nullptr && *x == '/')
    runtime = std::string(x) + "/containers/auth.json";
  else
    runtime = "/run/containers/" + std::to_string(::getuid()) + "/auth.json";
  f.read.push_back(runtime);
  std::string home = home_dir();
  if (const char* x = std::getenv("XDG_CONFIG_HOME"); x != nullptr && *x == '/')
    f.read.push_back(std::string(x) + "/containers/auth.json");
  else if (!home.empty())
    f.read.push_back(home + "/.config/containers/auth.json");
  if (!home.empty()) f.read.push_back(home + "/.docker/config.json");
  f.write = runtime;
  return f;
}

std::string credential_key(std::string_view registry) {
  std::string s(registry);
  if (auto p = s.find("://"); p != std::string::npos) s = s.substr(p + 3);
  if (auto slash = s.find('/'); slash != std::string::npos) s.resize(slash);
  s = lower(s);
  if (s.empty()) throw UsageError("no registry given in " + quote(registry));
  if (s == "index.docker.io" || s == "registry-1.docker.io" || s == "registry.hub.docker.com") s = "docker.io";
  return s;
}

std::optional<Credentials> find_credentials(const AuthFiles& files, std::string_view domain, std::string_view repository) {
  std::string host = credential_key(domain);
  // Most specific first: host/a/b, host/a, host.
  std::vector<std::string> wanted;
  std::string repo(repository);
  while (!repo.empty()) {
    wanted.push_back(host + "/" + repo);
    auto slash = repo.rfind('/');
    repo = slash == std::string::npos ? std::string() : repo.substr(0, slash);
  }
  for (const auto& path : files.read) {
    json j = read_auth_file(path);
    if (!j.contains("auths") || !j["auths"].is_object()) continue;
    const json& auths = j["auths"];
    for (const auto& w : wanted)
      if (auths.contains(w))
        if (auto c = entry_credentials(auths[w], path, w)) return c;
    for (const auto& [key, entry] : auths.items())
      if (entry_key(key) == host)
        if (auto c = entry_credentials(entry, path, key)) return c;
  }
  return std::nullopt;
}

void save_credentials(const std::string& path, std::string_view key, const Credentials& credentials) {
  json j = read_auth_file(path);
  if (!j.contains("auths") || !j["auths"].is_object()) j["auths"] = json::object();
  // Other spellings of the same registry would shadow or outlive this one.
  erase_entries(j["auths"], key);
  j["auths"][std::string(key)] = {{"auth", basic_token(credentials.username, credentials.password)}};
  write_private_file(path, j.dump(1, '\t') + "\n");
}

bool remove_credentials(const std::string& path, std::string_view key) {
  json j = read_auth_file(path);
  if (!j.contains("auths") || !j["auths"].is_object()) return false;
  bool removed = erase_entries(j["auths"], key);
  if (removed) write_private_file(path, j.dump(1, '\t') + "\n");
  return removed;
}

}  // namespace strata::registry
