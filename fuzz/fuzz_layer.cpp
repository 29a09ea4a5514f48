// The layer reader: the input as a layer blob (plain tar or compressed,
// detected from the bytes) extracted into a fresh directory, as `strata
// import`, `load` and `pull` do, rootless (owners and devices recorded in
// the override_stat xattr). Whatever it holds, extraction finishes or
// throws Error, and nothing appears outside the destination. Header
// checksums of a plain tar are fixed first, so mutations reach the reader.
#include <sys/stat.h>

#include "fuzz_input.hpp"
#include "strata/archive.hpp"

using namespace strata;

namespace {

std::size_t entries_in(const std::string& dir) { return list_dir(dir).size(); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TempDir scratch(fuzz::scratch_parent(), "strata-fuzz-layer.");
  std::string dest = scratch.path() + "/rootfs";
  if (::mkdir(dest.c_str(), 0755) != 0) throw_errno("mkdir " + dest);
  std::string tar(fuzz::as_text(data, size));
  fuzz::fix_tar_checksums(tar);
  UniqueFd in = fuzz::memory_file(tar);
  archive::ExtractOptions options;
  options.max_size = 64 << 20;
  fuzz::refusal_is_fine([&] { archive::extract_layer(in.get(), dest, options); });
  fuzz::check(entries_in(scratch.path()) == 1, "extraction wrote beside its destination");
  return 0;
}
