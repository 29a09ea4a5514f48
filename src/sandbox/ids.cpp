// The pure parts of the sandbox: subordinate id files, id map plans, user
// specs resolved against a container's /etc/passwd and /etc/group, and the
// environment a command starts with.
#include <algorithm>
#include <limits>

#include "strata/error.hpp"
#include "strata/idfile.hpp"
#include "strata/text.hpp"
#include "strata/sandbox.hpp"

namespace strata::sandbox {

namespace {

std::optional<std::uint32_t> parse_u32(std::string_view s) {
  auto v = parse_unsigned(s, 10, std::numeric_limits<std::uint32_t>::max());
  if (!v) return std::nullopt;
  return static_cast<std::uint32_t>(*v);
}

}  // namespace

std::vector<SubIdRange> parse_subid_file(std::string_view content) {
  std::vector<SubIdRange> out;
  for (auto line : content_lines(content)) {
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

std::function<void(std::uint32_t& uid, std::uint32_t& gid)> container_owners(const IdMapPlan& plan) {
  if (plan.kind == IdMapPlan::Kind::identity) return {};
  auto inside = [](const std::vector<IdMapping>& map, std::uint32_t host) -> std::uint32_t {
    for (const auto& m : map) {
      if (host >= m.outside && host - m.outside < m.count) return m.inside + (host - m.outside);
    }
    return 65534;
  };
  return [uids = plan.uids, gids = plan.gids, inside](std::uint32_t& uid, std::uint32_t& gid) {
    uid = inside(uids, uid);
    gid = inside(gids, gid);
  };
}

std::function<void(std::uint32_t& uid, std::uint32_t& gid)> host_owners(const IdMapPlan& plan) {
  if (plan.kind == IdMapPlan::Kind::identity) return {};
  auto outside = [](const std::vector<IdMapping>& map, std::uint32_t id) -> std::uint32_t {
    for (const auto& m : map) {
      if (id >= m.inside && id - m.inside < m.count) return m.outside + (id - m.inside);
    }
    return id;
  };
  return [uids = plan.uids, gids = plan.gids, outside](std::uint32_t& uid, std::uint32_t& gid) {
    uid = outside(uids, uid);
    gid = outside(gids, gid);
  };
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
  auto users = idfile::parse_passwd(passwd);
  auto groups = idfile::parse_group(group);

  ExecUser out;
  if (user_part.empty()) user_part = "0";
  const idfile::PasswdEntry* found = nullptr;
  if (auto numeric = idfile::parse_id(user_part, ExitCode::run_failed)) {
    out.uid = *numeric;
    found = idfile::find_user(users, *numeric);
  } else {
    found = idfile::find_user(users, user_part);
    if (!found) {
      idfile::refuse_unusable_entry(passwd, user_part, true, ExitCode::run_failed);
      throw Error("unable to find user " + quote(user_part) + ": no matching entries in passwd file",
                  ExitCode::run_failed);
    }
  }
  if (found) {
    out.uid = found->uid;
    out.gid = found->gid;
    if (!found->home.empty()) out.home = found->home;
  }
  if (has_group) {
    if (auto numeric = idfile::parse_id(group_part, ExitCode::run_failed)) {
      out.gid = *numeric;
    } else {
      const auto* g = idfile::find_group(groups, group_part);
      if (!g) {
        idfile::refuse_unusable_entry(group, group_part, false, ExitCode::run_failed);
        throw Error("unable to find group " + quote(group_part) + ": no matching entries in group file",
                    ExitCode::run_failed);
      }
      out.gid = g->gid;
    }
  }
  if (found) {
    for (const auto& g : groups) {
      if (std::find(g.members.begin(), g.members.end(), found->name) != g.members.end() &&
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
