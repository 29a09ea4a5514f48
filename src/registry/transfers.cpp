// src/registry/transfers: the transfer thread pool and progress events.
#include "transfers.hpp"

#include <exception>
#include <thread>
#include <vector>

namespace strata::registry {

void run_parallel(std::size_t count, int threads, std::atomic<bool>& failed, const std::function<void(std::size_t)>& task) {
  std::atomic<std::size_t> next{0};
  std::mutex mu;
  std::exception_ptr first;
  auto worker = [&] {
    for (;;) {
      if (failed.load()) return;
      std::size_t i = next.fetch_add(1);
      if (i >= count) return;
      try {
        task(i);
      } catch (...) {
        std::lock_guard lock(mu);
        if (!first) first = std::current_exception();
        failed.store(true);
        return;
      }
    }
  };
  std::size_t n = std::min<std::size_t>(count, static_cast<std::size_t>(std::max(threads, 1)));
  std::vector<std::thread> pool;
  try {
    for (std::size_t i = 1; i < n; ++i) pool.emplace_back(worker);
  } catch (...) {
    failed.store(true);  // could not start a thread: stop the others, then report
    for (auto& t : pool) t.join();
    throw;
  }
  worker();  // this thread works too
  for (auto& t : pool) t.join();
  if (first) std::rethrow_exception(first);
}

void Reporter::operator()(const std::string& id, ProgressEvent::Kind kind, std::int64_t current, std::int64_t total,
                          const std::string& detail) {
  if (!fn_) return;
  ProgressEvent e;
  e.id = id;
  e.kind = kind;
  e.current = current;
  e.total = total;
  e.detail = detail;
  std::lock_guard lock(mu_);
  fn_(e);
}

void Reporter::bytes(const std::string& id, std::int64_t current, std::int64_t total,
                     std::chrono::steady_clock::time_point& last) {
  if (!fn_) return;
  auto now = std::chrono::steady_clock::now();
  if (current < total && now - last < std::chrono::milliseconds(100)) return;
  last = now;
  (*this)(id, ProgressEvent::Kind::transfer, current, total);
}

}  // namespace strata::registry
