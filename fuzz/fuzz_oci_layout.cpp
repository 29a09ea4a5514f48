// The image-archive reader of `strata load` on documents the fuzzer writes:
// the input is documents separated by NUL bytes. The first is index.json
// of an OCI layout, or manifest.json of a docker-archive when it starts with
// '['. Document K (1-9) is stored as blobs/sha256/HEX and as the file "K";
// "@K@" in any document stands for document K's digest ("sha256:HEX"), so
// indexes, manifests and configs can name each other as their digests
// require. read_image_archive reads them or refuses with Error.
#include <fcntl.h>
#include <sys/stat.h>

#include <vector>

#include "fuzz_input.hpp"
#include "strata/archive.hpp"

using namespace strata;

namespace {

constexpr std::size_t kMaxDocuments = 10;

void write_file(const std::string& path, std::string_view data) {
  UniqueFd out = open_at(AT_FDCWD, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  write_all(out.get(), data, path);
}

// Replaces each "@K@" naming a later document with its digest.
std::string resolve(std::string_view text, std::size_t self, const std::vector<std::string>& digests) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '@' && i + 2 < text.size() && text[i + 2] == '@' && text[i + 1] >= '1' && text[i + 1] <= '9') {
      auto k = static_cast<std::size_t>(text[i + 1] - '0');
      if (k > self && k < digests.size()) {
        out += digests[k];
        i += 2;
        continue;
      }
    }
    out += text[i];
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::vector<std::string_view> docs;
  std::string_view rest = fuzz::as_text(data, size);
  while (docs.size() + 1 < kMaxDocuments) {
    auto parts = fuzz::split_at_nul(rest);
    docs.push_back(parts.first);
    if (parts.first.size() == rest.size()) break;
    rest = parts.second;
  }
  if (docs.size() + 1 == kMaxDocuments) docs.push_back(rest);

  TempDir scratch(fuzz::scratch_parent(), "strata-fuzz-layout.");
  const std::string& dir = scratch.path();
  ::mkdir((dir + "/blobs").c_str(), 0755);
  ::mkdir((dir + "/blobs/sha256").c_str(), 0755);
  // Last first: a document's references are to later ones, already hashed.
  std::vector<std::string> digests(docs.size());
  for (std::size_t k = docs.size(); k-- > 1;) {
    std::string text = resolve(docs[k], k, digests);
    oci::Digest d = oci::sha256(text);
    digests[k] = d.str();
    write_file(dir + "/blobs/sha256/" + d.hex(), text);
    write_file(dir + "/" + std::to_string(k), text);
  }
  std::string top = resolve(docs[0], 0, digests);
  if (!top.empty() && top[0] == '[') {
    write_file(dir + "/manifest.json", top);
  } else {
    write_file(dir + "/oci-layout", R"({"imageLayoutVersion":"1.0.0"})");
    write_file(dir + "/index.json", top);
  }
  fuzz::refusal_is_fine([&] { archive::read_image_archive(dir); });
  return 0;
}
