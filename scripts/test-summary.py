#!/usr/bin/env python3
"""Reads meson's testlog.json files and prints one line "N passed, N failed".

Usage: test-summary.py TESTLOG.json... (the unit and integration tests' and,
when they ran, the fuzz targets'; a file missing counts as one failure).

A doctest executable or a pytest file is one meson test but many cases; the
count is of cases, read from each runner's own closing line. A test whose
runner printed no closing line (it crashed or timed out) counts as one failure.
Exits 1 if anything failed.
"""
import json
import re
import sys

DOCTEST = re.compile(r"\[doctest\] test cases:\s*(\d+)\s*\|\s*(\d+) passed\s*\|\s*(\d+) failed\s*\|\s*(\d+) skipped")
PYTEST_COUNT = re.compile(r"(\d+) (passed|failed|error|errors|skipped|xfailed|xpassed)")


def count(entry):
    out = entry.get("stdout") or ""
    ok = entry.get("result") in ("OK", "EXPECTEDFAIL")
    m = DOCTEST.findall(out)
    if m:
        _, passed, failed, skipped = (int(x) for x in m[-1])
        if not ok and failed == 0:
            failed = 1  # it passed its cases but crashed or leaked afterwards
        return passed, failed, skipped
    # pytest -q ends with e.g. "12 passed, 1 failed, 2 skipped in 3.45s"
    lines = [l for l in out.splitlines() if re.search(r"\d+ (passed|failed|error)", l) and " in " in l]
    if lines:
        counts = {k: int(n) for n, k in PYTEST_COUNT.findall(lines[-1])}
        passed = counts.get("passed", 0) + counts.get("xfailed", 0)
        failed = counts.get("failed", 0) + counts.get("error", 0) + counts.get("errors", 0) + counts.get("xpassed", 0)
        skipped = counts.get("skipped", 0)
        if not ok and failed == 0:
            failed = 1
        return passed, failed, skipped
    if entry.get("result") == "SKIP":
        return 0, 0, 1
    return (1, 0, 0) if ok else (0, 1, 0)


def read_log(path):
    """The entries of one testlog.json; empty when it cannot be read."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except OSError as e:
        print(f"test-summary: cannot read {path}: {e.strerror}", file=sys.stderr)
        return []


def main():
    passed = failed = skipped = 0
    entries = []
    for path in sys.argv[1:]:
        found = read_log(path)
        if not found:
            failed += 1  # the run that should have written it did not get that far
        entries += found
    if not sys.argv[1:]:
        failed = 1
    for e in entries:
        p, fl, s = count(e)
        passed += p
        failed += fl
        skipped += s
        if fl:
            print(f"FAILED: {e.get('name')} ({e.get('result')})", file=sys.stderr)
    if skipped:
        print(f"({skipped} skipped)")
    # The last line is exactly "N passed, N failed": CI reads it.
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
