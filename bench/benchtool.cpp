// benchtool: the fixture generator and the workload drivers of the strata
// benchmark suite (bench/run.sh). Each workload is one tight loop of system
// calls timed with CLOCK_MONOTONIC around the loop only, so neither process
// start-up nor the harness shows up in what is measured.
//
// Output of every workload: one line, "SECONDS key=value ...". Errors: one line
// "benchtool: what: why" on stderr and exit status 1.
//
// Built by bench/run.sh with the system compiler (g++ -O2); it does not link
// libstrata on purpose: it measures the filesystems, not the project's code.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace {

// Bump whenever the fixture's shape or content changes: run.sh rebuilds a
// cached fixture whose stamp differs.
constexpr const char* kFixtureRecipe = "strata-bench-fixture-3";

struct Failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

[[noreturn]] void fail_errno(const std::string& what) {
  throw Failure(what + ": " + std::strerror(errno));
}

class Fd {
 public:
  explicit Fd(int fd) : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  int get() const { return fd_; }

 private:
  int fd_;
};

Fd open_or_fail(int dirfd, const std::string& path, int flags, mode_t mode = 0) {
  int fd = ::openat(dirfd, path.c_str(), flags | O_CLOEXEC, mode);
  if (fd < 0) fail_errno("open " + path);
  return Fd(fd);
}

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// splitmix64: a tiny deterministic generator, so the same recipe gives the
// same fixture bytes on every machine.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return next() % n; }
  void fill(char* buf, size_t len) {
    size_t i = 0;
    for (; i + 8 <= len; i += 8) {
      uint64_t v = next();
      std::memcpy(buf + i, &v, 8);
    }
    for (; i < len; ++i) buf[i] = static_cast<char>(next());
  }

 private:
  uint64_t state_;
};

void write_all(int fd, const char* buf, size_t len, const std::string& what) {
  while (len > 0) {
    ssize_t n = ::write(fd, buf, len);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("write " + what);
    }
    buf += n;
    len -= static_cast<size_t>(n);
  }
}

// ---------------------------------------------------------------- fixture

class Builder {
 public:
  Builder(std::string root, uint64_t seed) : root_(std::move(root)), rng_(seed) {}

  void dir(const std::string& rel) {
    std::string path = root_ + "/" + rel;
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) fail_errno("mkdir " + path);
    ++entries_;
  }
  // A file of SIZE pseudo-random bytes (real data: not sparse, not compressible).
  void file(const std::string& rel, size_t size) {
    std::string path = root_ + "/" + rel;
    Fd fd = open_or_fail(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<char> buf(std::min<size_t>(size, 1 << 20));
    size_t left = size;
    while (left > 0) {
      size_t chunk = std::min(left, buf.size());
      rng_.fill(buf.data(), chunk);
      write_all(fd.get(), buf.data(), chunk, path);
      left -= chunk;
    }
    ++entries_;
  }
  // Sizes like a distribution's files: mostly a few KiB, some larger.
  void small_file(const std::string& rel) {
    uint64_t pick = rng_.below(100);
    size_t size = pick < 80 ? rng_.below(4096) : pick < 98 ? 4096 + rng_.below(12288) : 16384 + rng_.below(49152);
    file(rel, size);
  }
  void symlink(const std::string& target, const std::string& rel) {
    std::string path = root_ + "/" + rel;
    if (::symlink(target.c_str(), path.c_str()) != 0) fail_errno("symlink " + path);
    ++entries_;
  }
  // An overlayfs whiteout: a character device 0/0 (kernel overlayfs,
  // fuse-overlayfs and stratafs all read this format).
  void whiteout(const std::string& rel) {
    std::string path = root_ + "/" + rel;
    if (::mknod(path.c_str(), S_IFCHR | 0000, makedev(0, 0)) != 0) fail_errno("mknod " + path);
    ++entries_;
  }
  void opaque(const std::string& rel) {
    std::string path = root_ + "/" + rel;
    if (::setxattr(path.c_str(), "trusted.overlay.opaque", "y", 1, 0) != 0) fail_errno("setxattr " + path);
  }
  uint64_t entries() const { return entries_; }
  Rng& rng() { return rng_; }

 private:
  std::string root_;
  Rng rng_;
  uint64_t entries_ = 0;
};

constexpr int kPackages = 400;        // bottom: usr/lib/pkgNNN
constexpr int kPackageFiles = 120;    // files directly in a package dir
constexpr int kPackageDataFiles = 20; // files in pkgNNN/data
constexpr int kDocs = 150;            // middle: usr/share/docNNN
constexpr int kDocFiles = 60;

std::string pkg(int n) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "usr/lib/pkg%03d", n);
  return buf;
}
std::string num(const char* fmt, int n) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, n);
  return buf;
}

// Bottom layer: a distribution-like tree (~56,000 entries), a directory of
// 6,000 entries for rm -rf, and the two large files for the read workloads.
uint64_t build_bottom(const std::string& root) {
  Builder b(root, 1);
  b.dir("usr");
  b.dir("usr/lib");
  b.dir("usr/share");
  b.dir("etc");
  for (int p = 0; p < kPackages; ++p) {
    std::string d = pkg(p);
    b.dir(d);
    b.dir(d + "/data");
    for (int f = 0; f < kPackageFiles; ++f) b.small_file(d + num("/file%03d", f));
    for (int f = 0; f < kPackageDataFiles; ++f) b.small_file(d + num("/data/blob%02d", f));
    b.symlink("data", d + "/current");
  }
  for (int f = 0; f < 300; ++f) b.small_file(num("etc/conf%03d", f));
  b.dir("rmtarget");
  for (int d = 0; d < 60; ++d) {
    std::string sub = num("rmtarget/d%02d", d);
    b.dir(sub);
    for (int f = 0; f < 99; ++f) b.file(sub + num("/f%02d", f), 1024);
  }
  b.dir("big");
  b.file("big/file-1g.bin", size_t{1} << 30);
  b.file("big/file-500m.bin", size_t{500} << 20);
  return b.entries();
}

// Middle layer: replaces and adds files in a quarter of the packages, adds
// documentation directories and configuration.
uint64_t build_middle(const std::string& root) {
  Builder b(root, 2);
  b.dir("usr");
  b.dir("usr/lib");
  b.dir("usr/share");
  b.dir("etc");
  for (int p = 0; p < kPackages; p += 4) {
    std::string d = pkg(p);
    b.dir(d);
    for (int f = 0; f < 30; ++f) b.small_file(d + num("/file%03d", f * 4));  // replaces
    for (int f = 0; f < 20; ++f) b.small_file(d + num("/extra%02d", f));     // adds
  }
  for (int n = 0; n < kDocs; ++n) {
    std::string d = num("usr/share/doc%03d", n);
    b.dir(d);
    for (int f = 0; f < kDocFiles; ++f) b.small_file(d + num("/page%02d", f));
  }
  for (int f = 0; f < 500; ++f) b.small_file(num("etc/conf%03d", f));
  return b.entries();
}

// Top layer: whiteouts of files and whole directories, opaque directories
// over lower ones, new and replaced files.
uint64_t build_top(const std::string& root) {
  Builder b(root, 3);
  b.dir("usr");
  b.dir("usr/lib");
  b.dir("usr/share");
  b.dir("etc");
  for (int p = 1; p < kPackages; p += 10) {  // 40 packages lose 10 files each
    std::string d = pkg(p);
    b.dir(d);
    for (int f = 0; f < 10; ++f) b.whiteout(d + num("/file%03d", f * 7));
  }
  for (int n = 0; n < kDocs; n += 15) b.whiteout(num("usr/share/doc%03d", n));  // whole directories
  for (int p = 7; p < kPackages; p += 50) {  // 8 packages replaced wholesale
    std::string d = pkg(p);
    b.dir(d);
    b.opaque(d);
    for (int f = 0; f < 5; ++f) b.small_file(d + num("/new%02d", f));
  }
  for (int p = 3; p < kPackages; p += 20) {  // 20 data dirs replaced
    std::string d = pkg(p);
    b.dir(d);
    b.dir(d + "/data");
    b.opaque(d + "/data");
    b.small_file(d + "/data/only");
  }
  b.dir("opt");
  b.dir("opt/app");
  for (int n = 0; n < 50; ++n) {
    std::string d = num("opt/app/mod%02d", n);
    b.dir(d);
    for (int f = 0; f < 40; ++f) b.small_file(d + num("/src%02d", f));
  }
  for (int f = 0; f < 100; ++f) b.small_file(num("etc/conf%03d", f * 5));
  return b.entries();
}

int cmd_fixture(const std::vector<std::string>& args) {
  if (args.size() != 1) throw Failure("usage: benchtool fixture DIR (creates DIR/l1 DIR/l2 DIR/l3)");
  const std::string& root = args[0];
  uint64_t total = 0;
  for (const char* layer : {"l1", "l2", "l3"}) {
    std::string dir = root + "/" + layer;
    if (::mkdir(dir.c_str(), 0755) != 0) fail_errno("mkdir " + dir);
  }
  total += build_bottom(root + "/l1");
  total += build_middle(root + "/l2");
  total += build_top(root + "/l3");
  std::printf("%" PRIu64 " entries in 3 layers\n", total);
  return 0;
}

// LAYERS layers DIR/000 (bottom) .. that all hold the same kDeepPackages
// package directories, each adding kDeepFiles files to every one of them: a
// name missing from a package directory is looked for in every layer, and a
// file of the bottom layer is found below all the others.
constexpr const char* kDeepRecipe = "strata-bench-deep-1";
constexpr int kDeepPackages = 40;
constexpr int kDeepFiles = 5;

int cmd_deep(const std::vector<std::string>& args) {
  if (args.size() != 2) throw Failure("usage: benchtool deep DIR LAYERS");
  const std::string& root = args[0];
  const int layers = std::stoi(args[1]);
  if (::mkdir(root.c_str(), 0755) != 0) fail_errno("mkdir " + root);
  uint64_t total = 0;
  for (int l = 0; l < layers; ++l) {
    std::string dir = root + num("/%03d", l);
    if (::mkdir(dir.c_str(), 0755) != 0) fail_errno("mkdir " + dir);
    Builder b(dir, 100 + static_cast<uint64_t>(l));
    b.dir("usr");
    b.dir("usr/lib");
    for (int p = 0; p < kDeepPackages; ++p) {
      b.dir(pkg(p));
      for (int f = 0; f < kDeepFiles; ++f) b.small_file(pkg(p) + num("/l%03d", l) + num("-%d", f));
    }
    total += b.entries();
  }
  std::printf("%" PRIu64 " entries in %d layers\n", total, layers);
  return 0;
}

// A tree of FILES small files in DIRS directories, AVG bytes on average: the
// payload of the untar workload.
int cmd_tree(const std::vector<std::string>& args) {
  if (args.size() != 4) throw Failure("usage: benchtool tree DIR FILES DIRS AVG_BYTES");
  const std::string& root = args[0];
  int files = std::stoi(args[1]);
  int dirs = std::stoi(args[2]);
  size_t avg = std::stoul(args[3]);
  if (::mkdir(root.c_str(), 0755) != 0) fail_errno("mkdir " + root);
  Builder b(root, 4);
  for (int d = 0; d < dirs; ++d) b.dir(num("d%03d", d));
  for (int f = 0; f < files; ++f) {
    size_t size = avg / 2 + b.rng().below(avg);
    b.file(num("d%03d", f % dirs) + num("/f%05d", f), size);
  }
  return 0;
}

// ---------------------------------------------------------------- workloads

struct DirEntry {
  std::string name;
  unsigned char type;
};

// Reads every entry of the directory open at FD (getdents64 through
// readdir(3) of a dup'ed fd, so FD stays usable for *at() calls).
std::vector<DirEntry> list_dir(int fd, const std::string& path) {
  int dupfd = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dupfd < 0) fail_errno("dup " + path);
  DIR* dir = ::fdopendir(dupfd);
  if (dir == nullptr) {
    ::close(dupfd);
    fail_errno("fdopendir " + path);
  }
  std::vector<DirEntry> out;
  errno = 0;
  while (struct dirent* e = ::readdir(dir)) {
    if (std::strcmp(e->d_name, ".") == 0 || std::strcmp(e->d_name, "..") == 0) continue;
    out.push_back({e->d_name, e->d_type});
  }
  int err = errno;
  ::closedir(dir);
  if (err != 0) {
    errno = err;
    fail_errno("readdir " + path);
  }
  return out;
}

struct WalkStats {
  uint64_t entries = 0;
  uint64_t dirs = 0;
};

// Depth-first walk. WITH_STAT: lstat every entry (find -ls, du, a container
// runtime's chown pass); otherwise trust d_type (find -type d style listing).
void walk(int fd, const std::string& path, bool with_stat, WalkStats& st) {
  for (const DirEntry& e : list_dir(fd, path)) {
    ++st.entries;
    bool is_dir = e.type == DT_DIR;
    if (with_stat || e.type == DT_UNKNOWN) {
      struct stat sb;
      if (::fstatat(fd, e.name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) != 0) fail_errno("stat " + path + "/" + e.name);
      is_dir = S_ISDIR(sb.st_mode);
    }
    if (is_dir) {
      ++st.dirs;
      Fd sub = open_or_fail(fd, e.name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
      walk(sub.get(), path + "/" + e.name, with_stat, st);
    }
  }
}

int cmd_walk(const std::vector<std::string>& args, bool with_stat) {
  if (args.size() != 1) throw Failure("usage: benchtool walk|readdir DIR");
  WalkStats st;
  double t0 = now_seconds();
  {
    Fd root = open_or_fail(AT_FDCWD, args[0], O_RDONLY | O_DIRECTORY);
    walk(root.get(), args[0], with_stat, st);
  }
  double t = now_seconds() - t0;
  std::printf("%.6f entries=%" PRIu64 " dirs=%" PRIu64 "\n", t, st.entries, st.dirs);
  return 0;
}

uint64_t read_file_fully(int dirfd, const std::string& path, std::vector<char>& buf) {
  Fd fd = open_or_fail(dirfd, path, O_RDONLY | O_NOFOLLOW);
  uint64_t total = 0;
  for (;;) {
    ssize_t n = ::read(fd.get(), buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      fail_errno("read " + path);
    }
    if (n == 0) break;
    total += static_cast<uint64_t>(n);
  }
  return total;
}

int cmd_seqread(const std::vector<std::string>& args) {
  if (args.size() != 1) throw Failure("usage: benchtool seqread FILE");
  std::vector<char> buf(1 << 20);
  double t0 = now_seconds();
  uint64_t bytes = read_file_fully(AT_FDCWD, args[0], buf);
  double t = now_seconds() - t0;
  std::printf("%.6f bytes=%" PRIu64 " MiBps=%.0f\n", t, bytes, static_cast<double>(bytes) / (1 << 20) / t);
  return 0;
}

int cmd_randread(const std::vector<std::string>& args) {
  if (args.size() != 2) throw Failure("usage: benchtool randread FILE COUNT");
  Fd fd = open_or_fail(AT_FDCWD, args[0], O_RDONLY);
  long count = std::stol(args[1]);
  struct stat sb;
  if (::fstat(fd.get(), &sb) != 0) fail_errno("stat " + args[0]);
  uint64_t pages = static_cast<uint64_t>(sb.st_size) / 4096;
  if (pages == 0) throw Failure(args[0] + ": smaller than one page");
  Rng rng(42);
  char buf[4096];
  double t0 = now_seconds();
  for (long i = 0; i < count; ++i) {
    off_t off = static_cast<off_t>(rng.below(pages) * 4096);
    if (::pread(fd.get(), buf, sizeof buf, off) != static_cast<ssize_t>(sizeof buf)) fail_errno("pread " + args[0]);
  }
  double t = now_seconds() - t0;
  std::printf("%.6f reads=%ld us_per_read=%.2f\n", t, count, t * 1e6 / static_cast<double>(count));
  return 0;
}

// Runs each job in its own process at the same time; returns the wall time
// until the last one finished.
double run_parallel(const std::vector<std::function<void()>>& jobs) {
  std::vector<pid_t> pids;
  double t0 = now_seconds();
  for (const auto& job : jobs) {
    pid_t pid = ::fork();
    if (pid < 0) fail_errno("fork");
    if (pid == 0) {
      try {
        job();
        std::fflush(stdout);
        ::_exit(0);
      } catch (const std::exception& e) {
        std::fprintf(stderr, "benchtool: %s\n", e.what());
        ::_exit(1);
      }
    }
    pids.push_back(pid);
  }
  bool ok = true;
  for (pid_t pid : pids) {
    int status = 0;
    if (::waitpid(pid, &status, 0) < 0) fail_errno("waitpid");
    ok = ok && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  double t = now_seconds() - t0;
  if (!ok) throw Failure("a reader process failed");
  return t;
}

int cmd_parread_large(const std::vector<std::string>& args) {
  if (args.size() != 2) throw Failure("usage: benchtool parread-large FILE1 FILE2");
  std::vector<std::function<void()>> jobs;
  for (const std::string& file : args) {
    jobs.emplace_back([file] {
      std::vector<char> buf(1 << 20);
      read_file_fully(AT_FDCWD, file, buf);
    });
  }
  std::printf("%.6f processes=2\n", run_parallel(jobs));
  return 0;
}

// Two processes each read every file of every other package directory
// (open, read to the end, close): many small requests at once.
int cmd_parread_small(const std::vector<std::string>& args) {
  if (args.size() != 2) throw Failure("usage: benchtool parread-small ROOT PACKAGES");
  const std::string root = args[0];
  int packages = std::stoi(args[1]);
  std::vector<std::function<void()>> jobs;
  for (int part = 0; part < 2; ++part) {
    jobs.emplace_back([root, packages, part] {
      std::vector<char> buf(1 << 16);
      Fd rootfd = open_or_fail(AT_FDCWD, root, O_RDONLY | O_DIRECTORY);
      for (int p = part; p < packages; p += 2) {
        std::string dir = pkg(p);
        Fd dfd = open_or_fail(rootfd.get(), dir, O_RDONLY | O_DIRECTORY);
        for (const DirEntry& e : list_dir(dfd.get(), dir))
          if (e.type == DT_REG) read_file_fully(dfd.get(), e.name, buf);
      }
    });
  }
  std::printf("%.6f processes=2 packages=%d\n", run_parallel(jobs), packages);
  return 0;
}

// COUNT files of 1 KiB each in 20 new directories under DIR.
int cmd_create(const std::vector<std::string>& args) {
  if (args.size() != 2) throw Failure("usage: benchtool create DIR COUNT");
  int count = std::stoi(args[1]);
  constexpr int kDirs = 20;
  char data[1024];
  std::memset(data, 'x', sizeof data);
  double t0 = now_seconds();
  Fd base = open_or_fail(AT_FDCWD, args[0], O_RDONLY | O_DIRECTORY);
  for (int d = 0; d < kDirs; ++d) {
    std::string sub = num("c%02d", d);
    if (::mkdirat(base.get(), sub.c_str(), 0755) != 0) fail_errno("mkdir " + args[0] + "/" + sub);
  }
  for (int i = 0; i < count; ++i) {
    std::string rel = num("c%02d", i % kDirs) + num("/f%05d", i);
    Fd fd = open_or_fail(base.get(), rel, O_WRONLY | O_CREAT | O_EXCL, 0644);
    write_all(fd.get(), data, sizeof data, rel);
  }
  double t = now_seconds() - t0;
  std::printf("%.6f files=%d\n", t, count);
  return 0;
}

// Appends one byte: on a union this is the copy-up of the whole file.
int cmd_append(const std::vector<std::string>& args) {
  if (args.size() != 1) throw Failure("usage: benchtool append FILE");
  double t0 = now_seconds();
  {
    Fd fd = open_or_fail(AT_FDCWD, args[0], O_WRONLY | O_APPEND);
    write_all(fd.get(), "x", 1, args[0]);
  }
  double t = now_seconds() - t0;
  std::printf("%.6f\n", t);
  return 0;
}

// COUNT lstat()s of distinct names that exist in no layer, spread over the
// package directories (PATH-search and import-search style lookups).
int cmd_missing(const std::vector<std::string>& args) {
  if (args.size() != 2 && args.size() != 3) throw Failure("usage: benchtool missing ROOT COUNT [PACKAGES]");
  long count = std::stol(args[1]);
  const int packages = args.size() == 3 ? std::stoi(args[2]) : kPackages;
  Fd root = open_or_fail(AT_FDCWD, args[0], O_RDONLY | O_DIRECTORY);
  std::vector<std::string> names;
  names.reserve(static_cast<size_t>(count));
  for (long i = 0; i < count; ++i)
    names.push_back(pkg(static_cast<int>(i % packages)) + num("/missing-%07d", static_cast<int>(i)));
  struct stat sb;
  double t0 = now_seconds();
  for (const std::string& name : names) {
    if (::fstatat(root.get(), name.c_str(), &sb, AT_SYMLINK_NOFOLLOW) == 0 || errno != ENOENT)
      throw Failure("stat " + name + ": expected ENOENT, got " + (errno ? std::strerror(errno) : "success"));
  }
  double t = now_seconds() - t0;
  std::printf("%.6f stats=%ld us_per_stat=%.2f\n", t, count, t * 1e6 / static_cast<double>(count));
  return 0;
}

// Times a command (tar, rm) as a child process; fails if the command fails.
int cmd_run(const std::vector<std::string>& args) {
  if (args.empty()) throw Failure("usage: benchtool run COMMAND [ARG]...");
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  double t0 = now_seconds();
  pid_t pid = ::fork();
  if (pid < 0) fail_errno("fork");
  if (pid == 0) {
    ::execvp(argv[0], argv.data());
    std::fprintf(stderr, "benchtool: exec %s: %s\n", argv[0], std::strerror(errno));
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) < 0) fail_errno("waitpid");
  double t = now_seconds() - t0;
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) throw Failure(args[0] + " failed");
  std::printf("%.6f\n", t);
  return 0;
}

int usage() {
  std::fputs(
      "usage: benchtool COMMAND ARGS...\n"
      "  recipe                         print the fixture recipe version\n"
      "  fixture DIR                    build the three layers DIR/l1 (bottom) DIR/l2 DIR/l3 (top)\n"
      "  deep-recipe                    print the many-layer fixture's recipe version\n"
      "  deep DIR LAYERS                build LAYERS layers DIR/000 (bottom)... sharing 40 directories\n"
      "  tree DIR FILES DIRS AVG_BYTES  build the untar payload tree\n"
      "  walk DIR                       lstat every entry of the tree\n"
      "  readdir DIR                    list every directory of the tree (d_type, no stat)\n"
      "  seqread FILE                   read FILE sequentially in 1 MiB reads\n"
      "  randread FILE COUNT            COUNT random 4 KiB preads\n"
      "  parread-large FILE1 FILE2      two processes, each reading one file\n"
      "  parread-small ROOT PACKAGES    two processes reading the small files of the packages\n"
      "  create DIR COUNT               COUNT new 1 KiB files in 20 new directories\n"
      "  append FILE                    append one byte (copy-up on a union)\n"
      "  missing ROOT COUNT [PACKAGES]  COUNT lstats of names that do not exist (in PACKAGES dirs)\n"
      "  run COMMAND [ARG]...           time a command\n"
      "Each workload prints: SECONDS [key=value]...\n",
      stderr);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage();
  std::string cmd = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  try {
    if (cmd == "recipe") {
      std::puts(kFixtureRecipe);
      return 0;
    }
    if (cmd == "deep-recipe") {
      std::puts(kDeepRecipe);
      return 0;
    }
    if (cmd == "deep") return cmd_deep(args);
    if (cmd == "fixture") return cmd_fixture(args);
    if (cmd == "tree") return cmd_tree(args);
    if (cmd == "walk") return cmd_walk(args, true);
    if (cmd == "readdir") return cmd_walk(args, false);
    if (cmd == "seqread") return cmd_seqread(args);
    if (cmd == "randread") return cmd_randread(args);
    if (cmd == "parread-large") return cmd_parread_large(args);
    if (cmd == "parread-small") return cmd_parread_small(args);
    if (cmd == "create") return cmd_create(args);
    if (cmd == "append") return cmd_append(args);
    if (cmd == "missing") return cmd_missing(args);
    if (cmd == "run") return cmd_run(args);
    return usage();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "benchtool: %s\n", e.what());
    return 1;
  }
}
