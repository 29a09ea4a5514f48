#include "strata/process.hpp"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "strata/descriptors.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/text.hpp"

namespace strata {

namespace {

UniqueFd memory_file(const char* name) {
  UniqueFd fd(::memfd_create(name, MFD_CLOEXEC));
  if (!fd) throw SysError(errno, std::string("create a memory file for a program's ") + name);
  return fd;
}

std::string read_back(int fd) {
  std::string text;
  char buf[65536];
  off_t at = 0;
  for (ssize_t n; (n = ::pread(fd, buf, sizeof buf, at)) > 0; at += n) text.append(buf, static_cast<std::size_t>(n));
  return text;
}

}  // namespace

bool ProgramOutput::succeeded() const { return WIFEXITED(status) && WEXITSTATUS(status) == 0; }

std::vector<std::string> ProgramOutput::err_lines() const {
  std::vector<std::string> lines;
  for (auto line : split(err, '\n')) {
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (!line.empty()) lines.emplace_back(line);
  }
  return lines;
}

std::string ProgramOutput::why(const std::string& program) const {
  if (auto lines = err_lines(); !lines.empty()) return lines.back();
  if (WIFEXITED(status)) return program + " exited " + std::to_string(WEXITSTATUS(status));
  return program + " was killed by signal " + std::to_string(WTERMSIG(status));
}

ProgramOutput run_program(const std::vector<std::string>& args, const ProgramOptions& options) {
  if (args.empty()) throw Error("no program to run");
  // Everything the child needs is built before fork: after it, only
  // async-signal-safe calls.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    std::string entry(*e);
    std::string name = entry.substr(0, entry.find('='));
    if (options.env.count(name) == 0) env_strings.push_back(std::move(entry));
  }
  for (const auto& [name, value] : options.env) {
    if (value) env_strings.push_back(name + "=" + *value);
  }
  std::vector<char*> envp;
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  std::vector<std::string> argv_strings = args;
  std::vector<char*> argv;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string cannot_run = "cannot run " + args[0] + ": ";

  UniqueFd out = memory_file("stdout");
  UniqueFd err = memory_file("stderr");
  UniqueFd null = open_at(AT_FDCWD, "/dev/null", O_RDONLY);
  pid_t pid = ::fork();
  if (pid < 0) throw SysError(errno, "start " + quote(args[0]));
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);
    if (::dup2(null.get(), 0) < 0 || ::dup2(out.get(), 1) < 0 || ::dup2(err.get(), 2) < 0) ::_exit(126);
    close_descriptors_except({});
    ::umask(options.umask);
    if (!options.cwd.empty() && ::chdir(options.cwd.c_str()) != 0) {
      const char* why = ::strerror(errno);
      [[maybe_unused]] ssize_t w = ::write(2, why, std::strlen(why));
      ::_exit(126);
    }
    ::execvpe(argv[0], argv.data(), envp.data());
    const char* why = ::strerror(errno);
    [[maybe_unused]] ssize_t w1 = ::write(2, cannot_run.data(), cannot_run.size());
    [[maybe_unused]] ssize_t w2 = ::write(2, why, std::strlen(why));
    ::_exit(127);
  }
  ProgramOutput r;
  while (::waitpid(pid, &r.status, 0) < 0) {
    if (errno != EINTR) throw SysError(errno, "wait for " + quote(args[0]));
  }
  r.out = read_back(out.get());
  r.err = read_back(err.get());
  return r;
}

}  // namespace strata
