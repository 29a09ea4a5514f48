"""strata run: real namespaces on a busybox root, as root and as unprivileged users."""
import fcntl
import json
import os
import pty
import select
import shutil
import signal
import struct
import subprocess
import tarfile
import termios
import time

import pytest

from conftest import SOURCE_DIR, base_store, is_mounted, run, tool, user_home_and_base_tar

DOCKER_DEFAULT_CAPS = 0xA80425FB


@pytest.fixture
def rootfs(workdir, base_tar):
    root = os.path.join(workdir, "root")
    os.mkdir(root)
    with tarfile.open(base_tar) as t:
        t.extractall(root)
    return root


def strata(*args, **kw):
    kw.setdefault("timeout", 60)
    return run([tool("strata"), "run", *args], check=False, **kw)


def host_mounts_under(path):
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path)]


# ---- basics ---------------------------------------------------------------


def test_output_and_exit_code(rootfs):
    r = strata("--rootfs", rootfs, "sh", "-c", "echo out; echo err >&2; exit 3")
    assert r.returncode == 3
    assert r.stdout == "out\n"
    assert "err\n" in r.stderr
    assert host_mounts_under(rootfs) == []


def test_arguments_after_the_command_belong_to_it(rootfs):
    r = strata("--rootfs", rootfs, "ls", "-d", "-1", "/bin", "/etc")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["/bin", "/etc"]


def test_namespaces_pid_uts_and_root(rootfs):
    r = strata("--rootfs", rootfs, "--hostname", "box1", "sh", "-c",
               "echo pid=$$; hostname; ls /proc | grep -c '^[0-9]'; test -e /bin/busybox && echo rooted")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split()
    assert lines[0] == "pid=1"  # the command is pid 1, as in docker
    assert lines[1] == "box1"
    assert int(lines[2]) <= 3  # sh, ls, grep: no host process is visible
    assert lines[3] == "rooted"
    assert run(["hostname"]).stdout.strip() != "box1"


def test_root_is_identity_mapped_with_docker_capabilities_and_no_new_privs(rootfs):
    r = strata("--rootfs", rootfs, "sh", "-c", "cat /proc/self/uid_map; grep -E 'CapBnd|CapEff|NoNewPrivs' /proc/self/status")
    assert r.returncode == 0, r.stderr
    out = r.stdout.split()
    assert out[:3] == ["0", "0", "4294967295"]
    fields = dict(zip(out[3::2], out[4::2]))
    assert int(fields["CapBnd:"], 16) == DOCKER_DEFAULT_CAPS
    assert int(fields["CapEff:"], 16) == DOCKER_DEFAULT_CAPS
    assert fields["NoNewPrivs:"] == "1"


def test_capabilities_cap_add_cap_drop_and_privileged(rootfs):
    def caps(*opts):
        r = strata(*opts, "--rootfs", rootfs, "sh", "-c", "grep -E 'CapBnd|CapEff' /proc/self/status")
        assert r.returncode == 0, r.stderr
        fields = dict(line.split(":") for line in r.stdout.splitlines())
        return int(fields["CapBnd"], 16), int(fields["CapEff"], 16)

    assert caps("--cap-drop", "CHOWN") == (DOCKER_DEFAULT_CAPS & ~1, DOCKER_DEFAULT_CAPS & ~1)
    assert caps("--cap-drop", "all", "--cap-add", "cap_kill") == (1 << 5, 1 << 5)
    sys_admin = 1 << 21
    assert caps("--cap-add", "SYS_ADMIN") == (DOCKER_DEFAULT_CAPS | sys_admin,) * 2
    bnd, eff = caps("--privileged")
    assert bnd & sys_admin and eff == bnd and bnd.bit_count() >= 38
    r = strata("--cap-add", "NO_SUCH_CAP", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and "NO_SUCH_CAP" in r.stderr
    # Dropped, CHOWN is gone from root too; a dropped SETGID does not stop the switch to a user.
    r = strata("--cap-drop", "CHOWN", "--rootfs", rootfs, "sh", "-c", "touch /f; chown 1:1 /f || echo refused")
    assert "refused" in r.stdout, r.stderr
    r = strata("--cap-drop", "SETGID", "--cap-drop", "SETUID", "-u", "1:1", "--rootfs", rootfs, "id", "-u")
    assert r.returncode == 0 and r.stdout.strip() == "1", r.stderr


def test_seccomp_default_profile_unconfined_and_a_profile_file(rootfs, workdir):
    probe = "unshare -U true && echo allowed || echo blocked"
    r = strata("--rootfs", rootfs, "sh", "-c", probe)
    assert r.returncode == 0 and r.stdout.strip() == "blocked", r.stderr
    assert "Operation not permitted" in r.stderr
    r = strata("--security-opt", "seccomp=unconfined", "--rootfs", rootfs, "sh", "-c", probe)
    assert r.stdout.strip() == "allowed", r.stderr
    r = strata("--privileged", "--rootfs", rootfs, "sh", "-c", probe)
    assert r.stdout.strip() == "allowed", r.stderr
    r = strata("--rootfs", rootfs, "sh", "-c", "grep Seccomp: /proc/self/status")
    assert r.stdout.split() == ["Seccomp:", "2"]
    # A capability lifts the rules docker ties to it: mount with SYS_ADMIN.
    r = strata("--rootfs", rootfs, "sh", "-c", "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo mounted")
    assert "mounted" not in r.stdout
    r = strata("--cap-add", "SYS_ADMIN", "--rootfs", rootfs, "sh", "-c", "mkdir -p /tmp/m && mount -t tmpfs t /tmp/m && echo mounted")
    assert r.stdout.strip() == "mounted", r.stderr
    # docker's JSON format: here a profile that refuses only mkdir, with ENOSPC.
    profile = os.path.join(workdir, "profile.json")
    with open(profile, "w") as f:
        json.dump({"defaultAction": "SCMP_ACT_ALLOW",
                   "syscalls": [{"names": ["mkdir", "mkdirat", "no_such_syscall"], "action": "SCMP_ACT_ERRNO",
                                 "errnoRet": 28}]}, f)
    r = strata("--security-opt", f"seccomp={profile}", "--rootfs", rootfs, "sh", "-c",
               "mkdir /x 2>&1; " + probe)
    assert "No space left on device" in r.stdout and r.stdout.split()[-1] == "allowed", r.stdout + r.stderr
    with open(profile, "w") as f:
        f.write("{ not json")
    r = strata("--security-opt", f"seccomp={profile}", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and profile in r.stderr
    r = strata("--security-opt", "apparmor=x", "--rootfs", rootfs, "true")
    assert r.returncode == 125 and "apparmor=x" in r.stderr


def test_container_root_cannot_mount_or_change_host_files(rootfs):
    # --network host: the host's own /etc/hosts is bound in (read-only).
    r = strata("--rootfs", rootfs, "--network", "host", "sh", "-c",
               "mount -t tmpfs x /mnt 2>&1 || echo nomount; echo x >> /etc/hosts 2>&1 || echo rohosts;"
               " chmod 777 /dev/null 2>&1 || echo rodev; echo y > /dev/null && echo devnull-ok; touch /sys/x 2>&1 || echo rosys")
    assert r.returncode == 0, r.stderr
    for word in ("nomount", "rohosts", "rodev", "devnull-ok", "rosys"):
        assert word in r.stdout
    assert os.stat("/dev/null").st_mode & 0o777 == 0o666


def test_proc_hides_and_protects_what_acts_on_the_host(rootfs):
    r = strata("--rootfs", rootfs, "sh", "-c",
               "for f in /proc/sys/kernel/hostname /proc/sysrq-trigger; do test -e $f || continue;"
               " echo x > $f 2>/dev/null && echo wrote-$f; done;"
               " test -e /proc/kcore && wc -c < /proc/kcore; test -e /proc/keys && chmod 777 /proc/keys 2>/dev/null && echo chmod;"
               " grep -c ' /proc/sys proc ro' /proc/mounts")
    assert r.returncode == 0, r.stderr
    assert "wrote" not in r.stdout and "chmod" not in r.stdout
    assert r.stdout.split()[-1] == "1"
    if os.path.exists("/proc/kcore"):
        assert r.stdout.split()[0] == "0"
    assert os.stat("/dev/null").st_mode & 0o777 == 0o666


def test_minimal_dev_proc_and_host_name_resolution(rootfs):
    r = strata("--rootfs", rootfs, "--network", "host", "sh", "-c",
               "ls /dev | sort | tr '\\n' ' '; echo; head -c 4 /dev/zero | wc -c; cat /etc/resolv.conf | wc -l;"
               " grep -c . /proc/self/mounts >/dev/null && echo proc-ok")
    assert r.returncode == 0, r.stderr
    devs = r.stdout.splitlines()[0].split()
    for d in ("null", "zero", "full", "random", "urandom", "tty", "pts", "ptmx", "shm", "fd", "stdin", "stdout", "stderr"):
        assert d in devs
    assert "sda" not in devs and "vda" not in devs and "fuse" not in devs
    assert r.stdout.splitlines()[1].strip() == "4"
    if os.path.exists("/etc/resolv.conf"):
        with open("/etc/resolv.conf") as f:
            assert int(r.stdout.splitlines()[2]) == len(f.read().splitlines())
    assert "proc-ok" in r.stdout


def test_network_private_by_default_host_and_none_on_request(rootfs):
    private = strata("--rootfs", rootfs, "cat", "/proc/net/dev")
    assert private.returncode == 0, private.stderr
    assert [line.split(":")[0].strip() for line in private.stdout.splitlines()[2:]] == ["lo", "tap0"]
    host = strata("--rootfs", rootfs, "--network", "host", "cat", "/proc/net/dev")
    none = strata("--rootfs", rootfs, "--network", "none", "cat", "/proc/net/dev")
    assert host.returncode == 0 and none.returncode == 0, host.stderr + none.stderr
    with open("/proc/net/dev") as f:
        assert host.stdout == f.read() or len(host.stdout.splitlines()) > 3
    ifaces = [line.split(":")[0].strip() for line in none.stdout.splitlines()[2:]]
    assert ifaces == ["lo"]
    r = strata("--rootfs", rootfs, "--network", "none", "ip", "link", "show", "lo")
    assert "UP" in r.stdout


# ---- exit codes and signals ----------------------------------------------


def test_missing_command_is_127_with_its_name(rootfs):
    r = strata("--rootfs", rootfs, "no-such-command")
    assert r.returncode == 127
    assert r.stderr.strip().splitlines()[-1] == "strata: exec 'no-such-command': executable file not found in $PATH"
    r = strata("--rootfs", rootfs, "/no/such/file")
    assert r.returncode == 127
    assert "'/no/such/file'" in r.stderr


def test_command_that_cannot_be_invoked_is_126(rootfs):
    r = strata("--rootfs", rootfs, "/etc/passwd")
    assert r.returncode == 126
    assert r.stderr.strip().splitlines()[-1] == "strata: exec '/etc/passwd': Permission denied"


def test_strata_failures_are_125(rootfs, workdir):
    r = strata("--rootfs", os.path.join(workdir, "missing"), "true")
    assert r.returncode == 125
    assert "missing" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = strata("--bogus-flag", "--rootfs", rootfs, "true")
    assert r.returncode == 125
    r = strata("--rootfs", rootfs, "-u", "ghost", "true")
    assert r.returncode == 125
    assert r.stderr.strip() == "strata: unable to find user 'ghost': no matching entries in passwd file"
    r = strata("--rootfs", rootfs, "--network", "nat", "true")
    assert r.returncode == 125


def test_death_by_signal_is_128_plus_n(rootfs):
    # The command is pid 1: as in docker, a signal it does not handle cannot
    # end it from inside the container.
    r = strata("--rootfs", rootfs, "sh", "-c", "kill -KILL $$; kill -TERM $$; echo alive")
    assert r.returncode == 0 and r.stdout == "alive\n", r.stderr
    assert strata("--rootfs", rootfs, "sh", "-c", "sh -c 'kill -KILL $$'; exit $?").returncode == 137
    assert strata("--rootfs", rootfs, "sh", "-c", "sh -c 'kill -TERM $$'; exit $?").returncode == 143


def start(args, **kw):
    return subprocess.Popen([tool("strata"), "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def wait_line(proc, expected, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.2)
        if r:
            line = proc.stdout.readline()
            if line.strip() == expected:
                return
            if line == "":
                break
    proc.kill()
    raise AssertionError(f"no {expected!r} from the container: {proc.stderr.read()}")


@pytest.mark.parametrize("sig,handled", [(signal.SIGTERM, True), (signal.SIGINT, False), (signal.SIGUSR1, True)])
def test_signals_reach_the_command(rootfs, sig, handled):
    name = signal.Signals(sig).name[3:]
    script = (f"trap 'echo got {name}; exit 5' {name}; " if handled else "") + "echo ready; while :; do sleep 0.1; done"
    p = start(["--rootfs", rootfs, "sh", "-c", script])
    try:
        wait_line(p, "ready")
        p.send_signal(sig)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    if handled:
        assert p.returncode == 5, err
        assert out.strip() == f"got {name}"
    else:
        assert p.returncode == 128 + sig, err
    assert host_mounts_under(rootfs) == []


def test_killing_strata_kills_the_container(rootfs):
    p = start(["--rootfs", rootfs, "sh", "-c", "echo ready; sleep 1000"])
    wait_line(p, "ready")
    children = [int(c) for c in open(f"/proc/{p.pid}/task/{p.pid}/children").read().split()]
    # The supervisor, and slirp4netns for the private network.
    comms = {c: open(f"/proc/{c}/comm").read().strip() for c in children}
    init = [c for c in children if comms[c] != "slirp4netns"]
    assert len(init) == 1 and len(children) == 2
    p.kill()
    p.wait()
    for _ in range(100):
        if not any(os.path.exists(f"/proc/{c}") for c in children):
            break
        time.sleep(0.05)
    assert not any(os.path.exists(f"/proc/{c}") for c in children)


# ---- env, workdir, user ---------------------------------------------------


def test_environment(rootfs, workdir):
    env_file = os.path.join(workdir, "env")
    with open(env_file, "w") as f:
        f.write("# comment\nFROM_FILE=file\nOVER=file\n")
    r = strata("--rootfs", rootfs, "--hostname", "h1", "--env-file", env_file, "-e", "A=1", "-e", "OVER=flag",
               "-e", "FROM_HOST", "-e", "UNSET_ON_HOST", "env", env=dict(os.environ, FROM_HOST="host", SECRET="x"))
    assert r.returncode == 0, r.stderr
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["A"] == "1"
    assert env["FROM_FILE"] == "file"
    assert env["OVER"] == "flag"
    assert env["FROM_HOST"] == "host"
    assert "UNSET_ON_HOST" not in env and "SECRET" not in env
    assert env["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert env["HOME"] == "/root"
    assert env["HOSTNAME"] == "h1"
    assert "TERM" not in env


def test_path_from_env_is_used_to_find_the_command(rootfs):
    os.makedirs(os.path.join(rootfs, "opt/tools"))
    with open(os.path.join(rootfs, "opt/tools/hello"), "w") as f:
        f.write("#!/bin/sh\necho hello from tools\n")
    os.chmod(os.path.join(rootfs, "opt/tools/hello"), 0o755)
    assert strata("--rootfs", rootfs, "hello").returncode == 127
    r = strata("--rootfs", rootfs, "-e", "PATH=/opt/tools:/bin", "hello")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from tools\n"


def test_workdir_default_and_created(rootfs):
    assert strata("--rootfs", rootfs, "pwd").stdout == "/\n"
    r = strata("--rootfs", rootfs, "-w", "/srv/app/data", "pwd")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "/srv/app/data\n"
    assert os.path.isdir(os.path.join(rootfs, "srv/app/data"))
    assert strata("--rootfs", rootfs, "-w", "relative", "pwd").returncode == 125


def test_users_from_the_image(rootfs):
    r = strata("--rootfs", rootfs, "-u", "app", "sh", "-c", "id; echo $HOME; touch /tmp/by-app")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["uid=1000(app) gid=1000(app)", "/home/app"]
    st = os.stat(os.path.join(rootfs, "tmp/by-app"))
    assert (st.st_uid, st.st_gid) == (1000, 1000)  # root's container is identity mapped
    r = strata("--rootfs", rootfs, "-u", "4242", "id")
    assert r.stdout.strip() == "uid=4242 gid=0(root)"
    r = strata("--rootfs", rootfs, "-u", "app:daemon", "id")
    assert r.stdout.strip() == "uid=1000(app) gid=1(daemon)"
    r = strata("--rootfs", rootfs, "-u", "app", "sh", "-c", "grep -E 'CapEff|NoNewPrivs' /proc/self/status")
    fields = dict(line.split() for line in r.stdout.splitlines())
    assert int(fields["CapEff:"], 16) == 0
    assert fields["NoNewPrivs:"] == "1"


def test_id_4294967295_is_refused_not_run_as_root(rootfs):
    with open(os.path.join(rootfs, "etc/passwd"), "a") as f:
        f.write("huge:x:4294967295:0::/:/bin/sh\nhugegid:x:7:4294967295::/:/bin/sh\n")
    with open(os.path.join(rootfs, "etc/group"), "a") as f:
        f.write("hugegrp:x:4294967295:\n")
    for spec in ("4294967295", "4294967295:0", "0:4294967295", "root:4294967295", "huge", "hugegid",
                 "root:hugegrp", "4294967296"):
        r = strata("-u", spec, "--rootfs", rootfs, "sh", "-c", "echo ran as $(id -u):$(id -g)")
        assert r.returncode == 125, (spec, r.stdout, r.stderr)
        assert r.stdout == "" and "429496729" in r.stderr, (spec, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1


def test_supplementary_groups_from_etc_group(rootfs):
    with open(os.path.join(rootfs, "etc/group"), "a") as f:
        f.write("staff:x:50:app\n")
    r = strata("--rootfs", rootfs, "-u", "app", "id")
    assert r.stdout.strip() == "uid=1000(app) gid=1000(app) groups=50(staff)"


# ---- stdin, tty, volumes --------------------------------------------------


def test_stdin_only_with_i(rootfs):
    r = strata("-i", "--rootfs", rootfs, "sh", "-c", "tr a-z A-Z", input="hello\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "HELLO\n"
    r = strata("--rootfs", rootfs, "cat", input="hello\n")
    assert r.returncode == 0
    assert r.stdout == ""


def read_ready(fd):
    """What the pty FD has within 0.1 s: b"" when nothing came, None once it is closed."""
    r, _, _ = select.select([fd], [], [], 0.1)
    if not r:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:
        return None


def tty_session(args, steps, rows=33, cols=101, timeout=20):
    """Runs `strata ARGS` in a pty of ROWS x COLS; STEPS is a list of (bytes to type, text to wait for).
    What to type may instead be a function, called with the pty's master."""
    pid, fd = pty.fork()
    if pid == 0:
        fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        os.execv(tool("strata"), [tool("strata"), *args])
    out = b""
    try:
        for typed, expect in steps:
            if callable(typed):
                typed(fd)
            elif typed:
                os.write(fd, typed)
            if expect is None:
                time.sleep(0.5)  # let the shell start what was typed
            end = time.time() + timeout
            while expect is not None and expect.encode() not in out and time.time() < end:
                chunk = read_ready(fd)
                if chunk is None:
                    break
                out += chunk
            assert expect is None or expect.encode() in out, out.decode(errors="replace")
        end = time.time() + timeout
        while time.time() < end:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            out += read_ready(fd) or b""
        else:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        return os.waitstatus_to_exitcode(status), out.decode(errors="replace")
    finally:
        os.close(fd)


def test_tty_gives_a_terminal_with_the_window_size(rootfs):
    code, out = tty_session(["run", "-t", "--rootfs", rootfs, "sh", "-c", "tty; stty size; echo TERM=$TERM; exit 4"],
                            [(None, "TERM=")])
    assert code == 4, out
    assert "/dev/pts/0" in out
    assert "33 101" in out
    assert "TERM=xterm" in out


def test_tty_ctrl_c_reaches_the_process_and_exit_code_passes(rootfs):
    code, out = tty_session(["run", "-it", "--rootfs", rootfs, "sh"],
                            [(b"echo st''art\r", "start"), (b"sleep 100\r", None), (b"\x03", None),
                             (b"echo after-$?\r", "after-130"), (b"exit 9\r", None)])
    assert code == 9, out


def test_tty_without_a_terminal_on_the_caller_side(rootfs):
    r = strata("-t", "--rootfs", rootfs, "sh", "-c", "tty; echo on-console > /dev/console; exit 6")
    assert r.returncode == 6, r.stderr
    assert r.stdout.splitlines() == ["/dev/pts/0", "on-console"]
    r = strata("-i", "-t", "--rootfs", rootfs, "sh", "-c", "read line; echo got-$line", input="piped\n")
    assert r.returncode == 0, r.stderr
    assert "got-piped" in r.stdout


def test_without_tty_there_is_no_terminal(rootfs):
    r = strata("--rootfs", rootfs, "sh", "-c", "tty; exit 0")
    assert "not a tty" in r.stdout


def test_volumes(rootfs, workdir):
    shared = os.path.join(workdir, "shared")
    os.mkdir(shared)
    with open(os.path.join(shared, "in"), "w") as f:
        f.write("from host\n")
    r = strata("--rootfs", rootfs, "-v", f"{shared}:/data", "sh", "-c", "cat /data/in; echo back > /data/out")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "from host\n"
    assert open(os.path.join(shared, "out")).read() == "back\n"
    r = strata("--rootfs", rootfs, "-v", f"{shared}:/ro:ro", "sh", "-c", "cat /ro/in; echo x > /ro/new")
    assert r.returncode != 0
    assert not os.path.exists(os.path.join(shared, "new"))
    r = strata("--rootfs", rootfs, "-v", f"{workdir}/nope:/x", "true")
    assert r.returncode == 125
    assert "nope" in r.stderr
    assert host_mounts_under(workdir) == []


# ---- hostile roots --------------------------------------------------------


def replace_with_symlink(path, target):
    subprocess.run(["rm", "-rf", path], check=True)
    os.symlink(target, path)


def test_symlinks_in_the_root_never_lead_outside(rootfs, workdir):
    outside = os.path.join(workdir, "outside")
    os.mkdir(outside)
    # Absolute and relative escapes for the directories and files strata mounts or creates.
    for d in ("proc", "dev", "sys"):
        os.mkdir(os.path.join(outside, d))
    replace_with_symlink(os.path.join(rootfs, "proc"), outside + "/proc")
    replace_with_symlink(os.path.join(rootfs, "dev"), "../../../../../../../.." + outside + "/dev")
    replace_with_symlink(os.path.join(rootfs, "sys"), outside + "/sys")
    replace_with_symlink(os.path.join(rootfs, "etc/resolv.conf"), outside + "/resolv.conf")
    replace_with_symlink(os.path.join(rootfs, "etc/hosts"), "../../../../../../.." + outside + "/hosts")
    # The same paths inside the root exist: the links resolve there.
    for d in ("proc", "dev", "sys"):
        os.makedirs(rootfs + outside + "/" + d)
    r = strata("--rootfs", rootfs, "-w", "/work", "sh", "-c",
               "ls /dev/null /proc/self/status >/dev/null && echo inside-ok; echo pwned > /dev/x")
    assert r.returncode == 0, r.stderr
    assert "inside-ok" in r.stdout
    assert sorted(os.listdir(outside)) == ["dev", "proc", "sys"]
    assert all(os.listdir(os.path.join(outside, d)) == [] for d in ("dev", "proc", "sys"))
    assert host_mounts_under(workdir) == []
    # A link whose target is missing inside the root: the target is made
    # inside the root, as docker does; nothing outside.
    subprocess.run(["rm", "-rf", rootfs + outside], check=True)
    r = strata("--rootfs", rootfs, "true")
    assert r.returncode == 0, r.stderr
    assert all(os.path.isdir(rootfs + outside + "/" + d) for d in ("dev", "proc", "sys"))
    assert all(os.listdir(os.path.join(outside, d)) == [] for d in ("dev", "proc", "sys"))
    assert host_mounts_under(workdir) == []


def test_volume_target_and_workdir_symlinks_stay_inside(rootfs, workdir):
    outside = os.path.join(workdir, "outside")
    os.mkdir(outside)
    shared = os.path.join(workdir, "shared")
    os.mkdir(shared)
    os.symlink(outside, os.path.join(rootfs, "data"))
    os.symlink("../../../../../../../.." + outside, os.path.join(rootfs, "wd"))
    # The links lead where they lead inside the root, as in docker: their
    # targets are created there, never on the host.
    r = strata("--rootfs", rootfs, "-v", f"{shared}:/data/vol", "sh", "-c", "echo in > /data/vol/f")
    assert r.returncode == 0, r.stderr
    assert os.listdir(shared) == ["f"]
    assert os.path.isdir(rootfs + outside + "/vol")
    r = strata("--rootfs", rootfs, "-w", "/wd/sub", "sh", "-c", "pwd; echo x > file")
    assert r.returncode == 0, r.stderr
    assert os.path.exists(rootfs + outside + "/sub/file")
    assert os.listdir(outside) == []
    assert host_mounts_under(workdir) == []


def test_dangling_symlink_destinations_resolve_inside_the_root(rootfs, workdir):
    shared = os.path.join(workdir, "shared")
    os.mkdir(shared)
    hostfile = os.path.join(workdir, "hostfile")
    with open(hostfile, "w") as f:
        f.write("host file\n")
    os.symlink("/srv/work", os.path.join(rootfs, "wlink"))
    os.symlink("../srv/../srv/vol", os.path.join(rootfs, "vlink"))
    os.symlink("/opt/conf/app.conf", os.path.join(rootfs, "flink"))
    r = strata("--rootfs", rootfs, "-w", "/wlink/sub", "-v", f"{shared}:/vlink", "-v", f"{hostfile}:/flink:ro",
               "sh", "-c", "pwd -P; echo v > /vlink/v; cat /opt/conf/app.conf")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["/srv/work/sub", "host file"]
    assert os.listdir(shared) == ["v"]
    assert os.path.isdir(os.path.join(rootfs, "srv/work/sub")) and os.path.isdir(os.path.join(rootfs, "srv/vol"))
    assert os.path.isfile(os.path.join(rootfs, "opt/conf/app.conf"))
    # A loop is an error, not a hang.
    os.symlink("loop2", os.path.join(rootfs, "loop1"))
    os.symlink("loop1", os.path.join(rootfs, "loop2"))
    r = strata("--rootfs", rootfs, "-w", "/loop1", "true")
    assert r.returncode == 125 and "loop1" in r.stderr


# ---- unprivileged users ---------------------------------------------------


def test_unprivileged_user_runs_as_container_root(user, user_rootfs):
    r = user.strata("--rootfs", user_rootfs, "sh", "-c",
                    "id -u; cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //'; touch /root-file; echo $$")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "0"
    assert lines[1] == f"0 {user.uid} 1"
    if user.subids:
        assert lines[2] == "1 400000 65536"
        assert "warning" not in r.stderr
    else:
        assert len(lines) == 3
        assert "warning: no range for" in r.stderr
    assert lines[-1] == "1"  # the command is pid 1
    assert os.stat(os.path.join(user_rootfs, "root-file")).st_uid == user.uid


def test_unprivileged_user_switches_users_only_with_subordinate_ids(user, user_rootfs):
    r = user.strata("--rootfs", user_rootfs, "-u", "app", "sh", "-c", "id; touch /tmp/app-file")
    if user.subids:
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "uid=1000(app) gid=1000(app)"
        st = os.stat(os.path.join(user_rootfs, "tmp/app-file"))
        assert (st.st_uid, st.st_gid) == (400000 + 999, 400000 + 999)
    else:
        assert r.returncode == 125
        assert "is not mapped in the container's user namespace" in r.stderr


def test_unprivileged_container_cannot_touch_host_files(user, user_rootfs, workdir):
    secret = os.path.join(workdir, "secret")
    with open(secret, "w") as f:
        f.write("root only\n")
    os.chmod(secret, 0o600)
    r = user.strata("--rootfs", user_rootfs, "-v", f"{workdir}:/host", "sh", "-c",
                    "cat /host/secret; echo pwned > /host/secret; chown 0 /host/secret; echo done")
    assert "root only" not in r.stdout
    assert open(secret).read() == "root only\n"
    assert os.stat(secret).st_uid == 0


def test_unprivileged_exit_codes_and_signals(user, user_rootfs):
    assert user.strata("--rootfs", user_rootfs, "sh", "-c", "exit 42").returncode == 42
    assert user.strata("--rootfs", user_rootfs, "nothere").returncode == 127
    assert user.strata("--rootfs", user_rootfs, "sh", "-c", "kill -INT $$").returncode == 130
    r = user.strata("-i", "--rootfs", user_rootfs, "cat", input="piped\n")
    assert r.stdout == "piped\n"


# ---- images from the store ------------------------------------------------


@pytest.fixture
def store(workdir, base_tar):
    """A store with the busybox base imported as base:1; yields a function running `strata` on it."""
    s = base_store(workdir, base_tar)
    yield s
    # Whatever happened, nothing of the store may stay mounted.
    assert host_mounts_under(s.root) == []


def containers(store):
    r = store("ps", "-a", "-q", "--no-trunc")
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_image_run_commit_and_run_the_committed_cmd(store):
    r = store("run", "--name", "dev", "base:1", "sh", "-c", "mkdir -p /app && echo 'echo sample app' > /app/run.sh && echo built")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "built\n"
    # Only what the command changed: no mount point strata needed (/etc/resolv.conf, /proc, ...).
    assert store("diff", "dev").stdout.splitlines() == ["A /app", "A /app/run.sh"]
    r = store("commit", "-m", "add the app", "-c", 'CMD ["sh", "/app/run.sh"]', "dev", "app:1")
    assert r.returncode == 0, r.stderr
    r = store("run", "--rm", "app:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "sample app\n"
    assert "add the app" in store("history", "app:1").stdout
    # The base image is unchanged.
    r = store("run", "--rm", "base:1", "sh", "-c", "test -e /app/run.sh && echo leaked || echo clean")
    assert r.stdout == "clean\n"


def test_image_default_cmd_entrypoint_and_args(store):
    assert store("run", "--rm", "base:1").stdout == "base-cmd\n"
    assert store("run", "--rm", "base:1", "echo", "args").stdout == "args\n"
    assert store("run", "--rm", "--entrypoint", "echo", "base:1").stdout == "\n"
    assert store("run", "--rm", "--entrypoint", "echo", "base:1", "a", "b").stdout == "a b\n"


def test_image_config_env_workdir_user(store):
    r = store("run", "--name", "cfg", "base:1", "true")
    assert r.returncode == 0, r.stderr
    r = store("commit", "-c", "ENV GREETING=hello", "-c", "WORKDIR /home/app", "-c", "USER app", "cfg", "cfg:1")
    assert r.returncode == 0, r.stderr
    r = store("run", "--rm", "cfg:1", "sh", "-c", "echo $GREETING; pwd; id -un")
    assert r.stdout.split() == ["hello", "/home/app", "app"], r.stderr
    r = store("run", "--rm", "-e", "GREETING=bye", "-w", "/tmp", "-u", "root", "cfg:1", "sh", "-c", "echo $GREETING; pwd; id -un")
    assert r.stdout.split() == ["bye", "/tmp", "root"], r.stderr


def test_image_rm_and_failures_leave_no_container(store):
    before = containers(store)
    assert store("run", "--rm", "base:1", "sh", "-c", "exit 7").returncode == 7
    r = store("run", "base:1", "no-such-command")
    assert r.returncode == 127
    assert "no-such-command" in r.stderr
    r = store("run", "--pull=never", "no-such-image:1", "true")  # no registry is asked
    assert r.returncode == 125
    assert "no-such-image" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = store("run", "-u", "ghost", "base:1", "true")
    assert r.returncode == 125
    assert containers(store) == before


def test_image_container_is_kept_without_rm(store):
    before = containers(store)
    r = store("run", "base:1", "sh", "-c", "echo kept > /kept")
    assert r.returncode == 0, r.stderr
    new = set(containers(store)) - set(before)
    assert len(new) == 1
    assert "A /kept" in store("diff", new.pop()).stdout.splitlines()


def test_start_runs_the_container_again_on_its_changes(store):
    assert store("run", "--name", "mk", "base:1", "true").returncode == 0
    assert store("commit", "-c", 'CMD ["sh"]', "mk", "shell:1").returncode == 0
    # start runs the container's own command again (here the image's CMD, sh).
    r = store("run", "-i", "--name", "again", "shell:1", input="echo one > /state\n")
    assert r.returncode == 0, r.stderr
    r = store("start", "-a", "-i", "again", input="cat /state; echo two >> /state; exit 4\n")
    assert r.returncode == 4, r.stderr
    assert r.stdout == "one\n"
    # No -i: sh runs with stdin at /dev/null and ends at once.
    r = store("start", "-a", "again", input="echo not-read\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert store("diff", "again").stdout.splitlines() == ["A /state"]
    assert store("run", "--rm", "shell:1", "cat", "/state").returncode == 1  # the image is unchanged
    r = store("start", "no-such-container")
    assert r.returncode == 125
    assert r.stderr.strip() == "strata: no such container: 'no-such-container'"
    assert "again" in store("ps", "-a").stdout


def test_start_refuses_a_container_mounted_writable(store, workdir, mounts):
    assert store("create", "--name", "held", "base:1").returncode == 0
    mnt = mounts.add(os.path.join(workdir, "held-mnt"))
    os.makedirs(mnt)
    assert store("mount", "held", mnt).returncode == 0
    try:
        for args in (["start", "-a", "held"], ["start", "held"]):
            r = store(*args)
            assert r.returncode == 125, args
            assert r.stderr.strip() == f"strata: container 'held' is mounted at '{mnt}' (unmount it first)"
    finally:
        store("umount", mnt)
    r = store("start", "-a", "held")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "base-cmd\n"


def test_command_is_pid_1_and_nothing_of_strata_is_visible(store):
    r = store("run", "--rm", "base:1", "sh", "-c",
              "echo $$; for p in /proc/[0-9]*; do echo ${p#/proc/} $(tr '\\0' ' ' < $p/cmdline); done")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "1"
    procs = dict(line.split(" ", 1) if " " in line else (line, "") for line in lines[1:])
    assert procs["1"].startswith("sh -c")
    for pid, cmdline in procs.items():
        assert "strata" not in cmdline and store.root not in cmdline, (pid, cmdline)
    # The stratafs daemon runs on the host, outside the container's pid namespace.
    daemons = [pid for pid in os.listdir("/proc") if pid.isdigit() and os.path.exists(f"/proc/{pid}/cmdline")
               and store.root in open(f"/proc/{pid}/cmdline").read()]
    assert daemons == []  # and it ended with the container
    # A signal to every process the container can see reaches only its own.
    r = store("run", "--rm", "base:1", "sh", "-c", "kill -9 -1; echo survived")
    assert r.returncode == 0 and r.stdout == "survived\n", r.stderr


def test_image_signal_and_kill_leave_no_mount(store):
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "--rm", "base:1", "sh", "-c",
                          "echo ready; while :; do echo x >> /tmp/log; sleep 0.05; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_line(p, "ready")
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 143
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "base:1", "sh", "-c",
                          "echo ready; while :; do echo x >> /tmp/log; done"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_line(p, "ready")
    p.kill()
    p.wait()
    for _ in range(100):
        if not any("stratafs" in open(f"/proc/{pid}/cmdline").read() and store.root in open(f"/proc/{pid}/cmdline").read()
                   for pid in os.listdir("/proc") if pid.isdigit() and os.path.exists(f"/proc/{pid}/cmdline")):
            break
        time.sleep(0.05)
    else:
        raise AssertionError("stratafs outlived the container")


def ps_status(store, name):
    r = store("ps", "-a", "--format", "json")
    assert r.returncode == 0, r.stderr
    return {c["Names"]: c["Status"] for c in json.loads(r.stdout)}.get(name)


def wait_status(store, name, expected, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if (ps_status(store, name) or "").startswith(expected):
            return
        time.sleep(0.05)
    raise AssertionError(f"container {name} never became {expected}: {ps_status(store, name)}")


def store_state(store):
    return (store("images", "-q", "--no-trunc").stdout, containers(store), store("diff", "busy").stdout)


def test_running_container_is_shown_and_refused(store, mounts, workdir):
    busy = "strata: container 'busy' is running; stop it first"
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "--name", "busy", "base:1", "sh", "-c",
                          "echo data > /data; echo ready; exec sleep 30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_line(p, "ready")
        wait_status(store, "busy", "Up ")
        assert "Up " in store("ps").stdout
        before = store_state(store)
        assert "A /data" in before[2].splitlines()
        mnt = mounts.add(os.path.join(workdir, "mnt"))
        os.mkdir(mnt)
        for args in (["commit", "busy", "snap:1"], ["rm", "busy"], ["mount", "busy", mnt],
                     ["start", "busy"]):
            r = store(*args)
            assert (r.returncode, r.stderr.strip()) == (1, busy), args
        assert not is_mounted(mnt)
        assert store_state(store) == before
        assert p.poll() is None  # the container was left alone
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
        assert p.returncode == 143
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert ps_status(store, "busy").startswith("Exited (143) ")
    r = store("commit", "busy", "snap:1")
    assert r.returncode == 0, r.stderr
    assert store("run", "--rm", "snap:1", "cat", "/data").stdout == "data\n"

    # Killed outright, strata cannot unlock: the kernel drops the lock with the process.
    p = subprocess.Popen([tool("strata"), "--root", store.root, "run", "--name", "killed", "base:1", "sleep", "30"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_status(store, "killed", "Up ")
        assert store("rm", "killed").returncode == 1
        p.kill()
        p.wait()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    wait_status(store, "killed", "Exited (255) ")  # its end is unknown, and shown as such
    r = store("rm", "killed")
    assert r.returncode == 0, r.stderr
    assert ps_status(store, "killed") is None


def test_image_tty_and_stdin(store):
    r = store("run", "--rm", "-i", "base:1", "sh", "-c", "tr a-z A-Z", input="piped\n")
    assert r.stdout == "PIPED\n"
    code, out = tty_session(["--root", store.root, "run", "--rm", "-it", "base:1", "sh"],
                            [(b"echo ti''ty-$(tty)\r", "tity-/dev/pts/0"), (b"exit 3\r", None)])
    assert code == 3, out


def resize(rows, cols):
    """A tty_session step resizing the terminal: the kernel sends SIGWINCH to its foreground process, strata."""
    return lambda master: fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def test_image_tty_follows_the_window_size_and_passes_ctrl_c(store):
    code, out = tty_session(["--root", store.root, "run", "--rm", "-it", "base:1", "sh"],
                            [(b"echo si''ze $(stty size)\r", "size 33 101"),
                             (resize(40, 132), None),
                             (b"echo si''ze $(stty size)\r", "size 40 132"),
                             (resize(12, 60), None),
                             (b"echo si''ze $(stty size)\r", "size 12 60"),
                             # Ctrl-C is the terminal's: the shell's foreground sleep gets SIGINT, strata does not.
                             (b"sleep 100\r", None), (b"\x03", None),
                             (b"echo after-$?\r", "after-130"),
                             (b"exit 3\r", None)])
    assert code == 3, out


def test_unprivileged_image_run_and_commit(user, workdir, base_tar):
    """The store workflow as an unprivileged user: stratafs mounts inside the container's namespaces."""
    home, tar = user_home_and_base_tar(user, workdir, base_tar)
    root = os.path.join(home, "store")
    script = (f"S={tool('strata')}; R={root}; $S --root $R import {tar} base:1 >/dev/null && "
              "$S --root $R run --name c1 base:1 sh -c 'echo hi > /made; id -u' && "
              "$S --root $R commit -c 'CMD [\"cat\", \"/made\"]' c1 made:1 >/dev/null && "
              "$S --root $R run --rm made:1 && "
              "$S --root $R run --rm -u app base:1 id -un; echo rc=$?")
    r = user.shell_with_fuse(script, workdir)
    lines = r.stdout.splitlines()
    assert lines[:2] == ["0", "hi"], r.stderr
    if user.subids:
        assert lines[2:] == ["app", "rc=0"], r.stderr
    else:
        assert lines[2:] == ["rc=125"], r.stderr
    assert host_mounts_under(workdir) == []


def test_help_and_man_page_describe_every_option():
    r = run([tool("strata"), "run", "--help"])
    assert r.stdout.startswith("Usage: strata run")
    with open(os.path.join(SOURCE_DIR, "man", "strata-run.1")) as f:
        man = f.read().replace("\\-", "-")
    for opt in ("--interactive", "--tty", "--rm", "--env", "--env-file", "--workdir", "--user", "--volume",
                "--name", "--entrypoint", "--hostname", "--network", "--publish", "--dns", "--add-host", "--rootfs",
                "--memory", "--memory-swap", "--cpus", "--pids-limit",
                "--help"):
        assert opt in r.stdout, opt
        assert opt in man, opt


# ---- a real distribution (opt-in: network and a few minutes) ----------------


@pytest.mark.skipif(os.environ.get("STRATA_SLOW_TESTS") != "1",
                    reason="set STRATA_SLOW_TESTS=1: debootstraps Debian from the network")
def test_debian_apt_get_install_commit_and_run(workdir):
    if shutil.which("debootstrap") is None:
        pytest.fail("debootstrap is not installed (scripts/install-deps.sh test)")
    mirror = os.environ.get("STRATA_DEBIAN_MIRROR", "http://deb.debian.org/debian")
    target = os.path.join(workdir, "debian")
    run(["debootstrap", "--variant=minbase", "bookworm", target, mirror], timeout=1800)
    tar = os.path.join(workdir, "debian.tar")
    run(["tar", "--numeric-owner", "--xattrs", "-C", target, "-cf", tar, "."], timeout=600)
    root = os.path.join(workdir, "store")

    def s(*args, **kw):
        kw.setdefault("timeout", 1200)
        return run([tool("strata"), "--root", root, *args], check=False, **kw)

    r = s("import", tar, "debian:bookworm")
    assert r.returncode == 0, r.stderr
    r = s("run", "--name", "apt", "debian:bookworm", "sh", "-c",
          "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hello >/dev/null && echo installed")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().endswith("installed")
    r = s("commit", "-m", "install hello", "-c", 'CMD ["hello"]', "apt", "hello:1")
    assert r.returncode == 0, r.stderr
    r = s("run", "--rm", "hello:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "Hello, world!\n"
    assert host_mounts_under(root) == []


def test_hostile_passwd_fifo_does_not_hang(rootfs):
    os.unlink(os.path.join(rootfs, "etc/passwd"))
    os.mkfifo(os.path.join(rootfs, "etc/passwd"))
    r = strata("--rootfs", rootfs, "-u", "app", "true", timeout=30)
    assert r.returncode == 125
    assert "unable to find user 'app'" in r.stderr
    assert strata("--rootfs", rootfs, "-u", "1000", "true", timeout=30).returncode == 0


def test_start_help_and_man_page():
    r = run([tool("strata"), "start", "--help"])
    assert r.stdout.startswith("Usage: strata start")
    with open(os.path.join(SOURCE_DIR, "man", "strata-start.1")) as f:
        man = f.read().replace("\\-", "-")
    for opt in ("--attach", "--interactive", "--tty", "--help"):
        assert opt in r.stdout, opt
        assert opt in man, opt


# ---- --read-only, --tmpfs, --mount --------------------------------------------


def test_read_only_root_with_tmpfs_and_mount_options(store, workdir):
    host = os.path.join(workdir, "shared")
    os.mkdir(host)
    r = store("run", "--name", "ro", "--read-only", "-w", "/made/here", "--tmpfs", "/tmp",
              "--tmpfs", "/data:size=64k,mode=700,exec", "--mount", f"type=bind,source={host},target=/shared",
              "--mount", "type=tmpfs,destination=/scratch,tmpfs-size=32k", "base:1", "sh", "-c",
              "touch /x 2>&1; pwd; touch /tmp/t /dev/shm/s /shared/from-ctr /scratch/s && echo writable; "
              "grep -E ' /(tmp|data|scratch) ' /proc/mounts | cut -d' ' -f2,4; stat -c %a /data; "
              "printf '#!/bin/sh\\necho ran\\n' > /tmp/s; chmod +x /tmp/s; /tmp/s 2>/dev/null || echo tmp-noexec; "
              "cp /tmp/s /data/s && /data/s; dd if=/dev/zero of=/data/big bs=1k count=100 2>/dev/null || echo data-full")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "touch: /x: Read-only file system"
    assert lines[1] == "/made/here"
    assert lines[2] == "writable"
    mounts = dict(line.split(" ", 1) for line in lines[3:6])
    assert set(mounts["/tmp"].split(",")) >= {"rw", "nosuid", "nodev", "noexec"}
    assert "size=64k" in mounts["/data"] and "mode=700" in mounts["/data"] and "noexec" not in mounts["/data"]
    assert "size=32k" in mounts["/scratch"]
    assert lines[6:] == ["700", "tmp-noexec", "ran", "data-full"]
    assert os.path.exists(os.path.join(host, "from-ctr"))
    # Nothing was written to the container's upper but the working directory.
    assert "/x" not in store("diff", "ro").stdout.split()
    j = json.loads(store("inspect", "--type", "container", "ro").stdout)[0]["HostConfig"]
    assert j["ReadonlyRootfs"] is True
    assert j["Tmpfs"] == {"/tmp": "", "/data": "size=64k,mode=700,exec", "/scratch": "rw,size=32k"}


def test_created_read_only_container_keeps_it_for_start(store):
    assert store("create", "--name", "roc", "--read-only", "--tmpfs", "/tmp", "base:1", "sh", "-c",
                 "touch /x 2>/dev/null && echo root-writable; touch /tmp/y && echo tmp-writable").returncode == 0
    for _ in range(2):
        r = store("start", "-a", "roc")
        assert (r.returncode, r.stdout) == (0, "tmp-writable\n"), r.stderr


def test_tmpfs_target_through_a_symlink_stays_in_the_root(rootfs, workdir):
    outside = os.path.join(workdir, "outside")
    os.mkdir(outside)
    os.symlink(outside, os.path.join(rootfs, "evil"))
    r = strata("--tmpfs", "/evil/sub", "--rootfs", rootfs, "sh", "-c", "touch /evil/sub/f && echo ok")
    assert (r.returncode, r.stdout) == (0, "ok\n"), r.stderr
    assert os.listdir(outside) == []
    assert os.path.isdir(os.path.join(rootfs, workdir.lstrip("/"), "outside", "sub"))


@pytest.mark.parametrize("args, message", [
    (["--tmpfs", "relative"], "bad tmpfs 'relative': the path must be absolute"),
    (["--tmpfs", "/t:size=lots"], "bad tmpfs '/t:size=lots': bad value in 'size=lots'"),
    (["--tmpfs", "/t:nosuchopt"], "bad tmpfs '/t:nosuchopt': unknown option 'nosuchopt'"),
    (["--tmpfs", "/t:uid=4294967295"], "id 4294967295 cannot be used"),
    (["--tmpfs", "/t:mode=999"], "bad value in 'mode=999'"),
    (["--mount", "type=volume,source=v,target=/v"], "volume 'v' needs an IMAGE"),
    (["--mount", "type=bind,source=rel,target=/v"], "the source must be an absolute host path"),
    (["--mount", "type=tmpfs,source=/x,target=/v"], "a tmpfs has no source"),
    (["--mount", "type=bind,source=/tmp"], "no target"),
    (["--mount", "type=bind,src=/tmp,dst=/v,color=red"], "unknown key 'color'"),
])
def test_bad_tmpfs_and_mount_options_are_refused(rootfs, args, message):
    r = strata(*args, "--rootfs", rootfs, "true")
    assert r.returncode == 125, r.stderr
    assert message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
