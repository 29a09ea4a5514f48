// src/dockerfile/files: the file work of COPY and ADD, private to the executor.
// Every path inside a container root or a build context is resolved with
// openat2(RESOLVE_IN_ROOT) relative to the root's fd, so a symlink resolves
// as it would inside the container and nothing reaches outside the root.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include "strata/build_executor.hpp"
#include "strata/fd.hpp"

namespace strata::build::files {

// openat2(ROOT, PATH, RESOLVE_IN_ROOT): PATH may be absolute or relative.
// Returns an invalid fd with errno set when it fails.
UniqueFd open_in_root(int root, const std::string& path, int flags);

// Creates the directory PATH (absolute, inside ROOT) and its missing parents
// (mode 0755, owned by OWNER); returns an fd of the directory.
UniqueFd make_dirs(int root, const std::string& path, const std::optional<Owner>& owner);

struct CopySpec {
  std::optional<Owner> owner;    // nullopt: keep the source's owner
  std::optional<ModeChange> mode;  // --chmod, applied to each entry's mode
  const IgnoreMatcher* ignore = nullptr;  // for context sources: paths to skip
  std::string ignore_prefix;     // the source's path relative to the context
  const IgnoreMatcher* exclude = nullptr;  // COPY --exclude patterns
  std::string exclude_prefix;    // the path relative to the COPY source
  // True when the entry at these prefixes is left out.
  bool skipped() const {
    return (ignore != nullptr && ignore->excluded(ignore_prefix)) ||
           (exclude != nullptr && (exclude->excluded(ignore_prefix) || exclude->excluded(exclude_prefix)));
  }
};

// Copies the tree at SRC (an O_PATH fd) into the directory DEST_DIR as NAME
// (files replace what is there; directories merge).
void copy_tree(int src, const struct stat& st, int dest_dir, const std::string& name, const CopySpec& spec);

// Writes a regular file NAME in DEST_DIR with CONTENT.
void write_file(int dest_dir, const std::string& name, const std::string& content, mode_t mode, const Owner& owner);

// Downloads URL into DEST_DIR/NAME (mode 0600, mtime from Last-Modified);
// CHECKSUM ("sha256:...") when given must match. Returns the content digest
// (XXH3-128 hex) for the cache.
std::string download(const std::string& url, int dest_dir, const std::string& name, const std::string& checksum);

// The final path component of URL's path ("" when it has none).
std::string url_file_name(const std::string& url);

// Reads a whole small file inside ROOT; "" when it does not exist.
std::string read_small_file(int root, const std::string& path);

}  // namespace strata::build::files
