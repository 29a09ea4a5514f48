// strata file I/O helpers, one of each for the whole tree: writing a whole
// buffer, reading a whole file, listing a directory, and an owner for DIR*.
#pragma once

#include <dirent.h>
#include <sys/types.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace strata {

// Owns a DIR* from opendir/fdopendir; closes it when destroyed. Move-only.
class UniqueDir {
 public:
  UniqueDir() noexcept = default;
  explicit UniqueDir(DIR* dir) noexcept : dir_(dir) {}
  UniqueDir(const UniqueDir&) = delete;
  UniqueDir& operator=(const UniqueDir&) = delete;
  UniqueDir(UniqueDir&& other) noexcept : dir_(std::exchange(other.dir_, nullptr)) {}
  UniqueDir& operator=(UniqueDir&& other) noexcept {
    if (this != &other) reset(std::exchange(other.dir_, nullptr));
    return *this;
  }
  ~UniqueDir() { reset(); }

  DIR* get() const noexcept { return dir_; }
  explicit operator bool() const noexcept { return dir_ != nullptr; }
  void reset(DIR* dir = nullptr) noexcept;

 private:
  DIR* dir_ = nullptr;
};

// One directory entry as readdir(3) gives it.
struct DirEntry {
  std::string name;
  unsigned char type = DT_UNKNOWN;  // DT_REG, DT_DIR, ...; DT_UNKNOWN when the file system does not say
};

// The entries of the directory open at DIRFD, without "." and "..", sorted
// by name. DIRFD itself is neither consumed nor moved (a fresh open file
// description of it is read). WHERE names the directory in errors.
// Throws SysError on failure.
std::vector<DirEntry> read_dir_entries(int dirfd, const std::string& where);
// The names of read_dir_entries.
std::vector<std::string> read_dir_names(int dirfd, const std::string& where);
// The sorted names in the directory PATH (symlinks followed); a directory
// that does not exist gives an empty list. Throws SysError on other failures.
std::vector<std::string> list_dir(const std::string& path);

// Writes all of DATA to FD, retrying short writes and EINTR. WHAT names the
// file in the error. Throws SysError.
void write_all(int fd, std::string_view data, const std::string& what);
void write_all(int fd, const void* data, std::size_t size, const std::string& what);
// The same at OFFSET with pwrite(2); the file offset does not move.
void pwrite_all(int fd, const void* data, std::size_t size, off_t offset, const std::string& what);

// Makes OUT (open for writing, empty) hold the first SIZE bytes of IN with
// the same holes: a reflink where the file system has them, else only the
// data segments (SEEK_DATA/SEEK_HOLE) by copy_file_range, with a read/write
// fallback where that is unsupported. Returns 0, or the errno of the
// failure (stratafs answers with it).
int copy_file_data(int in, int out, off_t size);

// The whole content of the file at PATH; throws Error("cannot read PATH").
std::string read_file(const std::string& path);

// PATH with every symbolic link in it resolved as if the directory ROOT were
// "/": absolute targets and ".." never leave ROOT. Returns "/a/b": up to its
// first missing component it names no symbolic link, so creating it creates
// a dangling link's target, inside ROOT, as docker does for a mount, working
// directory or copy destination. Throws SysError (ELOOP after 40 links).
std::string resolve_in_root(int root, const std::string& path);

}  // namespace strata
