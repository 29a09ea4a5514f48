// src/dockerfile/git_source: ADD of a git repository. What counts as a git
// URL follows BuildKit: http(s) URLs whose path ends in ".git", git:// and
// ssh:// URLs, and scp-like `user@host:path`; a fragment names the ref and
// a directory in the repository (`#ref:dir`, or `##ref=…,commit=…,subdir=…`).
// The git program does the transfer, with the user's and the system's git
// configuration ignored and only the http, https, git and ssh transports
// allowed (a submodule cannot reach a file:// or ext:: URL).
#pragma once

#include <optional>
#include <string>

namespace strata::build {

struct GitSource {
  std::string remote;   // the URL given to git, without the fragment
  std::string ref;      // branch, tag, full ref name or commit id; "" = the remote's HEAD
  std::string commit;   // `commit=` of the long fragment form: the id the ref must resolve to
  std::string subdir;   // a directory inside the repository, cleaned; "" = the whole tree
};

// nullopt when SRC is not a git URL (a local path or a plain http(s) URL).
// Throws Error for a git URL that cannot be used safely or does not parse
// (an unknown fragment key, a ref or remote starting with '-', a '..' in the
// directory).
std::optional<GitSource> parse_git_source(const std::string& src);

// The commit id REF names at the remote (git ls-remote, run in WORK_DIR, an
// empty directory of the build's; a full commit id is taken as it is).
// Throws Error naming the URL when the remote cannot be reached or has no
// such branch or tag.
std::string resolve_git_commit(const GitSource& source, const std::string& work_dir);

// Fetches COMMIT (shallow when the remote allows it) into the new directory
// DIR, checks it out with its submodules and, unless KEEP_GIT_DIR, leaves
// no `.git` behind. Throws Error naming the URL on failure.
void fetch_git_tree(const GitSource& source, const std::string& commit, const std::string& dir, bool keep_git_dir);

// A full commit id: 40 (SHA-1) or 64 (SHA-256) lower-case hex digits.
bool is_commit_id(const std::string& s);

// For messages, the history and a kept .git/config: REMOTE with the password
// in it (or a user name alone, which may be a token) replaced by "xxxxx".
std::string redact_git_remote(const std::string& remote);

}  // namespace strata::build
