#define DOCTEST_CONFIG_IMPLEMENT
#include <doctest/doctest.h>

#include <clocale>

int main(int argc, char** argv) {
  // As strata's own main: file names with bytes above 127 go through
  // libarchive's conversions in a UTF-8 character type.
  if (std::setlocale(LC_CTYPE, "C.UTF-8") == nullptr) std::setlocale(LC_CTYPE, "C.utf8");
  return doctest::Context(argc, argv).run();
}
