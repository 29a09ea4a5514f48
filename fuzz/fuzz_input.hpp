// What the fuzz targets share: the input as text and as a file, and the rule
// that a parser may refuse its input only with strata::Error (anything else
// escaping is a finding: libFuzzer reports the uncaught exception).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>

#include "strata/error.hpp"
#include "strata/fd.hpp"
#include "strata/fileio.hpp"

namespace strata::fuzz {

inline std::string_view as_text(const std::uint8_t* data, std::size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// Splits TEXT at its first NUL byte: a structured input of two parts.
inline std::pair<std::string_view, std::string_view> split_at_nul(std::string_view text) {
  std::size_t nul = text.find('\0');
  if (nul == std::string_view::npos) return {text, {}};
  return {text.substr(0, nul), text.substr(nul + 1)};
}

// An anonymous in-memory file holding DATA, read from its start.
inline UniqueFd memory_file(std::string_view data) {
  UniqueFd fd(::memfd_create("fuzz-input", MFD_CLOEXEC));
  if (!fd) throw_errno("memfd_create");
  write_all(fd.get(), data, "fuzz input");
  if (::lseek(fd.get(), 0, SEEK_SET) != 0) throw_errno("lseek fuzz input");
  return fd;
}

// Rewrites the header checksums of a plain tar in TAR so that mutated
// headers reach the reader instead of failing its checksum test. Walks the
// headers (ustar magic at 257, octal size at 124) and stops at the first
// block that is not one.
inline void fix_tar_checksums(std::string& tar) {
  constexpr std::size_t kBlock = 512;
  std::size_t pos = 0;
  while (pos + kBlock <= tar.size() && tar.compare(pos + 257, 5, "ustar") == 0) {
    char* h = tar.data() + pos;
    unsigned sum = 0;
    for (std::size_t i = 0; i < kBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
    std::snprintf(h + 148, 8, "%06o", sum & 0777777);
    h[155] = ' ';
    std::uint64_t size = 0;
    for (std::size_t i = 124; i < 136 && h[i] >= '0' && h[i] <= '7'; ++i) size = size * 8 + static_cast<unsigned>(h[i] - '0');
    if (size > tar.size()) break;
    pos += kBlock + (size + kBlock - 1) / kBlock * kBlock;
  }
}

// Where the file-system targets make their per-input directories.
inline std::string scratch_parent() {
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

// Runs BODY; an Error is the parser refusing the input, which is fine.
template <typename Body>
void refusal_is_fine(Body&& body) {
  try {
    body();
  } catch (const Error&) {
  }
}

// A property the code promises; aborting makes libFuzzer keep the input.
inline void check(bool ok, const char* what) {
  if (!ok) {
    ::write(2, what, __builtin_strlen(what));
    ::write(2, "\n", 1);
    std::abort();
  }
}

}  // namespace strata::fuzz
