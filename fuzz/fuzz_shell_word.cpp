// The builder's shell-word expansion ($v, ${v:-w}, ${v/p/r}, quotes,
// escapes) and its pattern matcher. The first byte picks the lexer's
// options and escape character; the rest is the word. Variables: a few set
// ones (one empty, one with blanks and pattern characters) and the rest unset.
#include "fuzz_input.hpp"
#include "strata/dockerfile.hpp"

using namespace strata;

namespace {

std::optional<std::string> lookup(std::string_view name) {
  if (name == "A") return std::string("alpha");
  if (name == "E") return std::string();
  if (name == "S") return std::string(" a b*c?[d] \\e ");
  if (name == "L") return std::string(300, 'x');
  if (name.size() == 1 && name[0] >= 'a' && name[0] <= 'z') return std::string(name) + std::string(name);
  return std::nullopt;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::uint8_t mode = data[0];
  std::string_view word = fuzz::as_text(data + 1, size - 1);
  build::ShellLexer lexer(mode & 0x10 ? '`' : '\\');
  lexer.raw_quotes = mode & 0x01;
  lexer.raw_escapes = mode & 0x02;
  lexer.skip_unset = mode & 0x04;
  lexer.process_quotes = !(mode & 0x08);
  fuzz::refusal_is_fine([&] { lexer.process_word(word, lookup); });
  fuzz::refusal_is_fine([&] { lexer.process_words(word, lookup); });
  auto [pattern, text] = fuzz::split_at_nul(word);
  build::shell_pattern_match(pattern, text, mode & 0x10 ? '`' : '\\');
  return 0;
}
