#include "cli.hpp"

#include <algorithm>
#include <iostream>

#include "strata/error.hpp"

namespace strata::cli {

static std::vector<Verb>& verb_table() {
  static std::vector<Verb> table;
  return table;
}

void register_verb(const Verb& verb) { verb_table().push_back(verb); }
const std::vector<Verb>& verbs() { return verb_table(); }

// The options of OPTIONS that are not positional arguments: those are named
// in the usage line, and listing them as "--source arg" would advertise a
// spelling nobody should type.
static po::options_description without_positional(const po::options_description& options,
                                                  const po::positional_options_description& positional) {
  std::vector<std::string> names;
  // Boost gives an unbounded trailing argument a count of UINT_MAX; its name
  // repeats, so the first few positions name every positional argument.
  for (unsigned i = 0; i < positional.max_total_count() && i < 8; ++i) {
    names.emplace_back(positional.name_for_position(i));
  }
  po::options_description shown("Options");
  for (const auto& option : options.options()) {
    if (std::find(names.begin(), names.end(), option->long_name()) == names.end()) shown.add(option);
  }
  return shown;
}

bool parse_args(const char* verb, const char* usage, po::options_description& options,
                const po::positional_options_description& positional, const std::vector<std::string>& args,
                po::variables_map& vm) {
  options.add_options()("help,h", "show this help and exit");
  try {
    po::store(po::command_line_parser(args).options(options).positional(positional).run(), vm);
    if (vm.count("help") != 0U) {
      std::cout << "Usage: " << usage << "\n\n" << without_positional(options, positional) << "\n";
      return false;
    }
    po::notify(vm);
  } catch (const po::error& e) {
    throw UsageError(std::string(verb) + ": " + e.what() + " (see 'strata " + verb + " --help')");
  }
  return true;
}

}  // namespace strata::cli
