#include "cli.hpp"

#include <iostream>

#include "strata/error.hpp"

namespace strata::cli {

static std::vector<Verb>& verb_table() {
  static std::vector<Verb> table;
  return table;
}

void register_verb(const Verb& verb) { verb_table().push_back(verb); }
const std::vector<Verb>& verbs() { return verb_table(); }

std::vector<std::string>*& positional_probe() {
  static std::vector<std::string>* probe = nullptr;
  return probe;
}

bool parse_args(const char* verb, const char* usage, po::options_description& options,
                const po::positional_options_description& positional, const std::vector<std::string>& args,
                po::variables_map& vm) {
  options.add_options()("help,h", "show this help and exit");
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help") != 0U) {
      if (std::vector<std::string>* probe = positional_probe(); probe != nullptr) {
        for (unsigned i = 0; i < positional.max_total_count() && i < 8; ++i) {
          probe->push_back(positional.name_for_position(i));
        }
      }
      std::cout << "Usage: " << usage << "\n\n" << options << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(verb) + ": " + e.what() + " (see 'strata " + verb + " --help')");
  }
  return true;
}

}  // namespace strata::cli
