// Mount lifecycle: validate the layers before anything is mounted, probe what
// markers the upper can hold, mount, detach once the mount is ready, serve on
// a multi-threaded loop, unmount on SIGINT/SIGTERM or when the kernel ends the
// session (fusermount3 -u, umount).
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/syscall.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <thread>

#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/stratafs_client.hpp"
#include "union_fs.hpp"

namespace strata::fs {

namespace {

struct stat stat_dir(const std::string& path, const std::string& what) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw SysError(errno, what + " " + quote(path));
  if (!S_ISDIR(st.st_mode)) throw Error(what + " " + quote(path) + " is not a directory");
  return st;
}

Layer open_layer(const std::string& path, const std::string& what) {
  stat_dir(path, what);
  Layer l;
  l.path = path;
  l.fd = UniqueFd(::open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!l.fd) throw SysError(errno, what + " " + quote(path));
  struct stat st {};
  ::fstat(l.fd.get(), &st);
  l.dev = st.st_dev;
  return l;
}

std::string real_path(const std::string& p) {
  std::error_code ec;
  auto r = std::filesystem::weakly_canonical(p, ec);
  return ec ? p : r.string();
}

bool is_inside(const std::string& inner, const std::string& outer) {
  return inner == outer || (inner.size() > outer.size() && inner.compare(0, outer.size(), outer) == 0 &&
                            (outer == "/" || inner[outer.size()] == '/'));
}

// The work dir may hold only our staging directory (and the directories
// kernel overlayfs keeps there, so one work dir serves both); anything else
// means it belongs to something else.
constexpr const char* kStagingDir = "strata.work";

// Opens WORKDIR/strata.work, deleting what an earlier mount (perhaps killed)
// left there: half-built copies are never visible, so they are simply removed.
UniqueFd open_staging(int workdir_fd, const std::string& path) {
  std::string foreign;
  for (const auto& n : read_dir_names(workdir_fd, path)) {
    if (n != kStagingDir && n != "work" && n != "index") foreign = n;
  }
  if (!foreign.empty()) {
    throw UsageError("workdir " + quote(path) + " is not empty (it holds " + quote(foreign) + ")");
  }
  if (::mkdirat(workdir_fd, kStagingDir, 0700) != 0 && errno != EEXIST) {
    throw SysError(errno, "workdir " + quote(path));
  }
  UniqueFd staging(::openat(workdir_fd, kStagingDir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!staging) throw SysError(errno, "workdir " + quote(path + "/" + kStagingDir));
  std::vector<std::string> names = read_dir_names(staging.get(), path + "/" + kStagingDir);
  for (const auto& n : names) remove_tree_at(staging.get(), n);
  return staging;
}

// Which markers may this process create in the upper's file system?
// Overlayfs's own (a 0/0 character device, trusted.* or user.* xattrs) are
// preferred, so that kernel overlayfs can mount the upper; OCI `.wh.` files
// are the fallback.
void probe_markers(int work_fd, Config& cfg) {
  const char* probe = "#strata-probe";
  ::unlinkat(work_fd, probe, 0);
  if (::mknodat(work_fd, probe, S_IFCHR | 0600, makedev(0, 0)) == 0) {
    cfg.overlay_whiteouts = true;
    ::unlinkat(work_fd, probe, 0);
  }
  UniqueFd f(::openat(work_fd, probe, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600));
  if (!f) return;
  for (const char* prefix : {"trusted.overlay.", "user.overlay."}) {
    std::string key = std::string(prefix) + "strata.probe";
    if (::fsetxattr(f.get(), key.c_str(), "y", 1, 0) == 0) {
      cfg.private_xattr_prefix = prefix;
      break;
    }
  }
  f.reset();
  ::unlinkat(work_fd, probe, 0);
}

// Whether this process runs in a user namespace other than the initial one
// (whose uid map is the identity over all 2^32 ids).
bool in_user_namespace() {
  FILE* f = std::fopen("/proc/self/uid_map", "re");
  if (!f) return false;
  unsigned long inner = 0, outer = 0, count = 0;
  int n = std::fscanf(f, "%lu %lu %lu", &inner, &outer, &count);
  std::fclose(f);
  return !(n == 3 && inner == 0 && outer == 0 && count == 4294967295UL);
}

// How long a new mount waits for a daemon whose mount has just ended to
// release the work dir's lock: `fusermount3 -u` returns before that daemon
// has exited, and on a loaded machine it may take seconds to. A real second
// mount of the same work dir is refused after the wait.
constexpr int kLockWaitMs = 10000;

// Every file the kernel has open through the mount holds an fd here, and
// half of the limit goes to layer directories (DirCache): allow as many
// descriptors as the system lets this process have.
void raise_fd_limit() {
  struct rlimit rl {};
  if (::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &rl);
  }
}

// Ends the session (as a SIGTERM does) when the owner process ends. The
// pidfd is taken before mounting, while the owner is known to be alive: it
// names that process, never a later one that reuses its number.
class OwnerWatch {
 public:
  explicit OwnerWatch(int pid) {
    if (pid == 0) return;
    owner_ = UniqueFd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
    if (!owner_) throw SysError(errno, "owner process " + std::to_string(pid));
    stop_ = UniqueFd(::eventfd(0, EFD_CLOEXEC));
    if (!stop_) throw SysError(errno, "eventfd");
  }
  OwnerWatch(const OwnerWatch&) = delete;
  OwnerWatch& operator=(const OwnerWatch&) = delete;
  ~OwnerWatch() {
    if (!thread_.joinable()) return;
    std::uint64_t one = 1;
    [[maybe_unused]] ssize_t n = ::write(stop_.get(), &one, sizeof one);
    thread_.join();
  }

  // Starts watching; called once the process has detached (threads do not
  // survive fork).
  void start() {
    if (!owner_) return;
    thread_ = std::thread([this] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_SETMASK, &all, nullptr);  // the SIGTERM below goes to a serving thread
      pollfd fds[2] = {{owner_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
      while (::poll(fds, 2, -1) < 0 && errno == EINTR) {
      }
      if ((fds[1].revents & POLLIN) == 0) ::kill(::getpid(), SIGTERM);
    });
  }

 private:
  UniqueFd owner_;
  UniqueFd stop_;
  std::thread thread_;
};

// Keeps request statistics for `-o stats=FILE` and writes them to FILE on
// SIGUSR1 and when the session ends. Constructed once the process has
// detached (threads do not survive fork) and before the serving threads
// start, which inherit the blocked SIGUSR1: only this thread takes it.
class StatsReport {
 public:
  StatsReport(UnionFs& fs, std::string path) : fs_(fs), path_(std::move(path)) {
    if (path_.empty()) return;
    fs_.set_request_stats(&stats_);
    sigset_t usr1;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &usr1, nullptr);
    thread_ = std::thread([this, usr1] {
      for (;;) {
        int sig = 0;
        if (sigwait(&usr1, &sig) != 0 || stop_.load()) return;
        write_report();
      }
    });
  }
  StatsReport(const StatsReport&) = delete;
  StatsReport& operator=(const StatsReport&) = delete;
  ~StatsReport() {
    if (!thread_.joinable()) return;
    stop_.store(true);
    pthread_kill(thread_.native_handle(), SIGUSR1);
    thread_.join();
    write_report();
    fs_.set_request_stats(nullptr);
  }

 private:
  // Replaced whole (write, then rename): a reader never sees half a table.
  void write_report() noexcept {
    const std::string tmp = path_ + ".tmp";
    UniqueFd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644));
    if (!fd) return;
    try {
      write_all(fd.get(), stats_.report(), tmp);
    } catch (const std::exception&) {
      return;
    }
    fd.reset();
    ::rename(tmp.c_str(), path_.c_str());
  }

  UnionFs& fs_;
  std::string path_;
  RequestStats stats_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace

void mount_and_serve(const MountOptions& o) {
  stat_dir(o.mountpoint, "mount point");
  std::vector<Layer> layers;
  layers.emplace_back();  // [0]: the upper, if any
  std::vector<std::pair<dev_t, ino_t>> seen;
  std::vector<std::string> lower_real;
  for (const auto& path : o.lowerdirs) {
    Layer l = open_layer(path, "lowerdir");
    struct stat st {};
    ::fstat(l.fd.get(), &st);
    for (const auto& [dev, ino] : seen) {
      if (dev == st.st_dev && ino == st.st_ino) throw UsageError("lowerdir " + quote(path) + " is given twice");
    }
    seen.emplace_back(st.st_dev, st.st_ino);
    lower_real.push_back(real_path(path));
    layers.push_back(std::move(l));
  }
  Config cfg;
  cfg.uid_map = o.uid_map;
  cfg.gid_map = o.gid_map;
  UniqueFd work_fd;
  UniqueFd work_lock;  // holds the flock on the work dir for the mount's life
  bool writable = !o.upperdir.empty() && !o.read_only;
  if (!o.upperdir.empty()) {
    Layer upper = open_layer(o.upperdir, "upperdir");
    struct stat ust {};
    ::fstat(upper.fd.get(), &ust);
    for (std::size_t i = 0; i < seen.size(); ++i) {
      if (seen[i].first == ust.st_dev && seen[i].second == ust.st_ino) {
        throw UsageError("upperdir " + quote(o.upperdir) + " is also a lowerdir");
      }
    }
    std::string upper_real = real_path(o.upperdir), work_real = real_path(o.workdir);
    for (std::size_t i = 0; i < lower_real.size(); ++i) {
      if (is_inside(upper_real, lower_real[i])) {
        throw UsageError("upperdir " + quote(o.upperdir) + " is inside lowerdir " + quote(o.lowerdirs[i]));
      }
    }
    if (writable) {
      struct stat wst = stat_dir(o.workdir, "workdir");
      if (wst.st_dev != ust.st_dev) {
        throw UsageError("workdir " + quote(o.workdir) + " is not on the same file system as upperdir " +
                         quote(o.upperdir));
      }
      if (is_inside(work_real, upper_real) || is_inside(upper_real, work_real)) {
        throw UsageError("workdir " + quote(o.workdir) + " and upperdir " + quote(o.upperdir) + " must not contain each other");
      }
      struct statvfs sv {};
      if (::fstatvfs(upper.fd.get(), &sv) == 0 && (sv.f_flag & ST_RDONLY)) {
        throw Error("upperdir " + quote(o.upperdir) + " is on a read-only file system");
      }
      work_fd = UniqueFd(::open(o.workdir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
      if (!work_fd) throw SysError(errno, "workdir " + quote(o.workdir));
      // One mount per work dir: a second mount of the same work dir would
      // delete the first one's copies in progress. `fusermount3 -u` returns
      // before the daemon it ended has let go of the lock, so a remount
      // right after an unmount waits a moment for it.
      if (!lock_workdir(work_fd.get(), kLockWaitMs)) {
        throw Error("workdir " + quote(o.workdir) + " is in use by another mount");
      }
      if (::faccessat(upper.fd.get(), ".", W_OK, AT_EACCESS) != 0) {
        throw SysError(errno, "upperdir " + quote(o.upperdir));
      }
      work_lock = std::move(work_fd);
      work_fd = open_staging(work_lock.get(), o.workdir);
      probe_markers(work_fd.get(), cfg);
    }
    layers[0] = std::move(upper);
  }
  cfg.writable = writable;
  cfg.sync_upper = !o.volatile_upper;
  cfg.daemon_uid = ::geteuid();
  cfg.daemon_gid = ::getegid();
  const bool in_userns = in_user_namespace();
  cfg.read_override_stat = cfg.daemon_uid != 0 || in_userns || !o.uid_map.empty() || !o.gid_map.empty();
  // Registering backing files takes CAP_SYS_ADMIN in the initial user
  // namespace; an unprivileged daemon does not ask the kernel for it.
  cfg.passthrough = o.passthrough && cfg.daemon_uid == 0 && !in_userns;
  raise_fd_limit();
  // The kernel already applied the caller's umask to every mode it sends.
  ::umask(0);

  UnionFs fs(std::move(layers), std::move(work_fd), cfg);

  std::string mount_opts = "fsname=" + o.source + ",subtype=stratafs,default_permissions";
  // Root's mounts let every user in, as kernel overlayfs and fuse-overlayfs
  // run by root do (a container's non-root processes included); the kernel
  // checks permissions against the owners and modes shown.
  const bool root = cfg.daemon_uid == 0 && !in_userns;
  if (o.allow_other || (root && !o.deny_other && !o.allow_root)) mount_opts += ",allow_other";
  if (o.allow_root) mount_opts += ",allow_root";
  if (!writable) mount_opts += ",ro";
  std::vector<std::string> arg_strings = {"stratafs", "-o", mount_opts};
  if (o.debug) arg_strings.push_back("-d");
  std::vector<char*> argv;
  for (auto& s : arg_strings) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());

  fuse_session* se = fuse_session_new(&args, &UnionFs::ops(), sizeof(fuse_lowlevel_ops), &fs);
  fuse_opt_free_args(&args);
  if (!se) throw Error("cannot start a FUSE session (see the message above)");
  fs.set_session(se);
  struct SessionGuard {
    fuse_session* se;
    bool mounted = false;
    bool handlers = false;
    ~SessionGuard() {
      if (handlers) fuse_remove_signal_handlers(se);
      if (mounted) fuse_session_unmount(se);
      fuse_session_destroy(se);
    }
  } guard{se};
  if (fuse_set_signal_handlers(se) != 0) throw Error("cannot install signal handlers");
  guard.handlers = true;
  // Stopped before the guard unmounts: no SIGTERM after the handlers are gone.
  OwnerWatch owner(o.owner_pid);
  if (fuse_session_mount(se, o.mountpoint.c_str()) != 0) {
    throw Error("cannot mount on " + quote(o.mountpoint) + " (is /dev/fuse available and fusermount3 installed?)");
  }
  guard.mounted = true;
  // Requests and replies go through these hooks: they add passthrough to
  // libfuse's INIT reply (see passthrough.hpp). Without FUSE_CAP_SPLICE_READ
  // (UnionFs::init) each request is read by the read hook, with one read(2).
  // Reply data is still spliced from the layer files.
  fuse_custom_io io{};
  //
  // libfuse 3.14 answers ENOSYS to the kernel's TMPFILE request (O_TMPFILE),
  // which it does not know. That request carries what a CREATE does, with
  // the name "/": it is handed to libfuse as a CREATE, which UnionFs::create
  // recognises by that name; the reply of both is the same.
  io.read = [](int fd, void* buf, size_t len, void* userdata) -> ssize_t {
    ssize_t n = ::read(fd, buf, len);
    auto* ufs = static_cast<UnionFs*>(userdata);
    if (n > 0) {
      ufs->passthrough().note_request(buf, static_cast<size_t>(n));
      if (RequestStats* stats = ufs->request_stats()) stats->note_request(buf, static_cast<size_t>(n));
    }
    if (n >= static_cast<ssize_t>(sizeof(abi::InHeader))) {
      auto* in = static_cast<abi::InHeader*>(buf);
      if (in->opcode == abi::kOpTmpfile) in->opcode = abi::kOpCreate;
    }
    return n;
  };
  io.writev = [](int fd, struct iovec* iov, int count, void* userdata) -> ssize_t {
    auto* ufs = static_cast<UnionFs*>(userdata);
    ufs->passthrough().adjust_reply(iov, count);
    if (RequestStats* stats = ufs->request_stats()) stats->note_reply(iov, count);
    note_reply_sent();
    return ::writev(fd, iov, count);
  };
  io.splice_send = [](int fd_in, off_t* off_in, int fd_out, off_t* off_out, size_t len, unsigned flags,
                      void*) -> ssize_t {
    note_reply_sent();
    return ::splice(fd_in, off_in, fd_out, off_out, len, flags);
  };
  const int device_fd = fuse_session_fd(se);
  if (fuse_session_custom_io(se, &io, device_fd) != 0) throw Error("cannot set up the FUSE session's I/O");
  fs.passthrough().set_device(device_fd);
  // Detach only now: the parent returns once the mount exists, so the next
  // line of a script already sees the merged tree.
  if (!o.foreground && fuse_daemonize(0) != 0) throw Error("cannot detach from the terminal");
  owner.start();
  StatsReport stats_report(fs, o.stats_file);
  int r;
  if (o.single_threaded) {
    r = fuse_session_loop(se);
  } else {
    // A pool of threads: a slow request (a copy-up, a cold read of a layer
    // on a slow disk) does not hold up lookups and stats of other callers,
    // and directory operations run in parallel (FUSE_CAP_PARALLEL_DIROPS).
    // Up to 8 idle threads stay blocked in read(2) on /dev/fuse, where the
    // kernel wakes exactly one per request.
    fuse_loop_config* lc = fuse_loop_cfg_create();
    fuse_loop_cfg_set_clone_fd(lc, 0);
    fuse_loop_cfg_set_max_threads(lc, 16);
    fuse_loop_cfg_set_idle_threads(lc, 8);
    r = fuse_session_loop_mt(se, lc);
    fuse_loop_cfg_destroy(lc);
  }
  (void)r;  // ends by unmount or signal; both are a clean exit
  // No request is served any more: the work dir is free for the next mount
  // now, not only once this process has finished exiting.
  work_lock.reset();
}

}  // namespace strata::fs
