// src/registry/sources: blob source records.
#include "sources.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

#include "util.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"

namespace strata::registry {

namespace {
std::string record_path(const std::string& root, const oci::Digest& blob) {
  return root + "/registry/sources/" + blob.hex();
}
}  // namespace

void record_source(const std::string& store_root, const oci::Digest& blob, const std::string& repository) {
  auto known = blob_sources(store_root, blob);
  if (std::find(known.begin(), known.end(), repository) != known.end()) return;
  make_dirs(store_root + "/registry/sources", 0700);
  std::string path = record_path(store_root, blob);
  UniqueFd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) throw_errno("open " + quote(path));
  write_all(fd.get(), repository + "\n", quote(path));
}

std::vector<std::string> blob_sources(const std::string& store_root, const oci::Digest& blob) {
  std::vector<std::string> out;
  std::string text;
  try {
    text = read_file(record_path(store_root, blob));
  } catch (const Error&) {
    return out;  // none recorded
  }
  std::size_t start = 0;
  while (start < text.size()) {
    auto nl = text.find('\n', start);
    std::string line = text.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
    if (!line.empty() && std::find(out.begin(), out.end(), line) == out.end()) out.push_back(line);
    if (nl == std::string::npos) break;
    start = nl + 1;
  }
  return out;
}

}  // namespace strata::registry
