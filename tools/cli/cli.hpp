// The strata command line: a verb table filled by the files in tools/cli/,
// each of which registers its verbs with a static VerbRegistration. Verb code
// parses options (Boost.Program_options) and calls into libstrata; it holds
// no logic of its own beyond turning arguments into calls and results into
// output.
#pragma once

#include <boost/program_options.hpp>
#include <string>
#include <vector>

namespace strata::cli {

namespace po = boost::program_options;

// Options given before the verb: `strata [--root DIR] VERB ...`.
struct GlobalOptions {
  std::string root;  // empty: the default store root (see store module)
  bool debug = false;
};

using VerbFn = int (*)(const GlobalOptions& global, const std::vector<std::string>& args);

struct Verb {
  const char* name;
  const char* summary;  // one line for `strata --help`
  VerbFn run;
};

void register_verb(const Verb& verb);
const std::vector<Verb>& verbs();

struct VerbRegistration {
  VerbRegistration(const char* name, const char* summary, VerbFn run) { register_verb({name, summary, run}); }
};

// Parses ARGS for VERB. USAGE is the synopsis line ("strata tag SOURCE TARGET").
// Adds --help to OPTIONS. Returns false when --help was given (the help has
// been printed, without the options that POSITIONAL binds, and the verb
// should return 0). Throws UsageError on bad input,
// naming the verb.
bool parse_args(const char* verb, const char* usage, po::options_description& options,
                const po::positional_options_description& positional, const std::vector<std::string>& args,
                po::variables_map& vm);

}  // namespace strata::cli
