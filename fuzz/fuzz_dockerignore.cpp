// .dockerignore: the patterns (before the first NUL) are parsed or refused
// with Error; each line after the NUL is a context path to match. Go's
// path.Clean is idempotent.
#include "fuzz_input.hpp"
#include "strata/dockerignore.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const auto parts = fuzz::split_at_nul(fuzz::as_text(data, size));
  std::string_view patterns = parts.first, paths = parts.second;
  std::string cleaned = build::clean_path(patterns);
  fuzz::check(build::clean_path(cleaned) == cleaned, "clean_path is not idempotent");
  fuzz::refusal_is_fine([&] {
    build::IgnoreMatcher matcher = build::IgnoreMatcher::parse(patterns, ".dockerignore");
    std::size_t start = 0;
    while (start <= paths.size()) {
      std::size_t end = paths.find('\n', start);
      if (end == std::string_view::npos) end = paths.size();
      matcher.excluded(build::clean_path(paths.substr(start, end - start)));
      start = end + 1;
    }
  });
  return 0;
}
