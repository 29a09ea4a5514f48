// The directory fds of the union: DirLayer (one layer's copy of a merged
// directory), its NameFilter, and the DirCache that opens DirLayers on
// demand and keeps a bounded number of them open. No part of UnionFs lives
// here.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include <xxhash.h>

#include "union_fs.hpp"

namespace strata::fs {

namespace {

// The DirLayers pinned by the requests of this thread (see DirCache::PinScope).
thread_local std::vector<std::shared_ptr<DirLayer>> t_pins;

}  // namespace

DirLayer::~DirLayer() {
  if (cache_) cache_->forget(*this);
  delete names.load(std::memory_order_acquire);
}

void DirLayer::set_names(std::vector<std::uint64_t> hashes) {
  if (layer == 0 || hashes.size() > NameFilter::kMaxNames) return;
  auto* filter = new NameFilter(std::move(hashes));
  const NameFilter* none = nullptr;
  // Two scans may race; both saw the same immutable directory.
  if (!names.compare_exchange_strong(none, filter, std::memory_order_acq_rel)) delete filter;
}

NameFilter::NameFilter(std::vector<std::uint64_t> hashes) noexcept : hashes_(std::move(hashes)) {
  std::sort(hashes_.begin(), hashes_.end());
}

std::uint64_t NameFilter::hash(std::string_view name) noexcept { return XXH3_64bits(name.data(), name.size()); }

bool NameFilter::may_contain(std::string_view name) const noexcept {
  return std::binary_search(hashes_.begin(), hashes_.end(), hash(name));
}

bool NameFilter::may_mention(std::string_view name) const noexcept {
  if (may_contain(name)) return true;
  char marker[NAME_MAX + 8];
  if (name.size() > NAME_MAX) return false;
  std::memcpy(marker, kOciWhiteoutPrefix.data(), kOciWhiteoutPrefix.size());
  std::memcpy(marker + kOciWhiteoutPrefix.size(), name.data(), name.size());
  return may_contain(std::string_view(marker, kOciWhiteoutPrefix.size() + name.size()));
}

void DirCache::set_permanent(DirLayer& dl, UniqueFd fd) {
  std::lock_guard lk(mu_);
  dl.fd_ = fd.release();
  dl.permanent_ = true;
  dl.cache_ = this;
}

void DirCache::forget(DirLayer& dl) noexcept {
  std::lock_guard lk(mu_);
  if (dl.fd_ < 0) return;
  if (!dl.permanent_) lru_.erase(dl.lru_);
  ::close(dl.fd_);
  dl.fd_ = -1;
}

void DirCache::insert_locked(DirLayer& dl, int fd) {
  dl.fd_ = fd;
  dl.cache_ = this;
  lru_.push_front(&dl);
  dl.lru_ = lru_.begin();
}

int DirCache::pin_locked(const std::shared_ptr<DirLayer>& dl) {
  if (!dl->permanent_) {
    t_pins.push_back(dl);
    ++dl->pins_;
    lru_.splice(lru_.begin(), lru_, dl->lru_);
  }
  return dl->fd_;
}

void DirCache::trim_locked(std::vector<int>& to_close) {
  for (auto it = lru_.end(); lru_.size() > capacity_ && it != lru_.begin();) {
    --it;
    DirLayer* dl = *it;
    if (dl->pins_ != 0) continue;
    to_close.push_back(dl->fd_);
    dl->fd_ = -1;
    it = lru_.erase(it);
  }
}

int DirCache::adopt(const std::shared_ptr<DirLayer>& dl, UniqueFd fd) {
  std::vector<int> to_close;
  int pinned;
  {
    std::lock_guard lk(mu_);
    if (dl->fd_ >= 0) {
      to_close.push_back(fd.release());  // another request opened it meanwhile
    } else {
      insert_locked(*dl, fd.release());
    }
    pinned = pin_locked(dl);
    trim_locked(to_close);
  }
  for (int c : to_close) ::close(c);
  return pinned;
}

int DirCache::fd(const std::shared_ptr<DirLayer>& dl) {
  {
    std::lock_guard lk(mu_);
    if (dl->fd_ >= 0) return pin_locked(dl);
  }
  if (!dl->parent) {  // a layer root is always open
    errno = EBADF;
    return -1;
  }
  int parent_fd = fd(dl->parent);
  if (parent_fd < 0) return -1;
  UniqueFd opened(open_retrying(
      [&] { return ::openat(parent_fd, dl->name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC); }));
  if (!opened) return -1;
  struct stat st {};
  if (::fstat(opened.get(), &st) != 0) return -1;
  if (st.st_dev != dl->dev || st.st_ino != dl->ino) {
    errno = ESTALE;  // the name holds another directory now
    return -1;
  }
  return adopt(dl, std::move(opened));
}

bool DirCache::shed() {
  std::vector<int> to_close;
  {
    std::lock_guard lk(mu_);
    for (auto it = lru_.begin(); it != lru_.end();) {
      DirLayer* dl = *it;
      if (dl->pins_ != 0) {
        ++it;
        continue;
      }
      to_close.push_back(dl->fd_);
      dl->fd_ = -1;
      it = lru_.erase(it);
    }
  }
  for (int c : to_close) ::close(c);
  return !to_close.empty();
}

DirCache::PinScope::PinScope(DirCache& cache) noexcept : cache_(cache), mark_(t_pins.size()) {}

DirCache::PinScope::~PinScope() {
  if (t_pins.size() <= mark_) return;
  {
    std::lock_guard lk(cache_.mu_);
    for (std::size_t i = mark_; i < t_pins.size(); ++i) --t_pins[i]->pins_;
  }
  // Outside the lock: a DirLayer dropped here leaves the cache itself.
  t_pins.resize(mark_);
}

}  // namespace strata::fs
