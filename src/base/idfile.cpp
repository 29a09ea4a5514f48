#include "strata/idfile.hpp"

#include <algorithm>

#include "strata/text.hpp"

namespace strata::idfile {

std::optional<std::uint32_t> parse_id(std::string_view text, ExitCode code) {
  if (text.empty() || !std::all_of(text.begin(), text.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return std::nullopt;
  auto v = parse_unsigned(text, 10, kMaxId);
  if (!v) throw Error("id " + quote(text) + " is out of range (0 to " + std::to_string(kMaxId) + ")", code);
  return static_cast<std::uint32_t>(*v);
}

namespace {
std::optional<std::uint32_t> field_id(std::string_view f) {
  auto v = parse_unsigned(f, 10, kMaxId);
  if (!v) return std::nullopt;
  return static_cast<std::uint32_t>(*v);
}
}  // namespace

std::vector<PasswdEntry> parse_passwd(std::string_view content) {
  std::vector<PasswdEntry> out;
  for (auto line : content_lines(content)) {
    auto f = split(line, ':');
    if (f.size() < 7) continue;
    auto uid = field_id(f[2]), gid = field_id(f[3]);
    if (!uid || !gid) continue;
    out.push_back({std::string(f[0]), *uid, *gid, std::string(f[5])});
  }
  return out;
}

std::vector<GroupEntry> parse_group(std::string_view content) {
  std::vector<GroupEntry> out;
  for (auto line : content_lines(content)) {
    auto f = split(line, ':');
    if (f.size() < 4) continue;
    auto gid = field_id(f[2]);
    if (!gid) continue;
    GroupEntry e{std::string(f[0]), *gid, {}};
    if (!f[3].empty())
      for (auto m : split(f[3], ',')) e.members.emplace_back(m);
    out.push_back(std::move(e));
  }
  return out;
}

const PasswdEntry* find_user(const std::vector<PasswdEntry>& users, std::string_view name) {
  auto it = std::find_if(users.begin(), users.end(), [&](const PasswdEntry& u) { return u.name == name; });
  return it == users.end() ? nullptr : &*it;
}

const PasswdEntry* find_user(const std::vector<PasswdEntry>& users, std::uint32_t uid) {
  auto it = std::find_if(users.begin(), users.end(), [&](const PasswdEntry& u) { return u.uid == uid; });
  return it == users.end() ? nullptr : &*it;
}

const GroupEntry* find_group(const std::vector<GroupEntry>& groups, std::string_view name) {
  auto it = std::find_if(groups.begin(), groups.end(), [&](const GroupEntry& g) { return g.name == name; });
  return it == groups.end() ? nullptr : &*it;
}

void refuse_unusable_entry(std::string_view content, std::string_view name, bool passwd, ExitCode code) {
  for (auto line : content_lines(content)) {
    auto f = split(line, ':');
    if (f.size() < (passwd ? 7U : 4U) || f[0] != name) continue;
    for (std::size_t i = 2; i <= (passwd ? 3U : 2U); ++i) {
      if (parse_unsigned(f[i], 10, kMaxId)) continue;
      throw Error(std::string(passwd ? "user " : "group ") + quote(name) + " has the id " + quote(f[i]) + " in " +
                      (passwd ? "/etc/passwd" : "/etc/group") + ", which cannot be used (ids go from 0 to " +
                      std::to_string(kMaxId) + ")",
                  code);
    }
  }
}

}  // namespace strata::idfile
