// Registry verbs: pull, push, login, logout.
#include <fcntl.h>
#include <termios.h>
#include <unistd.h>

#include <fstream>
#include <iostream>
#include <iterator>

#include "registry_common.hpp"
#include "store_common.hpp"
#include "strata/error.hpp"
#include "strata/fileio.hpp"
#include "strata/fd.hpp"

namespace strata::cli {
namespace {

int pull_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()
      ("quiet,q", po::bool_switch(), "print only the manifest digest")
      ("platform", po::value<std::string>(), "pull the image for OS/ARCH[/VARIANT] (default: this machine's)")
      ("max-concurrent-downloads", po::value<int>()->default_value(3), "layers downloaded at once (1-32)")
      ("reference", po::value<std::string>()->required(), "the image");
  add_transport_options(opts);
  po::positional_options_description pos;
  pos.add("reference", 1);
  po::variables_map vm;
  if (!parse_args("pull", "strata pull [OPTIONS] NAME[:TAG|@DIGEST]\n\n"
                          "Exit status: 0 pulled, 1 the pull failed (nothing tagged), 2 bad usage, 130 interrupted",
                  opts, pos, args, vm))
    return 0;
  bool quiet = vm["quiet"].as<bool>();
  auto store = store::Store::open(g.root.empty() ? store::default_root() : g.root);
  registry::PullOptions o;
  static_cast<registry::TransportOptions&>(o) = transport_options(vm);
  if (vm.count("platform") != 0U) o.platform = registry::Platform::parse(vm["platform"].as<std::string>());
  o.max_concurrent_downloads = vm["max-concurrent-downloads"].as<int>();
  ProgressPrinter printer(std::cout, ::isatty(1) != 0, false);
  if (!quiet) {
    o.progress = std::ref(printer);
    o.message = [](const std::string& m) { std::cout << m << "\n" << std::flush; };
  }
  InterruptGuard guard;
  registry::PullResult r = registry::pull(store, vm["reference"].as<std::string>(), o);
  if (quiet) {
    std::cout << r.digest.str() << "\n";
    return 0;
  }
  std::cout << "Digest: " << r.digest.str() << "\n"
            << "Status: " << (r.downloaded ? "Downloaded newer image for " : "Image is up to date for ")
            << r.reference.familiar() << "\n"
            << r.reference.str() << "\n";
  return 0;
}

int push_verb(const GlobalOptions& g, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()
      ("quiet,q", po::bool_switch(), "print only the pushed manifest's digest")
      ("format", po::value<std::string>(), "manifest format: oci or v2s2 (default: as stored; a change makes a new digest)")
      ("compression", po::value<std::string>(), "recompress layers: gzip (those not gzip) or zstd (all not zstd)")
      ("max-concurrent-uploads", po::value<int>()->default_value(3), "blobs uploaded at once (1-32)")
      ("image", po::value<std::string>()->required(), "the image in the store")
      ("destination", po::value<std::string>(), "where to push (default: IMAGE's name)");
  add_transport_options(opts);
  po::positional_options_description pos;
  pos.add("image", 1).add("destination", 1);
  po::variables_map vm;
  if (!parse_args("push", "strata push [OPTIONS] IMAGE [DESTINATION]\n\n"
                          "Exit status: 0 pushed, 1 the push failed, 2 bad usage, 130 interrupted",
                  opts, pos, args, vm))
    return 0;
  registry::PushOptions o;
  static_cast<registry::TransportOptions&>(o) = transport_options(vm);
  if (vm.count("format") != 0U) {
    std::string f = vm["format"].as<std::string>();
    if (f == "oci")
      o.format = registry::PushFormat::oci;
    else if (f == "v2s2")
      o.format = registry::PushFormat::v2s2;
    else
      throw UsageError("push: --format must be oci or v2s2, not " + quote(f));
  }
  if (vm.count("compression") != 0U) {
    std::string c = vm["compression"].as<std::string>();
    if (c == "gzip")
      o.compression = registry::PushCompression::gzip;
    else if (c == "zstd")
      o.compression = registry::PushCompression::zstd;
    else
      throw UsageError("push: --compression must be gzip or zstd, not " + quote(c));
  }
  o.max_concurrent_uploads = vm["max-concurrent-uploads"].as<int>();
  bool quiet = vm["quiet"].as<bool>();
  ProgressPrinter printer(std::cout, ::isatty(1) != 0, true);
  if (!quiet) {
    o.progress = std::ref(printer);
    o.message = [](const std::string& m) { std::cout << m << "\n" << std::flush; };
  }
  auto store = store::Store::open(g.root.empty() ? store::default_root() : g.root);
  InterruptGuard guard;
  registry::PushResult r = registry::push(store, vm["image"].as<std::string>(),
                                          vm.count("destination") != 0U ? vm["destination"].as<std::string>() : "", o);
  if (quiet)
    std::cout << r.digest.str() << "\n";
  else
    std::cout << r.reference.tag << ": digest: " << r.digest.str() << " size: " << r.size << "\n";
  return 0;
}

// Reads a line from the terminal, without echo when SECRET.
std::string prompt(const std::string& question, bool secret) {
  UniqueFd tty(::open("/dev/tty", O_RDWR | O_CLOEXEC));
  if (!tty) throw UsageError("login: no terminal to ask for the " + question + "; use --username and --password-stdin");
  write_all(tty.get(), question + ": ", "the terminal");
  termios old {};
  bool restore = false;
  if (secret && ::tcgetattr(tty.get(), &old) == 0) {
    termios quiet = old;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    restore = ::tcsetattr(tty.get(), TCSAFLUSH, &quiet) == 0;
  }
  std::string line;
  char c = 0;
  while (::read(tty.get(), &c, 1) == 1 && c != '\n') line += c;
  if (restore) {
    ::tcsetattr(tty.get(), TCSAFLUSH, &old);
    write_all(tty.get(), "\n", "the terminal");
  }
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return line;
}

int login_verb(const GlobalOptions&, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()
      ("username,u", po::value<std::string>(), "user name (asked for on the terminal when not given)")
      ("password,p", po::value<std::string>(), "password (insecure: other users can see it; use --password-stdin)")
      ("password-stdin", po::bool_switch(), "read the password from standard input")
      ("registry", po::value<std::string>()->default_value("docker.io"), "the registry (host[:port])");
  add_transport_options(opts);
  po::positional_options_description pos;
  pos.add("registry", 1);
  po::variables_map vm;
  if (!parse_args("login", "strata login [-u USER] [--password-stdin] [OPTIONS] [REGISTRY]\n\n"
                           "Checks the credentials against REGISTRY and saves them.\n"
                           "Exit status: 0 saved, 1 refused by the registry or unreachable, 2 bad usage",
                  opts, pos, args, vm))
    return 0;
  bool from_stdin = vm["password-stdin"].as<bool>();
  if (from_stdin && vm.count("password") != 0U) throw UsageError("login: --password and --password-stdin exclude each other");
  registry::Credentials c;
  if (vm.count("username") != 0U)
    c.username = vm["username"].as<std::string>();
  else if (from_stdin)
    throw UsageError("login: --password-stdin needs --username");
  else
    c.username = prompt("Username", false);
  if (from_stdin) {
    c.password.assign(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
    while (!c.password.empty() && (c.password.back() == '\n' || c.password.back() == '\r')) c.password.pop_back();
  } else if (vm.count("password") != 0U) {
    std::cerr << "WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n";
    c.password = vm["password"].as<std::string>();
  } else {
    c.password = prompt("Password", true);
  }
  registry::TransportOptions t = transport_options(vm);
  InterruptGuard guard;
  registry::login(vm["registry"].as<std::string>(), c, t);
  std::cout << "Login Succeeded\n";
  return 0;
}

int logout_verb(const GlobalOptions&, const std::vector<std::string>& args) {
  po::options_description opts("Options");
  opts.add_options()("registry", po::value<std::string>()->default_value("docker.io"), "the registry (host[:port])")(
      "authfile", po::value<std::string>(), "the credential file (default: $REGISTRY_AUTH_FILE, else podman's auth.json)");
  po::positional_options_description pos;
  pos.add("registry", 1);
  po::variables_map vm;
  if (!parse_args("logout", "strata logout [--authfile FILE] [REGISTRY]\n\n"
                            "Removes the saved credentials of REGISTRY.\n"
                            "Exit status: 0 removed, 1 none were saved, 2 bad usage",
                  opts, pos, args, vm))
    return 0;
  registry::TransportOptions t;
  if (vm.count("authfile") != 0U) t.authfile = vm["authfile"].as<std::string>();
  std::string key = registry::credential_key(vm["registry"].as<std::string>());
  registry::logout(key, t);
  std::cout << "Removed login credentials for " << key << "\n";
  return 0;
}

const VerbRegistration reg_pull("pull", "pull an image from a registry", pull_verb);
const VerbRegistration reg_push("push", "push an image to a registry", push_verb);
const VerbRegistration reg_login("login", "log in to a registry", login_verb);
const VerbRegistration reg_logout("logout", "log out of a registry", logout_verb);

}  // namespace
}  // namespace strata::cli
