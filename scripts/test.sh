#!/usr/bin/env bash
# Builds strata with AddressSanitizer and UndefinedBehaviorSanitizer and runs
# every test (doctest unit tests and the integration tests, which mount real
# FUSE filesystems and so need root or /dev/fuse). Ends with one line
# "N passed, N failed" and exits non-zero if anything failed.
# Without arguments it then runs clang-tidy (scripts/lint.sh; STRATA_LINT=0
# skips it) and the fuzz targets for a short time each
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
# clang-tidy over src/ and tools/ (scripts/lint.sh, .clang-tidy): one test,
# failed by any finding; STRATA_LINT=0 skips it. Its result (and its last
# line) is written as a meson testlog entry for test-summary.py.
if [ $# -eq 0 ] && [ "${STRATA_LINT:-1}" != 0 ]; then
  lint_log=$build/meson-logs/lint-testlog.json
  rm -f "$lint_log"
  lint_result=OK
  lint_start=$SECONDS
  lint_out=$(scripts/lint.sh "$build" 2>&1) || { lint_result=FAIL; status=1; }
  printf '%s\n' "$lint_out" | tail -200 >&2
  LINT_RESULT=$lint_result LINT_OUT=${lint_out##*$'\n'} LINT_SECONDS=$((SECONDS - lint_start)) /usr/bin/python3 -c '
import json, os, sys
print(json.dumps({"name": "lint", "result": os.environ["LINT_RESULT"], "duration": int(os.environ["LINT_SECONDS"]),
                  "stdout": os.environ["LINT_OUT"]}))' >"$lint_log"
  logs+=("$lint_log")
fi
fuzz_seconds=${STRATA_FUZZ_SECONDS:-20}
if [ $# -eq 0 ] && [ "$fuzz_seconds" != 0 ]; then
  # A fuzz build that fails leaves no testlog: test-summary.py counts that as a failure.
  scripts/fuzz.sh "$fuzz_seconds" || status=1
  logs+=(build-fuzz/meson-logs/testlog.json)
fi
/usr/bin/python3 scripts/test-summary.py "${logs[@]}" || status=1
exit "$status"
