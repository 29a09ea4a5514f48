// The union's lock order, checked in debug builds.
//
// Every mutex of the union is a Ranked<Lock::X, M>: M with the same calls,
// for std::lock_guard, std::unique_lock and std::shared_lock alike. The order
// itself is written once, above UnionFs::backing_mu_ in union_fs.hpp: tree_mu_
// first, then at most one leaf. Without NDEBUG each thread records the locks
// it holds (a small thread_local array), and taking a lock whose rank is not
// above every rank held is a violation: one line naming both locks on
// stderr, then abort, before the thread can block on it. With NDEBUG
// Ranked<L, M> is M's calls and nothing more.
#pragma once

#include <mutex>
#include <shared_mutex>

namespace strata::fs {

// The locks of the union, by kind.
enum class Lock : unsigned char {
  tree,           // UnionFs::tree_mu_
  backing,        // UnionFs::backing_mu_
  link_index,     // LinkIndex::mu
  children,       // Node::children_mu
  listing,        // UnionFs::listing_mu_[]
  shard,          // UnionFs::Shard::mu
  dir_cache,      // DirCache::mu_
  request_stats,  // RequestStats::Stripe::mu
};

// A lock may be taken only while every lock this thread holds has a lower
// rank: tree_mu_ is 0, every leaf 1 (so no leaf under another leaf).
constexpr int lock_rank(Lock l) noexcept { return l == Lock::tree ? 0 : 1; }

constexpr const char* lock_name(Lock l) noexcept {
  switch (l) {
    case Lock::tree: return "tree_mu_";
    case Lock::backing: return "backing_mu_";
    case Lock::link_index: return "LinkIndex::mu";
    case Lock::children: return "Node::children_mu";
    case Lock::listing: return "listing_mu_";
    case Lock::shard: return "Shard::mu";
    case Lock::dir_cache: return "DirCache::mu_";
    case Lock::request_stats: return "RequestStats::Stripe::mu";
  }
  return "?";
}

#ifndef NDEBUG
namespace lock_order {

// Checks that L may be taken by this thread now and records it as held; on a
// violation calls the failure handler, records nothing and does not return.
void acquire(Lock l);
// Forgets the latest record of L.
void release(Lock l) noexcept;

// Called with the lock held (the highest-ranked one in the way) and the lock
// being taken. The default prints both names and aborts; a test may install
// one that throws (one that returns is followed by the default). Null
// restores the default. Returns the previous handler.
using Failure = void (*)(Lock held, Lock taking);
Failure set_failure(Failure f) noexcept;

}  // namespace lock_order
#endif

template <Lock L, class M = std::mutex>
class Ranked {
 public:
  Ranked() = default;
  Ranked(const Ranked&) = delete;
  Ranked& operator=(const Ranked&) = delete;

  void lock() { take([this] { mu_.lock(); }); }
  bool try_lock() { return try_take([this] { return mu_.try_lock(); }); }
  void unlock() {
    note_release();
    mu_.unlock();
  }
  void lock_shared() { take([this] { mu_.lock_shared(); }); }
  bool try_lock_shared() { return try_take([this] { return mu_.try_lock_shared(); }); }
  void unlock_shared() {
    note_release();
    mu_.unlock_shared();
  }

 private:
  // Checks and records L, then runs CALL (M's lock call); when that throws
  // (std::system_error), the record goes again.
  template <class Call>
  static auto take(Call call) {
    note_acquire();
#ifndef NDEBUG
    try {
      return call();
    } catch (...) {
      note_release();
      throw;
    }
#else
    return call();
#endif
  }
  template <class Call>
  static bool try_take(Call call) {
    const bool got = take(call);
    if (!got) note_release();
    return got;
  }
#ifndef NDEBUG
  static void note_acquire() { lock_order::acquire(L); }
  static void note_release() noexcept { lock_order::release(L); }
#else
  static void note_acquire() noexcept {}
  static void note_release() noexcept {}
#endif

  M mu_;
};

static_assert(sizeof(Ranked<Lock::children>) == sizeof(std::mutex), "a Ranked mutex is the mutex alone");

}  // namespace strata::fs
