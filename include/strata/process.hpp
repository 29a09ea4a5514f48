// Running a helper program (git) to completion and keeping what it printed.
#pragma once

#include <sys/types.h>

#include <map>
#include <optional>
#include <string>
#include <vector>

namespace strata {

struct ProgramOptions {
  // Variables set (or, with a nullopt value, removed) on top of this
  // process's environment.
  std::map<std::string, std::optional<std::string>> env;
  std::string cwd;       // "" keeps this process's
  mode_t umask = 022;    // what it creates does not depend on the caller's umask
};

struct ProgramOutput {
  int status = 0;        // as waitpid gives it
  std::string out;       // all it wrote to stdout
  std::string err;       // all it wrote to stderr
  bool succeeded() const;
  // Its stderr lines, without trailing blanks and carriage returns, empty ones left out.
  std::vector<std::string> err_lines() const;
  // Its last non-empty stderr line, or how it ended when it printed nothing.
  std::string why(const std::string& program) const;
};

// Runs ARGS (PATH searched for ARGS[0]) with stdin from /dev/null and its
// output kept in memory files, so neither stream can fill and stall it, and
// waits for it. No descriptor of this process but 0-2 reaches it. Throws
// Error only when it cannot be started; a program that is not installed
// exits 127.
ProgramOutput run_program(const std::vector<std::string>& args, const ProgramOptions& options = {});

}  // namespace strata
