#include "passthrough.hpp"

#include <sys/ioctl.h>

#include <cerrno>
#include <cstring>

namespace strata::fs {

namespace {

struct BackingMap {  // struct fuse_backing_map
  std::int32_t fd;
  std::uint32_t flags;
  std::uint64_t padding;
};
constexpr unsigned kDevIocMagic = 229;
constexpr unsigned long kBackingOpen = _IOW(kDevIocMagic, 1, BackingMap);
constexpr unsigned long kBackingClose = _IOW(kDevIocMagic, 2, std::uint32_t);

}  // namespace

void Passthrough::note_request(const void* buf, std::size_t len) noexcept {
  if (!allowed_ || len < sizeof(abi::InHeader) + sizeof(abi::InitIn)) return;
  abi::InHeader in;
  std::memcpy(&in, buf, sizeof in);
  if (in.opcode != abi::kOpInit) return;
  abi::InitIn init;
  std::memcpy(&init, static_cast<const char*>(buf) + sizeof in, sizeof init);
  bool offered = (init.flags & abi::kInitExt) && (init.flags2 & abi::kPassthroughFlags2);
  offered_.store(offered, std::memory_order_relaxed);
  init_unique_.store(in.unique, std::memory_order_release);
}

void Passthrough::adjust_reply(struct iovec* iov, int count) noexcept {
  std::uint64_t unique = init_unique_.load(std::memory_order_acquire);
  if (unique == 0 || count < 2 || iov[0].iov_len != sizeof(abi::OutHeader)) return;
  abi::OutHeader out;
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique != unique) return;
  init_unique_.store(0, std::memory_order_relaxed);
  if (out.error != 0 || !offered_.load(std::memory_order_relaxed) || iov[1].iov_len < sizeof(abi::InitOut)) return;
  abi::InitOut reply;
  std::memcpy(&reply, iov[1].iov_base, sizeof reply);
  if (!(reply.flags & abi::kInitExt)) return;
  reply.flags2 |= abi::kPassthroughFlags2;
  // The layers are on ordinary file systems: one level of stacking. A layer
  // on a stacked file system (overlayfs, another FUSE mount) is refused per
  // file by the kernel, and that file is then served by the daemon.
  reply.max_stack_depth = 1;
  std::memcpy(iov[1].iov_base, &reply, sizeof reply);
  enabled_.store(true, std::memory_order_relaxed);
}

int Passthrough::register_backing(int fd) noexcept {
  if (!usable() || device_fd_ < 0) return 0;
  BackingMap map{fd, 0, 0};
  int id = ::ioctl(device_fd_, kBackingOpen, &map);
  if (id > 0) return id;
  // EPERM/EINVAL/ENOTTY: the kernel took the INIT flag but will not do it
  // (or is older than the ABI); ELOOP or EOPNOTSUPP concern this file only.
  if (errno == EPERM || errno == EINVAL || errno == ENOTTY) enabled_.store(false, std::memory_order_relaxed);
  return 0;
}

void Passthrough::release_backing(int id) noexcept {
  std::uint32_t backing = static_cast<std::uint32_t>(id);
  ::ioctl(device_fd_, kBackingClose, &backing);
}

}  // namespace strata::fs
