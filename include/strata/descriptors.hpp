// Descriptor hygiene for a process about to become something else (a
// container's command, a monitor, a relay): only the descriptors it needs
// stay open, so nothing its parent held (a lock, a caller's pipe, a host
// file) lives on in it.
#pragma once

#include <span>

namespace strata {

// Closes every descriptor from 3 up except those in KEEP (any order), with
// close_range(2). Allocates nothing, so it may run between fork and exec.
void close_descriptors_except(std::span<const int> keep) noexcept;

}  // namespace strata
