// The one reader of passwd(5) and group(5) files and of numeric user and
// group ids, used wherever a user spec meets an image's /etc/passwd and
// /etc/group (run -u, USER, --chown, exec -u).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "strata/error.hpp"

namespace strata::idfile {

// The largest id a user may name: 4294967295 is (uid_t)-1, which setuid(2)
// and chown(2) read as "leave unchanged", so it would keep the caller's id
// (root) instead of dropping to it. Docker refuses it too.
inline constexpr std::uint32_t kMaxId = 4294967294U;

// A numeric id: nullopt when TEXT is not all decimal digits (it is a name);
// throws Error (with CODE) naming TEXT when the number is above kMaxId.
std::optional<std::uint32_t> parse_id(std::string_view text, ExitCode code = ExitCode::failure);

struct PasswdEntry {
  std::string name;
  std::uint32_t uid = 0;
  std::uint32_t gid = 0;
  std::string home;
};

struct GroupEntry {
  std::string name;
  std::uint32_t gid = 0;
  std::vector<std::string> members;
};

// The valid entries of a passwd / group file; malformed lines and lines
// whose ids are out of range are skipped (they can name no one).
std::vector<PasswdEntry> parse_passwd(std::string_view content);
std::vector<GroupEntry> parse_group(std::string_view content);

const PasswdEntry* find_user(const std::vector<PasswdEntry>& users, std::string_view name);
const PasswdEntry* find_user(const std::vector<PasswdEntry>& users, std::uint32_t uid);
const GroupEntry* find_group(const std::vector<GroupEntry>& groups, std::string_view name);

// For a NAME that parse_passwd (PASSWD true) or parse_group did not find:
// when CONTENT has a line for NAME whose id fields are not usable ids (such
// lines are skipped, so NAME seems missing), throws Error (with CODE) saying
// which id of /etc/passwd or /etc/group cannot be used; returns otherwise.
void refuse_unusable_entry(std::string_view content, std::string_view name, bool passwd, ExitCode code);

}  // namespace strata::idfile
