#include "strata/error.hpp"

#include <cerrno>
#include <cstring>

namespace strata {

static std::string describe(int err, std::string_view what) {
  std::string msg(what);
  msg += ": ";
  msg += std::strerror(err);
  return msg;
}

SysError::SysError(int err, std::string_view what) : Error(describe(err, what)), err_(err) {}

void throw_errno(std::string_view what) { throw SysError(errno, what); }

std::string quote(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "'";
  for (unsigned char c : s) {
    if (c == '\'' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7f || c >= 0x80) {
      // Control bytes and non-ASCII bytes are escaped so the message stays
      // one line and shows exactly which bytes the name holds.
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    } else {
      out += static_cast<char>(c);
    }
  }
  out += '\'';
  return out;
}

}  // namespace strata
