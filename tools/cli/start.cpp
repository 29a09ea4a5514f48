// strata start: run an existing container again (docker start).
#include <iostream>

#include "cli.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/lifecycle.hpp"
#include "strata/sandbox.hpp"
#include "strata/store.hpp"

namespace strata::cli {

namespace {

constexpr const char* kUsage =
    "strata start [-a] [-i] [-t] CONTAINER\n\n"
    "Runs the container again, on the changes it already has, with the command and\n"
    "settings it was created with: in the background under a monitor (printing its\n"
    "name), or with -a attached to the terminal.\n"
    "Exit status: 0 when it runs in the background; with -a as strata run";

int start_verb(const GlobalOptions& global, const std::vector<std::string>& args) {
  po::options_description options("Options");
  options.add_options()
      ("attach,a", po::bool_switch(), "run attached: its output here, and its exit status as strata's")
      ("interactive,i", po::bool_switch(), "pass stdin to the command (with -a)")
      ("tty,t", po::bool_switch(), "give the command a pseudo-terminal")
      ("container", po::value<std::string>()->required(), "container name or id");
  po::positional_options_description positional;
  positional.add("container", 1);
  po::variables_map vm;
  if (!parse_args("start", kUsage, options, positional, args, vm)) return 0;
  sandbox::ContainerRunOptions o;
  o.interactive = vm["interactive"].as<bool>();
  o.tty = vm["tty"].as<bool>();
  o.fill_volume = fill_new_volume;
  std::string root = global.root.empty() ? store::default_root() : global.root;
  std::string name = vm["container"].as<std::string>();
  if (vm["attach"].as<bool>() || o.interactive) return sandbox::start_container(root, name, o);
  auto store = store::Store::open(root);
  store::Container c = store.container(name);
  lifecycle::start_detached(root, c, sandbox::start_options(c, o), lifecycle::load_log_options(c), false);
  std::cout << name << std::endl;
  return 0;
}

int start_main(const GlobalOptions& global, const std::vector<std::string>& args) {
  try {
    return start_verb(global, args);
  } catch (const store::ContainerRunning&) {
    throw;  // refused like commit, rm and mount refuse it: exit 1
  } catch (const Error& e) {
    if (e.code() == ExitCode::failure || e.code() == ExitCode::usage) throw Error(e.what(), ExitCode::run_failed);
    throw;
  }
}

const VerbRegistration kStart("start", "run an existing container again", start_main);

}  // namespace

}  // namespace strata::cli
