"""Detached containers: run -d, logs, exec, stop, kill, wait, start, restart, rm -f, --init, exit codes."""
import glob
import json
import os
import pty
import re
import select
import signal
import subprocess
import time

import pytest

from conftest import base_store, remove_all_containers, tool

LOOP = "i=0; while :; do echo tick $i; echo tock $i >&2; echo $i > /count; i=$((i+1)); sleep 0.1; done"


def host_mounts_under(path):
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path)]


def processes_of(root):
    """Host processes whose command line names the store (monitors, supervisors, stratafs)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if root.encode() in f.read():
                    found.append(int(pid))
        except OSError:
            pass
    return found


def eventually(check, what, timeout=30):
    """Polls CHECK until it returns a true value (no timed assertion: the limit only ends a hung test)."""
    end = time.time() + timeout
    while time.time() < end:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


@pytest.fixture
def store(workdir, base_tar):
    """A store with base:1; every container is removed (rm -f) and nothing may stay running or mounted."""
    s = base_store(workdir, base_tar)
    root = s.root
    try:
        yield s
    finally:
        remove_all_containers(s)
        eventually(lambda: processes_of(root) == [], "every process of the store ended")
        assert host_mounts_under(root) == []


def ps(store):
    r = store("ps", "-a", "--format", "json")
    assert r.returncode == 0, r.stderr
    return {c["Names"]: c for c in json.loads(r.stdout)}


def status(store, name):
    c = ps(store).get(name)
    return c["Status"] if c else None


def inspect(store, name):
    r = store("inspect", "--type", "container", name)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)[0]


def test_detached_loop_is_logged_execd_stopped_and_removed(store):
    r = store("run", "-d", "--name", "web", "base:1", "sh", "-c", LOOP)
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert status(store, "web").startswith("Up ")
    # stdout and stderr are kept apart in the log.
    eventually(lambda: "tick 3" in store("logs", "web").stdout, "the loop's output is logged")
    r = store("logs", "web")
    assert r.stdout.startswith("tick 0\ntick 1\n") and r.stderr.startswith("tock 0\ntock 1\n")
    r = store("logs", "--tail", "1", "-t", "web")
    lines = (r.stdout + r.stderr).splitlines()
    assert len(lines) == 1 and re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z to?ck \d+$", lines[0]), lines
    # exec: the container's root, pid namespace, host name and user database.
    r = store("exec", "web", "sh", "-c", "cat /count; tr '\\0' ' ' < /proc/1/cmdline; echo; hostname; echo $$")
    assert r.returncode == 0, r.stderr
    count, cmdline, hostname, pid = r.stdout.splitlines()
    assert int(count) >= 0 and cmdline.startswith("sh -c i=0;")
    assert hostname == cid[:12]
    assert pid != "1"
    r = store("exec", "-u", "nobody", "-w", "/tmp", "-e", "GREETING=hi", "web", "sh", "-c", "id -un; pwd; echo $GREETING")
    assert r.stdout.split() == ["nobody", "/tmp", "hi"], r.stderr
    assert store("exec", "web", "sh", "-c", "exit 7").returncode == 7
    # stop: SIGTERM, which the shell (pid 1, no handler) ends of; wait reports it.
    r = store("stop", "web")
    assert (r.returncode, r.stdout) == (0, "web\n"), r.stderr
    assert store("wait", "web").stdout == "143\n"
    assert status(store, "web").startswith("Exited (143) ")
    state = inspect(store, "web")["State"]
    assert state["Status"] == "exited" and not state["Running"] and state["ExitCode"] == 143 and state["Pid"] == 0
    assert "tick 3" in store("logs", "web").stdout  # the log outlives the run
    assert processes_of(store.root) == []
    r = store("rm", "web")
    assert r.returncode == 0, r.stderr
    assert ps(store) == {}


def test_inspect_shows_state_config_and_layer_paths(store):
    r = store("run", "-d", "--name", "insp", "-e", "A=1", "-w", "/tmp", "base:1", "sleep", "60")
    assert r.returncode == 0, r.stderr
    j = inspect(store, "insp")
    assert j["State"]["Status"] == "running" and j["State"]["Running"] and j["State"]["Pid"] > 0
    assert j["State"]["StartedAt"].endswith("Z") and j["State"]["FinishedAt"] == "0001-01-01T00:00:00Z"
    with open(f"/proc/{j['State']['Pid']}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    assert j["Config"]["Cmd"] == ["sleep", "60"] and "A=1" in j["Config"]["Env"] and j["Config"]["WorkingDir"] == "/tmp"
    data = j["GraphDriver"]["Data"]
    for key in ("UpperDir", "WorkDir", "MergedDir"):
        assert data[key].startswith(store.root + "/containers/"), key
    assert all(os.path.isdir(d) for d in data["LowerDir"].split(":"))
    assert store("kill", "insp").stdout == "insp\n"
    assert store("wait", "insp").stdout == "137\n"


def test_stop_kill_start_restart_and_their_mistakes(store):
    assert store("run", "-d", "--name", "c1", "base:1", "sh", "-c", LOOP).returncode == 0
    r = store("kill", "-s", "NOPE", "c1")
    assert r.returncode == 2 and r.stderr.strip() == "strata: invalid signal 'NOPE' (a name such as TERM or KILL, or a number)"
    assert status(store, "c1").startswith("Up ")
    # A running container refuses a second start and a plain rm.
    r = store("start", "c1")
    assert (r.returncode, r.stderr.strip()) == (1, "strata: container 'c1' is running; stop it first")
    assert store("rm", "c1").returncode == 1
    assert store("kill", "-s", "SIGUSR1", "c1").returncode == 0
    assert store("wait", "c1").stdout == f"{128 + signal.SIGUSR1}\n"
    # Stop and kill of a container that has ended.
    r = store("stop", "c1")
    assert (r.returncode, r.stdout) == (0, "c1\n")
    r = store("kill", "c1")
    assert (r.returncode, r.stderr.strip()) == (1, "strata: container 'c1' is not running")
    # start runs the same command again, detached, on the same upper.
    r = store("start", "c1")
    assert (r.returncode, r.stdout) == (0, "c1\n"), r.stderr
    assert status(store, "c1").startswith("Up ")
    r = store("restart", "-t", "5", "c1")
    assert (r.returncode, r.stdout) == (0, "c1\n"), r.stderr
    assert status(store, "c1").startswith("Up ")
    # rm -f of a running container kills and removes it.
    r = store("rm", "-f", "c1")
    assert r.returncode == 0, r.stderr
    assert ps(store) == {}


def test_create_keeps_run_options_for_start(store):
    r = store("create", "--name", "made", "-e", "MODE=batch", "-w", "/work", "-u", "1:1", "--cap-drop", "ALL",
              "--network", "none", "--hostname", "box", "base:1",
              "sh", "-c", "echo $MODE $(pwd) $(id -u):$(id -g) $(hostname); grep CapEff /proc/self/status; sed -n 's/^ *\\([a-z0-9]*\\):.*/\\1/p' /proc/net/dev")
    assert r.returncode == 0, r.stderr
    cid = r.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    assert status(store, "made") == "Created"
    j = inspect(store, "made")
    assert j["Config"]["Cmd"][0] == "sh" and "MODE=batch" in j["Config"]["Env"] and j["Config"]["WorkingDir"] == "/work"
    r = store("start", "-a", "made")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "batch /work 1:1 box"
    assert lines[1].split() == ["CapEff:", "0000000000000000"]
    assert lines[2:] == ["lo"]
    # A second start runs the same saved command again.
    r = store("start", "-a", "made")
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "batch /work 1:1 box", r.stderr


@pytest.mark.parametrize("args, message", [
    (["--cap-add", "NOPE", "base:1"], "create: unknown capability"),
    (["--network", "moon", "base:1"], "create: unknown network 'moon'"),
    (["-v", "rel/ative:/x", "base:1"], "create: volume source 'rel/ative' is neither an absolute host path nor a volume name"),
    (["--security-opt", "apparmor=x", "base:1"], "create: unsupported security option"),
    (["-d", "base:1"], "unrecognised option '-d'"),
    (["--rm", "base:1"], "unrecognised option '--rm'"),
    ([], "create: an IMAGE is required"),
])
def test_create_refuses_bad_options_and_leaves_nothing(store, args, message):
    r = store("create", "--name", "bad", *args)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "bad" not in ps(store)
    r = store("create", "--name", "bad", "--pull=never", "no-such-image:1")
    assert r.returncode == 1 and "bad" not in ps(store)


def test_two_starts_race_and_one_wins(store):
    assert store("create", "--name", "race", "base:1").returncode == 0
    assert store("commit", "-c", 'CMD ["sleep", "60"]', "race", "sleeper:1").returncode == 0
    assert store("create", "--name", "race2", "sleeper:1").returncode == 0
    procs = [subprocess.Popen([tool("strata"), "--root", store.root, "start", "race2"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = sorted((p.wait(timeout=60), p.stderr.read().strip()) for p in procs)
    assert results[0] == (0, "")
    assert results[1] in ((0, ""), (1, "strata: container 'race2' is running; stop it first"))
    assert status(store, "race2").startswith("Up ")
    assert len([p for p in processes_of(store.root) if open(f"/proc/{p}/cmdline").read().startswith(tool("strata"))]) >= 1


def test_a_killed_monitor_is_reported_and_rm_f_cleans_up(store):
    assert store("run", "-d", "--name", "orphan", "base:1", "sh", "-c", LOOP).returncode == 0
    with open(glob.glob(os.path.join(store.root, "containers", "*", "state.json"))[0]) as f:
        monitor = json.load(f)["MonitorPid"]
    os.kill(monitor, signal.SIGKILL)
    # Its supervisor, pid 1 and stratafs go with it; ps does not claim it runs.
    eventually(lambda: processes_of(store.root) == [], "the container's processes ended with its monitor")
    assert status(store, "orphan").startswith("Exited (255) ")
    assert "ended without recording its exit" in inspect(store, "orphan")["State"]["Error"]
    assert store("rm", "-f", "orphan").returncode == 0
    assert ps(store) == {}


def test_rm_option_removes_a_detached_container_when_it_ends(store):
    r = store("run", "-d", "--rm", "--name", "gone", "base:1", "sh", "-c", "echo bye")
    assert r.returncode == 0, r.stderr
    eventually(lambda: "gone" not in ps(store), "the container removed itself")


def test_log_is_bounded_and_rotated(store):
    r = store("run", "-d", "--name", "chatty", "--log-opt", "max-size=4k", "--log-opt", "max-file=2", "base:1", "sh", "-c",
              "i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done")
    assert r.returncode == 0, r.stderr
    assert store("wait", "chatty").stdout == "0\n"
    logs = sorted(glob.glob(os.path.join(store.root, "containers", "*", "ctr.log*")))
    assert len(logs) == 2
    assert all(os.path.getsize(p) <= 4096 for p in logs)
    out = store("logs", "chatty").stdout.splitlines()
    assert out[-1] == "line 1999"
    assert out == [f"line {i}" for i in range(int(out[0].split()[1]), 2000)]  # the newest lines, in order
    r = store("run", "--log-opt", "max-size=huge", "base:1", "true")
    assert r.returncode == 125 and "max-size" in r.stderr


def test_exit_codes_as_docker(store):
    for args, code, words in ((["base:1", "no-such-command"], 127, "not found"),
                              (["base:1", "/etc"], 126, "Permission denied"),
                              (["-u", "ghost", "base:1", "true"], 125, "ghost"),
                              (["--pull=never", "no-such-image:1", "true"], 125, "no-such-image")):
        for detach in ([], ["-d"]):
            r = store("run", *detach, *args)
            assert r.returncode == code, (detach, args, r.stderr)
            assert words in r.stderr
    assert store("run", "base:1", "sh", "-c", "exit 3").returncode == 3
    assert ps(store).keys() == {n for n in ps(store) if status(store, n).startswith("Exited (3)")}
    assert store("run", "-d", "--name", "target", "base:1", "sleep", "60").returncode == 0
    assert store("exec", "target", "no-such-command").returncode == 127
    assert store("exec", "target", "/etc").returncode == 126
    r = store("exec", "no-such-container", "true")
    assert r.returncode != 0 and "no-such-container" in r.stderr


def zombie_children(pid):
    out = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return out
    for child in children:
        try:
            with open(f"/proc/{child}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    out.append(child)
        except OSError:
            pass
    return out


def test_init_reaps_orphans_and_passes_signals(store):
    # The orphan's parent ends at once; it is left to pid 1, which here never waits.
    cmd = ["sh", "-c", "(sleep 0.2 &); exec sleep 60"]
    assert store("run", "-d", "--name", "bare", "base:1", *cmd).returncode == 0
    pid = inspect(store, "bare")["State"]["Pid"]
    eventually(lambda: zombie_children(pid), "a zombie under a pid 1 that does not reap")
    assert store("run", "-d", "--init", "--name", "reaped", "base:1", *cmd).returncode == 0
    pid = inspect(store, "reaped")["State"]["Pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"strata-init"  # the command is its child; no host path shows
    eventually(lambda: all(not open(f"/proc/{c}/cmdline").read().startswith("sleep\0" "0.2")
                           for c in open(f"/proc/{pid}/task/{pid}/children").read().split()),
               "the orphan ended")
    assert zombie_children(pid) == []
    # A signal reaches the command through init; its status is the command's.
    assert store("kill", "-s", "TERM", "reaped").returncode == 0
    assert store("wait", "reaped").stdout == "143\n"
    r = store("run", "--rm", "--init", "base:1", "sh", "-c", "echo $$; exit 5")
    assert (r.returncode, r.stdout) == (5, "2\n")


def attach(store, *args, wait=True):
    """strata attach ARGS; with WAIT, returns once it follows the log (it has the file open)."""
    p = subprocess.Popen([tool("strata"), "--root", store.root, "attach", *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def follows():
        try:
            return any(os.readlink(f).endswith("/ctr.log") for f in glob.glob(f"/proc/{p.pid}/fd/*"))
        except OSError:
            return False
    if wait:
        eventually(lambda: follows() or p.poll() is not None, "attach opened the log")
        time.sleep(0.2)  # past its first read of what was there
    return p


def test_attach_follows_output_from_now_and_exits_with_the_code(store):
    assert store("run", "-d", "--name", "a", "base:1", "sh", "-c",
                 "echo before; while [ ! -f /go ]; do sleep 0.05; done; echo out; echo err >&2; exit 7").returncode == 0
    eventually(lambda: "before" in store("logs", "a").stdout, "the container wrote its first line")
    p = attach(store, "a")
    try:
        assert store("exec", "a", "touch", "/go").returncode == 0
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 7, err
    assert out == "out\n" and err == "err\n"


def test_attach_passes_ctrl_c_unless_told_not_to(store):
    assert store("run", "-d", "--name", "a", "base:1", "sh", "-c", "trap 'echo got INT; exit 3' INT; "
                 "while :; do sleep 0.1; done").returncode == 0
    # --sig-proxy=false: the signal ends attach alone.
    p = attach(store, "--sig-proxy=false", "a")
    p.send_signal(signal.SIGINT)
    p.communicate(timeout=60)
    assert p.returncode != 0
    assert status(store, "a").startswith("Up")
    # By default it goes to the container, whose exit code attach returns.
    p = attach(store, "a")
    try:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 3, err
    assert out == "got INT\n"


def test_attach_passes_stdin_to_a_container_made_with_i(store):
    # Without a terminal: the command reads the FIFO that is its stdin; what attach reads goes there.
    assert store("run", "-di", "--name", "cat", "base:1", "sh", "-c",
                 "read a; echo got:$a; read b; echo got:$b; exit 4").returncode == 0
    p = attach(store, "cat")
    try:
        out, err = p.communicate(input="one\ntwo\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (p.returncode, out, err) == (4, "got:one\ngot:two\n", ""), err
    assert json.loads(store("inspect", "cat").stdout)[0]["Config"]["OpenStdin"] is True
    # The FIFO goes with the run: a stopped container has none to attach to.
    cid = json.loads(store("inspect", "cat").stdout)[0]["Id"]
    assert not os.path.exists(os.path.join(store.root, "containers", cid, "stdin"))
    r = store("start", "-a", "cat")  # started again attached: its input is strata's (none here)
    assert "got:" in r.stdout


def test_attach_without_i_or_with_no_stdin_passes_nothing(store):
    # Made without -i: the command's stdin is /dev/null whatever attach is given.
    assert store("run", "-d", "--name", "plain", "base:1", "sh", "-c",
                 "if read a; then echo got:$a; else echo none; fi; sleep 5; echo done").returncode == 0
    eventually(lambda: "none" in store("logs", "plain").stdout, "the read found the end of /dev/null")
    p = attach(store, "plain")
    out, err = p.communicate(input="typed\n", timeout=60)
    assert (p.returncode, out) == (0, "done\n"), err
    # Made with -i, attached with --no-stdin: nothing is passed and the read goes on waiting.
    assert store("run", "-di", "--name", "waits", "base:1", "sh", "-c", "read a; echo got:$a").returncode == 0
    p = attach(store, "--no-stdin", "waits")
    try:
        p.stdin.write("typed\n")
        p.stdin.close()
        time.sleep(2)
        assert p.poll() is None  # still following the output of a container that runs on
    finally:
        p.kill()
        p.wait()
    assert status(store, "waits").startswith("Up")
    assert "got:" not in store("logs", "waits").stdout


def test_attach_to_a_terminal_and_detach_with_ctrl_p_ctrl_q(store):
    assert store("run", "-dit", "--name", "sh", "base:1", "sh").returncode == 0

    def session(steps):
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(tool("strata"), [tool("strata"), "--root", store.root, "attach", "sh"])
        out = b""
        try:
            for typed, expect in steps:
                time.sleep(0.5)  # attach has its terminal raw and follows the log
                os.write(fd, typed)
                end = time.time() + 30
                while expect.encode() not in out and time.time() < end:
                    r, _, _ = select.select([fd], [], [], 0.1)
                    if r:
                        try:
                            out += os.read(fd, 4096)
                        except OSError:
                            break
                assert expect.encode() in out, out.decode(errors="replace")
            _, st = os.waitpid(pid, 0)
            return os.waitstatus_to_exitcode(st), out.decode(errors="replace")
        finally:
            os.close(fd)

    # A Ctrl-P followed by anything but Ctrl-Q goes on: od reading the terminal shows it (octal 020).
    code, out = session([(b"echo hi-$((40+2))\r", "hi-42"), (b"od -c\r", "od -c"), (b"\x10x\r\x04", "020"),
                         (b"\x10\x11", "detached")])
    assert code == 0, out
    assert status(store, "sh").startswith("Up")
    # A second attach finds the same shell; `exit 3` ends it, and attach with it.
    code, out = session([(b"echo again\r", "again"), (b"exit 3\r", "exit")])
    assert code == 3, out
    eventually(lambda: status(store, "sh").startswith("Exited (3)"), "the shell ended")


def test_attach_mistakes(store):
    assert store("create", "--name", "made", "base:1").returncode == 0
    for args, code, text in [(["made"], 1, "is not running"), (["ghost"], 1, "no such container"),
                             ([], 2, "container"), (["--sig-proxy=maybe", "made"], 2, "sig-proxy")]:
        r = store("attach", *args)
        assert r.returncode == code and text in r.stderr and r.stderr.count("\n") == 1, (args, r.returncode, r.stderr)
    assert store("run", "-d", "--name", "k", "base:1", "sleep", "300").returncode == 0
    p = attach(store, "--no-stdin", "k")
    assert store("kill", "k").returncode == 0
    out, err = p.communicate(timeout=60)
    assert p.returncode == 137 and out == "" and err == ""
    p = attach(store, "--no-stdin", "made", wait=False)
    p.communicate(timeout=60)
    assert p.returncode == 1
