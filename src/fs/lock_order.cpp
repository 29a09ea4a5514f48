// The debug-build record of the locks each thread holds (lock_order.hpp).
#include "lock_order.hpp"

#ifndef NDEBUG

#include <atomic>
#include <cstdio>
#include <cstdlib>

namespace strata::fs::lock_order {

namespace {

// A valid order holds at most two locks (tree_mu_ and one leaf); the rest
// of the room is for reporting a violation rather than overrunning.
constexpr int kMaxHeld = 8;
thread_local Lock t_held[kMaxHeld];
thread_local int t_count = 0;

[[noreturn]] void abort_on_violation(Lock held, Lock taking) {
  std::fprintf(stderr, "stratafs: lock order violated: %s taken while %s is held\n", lock_name(taking),
               lock_name(held));
  std::abort();
}

std::atomic<Failure> g_failure{abort_on_violation};

// The handler does not return (it aborts or throws); one that does, aborts.
[[noreturn]] void fail(Lock held, Lock taking) {
  g_failure.load(std::memory_order_relaxed)(held, taking);
  abort_on_violation(held, taking);
}

}  // namespace

void acquire(Lock l) {
  const int rank = lock_rank(l);
  for (int i = 0; i < t_count; ++i) {
    if (lock_rank(t_held[i]) >= rank) fail(t_held[i], l);
  }
  if (t_count == kMaxHeld) fail(t_held[kMaxHeld - 1], l);
  t_held[t_count++] = l;
}

void release(Lock l) noexcept {
  for (int i = t_count - 1; i >= 0; --i) {
    if (t_held[i] != l) continue;
    for (int j = i; j + 1 < t_count; ++j) t_held[j] = t_held[j + 1];
    --t_count;
    return;
  }
}

Failure set_failure(Failure f) noexcept { return g_failure.exchange(f ? f : abort_on_violation); }

}  // namespace strata::fs::lock_order

#endif
