#include "request_stats.hpp"

#include <time.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "passthrough.hpp"

namespace strata::fs {
namespace {

std::uint64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

// Requests the daemon never answers (fuse_lowlevel.h: "no reply").
bool has_reply(std::uint32_t opcode) noexcept {
  constexpr std::uint32_t kForget = 2, kRead = 15, kInterrupt = 36, kNotifyReply = 41, kBatchForget = 42;
  return opcode != kForget && opcode != kInterrupt && opcode != kNotifyReply && opcode != kBatchForget &&
         opcode != kRead;  // answered by splice, past the write hook
}

void raise_max(std::atomic<std::uint64_t>& max, std::uint64_t v) noexcept {
  std::uint64_t cur = max.load(std::memory_order_relaxed);
  while (v > cur && !max.compare_exchange_weak(cur, v, std::memory_order_relaxed)) {
  }
}

}  // namespace

std::string RequestStats::opcode_name(std::uint32_t opcode) {
  // enum fuse_opcode, include/uapi/linux/fuse.h.
  static constexpr const char* kNames[] = {
      nullptr,        "LOOKUP",     "FORGET",       "GETATTR",     "SETATTR",         "READLINK",
      "SYMLINK",      nullptr,      "MKNOD",        "MKDIR",       "UNLINK",          "RMDIR",
      "RENAME",       "LINK",       "OPEN",         "READ",        "WRITE",           "STATFS",
      "RELEASE",      nullptr,      "FSYNC",        "SETXATTR",    "GETXATTR",        "LISTXATTR",
      "REMOVEXATTR",  "FLUSH",      "INIT",         "OPENDIR",     "READDIR",         "RELEASEDIR",
      "FSYNCDIR",     "GETLK",      "SETLK",        "SETLKW",      "ACCESS",          "CREATE",
      "INTERRUPT",    "BMAP",       "DESTROY",      "IOCTL",       "POLL",            "NOTIFY_REPLY",
      "BATCH_FORGET", "FALLOCATE",  "READDIRPLUS",  "RENAME2",     "LSEEK",           "COPY_FILE_RANGE",
      "SETUPMAPPING", "REMOVEMAPPING", "SYNCFS",    "TMPFILE",     "STATX"};
  if (opcode < std::size(kNames) && kNames[opcode] != nullptr) return kNames[opcode];
  return "OP" + std::to_string(opcode);
}

void RequestStats::note_request(const void* buf, std::size_t len) noexcept {
  if (len < sizeof(abi::InHeader)) return;
  abi::InHeader in{};
  std::memcpy(&in, buf, sizeof in);
  slot(in.opcode).count.fetch_add(1, std::memory_order_relaxed);
  if (!has_reply(in.opcode) || in.opcode >= kOpcodes) return;
  Stripe& s = inflight_[in.unique % kStripes];
  try {
    std::lock_guard lk(s.mu);
    s.by_unique[in.unique] = InFlight{in.opcode, now_ns()};
  } catch (...) {
    // Out of memory: this request goes untimed.
  }
}

void RequestStats::note_reply(const struct iovec* iov, int count) noexcept {
  if (count < 1 || iov[0].iov_len < sizeof(abi::OutHeader)) return;
  abi::OutHeader out{};
  std::memcpy(&out, iov[0].iov_base, sizeof out);
  if (out.unique == 0) return;  // a notification the daemon sends, not a reply
  InFlight f{};
  {
    Stripe& s = inflight_[out.unique % kStripes];
    std::lock_guard lk(s.mu);
    auto it = s.by_unique.find(out.unique);
    if (it == s.by_unique.end()) return;
    f = it->second;
    s.by_unique.erase(it);
  }
  const std::uint64_t ns = now_ns() - f.start_ns;
  PerOpcode& op = slot(f.opcode);
  op.timed.fetch_add(1, std::memory_order_relaxed);
  if (out.error != 0) op.errors.fetch_add(1, std::memory_order_relaxed);
  op.total_ns.fetch_add(ns, std::memory_order_relaxed);
  raise_max(op.max_ns, ns);
  std::size_t bucket = 0;
  for (std::uint64_t us = ns / 1000; us != 0 && bucket + 1 < kBuckets; us >>= 1) ++bucket;
  op.buckets[bucket].fetch_add(1, std::memory_order_relaxed);
}

std::string RequestStats::report() const {
  char line[160];
  std::string out;
  std::snprintf(line, sizeof line, "%-16s %10s %8s %9s %9s %9s %10s %11s\n", "opcode", "count", "errors",
                "mean_us", "p50_us", "p99_us", "max_us", "total_ms");
  out += line;
  std::uint64_t all = 0;
  for (std::size_t opcode = 0; opcode < kOpcodes; ++opcode) {
    const PerOpcode& op = ops_[opcode];
    const std::uint64_t count = op.count.load(std::memory_order_relaxed);
    if (count == 0) continue;
    all += count;
    const std::uint64_t timed = op.timed.load(std::memory_order_relaxed);
    const std::string name = opcode == 0 ? std::string("(unknown)") : opcode_name(static_cast<std::uint32_t>(opcode));
    if (timed == 0) {
      std::snprintf(line, sizeof line, "%-16s %10llu %8s %9s %9s %9s %10s %11s\n", name.c_str(),
                    static_cast<unsigned long long>(count), "-", "-", "-", "-", "-", "-");
      out += line;
      continue;
    }
    // A percentile is the upper bound of the bucket it falls in (2^b µs).
    auto percentile = [&](double p) -> unsigned long long {
      const auto rank = static_cast<std::uint64_t>(p * static_cast<double>(timed - 1)) + 1;
      std::uint64_t seen = 0;
      for (std::size_t b = 0; b < kBuckets; ++b) {
        seen += op.buckets[b].load(std::memory_order_relaxed);
        if (seen >= rank) return 1ULL << b;
      }
      return 1ULL << (kBuckets - 1);
    };
    const double total_ns = static_cast<double>(op.total_ns.load(std::memory_order_relaxed));
    std::snprintf(line, sizeof line, "%-16s %10llu %8llu %9.1f %9llu %9llu %10.1f %11.1f\n", name.c_str(),
                  static_cast<unsigned long long>(count),
                  static_cast<unsigned long long>(op.errors.load(std::memory_order_relaxed)),
                  total_ns / static_cast<double>(timed) / 1e3, percentile(0.5), percentile(0.99),
                  static_cast<double>(op.max_ns.load(std::memory_order_relaxed)) / 1e3, total_ns / 1e6);
    out += line;
  }
  std::snprintf(line, sizeof line, "%-16s %10llu\n", "all", static_cast<unsigned long long>(all));
  out += line;
  return out;
}

}  // namespace strata::fs
