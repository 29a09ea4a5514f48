// `commit -c` and `import -c`: Dockerfile instructions applied to an image
// config by the parser and planner a build uses, so that a change means what
// the same line means in a Dockerfile (`ENV PATH=$PATH:/x` expands against
// the image's own environment, `EXPOSE 80` becomes "80/tcp", ...).
#include <algorithm>
#include <array>

#include "strata/build.hpp"
#include "strata/error.hpp"

namespace strata::build {

namespace {

// The instructions docker accepts in --change, and STOPSIGNAL and
// HEALTHCHECK, which only change the config too.
constexpr std::array<std::string_view, 12> kConfigInstructions = {
    "CMD", "ENTRYPOINT", "ENV", "EXPOSE", "HEALTHCHECK", "LABEL", "ONBUILD", "SHELL", "STOPSIGNAL", "USER",
    "VOLUME", "WORKDIR"};

// A name no reference resolves to by accident; the resolver below answers it.
constexpr std::string_view kBaseName = "strata-change-base";

}  // namespace

nlohmann::json apply_config_changes(const nlohmann::json& image_config, const std::vector<std::string>& changes) {
  nlohmann::json out = image_config;
  if (changes.empty()) return out;
  std::string text = "FROM " + std::string(kBaseName) + "\n";
  for (const auto& change : changes) {
    auto bad = [&](const std::string& why) { return UsageError("invalid change " + quote(change) + ": " + why); };
    if (change.find_first_of("\n\r") != std::string::npos) throw bad("a change is one line");
    Instruction ins;
    try {
      ins = parse_instruction(change, "--change");
    } catch (const Error& e) {
      throw bad(e.what());
    }
    if (std::find(kConfigInstructions.begin(), kConfigInstructions.end(), ins.keyword) == kConfigInstructions.end())
      throw bad(ins.keyword + " cannot be applied to a config (use one of CMD ENTRYPOINT ENV EXPOSE HEALTHCHECK "
                              "LABEL ONBUILD SHELL STOPSIGNAL USER VOLUME WORKDIR)");
    text += change + "\n";
  }
  nlohmann::json config_object =
      image_config.contains("config") && image_config["config"].is_object() ? image_config["config"] : nlohmann::json::object();
  PlanOptions options;
  options.resolve = [&](const std::string& ref) -> std::optional<BaseImage> {
    if (ref != kBaseName) return std::nullopt;
    BaseImage base;
    base.id = "sha256:" + std::string(64, '0');
    base.config = config_from_json(config_object);
    return base;
  };
  Plan plan;
  try {
    plan = plan_build(parse_dockerfile(text, "--change"), options);
  } catch (const DockerfileError& e) {
    // Line N of the synthetic Dockerfile is change N-1.
    std::size_t index = e.position().line >= 2 ? static_cast<std::size_t>(e.position().line - 2) : 0;
    throw UsageError("invalid change " + quote(changes[std::min(index, changes.size() - 1)]) + ": " + e.reason());
  }
  out["config"] = config_to_json(plan.stages.at(static_cast<std::size_t>(plan.target)).config);
  return out;
}

}  // namespace strata::build
