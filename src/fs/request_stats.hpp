// Per-opcode counts and latencies of the FUSE requests a mount serves
// (stratafs -o stats=FILE), to find where the time of a workload goes.
//
// The session's I/O hooks (mount.cpp) see every request the kernel sends and
// every reply the daemon writes: a request is counted when it is read, and its
// latency (read to reply, the daemon's share of a round trip) when its reply
// is written. FORGET, BATCH_FORGET and INTERRUPT have no reply; READ replies
// are spliced from the layer file, past the hook, so reads are counted but not
// timed. The counters are atomics: serving threads never wait for each other
// to count, only (briefly, per stripe) to remember when a request arrived.
#pragma once

#include <sys/uio.h>

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>

#include "lock_order.hpp"

namespace strata::fs {

class RequestStats {
 public:
  // Read hook: BUF holds one request as read from /dev/fuse.
  void note_request(const void* buf, std::size_t len) noexcept;
  // Write hook: the reply about to be written (the first iovec starts with
  // its fuse_out_header).
  void note_reply(const struct iovec* iov, int count) noexcept;

  // A table: opcode, count, errors, mean/p50/p99/max latency in µs, total.
  std::string report() const;

  // The name of a FUSE opcode ("LOOKUP"), or "OP<n>".
  static std::string opcode_name(std::uint32_t opcode);

 private:
  static constexpr std::size_t kOpcodes = 64;   // FUSE opcodes are 1..52 (+ CUSE_INIT)
  static constexpr std::size_t kBuckets = 24;   // bucket b: latency < 2^b µs (the last: the rest)
  static constexpr std::size_t kStripes = 16;
  struct PerOpcode {
    std::atomic<std::uint64_t> count{0};
    std::atomic<std::uint64_t> timed{0};
    std::atomic<std::uint64_t> errors{0};
    std::atomic<std::uint64_t> total_ns{0};
    std::atomic<std::uint64_t> max_ns{0};
    std::array<std::atomic<std::uint64_t>, kBuckets> buckets{};
  };
  struct InFlight {
    std::uint32_t opcode;
    std::uint64_t start_ns;
  };
  struct Stripe {
    Ranked<Lock::request_stats> mu;  // a leaf of the union's lock order (union_fs.hpp)
    std::unordered_map<std::uint64_t, InFlight> by_unique;
  };
  PerOpcode& slot(std::uint32_t opcode) noexcept { return ops_[opcode < kOpcodes ? opcode : 0]; }

  std::array<PerOpcode, kOpcodes> ops_{};  // [0]: opcodes out of range
  std::array<Stripe, kStripes> inflight_{};
};

}  // namespace strata::fs
