#!/usr/bin/env bash
# Runs clang-tidy with the checks of .clang-tidy over strata's own sources
# (every src/ and tools/ file of the build's compile_commands.json, and the
# include/strata, src and tools/cli headers they include; not tests/, fuzz/
# or bench/), two files at a time. Any finding is an error: prints the
# findings and exits 1; a clean tree ends with "lint: N files, no findings".
# Usage: scripts/lint.sh [BUILD_DIR [FILE...]]   (default build, which must be
# configured; FILEs: only these of its sources, e.g. src/store/images.cpp)
set -euo pipefail
cd "$(dirname "$0")/.."

build=${1:-build}
[ $# -gt 0 ] && shift
jobs=${STRATA_LINT_JOBS:-2}
tidy=${CLANG_TIDY:-clang-tidy}
if [ ! -f "$build/compile_commands.json" ]; then
  echo "lint: no $build/compile_commands.json (configure the build first: meson setup $build)" >&2
  exit 2
fi
command -v "$tidy" >/dev/null || { echo "lint: $tidy not found (scripts/install-deps.sh test)" >&2; exit 2; }

# The sources as the build compiles them (paths relative to this directory).
mapfile -t files < <(/usr/bin/python3 - "$build" "$@" <<'EOF'
import json, os, sys
build, wanted = sys.argv[1], {os.path.normpath(f) for f in sys.argv[2:]}
top = os.getcwd()
seen = set()
for e in json.load(open(os.path.join(build, "compile_commands.json"))):
    path = os.path.relpath(os.path.normpath(os.path.join(e["directory"], e["file"])), top)
    if wanted and path not in wanted:
        continue
    if path.startswith(("src/", "tools/")) and path not in seen:
        seen.add(path)
        print(path)
EOF
)
[ ${#files[@]} -gt 0 ] || { echo "lint: no such src/ or tools/ sources in $build/compile_commands.json" >&2; exit 2; }

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# One clang-tidy a file; its output is kept whole and printed at the end.
# The compile commands are GCC's: clang does not know some of its warning
# options (.clang-tidy's ExtraArgs silence that) and the build asks for colour.
status=0
printf '%s\n' "${files[@]}" | xargs -P "$jobs" -I{} sh -c '
  log="$2/$(printf "%s" "$1" | tr / _).log"
  "$3" -p "$4" --quiet --use-color=false "$1" >"$log" 2>&1 || echo "$1" >>"$2/failed"
' lint {} "$out" "$tidy" "$build" || status=1

if [ -f "$out/failed" ] || [ "$status" -ne 0 ]; then
  for f in "${files[@]}"; do
    log="$out/$(printf '%s' "$f" | tr / _).log"
    # clang-tidy's own progress lines ("N warnings generated.") are noise.
    grep -v -e ' warnings\? generated\.$' -e '^Suppressed ' -e '^Use -header-filter' "$log" 2>/dev/null || true
  done
  n=$(sort -u "$out/failed" 2>/dev/null | wc -l)
  echo "lint: findings in $n of ${#files[@]} files (.clang-tidy; fix them or, for a false positive, NOLINT(check) with a reason)" >&2
  exit 1
fi
echo "lint: ${#files[@]} files, no findings"
