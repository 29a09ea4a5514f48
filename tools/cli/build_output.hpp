// strata build --output: the built image written out as files, a tar or an
// image archive, as `docker build --output` does.
#pragma once

#include <string>
#include <vector>

#include "strata/store.hpp"

namespace strata::cli {

struct BuildOutput {
  // local: the image's files into a directory; tar: them as one tar;
  // oci: an OCI layout tar; docker: a docker-archive (docker load).
  std::string type;
  std::string dest;  // a directory (local), a file, or "-" for standard output
  bool to_stdout() const { return dest == "-"; }
};

// `-o DIR`, `-o -` (a tar on standard output) or
// `type=local|tar|oci|docker,dest=PATH`. Throws UsageError naming what is
// wrong (an unknown type or key, no dest, a tar for a terminal).
BuildOutput parse_build_output(const std::string& spec);

// Writes image IMAGE_ID (named NAME in an archive, when not empty) as OUT
// says. A file is staged beside DEST and renamed, so a failure leaves none.
void write_build_output(store::Store& store, const BuildOutput& out, const std::string& image_id,
                        const std::string& name);

}  // namespace strata::cli
