// FUSE passthrough: the kernel reads and writes an open file's layer copy
// itself, with no READ or WRITE request to the daemon (DESIGN.md "Speed").
//
// The kernel offers it since Linux 6.9 (protocol 7.40); libfuse 3.14, the
// one Debian 12 ships, predates it. The session therefore reads and writes
// /dev/fuse through libfuse's custom I/O hooks: the read hook notes the
// kernel's INIT request, the write hook adds FUSE_PASSTHROUGH and a stack
// depth to libfuse's INIT reply, and opens are answered with a backing file
// id registered by ioctl. Registering needs CAP_SYS_ADMIN in the initial
// user namespace, so a daemon running as a user, or as root of a user
// namespace, never asks for it and serves reads and writes itself.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace strata::fs {

// The parts of the kernel's FUSE ABI (include/uapi/linux/fuse.h, 7.40) that
// libfuse 3.14's headers do not have.
namespace abi {
constexpr std::uint32_t kOpInit = 26;
constexpr std::uint32_t kOpCreate = 35;
constexpr std::uint32_t kOpTmpfile = 51;  // open(2) with O_TMPFILE; its request is a CREATE's
constexpr std::uint32_t kInitExt = 1u << 30;            // flags: flags2 is valid
constexpr std::uint32_t kPassthroughFlags2 = 1u << 5;   // FUSE_PASSTHROUGH is bit 37 of the 64-bit flags
constexpr std::uint32_t kOpenPassthrough = 1u << 7;     // FOPEN_PASSTHROUGH
constexpr std::uint32_t kOpenDirectIo = 1u << 0;        // FOPEN_DIRECT_IO
constexpr std::uint32_t kOpenKeepCache = 1u << 1;       // FOPEN_KEEP_CACHE

struct InHeader {  // struct fuse_in_header
  std::uint32_t len;
  std::uint32_t opcode;
  std::uint64_t unique;
  std::uint64_t nodeid;
  std::uint32_t uid, gid, pid;
  std::uint16_t total_extlen, padding;
};
struct InitIn {  // struct fuse_init_in
  std::uint32_t major, minor, max_readahead, flags, flags2;
  std::uint32_t unused[11];
};
struct OutHeader {  // struct fuse_out_header
  std::uint32_t len;
  std::int32_t error;
  std::uint64_t unique;
};
struct InitOut {  // struct fuse_init_out
  std::uint32_t major, minor, max_readahead, flags;
  std::uint16_t max_background, congestion_threshold;
  std::uint32_t max_write, time_gran;
  std::uint16_t max_pages, map_alignment;
  std::uint32_t flags2;
  std::uint32_t max_stack_depth;
  std::uint32_t unused[6];
};
struct OpenOut {  // struct fuse_open_out
  std::uint64_t fh;
  std::uint32_t open_flags;
  std::int32_t backing_id;
};
struct Attr {  // struct fuse_attr
  std::uint64_t ino, size, blocks, atime, mtime, ctime;
  std::uint32_t atimensec, mtimensec, ctimensec;
  std::uint32_t mode, nlink, uid, gid, rdev, blksize, flags;
};
struct EntryOut {  // struct fuse_entry_out
  std::uint64_t nodeid, generation, entry_valid, attr_valid;
  std::uint32_t entry_valid_nsec, attr_valid_nsec;
  Attr attr;
};
static_assert(sizeof(InHeader) == 40 && sizeof(InitIn) == 64 && sizeof(OutHeader) == 16);
static_assert(sizeof(InitOut) == 64 && sizeof(OpenOut) == 16 && sizeof(EntryOut) == 128);
}  // namespace abi

class Passthrough {
 public:
  // ALLOWED: the daemon may register backing files (root of the initial
  // user namespace) and the mount did not turn passthrough off.
  explicit Passthrough(bool allowed) noexcept : allowed_(allowed) {}

  // The /dev/fuse fd of the session, once mounted.
  void set_device(int fd) noexcept { device_fd_ = fd; }

  // Custom I/O hooks of the session (see fuse_session_custom_io).
  void note_request(const void* buf, std::size_t len) noexcept;
  void adjust_reply(struct iovec* iov, int count) noexcept;

  // Whether opens may use passthrough now.
  bool usable() const noexcept { return enabled_.load(std::memory_order_relaxed); }
  // Registers FD as a backing file: its id (> 0), or 0 when the kernel
  // refuses (passthrough is then off for the rest of the session, unless the
  // refusal was about this file alone).
  int register_backing(int fd) noexcept;
  void release_backing(int id) noexcept;

 private:
  const bool allowed_;
  int device_fd_ = -1;
  std::atomic<std::uint64_t> init_unique_{0};
  std::atomic<bool> offered_{false};
  std::atomic<bool> enabled_{false};
};

}  // namespace strata::fs
