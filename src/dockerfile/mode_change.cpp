// COPY/ADD --chmod: octal modes and chmod(1)'s symbolic form (see
// strata/build.hpp).
#include "strata/build.hpp"

namespace strata::build {

namespace {

constexpr std::uint32_t kUser = 04700;   // setuid and rwx of the owner
constexpr std::uint32_t kGroup = 02070;  // setgid and rwx of the group
constexpr std::uint32_t kOther = 01007;  // sticky and rwx of the others
constexpr std::uint32_t kAll = 07777;

// The rwx bits of CLASS in MODE, spread to the rwx bits of every class.
std::uint32_t class_bits(std::uint32_t mode, char cls) {
  std::uint32_t rwx = cls == 'u' ? (mode >> 6) & 7 : cls == 'g' ? (mode >> 3) & 7 : mode & 7;
  return rwx * 0111;
}

}  // namespace

std::optional<ModeChange> ModeChange::parse(std::string_view text) {
  if (text.empty()) return std::nullopt;
  ModeChange change;
  if (text.find_first_not_of("01234567") == std::string_view::npos) {
    std::uint32_t v = 0;
    for (char c : text) {
      v = v * 8 + static_cast<std::uint32_t>(c - '0');
      if (v > kAll) return std::nullopt;
    }
    change.absolute_ = v;
    return change;
  }
  size_t i = 0;
  while (true) {
    Clause clause;
    for (; i < text.size(); ++i) {
      char c = text[i];
      if (c == 'u') clause.who |= kUser;
      else if (c == 'g') clause.who |= kGroup;
      else if (c == 'o') clause.who |= kOther;
      else if (c == 'a') clause.who |= kAll;
      else break;
    }
    if (clause.who == 0) clause.who = kAll;
    while (i < text.size() && (text[i] == '+' || text[i] == '-' || text[i] == '=')) {
      Action action;
      action.op = text[i++];
      if (i < text.size() && (text[i] == 'u' || text[i] == 'g' || text[i] == 'o')) {
        action.copy = text[i++];
      } else {
        for (; i < text.size(); ++i) {
          char c = text[i];
          if (c == 'r') action.bits |= 0444;
          else if (c == 'w') action.bits |= 0222;
          else if (c == 'x') action.bits |= 0111;
          else if (c == 'X') action.x_if_exec = true;
          else if (c == 's') action.bits |= 06000;
          else if (c == 't') action.bits |= 01000;
          else break;
        }
      }
      clause.actions.push_back(action);
    }
    if (clause.actions.empty()) return std::nullopt;  // "u", "", ",x", "u+x,,g+x"
    change.clauses_.push_back(std::move(clause));
    if (i == text.size()) return change;
    if (text[i] != ',' || i + 1 == text.size()) return std::nullopt;
    ++i;
  }
}

std::uint32_t ModeChange::apply(std::uint32_t mode, bool is_dir) const {
  if (absolute_) return *absolute_;
  mode &= kAll;
  for (const auto& clause : clauses_) {
    for (const auto& a : clause.actions) {
      std::uint32_t bits = a.copy != 0 ? class_bits(mode, a.copy) : a.bits;
      if (a.x_if_exec && (is_dir || (mode & 0111) != 0)) bits |= 0111;
      bits &= clause.who;
      if (a.op == '+') mode |= bits;
      else if (a.op == '-') mode &= ~bits;
      else mode = (mode & ~clause.who) | bits;
    }
  }
  return mode;
}

}  // namespace strata::build
