// stratafs: mount stacked layer directories (and a writable upper) as one
// tree. Option parsing only; the file system is strata::fs.
#include <cstdio>
#include <exception>
#include <string>

#include "strata/error.hpp"
#include "strata/fs.hpp"

int main(int argc, char** argv) {
  strata::fs::MountOptions options;
  try {
    switch (strata::fs::parse_command_line(argc, argv, options)) {
      case strata::fs::CommandLineAction::help:
        std::fputs(strata::fs::usage_text("stratafs").c_str(), stdout);
        return 0;
      case strata::fs::CommandLineAction::version:
        std::printf("stratafs %s\n", STRATA_VERSION);
        return 0;
      case strata::fs::CommandLineAction::mount:
        break;
    }
    strata::fs::mount_and_serve(options);
    return 0;
  } catch (const strata::Error& e) {
    std::fprintf(stderr, "stratafs: %s\n", e.what());
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "stratafs: %s\n", e.what());
    return static_cast<int>(strata::ExitCode::failure);
  }
}
