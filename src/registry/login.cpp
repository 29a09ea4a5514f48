// src/registry/login: checking credentials against a registry and keeping
// them where podman and docker look for them.
#include "client.hpp"
#include "strata/registry.hpp"

namespace strata::registry {

std::string login(std::string_view registry, const Credentials& credentials, const TransportOptions& options) {
  std::string key = credential_key(registry);
  if (credentials.username.empty()) throw UsageError("login: the user name is empty");
  if (credentials.password.empty()) throw UsageError("login: the password is empty");
  if (credentials.username.find(':') != std::string::npos)
    throw UsageError("login: a user name may not contain ':'");
  RegistriesConf conf = RegistriesConf::load();
  Client client(Endpoint::for_domain(key, conf, options), credentials, options.cancelled);
  try {
    client.check_login();
  } catch (const StatusError& e) {
    if (e.status() == 401 || e.status() == 403)
      throw Error("login to " + key + " failed: unauthorized: the registry refused the user name or password");
    throw Error("login to " + key + " failed: " + e.what());
  } catch (const http::TransportError& e) {
    throw Error("login to " + key + " failed: " + e.what());
  }
  AuthFiles files = AuthFiles::standard(options.authfile);
  save_credentials(files.write, key, credentials);
  return files.write;
}

std::string logout(std::string_view registry, const TransportOptions& options) {
  std::string key = credential_key(registry);
  AuthFiles files = AuthFiles::standard(options.authfile);
  if (!remove_credentials(files.write, key)) {
    for (const auto& f : files.read)
      if (f != files.write && find_credentials(AuthFiles{{f}, f}, key))
        throw Error("not logged in to " + key + " in " + quote(files.write) + "; its credentials are in " + quote(f) +
                    ", remove them there");
    throw Error("not logged in to " + key);
  }
  return files.write;
}

}  // namespace strata::registry
