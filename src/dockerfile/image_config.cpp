// The image config as the planner evolves it: ImageConfig's environment
// helpers, its conversion to and from the OCI config JSON (keys strata does
// not model are kept as they were), and native_arch, the architecture an
// image built here is for.
#include <sys/utsname.h>

#include "strata/build.hpp"

namespace strata::build {

std::optional<std::string> ImageConfig::getenv(std::string_view name) const {
  for (const auto& kv : env) {
    auto eq = kv.find('=');
    if (std::string_view(kv).substr(0, eq) == name) return eq == std::string::npos ? std::string() : kv.substr(eq + 1);
  }
  return std::nullopt;
}

void ImageConfig::setenv(const std::string& name, const std::string& value) {
  for (auto& kv : env) {
    if (std::string_view(kv).substr(0, kv.find('=')) == name) {
      kv = name + "=" + value;
      return;
    }
  }
  env.push_back(name + "=" + value);
}

nlohmann::json config_to_json(const ImageConfig& c) {
  nlohmann::json j = c.extra.is_object() ? c.extra : nlohmann::json::object();
  auto set_or_erase = [&j](const char* key, bool present, nlohmann::json value) {
    if (present) {
      j[key] = std::move(value);
    } else {
      j.erase(key);
    }
  };
  set_or_erase("Env", !c.env.empty(), c.env);
  set_or_erase("Cmd", c.cmd.has_value(), c.cmd ? nlohmann::json(*c.cmd) : nlohmann::json());
  set_or_erase("Entrypoint", c.entrypoint.has_value(), c.entrypoint ? nlohmann::json(*c.entrypoint) : nlohmann::json());
  set_or_erase("WorkingDir", !c.working_dir.empty(), c.working_dir);
  set_or_erase("User", !c.user.empty(), c.user);
  nlohmann::json ports = nlohmann::json::object();
  for (const auto& p : c.exposed_ports) ports[p] = nlohmann::json::object();
  set_or_erase("ExposedPorts", !c.exposed_ports.empty(), ports);
  set_or_erase("Labels", !c.labels.empty(), c.labels);
  nlohmann::json volumes = nlohmann::json::object();
  for (const auto& v : c.volumes) volumes[v] = nlohmann::json::object();
  set_or_erase("Volumes", !c.volumes.empty(), volumes);
  set_or_erase("StopSignal", !c.stop_signal.empty(), c.stop_signal);
  if (c.healthcheck) {
    nlohmann::json h;
    h["Test"] = c.healthcheck->test;
    if (c.healthcheck->interval != 0) h["Interval"] = c.healthcheck->interval;
    if (c.healthcheck->timeout != 0) h["Timeout"] = c.healthcheck->timeout;
    if (c.healthcheck->start_period != 0) h["StartPeriod"] = c.healthcheck->start_period;
    if (c.healthcheck->start_interval != 0) h["StartInterval"] = c.healthcheck->start_interval;
    if (c.healthcheck->retries != 0) h["Retries"] = c.healthcheck->retries;
    j["Healthcheck"] = h;
  } else {
    j.erase("Healthcheck");
  }
  set_or_erase("Shell", !c.shell.empty(), c.shell);
  set_or_erase("OnBuild", !c.on_build.empty(), c.on_build);
  return j;
}

ImageConfig config_from_json(const nlohmann::json& j) {
  ImageConfig c;
  if (!j.is_object()) return c;
  c.extra = j;
  auto strings = [&j](const char* key) {
    std::vector<std::string> out;
    if (j.contains(key) && j[key].is_array()) {
      for (const auto& s : j[key]) {
        if (s.is_string()) out.push_back(s.get<std::string>());
      }
    }
    return out;
  };
  auto string = [&j](const char* key) {
    return j.contains(key) && j[key].is_string() ? j[key].get<std::string>() : std::string();
  };
  auto keys = [&j](const char* key) {
    std::set<std::string> out;
    if (j.contains(key) && j[key].is_object()) {
      for (const auto& item : j[key].items()) out.insert(item.key());
    }
    return out;
  };
  c.env = strings("Env");
  if (j.contains("Cmd") && j["Cmd"].is_array()) c.cmd = strings("Cmd");
  if (j.contains("Entrypoint") && j["Entrypoint"].is_array()) c.entrypoint = strings("Entrypoint");
  c.working_dir = string("WorkingDir");
  c.user = string("User");
  c.exposed_ports = keys("ExposedPorts");
  c.volumes = keys("Volumes");
  if (j.contains("Labels") && j["Labels"].is_object()) {
    for (const auto& item : j["Labels"].items()) {
      if (item.value().is_string()) c.labels[item.key()] = item.value().get<std::string>();
    }
  }
  c.stop_signal = string("StopSignal");
  if (j.contains("Healthcheck") && j["Healthcheck"].is_object()) {
    const auto& h = j["Healthcheck"];
    HealthConfig hc;
    if (h.contains("Test") && h["Test"].is_array()) {
      for (const auto& s : h["Test"]) {
        if (s.is_string()) hc.test.push_back(s.get<std::string>());
      }
    }
    auto num = [&h](const char* key) -> std::int64_t {
      return h.contains(key) && h[key].is_number_integer() ? h[key].get<std::int64_t>() : 0;
    };
    hc.interval = num("Interval");
    hc.timeout = num("Timeout");
    hc.start_period = num("StartPeriod");
    hc.start_interval = num("StartInterval");
    hc.retries = static_cast<int>(num("Retries"));
    c.healthcheck = hc;
  }
  c.shell = strings("Shell");
  c.on_build = strings("OnBuild");
  return c;
}

std::string native_arch() {
  struct utsname u {};
  ::uname(&u);
  std::string m = u.machine;
  if (m == "x86_64") return "amd64";
  if (m == "aarch64" || m == "arm64") return "arm64";
  if (m.rfind("armv7", 0) == 0 || m.rfind("armv6", 0) == 0) return "arm";
  if (m == "i686" || m == "i386") return "386";
  if (m == "ppc64le") return "ppc64le";
  if (m == "s390x") return "s390x";
  if (m == "riscv64") return "riscv64";
  return m;
}

}  // namespace strata::build
