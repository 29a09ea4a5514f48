"""The harness itself: the tools are built and answer --help and --version as documented."""
from conftest import run, tool


def test_strata_help_lists_usage():
    r = run([tool("strata"), "--help"])
    assert r.stdout.startswith("Usage: strata")


def test_strata_version():
    r = run([tool("strata"), "--version"])
    assert r.stdout.strip().startswith("strata ")


def test_strata_unknown_verb_is_a_usage_error():
    r = run([tool("strata"), "frobnicate"], check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "strata: unknown command 'frobnicate' (see 'strata --help')"
    assert r.stdout == ""
