// strata: the image toolkit's command line. Parses the global options and
// dispatches to the verb named first; see tools/cli/ for the verbs.
#include <algorithm>
#include <clocale>
#include <cstdlib>
#include <iostream>
#include <string>
#include <vector>

#include "cli/cli.hpp"
#include "strata/error.hpp"

namespace {

void print_help(std::ostream& out) {
  out << "Usage: strata [--root DIR] COMMAND [ARGS...]\n\n"
         "Container images without a daemon and without root.\n\n"
         "Global options:\n"
         "  --root DIR   image store root (default: $STRATA_ROOT, else /var/lib/strata for root,\n"
         "               $XDG_DATA_HOME/strata or ~/.local/share/strata for other users)\n"
         "  --debug      log each step of the command, with its time, on standard error\n"
         "  -h, --help   show this help\n"
         "  --version    show the version\n\n"
         "Commands:\n";
  auto verbs = strata::cli::verbs();
  std::sort(verbs.begin(), verbs.end(), [](const auto& a, const auto& b) { return std::string(a.name) < b.name; });
  for (const auto& v : verbs) {
    std::string name = v.name;
    name.resize(std::max<size_t>(name.size() + 2, 10), ' ');
    out << "  " << name << v.summary << "\n";
  }
  out << "\nRun 'strata COMMAND --help' for a command's options.\n";
}

int run(int argc, char** argv) {
  strata::cli::GlobalOptions global;
  if (const char* root = std::getenv("STRATA_ROOT"); root != nullptr) global.root = root;
  int i = 1;
  for (; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      print_help(std::cout);
      return 0;
    }
    if (arg == "--version") {
      std::cout << "strata " << STRATA_VERSION << "\n";
      return 0;
    }
    if (arg == "--debug") {
      global.debug = true;
    } else if (arg == "--root" || arg.rfind("--root=", 0) == 0) {
      if (arg == "--root") {
        if (++i == argc) throw strata::UsageError("--root needs a directory");
        global.root = argv[i];
      } else {
        global.root = arg.substr(7);
      }
      if (global.root.empty()) throw strata::UsageError("--root needs a directory");
    } else if (!arg.empty() && arg[0] == '-') {
      throw strata::UsageError("unknown option " + strata::quote(arg) + " (see 'strata --help')");
    } else {
      break;
    }
  }
  if (i == argc) {
    print_help(std::cerr);
    return static_cast<int>(strata::ExitCode::usage);
  }
  std::string name = argv[i];
  for (const auto& verb : strata::cli::verbs()) {
    if (name == verb.name) return verb.run(global, std::vector<std::string>(argv + i + 1, argv + argc));
  }
  throw strata::UsageError("unknown command " + strata::quote(name) + " (see 'strata --help')");
}

}  // namespace

int main(int argc, char** argv) {
  // File names are bytes; a layer's pax headers hold them as UTF-8.
  // libarchive converts between the two through the locale's character set,
  // which in the C locale is ASCII: every name with a byte above 127
  // (ca-certificates' "Főtanúsítvány.crt") would fail to translate. Only
  // the character type changes: messages, numbers and sorting stay C.
  if (std::setlocale(LC_CTYPE, "C.UTF-8") == nullptr) std::setlocale(LC_CTYPE, "C.utf8");
  try {
    return run(argc, argv);
  } catch (const strata::Error& e) {
    std::cerr << "strata: " << e.what() << "\n";
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::cerr << "strata: " << e.what() << "\n";
    return static_cast<int>(strata::ExitCode::failure);
  }
}
