// The Dockerfile parser: any text parses or is refused with DockerfileError
// (an Error); the same for one instruction alone, as `commit -c` and ONBUILD
// triggers give it, for HEALTHCHECK's Go durations and for RUN --mount specs.
#include "fuzz_input.hpp"
#include "strata/build.hpp"
#include "strata/dockerfile.hpp"

using namespace strata;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text = fuzz::as_text(data, size);
  fuzz::refusal_is_fine([&] {
    build::Dockerfile df = build::parse_dockerfile(text, "Dockerfile");
    for (const build::Instruction& ins : df.instructions) {
      fuzz::check(ins.pos.line >= 1 && ins.last_line >= ins.pos.line, "instruction lines out of order");
      // What the build records in an image's OnBuild must parse again.
      if (ins.trigger) fuzz::refusal_is_fine([&] { build::parse_instruction(ins.trigger_text, "ONBUILD"); });
      for (const std::string& spec : ins.flag_values("mount")) {
        fuzz::refusal_is_fine([&] {
          build::RunMount m = build::parse_run_mount(spec, "/");
          fuzz::check(m.target.empty() || (m.target[0] == '/' && m.target.find("/../") == std::string::npos),
                      "a mount target is not clean");
        });
      }
    }
  });
  fuzz::refusal_is_fine([&] { build::parse_instruction(text, "commit -c"); });
  fuzz::refusal_is_fine([&] { build::parse_heredoc_marker(text); });
  fuzz::refusal_is_fine([&] { build::parse_run_mount(text, "/w"); });
  if (std::optional<std::int64_t> ns = build::parse_go_duration(text)) {
    std::optional<std::int64_t> again = build::parse_go_duration(build::format_go_duration(*ns));
    fuzz::check(again == ns, "format_go_duration does not round-trip");
  }
  return 0;
}
