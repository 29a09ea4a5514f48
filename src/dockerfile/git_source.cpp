#include "git_source.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <csignal>
#include <cstdlib>
#include <map>
#include <sstream>
#include <vector>

#include "strata/dockerignore.hpp"
#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/process.hpp"

namespace strata::build {

namespace {

bool starts_with_ci(const std::string& s, const std::string& prefix) {
  if (s.size() < prefix.size()) return false;
  for (std::size_t i = 0; i < prefix.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
  }
  return true;
}

// A ref is handed to git as a command-line word: it must not read as an
// option, a refspec (`a:b`, `+a`) or a revision expression (`a^{}`, `a~1`).
void check_ref(const std::string& ref, const std::string& src) {
  if (ref.empty()) return;
  bool plain = std::all_of(ref.begin(), ref.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-' || c == '/' || c == '@';
  });
  if (ref[0] == '-' || !plain || ref.find("..") != std::string::npos || ref.find("@{") != std::string::npos) {
    throw Error("git ref " + quote(ref) + " in " + quote(src) + " is not a branch, tag or commit name");
  }
}

// `ref:dir` or, after a second '#', `ref=…,commit=…,subdir=…`.
void parse_fragment(const std::string& fragment, const std::string& src, GitSource& out) {
  if (fragment.empty()) return;
  if (fragment[0] != '#') {
    auto colon = fragment.find(':');
    out.ref = fragment.substr(0, colon);
    if (colon != std::string::npos) out.subdir = fragment.substr(colon + 1);
    return;
  }
  std::stringstream fields(fragment.substr(1));
  std::string field;
  while (std::getline(fields, field, ',')) {
    auto eq = field.find('=');
    if (eq == std::string::npos) throw Error("git URL " + quote(src) + ": " + quote(field) + " is not key=value");
    std::string key = field.substr(0, eq);
    std::transform(key.begin(), key.end(), key.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    std::string value = field.substr(eq + 1);
    if (key == "ref") out.ref = value;
    else if (key == "commit") out.commit = value;
    else if (key == "subdir") out.subdir = value;
    else throw Error("git URL " + quote(src) + ": unknown key " + quote(key) + " (ref, commit and subdir are known)");
  }
  if (!out.commit.empty()) {
    std::transform(out.commit.begin(), out.commit.end(), out.commit.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    if (!is_commit_id(out.commit)) throw Error("git URL " + quote(src) + ": commit=" + quote(out.commit) + " is not a full commit id");
    if (out.ref.empty()) out.ref = out.commit;
  }
}

// scp-like syntax: `user@host:path` (no scheme; BuildKit requires the user).
bool is_scp_like(const std::string& s) {
  auto at = s.find('@');
  if (at == std::string::npos || at == 0) return false;
  auto colon = s.find(':', at);
  if (colon == std::string::npos || colon == at + 1) return false;
  auto user_ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == '.'; };
  auto host_ok = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '.'; };
  return std::all_of(s.begin(), s.begin() + static_cast<long>(at), user_ok) &&
         std::all_of(s.begin() + static_cast<long>(at) + 1, s.begin() + static_cast<long>(colon), host_ok);
}

// How every git command runs: no configuration but ours, no prompt, only
// network transports, and no hooks.
std::vector<std::string> git_command(std::initializer_list<std::string> args) {
  std::vector<std::string> cmd = {"git",
                                  "-c", "protocol.allow=never",
                                  "-c", "protocol.http.allow=always",
                                  "-c", "protocol.https.allow=always",
                                  "-c", "protocol.git.allow=always",
                                  "-c", "protocol.ssh.allow=always",
                                  "-c", "core.hooksPath=/dev/null",
                                  "-c", "core.symlinks=true",
                                  "-c", "core.autocrlf=false",
                                  "-c", "advice.detachedHead=false",
                                  "-c", "init.defaultBranch=main"};
  cmd.insert(cmd.end(), args.begin(), args.end());
  return cmd;
}

// Every command runs in a directory of the build's own (CWD), and git looks
// for no repository above it: a `.git` where strata was started (a project's
// own, or one a context tarball brought) must not lend its configuration
// (credential helpers, insteadOf, sshCommand) to the fetch.
ProgramOutput git(std::initializer_list<std::string> args, const std::string& cwd) {
  ProgramOptions o;
  o.cwd = cwd;
  std::string parent = cwd.substr(0, cwd.find_last_of('/'));
  o.env["GIT_CEILING_DIRECTORIES"] = parent.empty() ? std::string("/") : parent;
  o.env["GIT_CONFIG_NOSYSTEM"] = "1";
  o.env["GIT_CONFIG_GLOBAL"] = "/dev/null";
  o.env["GIT_TERMINAL_PROMPT"] = "0";
  o.env["GIT_ASKPASS"] = "/bin/false";
  o.env["SSH_ASKPASS"] = "/bin/false";
  o.env["GIT_PROTOCOL_FROM_USER"] = "0";
  o.env["LC_ALL"] = "C";
  // Whatever the caller's environment points git at is not ours to use.
  for (const char* v : {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY", "GIT_ALTERNATE_OBJECT_DIRECTORIES",
                        "GIT_CONFIG", "GIT_CONFIG_PARAMETERS", "GIT_CONFIG_COUNT", "GIT_EXEC_PATH", "GIT_TEMPLATE_DIR",
                        "GIT_PROXY_COMMAND", "GIT_SSL_NO_VERIFY", "GIT_ALLOW_PROTOCOL"}) {
    o.env[v] = std::nullopt;
  }
  if (::getenv("GIT_SSH_COMMAND") == nullptr && ::getenv("GIT_SSH") == nullptr) {
    o.env["GIT_SSH_COMMAND"] = "ssh -o BatchMode=yes";
  }
  return run_program(git_command(args), o);
}

// The user information of a URL (`user:password` before the host's '@'),
// or "" when it has none.
std::string user_info(const std::string& remote) {
  auto scheme = remote.find("://");
  if (scheme == std::string::npos) return {};
  auto start = scheme + 3;
  auto end = remote.find_first_of("/?#", start);
  auto at = remote.rfind('@', end == std::string::npos ? std::string::npos : end);
  if (at == std::string::npos || at < start) return {};
  return remote.substr(start, at - start);
}

// What git said went wrong: its first fatal line (with the line it ends in
// a colon to, and the line before it when that one is the cause, as ssh's
// "connect to host" is), else its last line.
std::string git_reason(const ProgramOutput& r) {
  std::vector<std::string> lines = r.err_lines();
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].rfind("fatal: ", 0) != 0) continue;
    std::string why = lines[i].substr(7);
    if (why.back() == ':' && i + 1 < lines.size()) why += " " + lines[i + 1];
    if (i > 0 && lines[i - 1].rfind("ssh: ", 0) == 0) why = lines[i - 1] + " (" + why + ")";
    return why;
  }
  return r.why("git");
}

[[noreturn]] void git_failed(const ProgramOutput& r, const std::string& what, const GitSource& s) {
  if (WIFEXITED(r.status) && WEXITSTATUS(r.status) == 127 && r.err.find("cannot run git") != std::string::npos) {
    throw Error("ADD of a git repository needs the git program: install git (apt-get install git)");
  }
  if (WIFSIGNALED(r.status) && (WTERMSIG(r.status) == SIGINT || WTERMSIG(r.status) == SIGTERM)) {
    throw Error("the build was interrupted");
  }
  std::string why = git_reason(r);
  // git repeats the URL, or its host part, in its messages: a password in it stays out.
  std::string secret = user_info(s.remote);
  for (std::size_t at; !secret.empty() && (at = why.find(secret)) != std::string::npos;) why.replace(at, secret.size(), "xxxxx");
  throw Error(what + " " + quote(redact_git_remote(s.remote)) + ": " + why);
}

// Removes every `.git` (the repository's and its submodules') below DIR.
void remove_git_dirs(int dir, int depth) {
  if (depth > 64) return;
  UniqueFd self(::openat(dir, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!self) throw_errno("open a git checkout");
  DIR* d = ::fdopendir(self.release());
  if (d == nullptr) throw_errno("read a git checkout");
  std::vector<std::string> dirs;
  bool has_git = false;
  while (dirent* e = ::readdir(d)) {
    std::string n = e->d_name;
    if (n == "." || n == "..") continue;
    if (n == ".git") {
      has_git = true;
      continue;
    }
    bool is_dir = e->d_type == DT_DIR;
    if (e->d_type == DT_UNKNOWN) {  // a file system that does not say: ask
      struct stat st {};
      is_dir = ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
    }
    if (is_dir) dirs.push_back(n);
  }
  int fd = ::dirfd(d);
  try {
    if (has_git) remove_tree_at(fd, ".git");
    for (const auto& n : dirs) {
      UniqueFd sub(::openat(fd, n.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub) remove_git_dirs(sub.get(), depth + 1);
    }
  } catch (...) {
    ::closedir(d);
    throw;
  }
  ::closedir(d);
}

}  // namespace

bool is_commit_id(const std::string& s) {
  return (s.size() == 40 || s.size() == 64) &&
         std::all_of(s.begin(), s.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)) || (c >= 'a' && c <= 'f'); });
}

std::string redact_git_remote(const std::string& remote) {
  std::string info = user_info(remote);
  if (info.empty()) return remote;
  auto start = remote.find("://") + 3;
  // A user name alone may be a token (https://TOKEN@host/): it goes too.
  auto colon = info.find(':');
  std::string shown = colon == std::string::npos ? "xxxxx" : info.substr(0, colon) + ":xxxxx";
  return remote.substr(0, start) + shown + remote.substr(start + info.size());
}

std::optional<GitSource> parse_git_source(const std::string& src) {
  if (src.rfind("./", 0) == 0 || src.rfind("../", 0) == 0 || src.rfind("/", 0) == 0) return std::nullopt;
  GitSource out;
  std::string without_fragment = src.substr(0, src.find('#'));
  std::string fragment = src.find('#') == std::string::npos ? std::string() : src.substr(src.find('#') + 1);
  auto scheme_end = src.find("://");
  if (scheme_end != std::string::npos) {
    bool web = starts_with_ci(src, "http://") || starts_with_ci(src, "https://");
    if (!web && !starts_with_ci(src, "git://") && !starts_with_ci(src, "ssh://")) return std::nullopt;
    if (web) {
      // Only a path ending in ".git" makes an http(s) URL a repository.
      std::string path = without_fragment.substr(0, without_fragment.find('?'));
      auto slash = path.find('/', scheme_end + 3);
      path = slash == std::string::npos ? std::string() : path.substr(slash);
      if (path.size() < 4 || path.substr(path.size() - 4) != ".git") return std::nullopt;
    }
  } else if (!is_scp_like(without_fragment)) {
    return std::nullopt;
  }
  out.remote = without_fragment;
  const std::string shown = redact_git_remote(src);  // messages never show a password
  if (scheme_end != std::string::npos && out.remote.find('?') != std::string::npos) {
    throw Error("git URL " + quote(shown) + ": a query (?...) is not supported; give the ref and directory as #ref:dir");
  }
  if (out.remote[0] == '-' ||
      std::any_of(out.remote.begin(), out.remote.end(), [](char c) { return static_cast<unsigned char>(c) <= ' ' || c == 0x7f; })) {
    throw Error("git URL " + quote(shown) + " cannot be used: it starts with '-' or holds a blank or control character");
  }
  parse_fragment(fragment, shown, out);
  check_ref(out.ref, shown);
  if (!out.subdir.empty()) {
    std::stringstream parts(out.subdir);
    for (std::string part; std::getline(parts, part, '/');) {
      if (part == "..") throw Error("git URL " + quote(shown) + ": the directory " + quote(out.subdir) + " leads out of the repository");
    }
    out.subdir = clean_path(out.subdir);
    if (out.subdir == "/" || out.subdir == ".") out.subdir.clear();
    else if (out.subdir[0] == '/') out.subdir = out.subdir.substr(1);
  }
  return out;
}

std::string resolve_git_commit(const GitSource& s, const std::string& work_dir) {
  if (is_commit_id(s.ref)) return s.ref;
  ProgramOutput r = git({"ls-remote", "--", s.remote}, work_dir);
  if (!r.succeeded()) git_failed(r, "cannot list the refs of", s);
  std::map<std::string, std::string> refs;
  std::stringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    auto tab = line.find('\t');
    if (tab == std::string::npos) continue;
    refs[line.substr(tab + 1)] = line.substr(0, tab);
  }
  std::vector<std::string> names;
  if (s.ref.empty() || s.ref == "HEAD") {
    names = {"HEAD"};
  } else if (s.ref.rfind("refs/", 0) == 0) {
    names = {s.ref + "^{}", s.ref};
  } else {
    // A branch before a tag of the same name, as git's own lookup; an
    // annotated tag is peeled to its commit.
    names = {"refs/heads/" + s.ref, "refs/tags/" + s.ref + "^{}", "refs/tags/" + s.ref};
  }
  std::string commit;
  for (const auto& n : names) {
    if (auto it = refs.find(n); it != refs.end()) {
      commit = it->second;
      break;
    }
  }
  if (commit.empty()) {
    throw Error("git repository " + quote(redact_git_remote(s.remote)) + " has no " +
                (s.ref.empty() ? std::string("HEAD") : "branch or tag " + quote(s.ref)));
  }
  if (!is_commit_id(commit)) throw Error("git repository " + quote(redact_git_remote(s.remote)) + " gave a malformed commit id");
  if (!s.commit.empty() && s.commit != commit) {
    throw Error("git ref " + quote(s.ref) + " of " + quote(redact_git_remote(s.remote)) + " is at commit " + commit +
                ", not the expected " + s.commit);
  }
  return commit;
}

void fetch_git_tree(const GitSource& s, const std::string& commit, const std::string& dir, bool keep_git_dir) {
  std::string parent = dir.substr(0, dir.find_last_of('/'));
  ProgramOutput r = git({"init", "-q", dir}, parent);
  if (!r.succeeded()) git_failed(r, "cannot prepare a checkout of", s);
  r = git({"remote", "add", "origin", s.remote}, dir);
  if (!r.succeeded()) git_failed(r, "cannot prepare a checkout of", s);
  // Most servers hand out any commit they have (protocol v2); one that does
  // not gets a full fetch of its branches and tags.
  r = git({"fetch", "-q", "--depth=1", "--no-tags", "origin", commit}, dir);
  if (!r.succeeded()) {
    ProgramOutput full = git({"fetch", "-q", "--tags", "origin", "+refs/heads/*:refs/remotes/origin/*"}, dir);
    if (!full.succeeded()) git_failed(full, "cannot fetch", s);
    ProgramOutput has = git({"cat-file", "-e", commit + "^{commit}"}, dir);
    if (!has.succeeded()) throw Error("git repository " + quote(redact_git_remote(s.remote)) + " has no commit " + commit);
  }
  if (!git({"rev-parse", "--verify", "--quiet", commit + "^{commit}"}, dir).succeeded()) {
    throw Error("git repository " + quote(redact_git_remote(s.remote)) + ": " + commit + " is not a commit");
  }
  r = git({"checkout", "-q", "--detach", commit}, dir);
  if (!r.succeeded()) git_failed(r, "cannot check out commit " + commit + " of", s);
  struct stat st {};
  if (::stat((dir + "/.gitmodules").c_str(), &st) == 0) {
    r = git({"submodule", "update", "--init", "--recursive", "--depth=1"}, dir);
    if (!r.succeeded()) git_failed(r, "cannot fetch the submodules of", s);
  }
  if (keep_git_dir && !user_info(s.remote).empty()) {
    // The image keeps .git/config: not the password the fetch used.
    r = git({"remote", "set-url", "origin", redact_git_remote(s.remote)}, dir);
    if (!r.succeeded()) git_failed(r, "cannot prepare a checkout of", s);
  }
  if (!keep_git_dir) {
    UniqueFd root = open_at(AT_FDCWD, dir, O_RDONLY | O_DIRECTORY);
    remove_git_dirs(root.get(), 0);
  }
}

}  // namespace strata::build
