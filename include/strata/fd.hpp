// RAII owners for file descriptors and temporary directories.
#pragma once

#include <string>
#include <utility>

namespace strata {

// Owns one file descriptor; closes it when destroyed. Move-only.
class UniqueFd {
 public:
  UniqueFd() noexcept = default;
  explicit UniqueFd(int fd) noexcept : fd_(fd) {}
  UniqueFd(const UniqueFd&) = delete;
  UniqueFd& operator=(const UniqueFd&) = delete;
  UniqueFd(UniqueFd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  UniqueFd& operator=(UniqueFd&& other) noexcept {
    if (this != &other) reset(std::exchange(other.fd_, -1));
    return *this;
  }
  ~UniqueFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept;

 private:
  int fd_ = -1;
};

// Opens PATH (relative to DIRFD) with FLAGS; throws SysError naming PATH.
UniqueFd open_at(int dirfd, const std::string& path, int flags, unsigned mode = 0);

// A directory created with mkdtemp under PARENT, removed with everything in it
// when destroyed (without following symlinks and without crossing mounts).
class TempDir {
 public:
  explicit TempDir(const std::string& parent, const std::string& prefix = "strata.");
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  TempDir(TempDir&& other) noexcept : path_(std::exchange(other.path_, {})) {}
  TempDir& operator=(TempDir&&) = delete;
  ~TempDir();

  const std::string& path() const noexcept { return path_; }
  // Keeps the directory: the destructor will no longer remove it.
  std::string release() noexcept { return std::exchange(path_, {}); }

 private:
  std::string path_;
};

// Removes PATH (relative to DIRFD) and everything below it, never following
// symlinks and never descending into another filesystem. Missing is not an
// error. Throws SysError on failure.
void remove_tree_at(int dirfd, const std::string& path);

}  // namespace strata
