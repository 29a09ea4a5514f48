// The pure parts of the sandbox: subordinate id files, id map plans, user
// specs resolved against a container's /etc/passwd and /etc/group, and the
// environment a command starts with.
#include <algorithm>
#include <charconv>
#include <limits>

#include "strata/error.hpp"
#include "strata/sandbox.hpp"

namespace strata::sandbox {

namespace {

std::vector<std::string_view> split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    auto pos = s.find(sep, start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::vector<std::string_view> lines(std::string_view content) {
  std::vector<std::string_view> out;
  for (auto line : split(content, '\n')) {
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || line.front() == '#') continue;
    out.push_back(line);
  }
  return out;
}

std::optional<std::uint32_t> parse_u32(std::string_view s) {
  if (s.empty()) return std::nullopt;
  std::uint32_t v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 10);
  if (ec != std::errc() || p != s.data() + s.size()) return std::nullopt;
  return v;
}

// One /etc/passwd entry.
struct PasswdEntry {
  std::string_view name;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string_view home;
};

std::vector<PasswdEntry> parse_passwd(std::string_view passwd) {
  std::vector<PasswdEntry> out;
  for (auto line : lines(passwd)) {
    auto f = split(line, ':');
    if (f.size() < 7) continue;
    auto uid = parse_u32(f[2]), gid = parse_u32(f[3]);
    if (!uid || !gid) continue;
    out.push_back({f[0], *uid, *gid, f[5]});
  }
  return out;
}

struct GroupEntry {
  std::string_view name;
  std::uint32_t gid = 0;
  std::vector<std::string_view> members;
};

std::vector<GroupEntry> parse_group(std::string_view group) {
  std::vector<GroupEntry> out;
  for (auto line : lines(group)) {
    auto f = split(line, ':');
    if (f.size() < 4) continue;
    auto gid = parse_u32(f[2]);
    if (!gid) continue;
    GroupEntry e{f[0], *gid, {}};
    if (!f[3].empty()) e.members = split(f[3], ',');
    out.push_back(std::move(e));
  }
  return out;
}

}  // namespace

std::vector<SubIdRange> parse_subid_file(std::string_view content) {
  std::vector<SubIdRange> out;
  for (auto line : lines(content)) {
    auto f = split(line, ':');
    if (f.size() != 3 || f[0].empty()) continue;
    auto start = parse_u32(f[1]), count = parse_u32(f[2]);
    if (!start || !count || *count == 0) continue;
    if (*start > std::numeric_limits<std::uint32_t>::max() - *count) continue;
    out.push_back({std::string(f[0]), *start, *count});
  }
  return out;
}

std::optional<SubIdRange> find_subid_range(const std::vector<SubIdRange>& ranges, std::string_view name,
                                           std::uint32_t id) {
  for (const auto& r : ranges) {
    if ((!name.empty() && r.owner == name) || r.owner == std::to_string(id)) return r;
  }
  return std::nullopt;
}

IdMapPlan plan_id_maps(std::uint32_t uid, std::uint32_t gid, std::string_view name, std::string_view subuid,
                       std::string_view subgid) {
  IdMapPlan plan;
  if (uid == 0) {
    plan.kind = IdMapPlan::Kind::identity;
    plan.uids = {{0, 0, std::numeric_limits<std::uint32_t>::max()}};
    plan.gids = {{0, 0, std::numeric_limits<std::uint32_t>::max()}};
    return plan;
  }
  auto su = find_subid_range(parse_subid_file(subuid), name, uid);
  auto sg = find_subid_range(parse_subid_file(subgid), name, uid);
  if (su && sg) {
    plan.kind = IdMapPlan::Kind::subordinate;
    plan.uids = {{0, uid, 1}, {1, su->start, su->count}};
    plan.gids = {{0, gid, 1}, {1, sg->start, sg->count}};
    return plan;
  }
  plan.kind = IdMapPlan::Kind::single;
  plan.uids = {{0, uid, 1}};
  plan.gids = {{0, gid, 1}};
  return plan;
}

std::string format_id_map(const std::vector<IdMapping>& map) {
  std::string out;
  for (const auto& m : map) {
    out += std::to_string(m.inside) + " " + std::to_string(m.outside) + " " + std::to_string(m.count) + "\n";
  }
  return out;
}

ExecUser resolve_user(std::string_view spec, std::string_view passwd, std::string_view group) {
  std::string_view user_part = spec, group_part;
  bool has_group = false;
  if (auto colon = spec.find(':'); colon != std::string_view::npos) {
    user_part = spec.substr(0, colon);
    group_part = spec.substr(colon + 1);
    has_group = true;
    if (group_part.empty()) throw Error("bad user " + quote(spec) + ": empty group", ExitCode::run_failed);
  }
  auto users = parse_passwd(passwd);
  auto groups = parse_group(group);

  ExecUser out;
  std::string_view user_name;
  const PasswdEntry* found = nullptr;
  if (user_part.empty()) user_part = "0";
  if (auto numeric = parse_u32(user_part)) {
    out.uid = *numeric;
    for (const auto& u : users) {
      if (u.uid == *numeric) {
        found = &u;
        break;
      }
    }
  } else {
    for (const auto& u : users) {
      if (u.name == user_part) {
        found = &u;
        break;
      }
    }
    if (!found) {
      throw Error("unable to find user " + quote(user_part) + ": no matching entries in passwd file",
                  ExitCode::run_failed);
    }
  }
  if (found) {
    out.uid = found->uid;
    out.gid = found->gid;
    user_name = found->name;
    if (!found->home.empty()) out.home = std::string(found->home);
  }
  if (has_group) {
    if (auto numeric = parse_u32(group_part)) {
      out.gid = *numeric;
    } else {
      auto it = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) { return g.name == group_part; });
      if (it == groups.end()) {
        throw Error("unable to find group " + quote(group_part) + ": no matching entries in group file",
                    ExitCode::run_failed);
      }
      out.gid = it->gid;
    }
  }
  if (!user_name.empty()) {
    for (const auto& g : groups) {
      if (std::find(g.members.begin(), g.members.end(), user_name) != g.members.end() &&
          std::find(out.groups.begin(), out.groups.end(), g.gid) == out.groups.end()) {
        out.groups.push_back(g.gid);
      }
    }
  }
  return out;
}

std::vector<std::string> complete_env(const std::vector<std::string>& env, const std::string& hostname,
                                      const std::string& home, bool tty) {
  std::vector<std::string> out;
  auto key_of = [](const std::string& kv) { return kv.substr(0, kv.find('=')); };
  auto set = [&](const std::string& kv, bool replace) {
    auto key = key_of(kv);
    for (auto& e : out) {
      if (key_of(e) == key) {
        if (replace) e = kv;
        return;
      }
    }
    out.push_back(kv);
  };
  // Docker's order: PATH, HOSTNAME, then the given variables, then TERM and HOME.
  set(std::string("PATH=") + kDefaultPath, true);
  set("HOSTNAME=" + hostname, true);
  for (const auto& kv : env) set(kv, true);
  if (tty) set("TERM=xterm", false);
  set("HOME=" + home, false);
  return out;
}

}  // namespace strata::sandbox
