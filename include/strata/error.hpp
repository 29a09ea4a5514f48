// The one error-handling style of strata.
//
// Failures that end an operation are exceptions derived from strata::Error;
// each carries a one-line message that says what failed and where, and the
// documented exit code the command line tools return for it. Outcomes that are
// expected in normal operation (a name that does not exist in a layer, a cache
// miss) are values (std::optional, bool, an errno result), never exceptions;
// that keeps hot paths such as FUSE lookups free of unwinding.
#pragma once

#include <stdexcept>
#include <string>
#include <string_view>

namespace strata {

// Exit codes shared by every tool (documented in strata(1) and stratafs(1)).
enum class ExitCode : int {
  ok = 0,
  failure = 1,    // the operation failed: bad input, I/O error, missing object
  usage = 2,      // bad command line: unknown option, missing argument
  // `strata run` follows docker: 125 when strata itself fails, 126 when the
  // command cannot be invoked, 127 when it does not exist in the image.
  run_failed = 125,
  cannot_invoke = 126,
  command_not_found = 127,
  interrupted = 130,  // stopped by SIGINT or SIGTERM (128 + SIGINT), as a shell reports it
};

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message, ExitCode code = ExitCode::failure)
      : std::runtime_error(message), code_(code) {}
  ExitCode code() const noexcept { return code_; }

 private:
  ExitCode code_;
};

// A bad command line or option value.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(message, ExitCode::usage) {}
};

// A failed system call: the message is "WHAT: strerror(errno)".
class SysError : public Error {
 public:
  SysError(int err, std::string_view what);
  int err() const noexcept { return err_; }

 private:
  int err_;
};

// Throws SysError for the current errno.
[[noreturn]] void throw_errno(std::string_view what);

// Quotes a path or name for an error message so that spaces, newlines and
// non-UTF-8 bytes stay on one readable line.
std::string quote(std::string_view s);

}  // namespace strata
