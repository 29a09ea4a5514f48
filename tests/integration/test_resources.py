"""Resource limits (--memory, --memory-swap, --cpus, --pids-limit): the container's cgroup v2.

The limits need a cgroup v2 hierarchy with the memory, cpu and pids controllers where strata can
make a cgroup (see strata-run(1)); the tests of the limits themselves are skipped on hosts without
them (a hybrid cgroup v1 host), where the warning test checks that strata says so and runs anyway."""
import json
import os
import signal
import subprocess

import pytest

from conftest import tool
from test_lifecycle import eventually
from test_network import store  # noqa: F401  (the fixture: a store that ends with no process or mount)


def cgroup2_mount():
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.exists(os.path.join(path, "cgroup.controllers")):
            return path
    return None


def own_cgroup():
    with open("/proc/self/cgroup") as f:
        for line in f:
            if line.startswith("0::"):
                return line[3:].strip()
    return None


def limits_supported():
    """Whether strata (run by root from this process's cgroup) can put limits on a container here."""
    mount, own = cgroup2_mount(), own_cgroup()
    if mount is None or own is None:
        return False
    parent = mount if own == "/" else mount + os.path.dirname(own).rstrip("/")
    try:
        with open(os.path.join(parent, "cgroup.controllers")) as f:
            available = f.read().split()
    except OSError:
        return False
    return all(c in available for c in ("memory", "cpu", "pids"))


needs_cgroups = pytest.mark.skipif(not limits_supported() or os.geteuid() != 0,
                                   reason="no cgroup v2 memory, cpu and pids controllers for a root-made cgroup here")


def cgroup_dir(container_id):
    """The host path of the container's cgroup, found by its name ("strata-" + id) below the hierarchy."""
    mount = cgroup2_mount()
    for dirpath, dirnames, _ in os.walk(mount):
        if f"strata-{container_id}" in dirnames:
            return os.path.join(dirpath, f"strata-{container_id}")
    return None


def read(path):
    with open(path) as f:
        return f.read().strip()


def container_id(store, name):
    return json.loads(store("inspect", name).stdout)[0]["Id"]


def test_bad_values_are_one_line_errors_with_125(store):
    for opts, word in ((["--memory", "1x"], "--memory"), (["--memory", ""], "--memory"), (["-m", "-5m"], "--memory"),
                       (["--memory", "1k"], "--memory"), (["--memory-swap", "64m"], "--memory-swap"),
                       (["--memory", "64m", "--memory-swap", "32m"], "--memory-swap"),
                       (["--memory-swap", "lots", "--memory", "64m"], "--memory-swap"),
                       (["--cpus", "-1"], "--cpus"), (["--cpus", "abc"], "--cpus"), (["--cpus", "0"], "--cpus"),
                       (["--cpus", "100000"], "--cpus"), (["--pids-limit", "abc"], "--pids-limit"),
                       (["--pids-limit", "-2"], "--pids-limit"), (["--pids-limit", "1.5"], "--pids-limit")):
        r = store("run", "--rm", *opts, "base:1", "true")
        assert r.returncode == 125, (opts, r.stderr)
        assert r.stderr.count("\n") == 1 and word in r.stderr, (opts, r.stderr)
        # `create` refuses them as bad usage, and makes nothing.
        r = store("create", *opts, "base:1", "true")
        assert r.returncode == 2 and word in r.stderr, (opts, r.stderr)
    assert store("ps", "-a", "-q").stdout == ""


def test_limits_are_kept_by_create_and_shown_by_inspect(store):
    r = store("create", "--name", "lim", "--memory", "32m", "--memory-swap", "-1", "--cpus", "0.5",
              "--pids-limit", "10", "base:1", "true")
    assert r.returncode == 0, r.stderr
    host = json.loads(store("inspect", "lim").stdout)[0]["HostConfig"]
    assert (host["Memory"], host["MemorySwap"], host["NanoCpus"], host["PidsLimit"]) == (32 << 20, -1, 500000000, 10)
    r = store("create", "--name", "free", "--pids-limit", "-1", "base:1", "true")
    host = json.loads(store("inspect", "free").stdout)[0]["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (0, 0, None)


def test_without_controllers_or_delegation_strata_warns_and_runs(store):
    """Where strata cannot make the cgroup, one warning line names what is missing and the container runs."""
    r = store("run", "--rm", "--memory", "32m", "--pids-limit", "10", "base:1", "echo", "ran")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    warnings = [line for line in r.stderr.splitlines() if "cgroup" in line]
    if limits_supported() and os.geteuid() == 0:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].startswith("strata: warning: "), r.stderr
        assert "--memory" in warnings[0] and "--pids-limit" in warnings[0]


def test_unprivileged_user_without_delegation_gets_the_warning(user, user_rootfs):
    r = user.strata("--pids-limit", "10", "--memory", "64m", "--rootfs", user_rootfs, "echo", "ran")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "ran\n"
    warnings = [line for line in r.stderr.splitlines() if "cgroup" in line]
    assert len(warnings) == 1 and "--pids-limit" in warnings[0], r.stderr


@needs_cgroups
def test_limits_are_written_to_the_containers_own_cgroup(store):
    r = store("run", "-d", "--name", "lim", "--memory", "32m", "--cpus", "0.5", "--pids-limit", "10",
              "base:1", "sleep", "300")
    assert r.returncode == 0, r.stderr
    path = cgroup_dir(container_id(store, "lim"))
    assert path is not None
    assert read(path + "/memory.max") == str(32 << 20)
    assert read(path + "/cpu.max") == "50000 100000"
    assert read(path + "/pids.max") == "10"
    # pid 1 and what `exec` starts are in it; the container sees its cgroup as its root.
    pid = json.loads(store("inspect", "lim").stdout)[0]["State"]["Pid"]
    with open(f"/proc/{pid}/cgroup") as f:
        assert f.read().strip().endswith("/" + os.path.basename(path))
    r = store("exec", "lim", "cat", "/proc/self/cgroup")
    assert r.returncode == 0 and r.stdout.strip() == "0::/", r.stdout
    assert store("stop", "-t", "1", "lim").returncode == 0
    eventually(lambda: not os.path.exists(path), "the cgroup is removed when the container ends")


@needs_cgroups
def test_pids_limit_stops_a_fork_loop(store):
    script = ("i=0; while [ $i -lt 40 ]; do sleep 30 2>/dev/null & i=$((i+1)); done 2>/dev/null; "
              "ls -d /proc/[0-9]* | wc -l")
    r = store("run", "--rm", "--pids-limit", "10", "base:1", "sh", "-c", script, timeout=120)
    counted = [int(w) for w in r.stdout.split() if w.isdigit()]
    # ls, wc and the shell's fork for the pipeline count too: at most 10 processes existed at once.
    assert counted == [] or counted[-1] <= 10, (r.stdout, r.stderr)
    assert "fork" in r.stderr or r.returncode != 0 or counted[-1] <= 10


@needs_cgroups
def test_memory_limit_oom_kills_with_137(store):
    r = store("run", "--rm", "--memory", "32m", "base:1", "sh", "-c",
              "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo survived", timeout=120)
    assert r.returncode == 137, (r.returncode, r.stdout, r.stderr)
    assert "survived" not in r.stdout


@needs_cgroups
def test_cgroup_of_a_killed_run_is_removed_by_rm(store):
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "--name", "victim", "--pids-limit", "10",
                          "base:1", "sleep", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually(lambda: store("inspect", "victim").returncode == 0 and cgroup_dir(container_id(store, "victim")),
                   "the container runs in its cgroup")
        path = cgroup_dir(container_id(store, "victim"))
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=20)
        eventually(lambda: read(path + "/cgroup.procs") == "", "the container's processes ended")
        assert store("rm", "victim").returncode == 0
        assert not os.path.exists(path)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
