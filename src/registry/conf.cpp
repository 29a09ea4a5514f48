// src/registry/conf: containers-registries.conf(5) (toml++) and the
// resolution of short names through it.
#include <algorithm>
#include <cstdlib>
#include <toml++/toml.h>

#include "strata/fd.hpp"
#include "strata/fileio.hpp"
#include "strata/registry.hpp"
#include "util.hpp"

namespace strata::registry {

namespace {

std::string line_of(const toml::node& n) {
  return "line " + std::to_string(n.source().begin.line);
}

std::vector<std::string> string_array(const toml::node& n, const std::string& where, const char* key) {
  const toml::array* arr = n.as_array();
  if (arr == nullptr) throw Error(where + ": " + line_of(n) + ": " + key + " must be an array of strings");
  std::vector<std::string> out;
  for (const auto& el : *arr) {
    auto v = el.value<std::string>();
    if (!v) throw Error(where + ": " + line_of(el) + ": " + key + " must be an array of strings");
    out.push_back(*v);
  }
  return out;
}

std::string string_field(const toml::table& t, const char* key, const std::string& where) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return {};
  auto v = n->value<std::string>();
  if (!v) throw Error(where + ": " + line_of(*n) + ": " + key + " must be a string");
  return *v;
}

bool bool_field(const toml::table& t, const char* key, const std::string& where) {
  const toml::node* n = t.get(key);
  if (n == nullptr) return false;
  auto v = n->value<bool>();
  if (!v) throw Error(where + ": " + line_of(*n) + ": " + key + " must be true or false");
  return *v;
}

std::vector<std::string> conf_files_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& n : list_dir(dir))
    if (n.size() > 5 && n.substr(n.size() - 5) == ".conf") out.push_back(dir + "/" + n);
  return out;
}

RegistriesConf parse_file(const std::string& path) { return RegistriesConf::parse(read_file(path), path); }

// The part of a name before its first '/', or "".
std::string_view first_component(std::string_view text) {
  auto slash = text.find('/');
  return slash == std::string_view::npos ? std::string_view() : text.substr(0, slash);
}

}  // namespace

RegistriesConf RegistriesConf::parse(std::string_view text, const std::string& where) {
  toml::table root;
  try {
    root = toml::parse(text, where);
  } catch (const toml::parse_error& e) {
    throw Error(where + ": line " + std::to_string(e.source().begin.line) + ": " + std::string(e.description()));
  }
  RegistriesConf conf;
  if (const toml::node* n = root.get("unqualified-search-registries"))
    conf.unqualified_search = string_array(*n, where, "unqualified-search-registries");
  if (const toml::node* n = root.get("registry")) {
    const toml::array* arr = n->as_array();
    if (arr == nullptr) throw Error(where + ": " + line_of(*n) + ": registry must be an array of tables ([[registry]])");
    for (const auto& el : *arr) {
      const toml::table* t = el.as_table();
      if (t == nullptr) throw Error(where + ": " + line_of(el) + ": registry must be an array of tables ([[registry]])");
      RegistryConfig r;
      r.location = string_field(*t, "location", where);
      r.prefix = string_field(*t, "prefix", where);
      r.insecure = bool_field(*t, "insecure", where);
      r.blocked = bool_field(*t, "blocked", where);
      if (r.prefix.empty()) r.prefix = r.location;
      if (r.prefix.empty()) throw Error(where + ": " + line_of(el) + ": a [[registry]] needs a location or a prefix");
      if (r.location.empty()) r.location = r.prefix;
      conf.registries.push_back(r);
    }
  }
  if (const toml::node* n = root.get("aliases")) {
    const toml::table* t = n->as_table();
    if (t == nullptr) throw Error(where + ": " + line_of(*n) + ": aliases must be a table");
    for (const auto& [k, v] : *t) {
      auto s = v.value<std::string>();
      if (!s) throw Error(where + ": " + line_of(v) + ": alias " + quote(k.str()) + " must be a string");
      conf.aliases[std::string(k.str())] = *s;
    }
  }
  // Version 1 of the format: [registries.search], [registries.insecure], [registries.block].
  if (const toml::table* v1 = root["registries"].as_table()) {
    auto list = [&](const char* section) -> std::vector<std::string> {
      const toml::table* t = (*v1)[section].as_table();
      if (t == nullptr || t->get("registries") == nullptr) return {};
      return string_array(*t->get("registries"), where, "registries");
    };
    if (auto search = list("search"); !search.empty()) conf.unqualified_search = search;
    for (const auto& r : list("insecure")) conf.registries.push_back({r, r, true, false});
    for (const auto& r : list("block")) conf.registries.push_back({r, r, false, true});
  }
  return conf;
}

RegistriesConf RegistriesConf::load() {
  if (const char* e = std::getenv("CONTAINERS_REGISTRIES_CONF"); e != nullptr && *e != '\0') return parse_file(e);
  std::string home;
  if (const char* h = std::getenv("HOME"); h != nullptr && *h != '\0') home = h;
  std::string user = home.empty() ? std::string() : home + "/.config/containers/registries.conf";
  RegistriesConf conf;
  if (!user.empty() && is_file(user))
    conf = parse_file(user);
  else if (is_file("/etc/containers/registries.conf"))
    conf = parse_file("/etc/containers/registries.conf");
  std::vector<std::string> dropins = conf_files_in("/etc/containers/registries.conf.d");
  if (!home.empty()) {
    auto mine = conf_files_in(home + "/.config/containers/registries.conf.d");
    dropins.insert(dropins.end(), mine.begin(), mine.end());
  }
  for (const auto& f : dropins) conf.merge(parse_file(f));
  return conf;
}

void RegistriesConf::merge(const RegistriesConf& later) {
  if (later.unqualified_search) unqualified_search = later.unqualified_search;
  for (const auto& [k, v] : later.aliases) aliases[k] = v;
  for (const auto& r : later.registries) {
    auto it = std::find_if(registries.begin(), registries.end(), [&](const RegistryConfig& x) { return x.prefix == r.prefix; });
    if (it != registries.end())
      *it = r;
    else
      registries.push_back(r);
  }
}

const RegistryConfig* RegistriesConf::find(std::string_view name) const {
  const RegistryConfig* best = nullptr;
  std::size_t best_len = 0;
  bool best_wild = false;
  std::string_view host = name.substr(0, name.find('/'));
  for (const auto& r : registries) {
    std::string_view p = r.prefix;
    if (p.substr(0, 2) == "*.") {
      // A wildcard matches hosts below the domain, whatever the path.
      std::string_view h = host.substr(0, host.find(':'));
      std::string_view suffix = p.substr(1);
      bool match = h.size() > suffix.size() && h.substr(h.size() - suffix.size()) == suffix;
      if (match && (best == nullptr || (best_wild && p.size() > best_len))) {
        best = &r;
        best_len = p.size();
        best_wild = true;
      }
      continue;
    }
    bool match = name == p || (name.size() > p.size() && name.substr(0, p.size()) == p && name[p.size()] == '/');
    if (match && (best == nullptr || best_wild || p.size() > best_len)) {
      best = &r;
      best_len = p.size();
      best_wild = false;
    }
  }
  return best;
}

bool has_domain(std::string_view text) {
  std::string_view first = first_component(text);
  return !first.empty() &&
         (first.find('.') != std::string_view::npos || first.find(':') != std::string_view::npos || first == "localhost");
}

std::vector<oci::Reference> resolve_reference(std::string_view text, const RegistriesConf& conf) {
  oci::Reference parsed = oci::Reference::parse(text);
  if (has_domain(text)) return {parsed};
  // The name as written, without tag or digest, and what follows it.
  std::string name(text.substr(0, text.find('@')));
  std::string suffix(text.substr(name.size()));
  if (auto colon = name.rfind(':'); colon != std::string::npos && name.find('/', colon) == std::string::npos) {
    suffix = name.substr(colon) + suffix;
    name.resize(colon);
  }
  if (auto it = conf.aliases.find(name); it != conf.aliases.end()) {
    if (!has_domain(it->second))
      throw UsageError("the alias " + quote(name) + " in registries.conf names no registry: " + quote(it->second));
    return {oci::Reference::parse(it->second + suffix)};
  }
  if (!conf.unqualified_search) return {parsed};  // docker.io, as docker
  if (conf.unqualified_search->empty())
    throw UsageError("short name " + quote(text) +
                     " has no alias and registries.conf lists no unqualified-search-registries; give the registry");
  std::vector<oci::Reference> out;
  for (const auto& r : *conf.unqualified_search) out.push_back(oci::Reference::parse(r + "/" + std::string(text)));
  return out;
}

std::string api_host(std::string_view domain) {
  if (domain == "docker.io") return "registry-1.docker.io";
  return std::string(domain);
}

}  // namespace strata::registry
