// RUN --mount: the parser of one mount spec (see strata/build.hpp). The
// executor gives the mounts to the sandbox; the planner resolves `from`.
#include <algorithm>

#include "strata/build.hpp"
#include "strata/dockerignore.hpp"
#include "strata/error.hpp"
#include "strata/text.hpp"

namespace strata::build {

namespace {

// The fields of a CSV record (one line, RFC 4180 quoting as Go's
// encoding/csv reads it: a quoted field may hold commas and "" for a quote).
std::vector<std::string> csv_fields(std::string_view value) {
  std::vector<std::string> out;
  size_t i = 0;
  while (true) {
    std::string field;
    if (i < value.size() && value[i] == '"') {
      ++i;
      while (true) {
        if (i >= value.size()) throw Error("unterminated quote in " + quote(value));
        if (value[i] == '"') {
          if (i + 1 < value.size() && value[i + 1] == '"') {
            field += '"';
            i += 2;
            continue;
          }
          ++i;
          break;
        }
        field += value[i++];
      }
      if (i < value.size() && value[i] != ',') throw Error("extraneous text after a quoted field in " + quote(value));
    } else {
      while (i < value.size() && value[i] != ',') {
        if (value[i] == '"') throw Error("bare quote in a field of " + quote(value));
        field += value[i++];
      }
    }
    out.push_back(std::move(field));
    if (i >= value.size()) break;
    ++i;  // the comma
  }
  return out;
}

// Go's strconv.ParseBool.
std::optional<bool> parse_bool(std::string_view v) {
  static const char* const yes[] = {"1", "t", "T", "TRUE", "true", "True"};
  static const char* const no[] = {"0", "f", "F", "FALSE", "false", "False"};
  for (const char* y : yes) {
    if (v == y) return true;
  }
  for (const char* n : no) {
    if (v == n) return false;
  }
  return std::nullopt;
}

// A size with an optional binary unit: 64m, 1g, 512k, 100 (bytes), 10mb.
std::optional<std::uint64_t> parse_size(std::string_view v) {
  size_t digits = 0;
  while (digits < v.size() && v[digits] >= '0' && v[digits] <= '9') ++digits;
  auto n = parse_unsigned(v.substr(0, digits), 10, UINT64_MAX >> 40);
  if (!n) return std::nullopt;
  std::string unit(v.substr(digits));
  std::transform(unit.begin(), unit.end(), unit.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (unit.size() == 2 && unit[1] == 'b') unit.pop_back();
  if (unit.empty() || unit == "b") return *n;
  if (unit == "k") return *n << 10;
  if (unit == "m") return *n << 20;
  if (unit == "g") return *n << 30;
  if (unit == "t") return *n << 40;
  return std::nullopt;
}

std::optional<MountType> parse_type(std::string_view v) {
  for (MountType t : {MountType::bind, MountType::cache, MountType::tmpfs, MountType::secret, MountType::ssh}) {
    if (v == mount_type_name(t)) return t;
  }
  return std::nullopt;
}

// The keys each type takes.
bool takes(MountType type, const std::string& key) {
  if (key == "type" || key == "target") return true;
  switch (type) {
    case MountType::bind: return key == "source" || key == "from" || key == "readonly" || key == "readwrite";
    case MountType::cache:
      return key == "id" || key == "sharing" || key == "mode" || key == "uid" || key == "gid" || key == "from" ||
             key == "readonly";
    case MountType::tmpfs: return key == "size";
    case MountType::secret:
      return key == "id" || key == "env" || key == "required" || key == "mode" || key == "uid" || key == "gid";
    case MountType::ssh: return key == "id" || key == "required" || key == "mode" || key == "uid" || key == "gid";
  }
  return false;
}

}  // namespace

const char* mount_type_name(MountType type) {
  switch (type) {
    case MountType::bind: return "bind";
    case MountType::cache: return "cache";
    case MountType::tmpfs: return "tmpfs";
    case MountType::secret: return "secret";
    case MountType::ssh: return "ssh";
  }
  return "?";
}

RunMount parse_run_mount(std::string_view value, const std::string& workdir) {
  RunMount m;
  std::vector<std::pair<std::string, std::optional<std::string>>> fields;
  for (auto& field : csv_fields(value)) {
    auto eq = field.find('=');
    std::string key = field.substr(0, eq);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    // Aliases, as BuildKit spells them.
    if (key == "dst" || key == "destination") key = "target";
    if (key == "src") key = "source";
    if (key == "ro") key = "readonly";
    if (key == "rw") key = "readwrite";
    if (key.empty()) throw Error("empty field in mount " + quote(value));
    std::optional<std::string> v;
    if (eq != std::string::npos) v = field.substr(eq + 1);
    fields.emplace_back(key, v);
  }
  for (const auto& [key, v] : fields) {
    if (key != "type") continue;
    auto t = parse_type(v.value_or(""));
    if (!t) throw Error("unsupported mount type " + quote(v.value_or("")) + " (bind, cache, tmpfs, secret or ssh)");
    m.type = *t;
  }
  m.read_only = m.type == MountType::bind;
  std::string target;
  bool has_target = false;
  for (const auto& field : fields) {
    const std::string& key = field.first;
    const std::optional<std::string>& v = field.second;
    if (!takes(m.type, key)) {
      if (key == "type" || key == "source" || key == "from" || key == "id" || key == "sharing" || key == "mode" ||
          key == "uid" || key == "gid" || key == "size" || key == "env" || key == "readonly" || key == "readwrite" ||
          key == "required") {
        throw Error("mount option " + quote(key) + " does not apply to type=" + mount_type_name(m.type));
      }
      throw Error("unexpected key " + quote(key) + " in mount " + quote(value));
    }
    auto need = [&]() -> const std::string& {
      if (!v) throw Error("mount option " + quote(key) + " needs a value");
      return *v;
    };
    auto number = [&](int base, std::uint64_t max) -> std::uint32_t {
      auto n = parse_unsigned(need(), base, max);
      if (!n) throw Error("invalid mount option " + key + "=" + quote(*v));
      return static_cast<std::uint32_t>(*n);
    };
    auto flag = [&]() -> bool {
      if (!v) return true;
      auto b = parse_bool(*v);
      if (!b) throw Error("invalid mount option " + key + "=" + quote(*v) + " (true or false)");
      return *b;
    };
    if (key == "type") continue;
    if (key == "target") {
      target = need();
      has_target = true;
    } else if (key == "source") {
      m.source = need();
    } else if (key == "from") {
      m.from = need();
      if (m.from.empty()) throw Error("mount option 'from' needs a stage or an image");
    } else if (key == "id") {
      m.id = need();
    } else if (key == "env") {
      m.env = need();
      if (m.env.empty() || m.env.find('=') != std::string::npos) throw Error("invalid mount option env=" + quote(m.env));
    } else if (key == "sharing") {
      const std::string& s = need();
      if (s == "shared") {
        m.sharing = CacheSharing::shared;
      } else if (s == "private") {
        m.sharing = CacheSharing::private_;
      } else if (s == "locked") {
        m.sharing = CacheSharing::locked;
      } else {
        throw Error("unsupported sharing value " + quote(s) + " (shared, private or locked)");
      }
    } else if (key == "mode") {
      m.mode = number(8, 07777);
    } else if (key == "uid") {
      m.uid = number(10, 4294967294U);
    } else if (key == "gid") {
      m.gid = number(10, 4294967294U);
    } else if (key == "size") {
      auto n = parse_size(need());
      if (!n) throw Error("invalid mount option size=" + quote(*v));
      m.size = *n;
    } else if (key == "readonly") {
      m.read_only = flag();
    } else if (key == "readwrite") {
      m.read_only = !flag();
    } else if (key == "required") {
      m.required = flag();
    }
  }
  if (m.type == MountType::cache && !m.from.empty()) {
    throw Error("RUN --mount=type=cache,from= is not supported by strata build");
  }
  if (m.type == MountType::secret) {
    if (m.id.empty() && has_target) {
      std::string t = clean_path("/" + target);
      m.id = t.substr(t.rfind('/') + 1);
    }
    if (m.id.empty()) throw Error("a secret mount needs an id or a target");
    if (!has_target && m.env.empty()) {
      target = "/run/secrets/" + m.id;
      has_target = true;
    }
  }
  if (m.type == MountType::ssh && m.id.empty()) m.id = "default";
  if (!has_target) {
    // An ssh mount without a target gets /run/buildkit/ssh_agent.N from the planner.
    if (m.type != MountType::secret && m.type != MountType::ssh) {
      throw Error("mount type=" + std::string(mount_type_name(m.type)) + " needs a target");
    }
  } else {
    if (target.empty()) throw Error("mount target is empty");
    m.target = clean_path(target[0] == '/' ? target : "/" + workdir + "/" + target);
    if (m.target == "/") throw Error("a mount cannot cover the root directory '/'");
  }
  if (m.type == MountType::cache && m.id.empty()) m.id = m.target;
  if (m.type == MountType::bind) {
    std::string s = clean_path("/" + m.source);
    m.source = s == "/" ? std::string() : s;
  }
  return m;
}

nlohmann::json run_mount_json(const RunMount& m) {
  nlohmann::json j = {{"type", mount_type_name(m.type)}, {"target", m.target}};
  switch (m.type) {
    case MountType::bind:
      j["source"] = m.source;
      j["rw"] = !m.read_only;
      if (m.from_stage) j["from_stage"] = *m.from_stage;
      if (!m.from_image.empty()) j["from_image"] = m.from_image;
      break;
    case MountType::cache:
      j["id"] = m.id;
      j["ro"] = m.read_only;
      j["sharing"] = static_cast<int>(m.sharing);
      break;
    case MountType::tmpfs: j["size"] = m.size; break;
    case MountType::secret:
      j["id"] = m.id;
      j["env"] = m.env;
      j["required"] = m.required;
      break;
    case MountType::ssh:
      j["id"] = m.id;
      j["required"] = m.required;
      break;
  }
  if (m.mode) j["mode"] = *m.mode;
  if (m.uid) j["uid"] = *m.uid;
  if (m.gid) j["gid"] = *m.gid;
  return j;
}

}  // namespace strata::build
