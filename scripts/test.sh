#!/usr/bin/env bash
# Builds strata with AddressSanitizer and UndefinedBehaviorSanitizer and runs
# every test (doctest unit tests and the integration tests, which mount real
# FUSE filesystems and so need root or /dev/fuse). Ends with one line
# "N passed, N failed" and exits non-zero if anything failed.
# Without arguments it then runs the fuzz targets for a short time each
# (scripts/fuzz.sh; STRATA_FUZZ_SECONDS, default 20 s a target, 0 skips
# them), each counted as one test.
# Usage: scripts/test.sh [meson test args, e.g. a test name or --suite unit]
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh build test fuzz || { echo "0 passed, 1 failed"; exit 1; }

build=build
# A build that fails is one failed test: the summary line is still printed.
if ! { [ -f "$build/build.ninja" ] || meson setup "$build" -Db_sanitize=address,undefined -Dtests=true >/dev/null; } ||
   ! ninja -C "$build" -j2 >/dev/null; then
  ninja -C "$build" -j1 | tail -40 >&2 || true
  echo "0 passed, 1 failed"
  exit 1
fi

# UBSan findings fail the test instead of only printing; leaks are errors.
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0

status=0
meson test -C "$build" --num-processes 2 --print-errorlogs "$@" || status=$?
logs=("$build/meson-logs/testlog.json")
fuzz_seconds=${STRATA_FUZZ_SECONDS:-20}
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
  # A fuzz build that fails leaves no testlog: test-summary.py counts that as a failure.
  scripts/fuzz.sh "$fuzz_seconds" || status=1
  logs+=(build-fuzz/meson-logs/testlog.json)
fi
/usr/bin/python3 scripts/test-summary.py "${logs[@]}" || status=1
exit "$status"
