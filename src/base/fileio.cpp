#include "strata/fileio.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <climits>
#include <deque>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "strata/error.hpp"
#include "strata/fd.hpp"

namespace strata {

void UniqueDir::reset(DIR* dir) noexcept {
  if (dir_ != nullptr) ::closedir(dir_);
  dir_ = dir;
}

std::vector<DirEntry> read_dir_entries(int dirfd, const std::string& where) {
  // A new open file description: the caller's offset stays where it was.
  UniqueFd fresh(::openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fresh) throw SysError(errno, "open directory " + quote(where));
  UniqueDir dir(::fdopendir(fresh.get()));
  if (!dir) throw SysError(errno, "read directory " + quote(where));
  fresh.release();
  std::vector<DirEntry> entries;
  errno = 0;
  while (dirent* e = ::readdir(dir.get())) {
    std::string_view n = e->d_name;
    if (n != "." && n != "..") entries.push_back({std::string(n), e->d_type});
  }
  if (errno != 0) throw SysError(errno, "read directory " + quote(where));
  std::sort(entries.begin(), entries.end(), [](const DirEntry& a, const DirEntry& b) { return a.name < b.name; });
  return entries;
}

std::vector<std::string> read_dir_names(int dirfd, const std::string& where) {
  std::vector<std::string> names;
  for (auto& e : read_dir_entries(dirfd, where)) names.push_back(std::move(e.name));
  return names;
}

std::vector<std::string> list_dir(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) {
    if (errno == ENOENT) return {};
    throw SysError(errno, "read directory " + quote(path));
  }
  return read_dir_names(fd.get(), path);
}

void write_all(int fd, const void* data, std::size_t size, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "write " + what);
    }
    p += n;
    size -= static_cast<std::size_t>(n);
  }
}

void write_all(int fd, std::string_view data, const std::string& what) { write_all(fd, data.data(), data.size(), what); }

void pwrite_all(int fd, const void* data, std::size_t size, off_t offset, const std::string& what) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::pwrite(fd, p, size, offset);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw SysError(errno, "write " + what);
    }
    p += n;
    offset += n;
    size -= static_cast<std::size_t>(n);
  }
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw Error("cannot read " + quote(path));
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string resolve_in_root(int root, const std::string& path) {
  auto split_path = [](std::string_view p, std::deque<std::string>& out, bool front) {
    std::vector<std::string> parts;
    std::size_t start = 0;
    while (start <= p.size()) {
      std::size_t end = std::min(p.find('/', start), p.size());
      std::string_view part = p.substr(start, end - start);
      if (!part.empty() && part != ".") parts.emplace_back(part);
      start = end + 1;
    }
    out.insert(front ? out.begin() : out.end(), parts.begin(), parts.end());
  };
  std::deque<std::string> todo;
  split_path(path, todo, false);
  std::vector<std::string> done;  // existing directories, then (from first_missing on) names to create
  std::size_t first_missing = std::string::npos;
  int links = 0;
  while (!todo.empty()) {
    std::string comp = std::move(todo.front());
    todo.pop_front();
    if (comp == "..") {
      if (!done.empty()) done.pop_back();  // DONE names no link: its parent is the lexical one
      if (done.size() <= first_missing) first_missing = std::string::npos;
      continue;
    }
    if (first_missing == std::string::npos) {
      std::string rel = ".";
      for (const auto& d : done) rel += "/" + d;
      rel += "/" + comp;
      char target[PATH_MAX];
      ssize_t n = ::readlinkat(root, rel.c_str(), target, sizeof target);
      if (n >= 0) {
        if (++links > 40) throw SysError(ELOOP, "resolve " + quote(path));
        std::string_view t(target, static_cast<std::size_t>(n));
        if (!t.empty() && t[0] == '/') done.clear();
        split_path(t, todo, true);
        continue;
      }
      // EINVAL: an existing entry that is no link; anything else ends what
      // exists (what follows is created, or fails, as the caller decides).
      if (errno != EINVAL) first_missing = done.size();
    }
    done.push_back(std::move(comp));
  }
  std::string out;
  for (const auto& d : done) out += "/" + d;
  return out.empty() ? "/" : out;
}

int copy_file_data(int in, int out, off_t size) {
  if (size == 0) return 0;
  if (::ioctl(out, FICLONE, in) == 0) return 0;
  off_t pos = 0;
  std::vector<char> buf;
  while (pos < size) {
    off_t data = ::lseek(in, pos, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // only a hole is left
      data = pos;                 // SEEK_DATA unsupported: copy everything
    }
    off_t hole = ::lseek(in, data, SEEK_HOLE);
    if (hole < 0 || hole > size) hole = size;
    off_t off_in = data, off_out = data;
    while (off_in < hole) {
      ssize_t n = ::copy_file_range(in, &off_in, out, &off_out, static_cast<size_t>(hole - off_in), 0);
      if (n > 0) continue;
      if (n == 0) break;
      if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) return errno;
      if (buf.empty()) buf.resize(1 << 20);
      ssize_t r = ::pread(in, buf.data(), std::min<off_t>(static_cast<off_t>(buf.size()), hole - off_in), off_in);
      if (r < 0) return errno;
      if (r == 0) break;
      for (ssize_t done = 0; done < r;) {
        ssize_t w = ::pwrite(out, buf.data() + done, static_cast<size_t>(r - done), off_out);
        if (w < 0) return errno;
        done += w;
        off_out += w;
      }
      off_in += r;
    }
    pos = hole;
  }
  if (::ftruncate(out, size) != 0) return errno;
  return 0;
}

}  // namespace strata
