#!/usr/bin/env bash
# Runs one libFuzzer target for $STRATA_FUZZ_SECONDS (default 20) under
# ASan/UBSan: first every input of its seed corpus (the regression inputs
# among them), then new inputs. New interesting inputs go to a work corpus
# in the build directory, which later runs start from; a crashing input is
# saved as BUILD/artifacts/NAME-crash-* and the command to replay it printed.
# Usage: run-target.sh EXE NAME SEED_CORPUS_DIR BUILD_FUZZ_DIR [DICTIONARY]
set -uo pipefail
exe=$1 name=$2 seeds=$3 out=$4 dict_name=${5:-none}
seconds=${STRATA_FUZZ_SECONDS:-20}
work=$out/corpus/$name
mkdir -p "$work" "$out/artifacts"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
# -timeout: one input taking longer is a finding (a hang);
# -rss_limit_mb: so is one that needs more memory than this.
options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
  -artifact_prefix="$out/artifacts/$name-")
# The tokens of the input's language, so that mutations make more of it.
dict=$(dirname "$0")/$dict_name
[ -f "$dict" ] && options+=(-dict="$dict")
"$exe" "${options[@]}" "$work" "$seeds" 2>"$out/$name.log"
status=$?
if [ "$status" -ne 0 ]; then
  # The sanitizer's or libFuzzer's report, and the input that caused it.
  sed -n '/ERROR: \|runtime error:\|deadly signal\|uncaught exception\|out-of-memory\|timeout after/,$p' "$out/$name.log" |
    grep -v '^"' | head -n 80
  echo "fuzz_$name: FAILED (exit $status); full log: $out/$name.log"
  input=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$out/$name.log" | tail -n 1)
  [ -n "$input" ] && echo "replay: $exe $input"
  exit 1
fi
grep -E '^Done |^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "$out/$name.log"
echo "fuzz_$name: no finding in ${seconds}s"
