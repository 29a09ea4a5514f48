#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with clang, AddressSanitizer and
# UndefinedBehaviorSanitizer into build-fuzz/ and runs each for SECONDS
# (default 20), two at a time. Each starts from its seed corpus
# (fuzz/corpus/NAME) and the inputs earlier runs found
# (build-fuzz/fuzz/corpus/NAME). Exits non-zero when a target crashes, hangs
# or fails a check; the crashing input is in build-fuzz/fuzz/artifacts/ and
# the command to replay it is printed.
# Usage: scripts/fuzz.sh [SECONDS] [fuzz_NAME...]   (e.g. scripts/fuzz.sh 3600 fuzz_layer)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-20}
[ $# -gt 0 ] && shift
case "$seconds" in
  '' | *[!0-9]*) echo "fuzz.sh: SECONDS must be a number, not '$seconds'" >&2; exit 2 ;;
esac

scripts/install-deps.sh fuzz

build=build-fuzz
# No earlier result may stand in for this run's (test-summary.py reads it).
rm -f "$build/meson-logs/testlog.json"
if [ ! -f "$build/build.ninja" ]; then
  cc=clang cxx=clang++
  if command -v ccache >/dev/null; then cc="ccache clang" cxx="ccache clang++"; fi
  CC="$cc" CXX="$cxx" meson setup "$build" -Dfuzz=true -Dtests=false -Db_sanitize=address,undefined >/dev/null
fi
# Only the targets and the sources they use; -j2: the machine is shared.
if ! ninja -C "$build" -j2 fuzz >/dev/null; then
  ninja -C "$build" -j1 fuzz | tail -40 >&2 || true
  echo "fuzz.sh: the fuzz targets do not build" >&2
  exit 1
fi
STRATA_FUZZ_SECONDS=$seconds meson test -C "$build" --no-rebuild --suite fuzz --num-processes 2 --print-errorlogs "$@"
