// Helpers that the files of the archive module share; not part of the
// module's interface. archive.cpp reads (decodes and extracts),
// layer_writer.cpp writes layer tars, limits.cpp holds the limits a hostile
// archive is held to, image_archive.cpp the whole-image archives.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

struct archive;  // libarchive's handle
struct archive_entry;

namespace strata::archive::detail {

// "1.5 MiB": a byte count as people read it, for messages.
std::string human_size(std::int64_t n);

// Splits an entry name into safe components; throws Error on `..` and
// absolute names, naming WHAT.
std::vector<std::string> split_name(std::string_view name, std::string_view what);

// How many decompressed bytes one stream may give, and what to tell the user
// when it gives more.
struct SizeLimit {
  std::int64_t bytes = 0;  // 0: none
  std::string why;
};

// The limit for a stream extracted into the directory open at DIR_FD:
// EXPLICIT_LIMIT, else what kSizeLimitEnv sets, else default_size_limit's
// rule; SHOWN names the directory in errors.
SizeLimit size_limit_for(const std::optional<std::int64_t>& explicit_limit, int dir_fd, const std::string& shown);

// libarchive's message for the last error of A.
std::string archive_message(struct archive* a);

// A short path for NAME in the directory open at DIRFD, however deep that
// directory is (for the *xattr calls, which have no *at form).
std::string proc_path(int dirfd, const std::string& name);

// Makes, entry by entry as a layer tar is written, the tree that extracting
// that tar would make (write_layer_with_tree). A regular file's data is not
// written again: the file it was read from is linked in (see
// Extractor::adopt_file), and gets the owner, mode, times and xattrs the
// entry gives it.
class TreeBuilder {
 public:
  // ROOT: the open, empty directory to fill; PRIVILEGED as in ExtractOptions.
  TreeBuilder(int root, bool privileged);
  TreeBuilder(const TreeBuilder&) = delete;
  TreeBuilder& operator=(const TreeBuilder&) = delete;
  ~TreeBuilder();
  // E was just written. A regular file's data is the file NAME in the
  // directory open at DIR; without NAME the file is empty (a marker).
  void add(struct archive_entry* e, int dir, const char* name);
  // Sets the directories' modes and times (after their contents).
  void finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace strata::archive::detail
