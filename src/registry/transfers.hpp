// src/registry/transfers: what pull and push share to move several blobs at
// once: a small pool of threads over a task list, and progress events
// serialised for the caller's callback.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <functional>
#include <mutex>
#include <string>

#include "strata/registry.hpp"

namespace strata::registry {

// Runs TASK(0..COUNT-1) on up to THREADS threads. After the first task that
// throws, no new task starts and FAILED is set (transfers poll it through
// their cancellation callback, so running ones stop soon); once every
// thread has ended, the first exception is rethrown.
//
// Threads rather than one curl multi loop: each blob's work is a transfer
// and then CPU-bound decompression and extraction (pull) or hashing and
// compression (push), which must overlap with the other transfers.
void run_parallel(std::size_t count, int threads, std::atomic<bool>& failed, const std::function<void(std::size_t)>& task);

// Forwards progress events to a callback, one at a time, and thins out
// byte counts to at most ten a second per blob.
class Reporter {
 public:
  explicit Reporter(ProgressFn fn) : fn_(std::move(fn)) {}
  void operator()(const std::string& id, ProgressEvent::Kind kind, std::int64_t current = 0, std::int64_t total = 0,
                  const std::string& detail = {});
  // A byte count: forwarded when 100 ms have passed since LAST (updated) or
  // the transfer is complete.
  void bytes(const std::string& id, std::int64_t current, std::int64_t total,
             std::chrono::steady_clock::time_point& last);

 private:
  ProgressFn fn_;
  std::mutex mu_;
};

}  // namespace strata::registry
