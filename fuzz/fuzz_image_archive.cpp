// The image-archive reader of `strata load`: the input as an archive file
// (tar, maybe compressed) unpacked into a fresh directory and read as an OCI
// layout or a docker-archive. It is read or refused with Error.
#include <fcntl.h>
#include <sys/stat.h>

#include "fuzz_input.hpp"
#include "strata/archive.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  TempDir scratch(fuzz::scratch_parent(), "strata-fuzz-archive.");
  std::string file = scratch.path() + "/image.tar";
  std::string dest = scratch.path() + "/unpacked";
  {
    UniqueFd out = open_at(AT_FDCWD, file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    std::string tar(fuzz::as_text(data, size));
    fuzz::fix_tar_checksums(tar);  // so that mutated headers reach the reader
    write_all(out.get(), tar, file);
  }
  if (::mkdir(dest.c_str(), 0755) != 0) throw_errno("mkdir " + dest);
  fuzz::refusal_is_fine([&] {
    archive::unpack_archive(file, dest);
    for (const archive::ArchivedImage& image : archive::read_image_archive(dest))
      fuzz::check(image.layer_paths.size() == image.manifest.layers.size(), "layer paths and layers differ");
  });
  fuzz::check(list_dir(scratch.path()).size() == 2, "unpacking wrote beside its destination");
  return 0;
}
