"""strata cp and strata export: docker's copy rules, tar streams, running and stopped containers,
and paths that try to leave the container or to redirect a write on the host."""
import io
import os
import pty
import stat
import subprocess
import tarfile
import tempfile
import threading

import pytest

from conftest import tool, user_home_and_base_tar
from test_lifecycle import eventually, store  # noqa: F401 (the fixture: base:1, everything removed afterwards)


def strata_mounts():
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if "strata-cp." in line.split()[1]]


@pytest.fixture(autouse=True)
def ctr(store):
    """A stopped container c in the store; no mount of cp or export may outlive the test."""
    assert store("create", "--name", "c", "base:1").returncode == 0
    yield "c"
    assert strata_mounts() == []


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


def write(path, text, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def read(path):
    with open(path) as f:
        return f.read()


def in_image(store, image, script):
    """Runs SCRIPT in a fresh container of IMAGE and returns its output."""
    return ok(store("run", "--rm", image, "sh", "-c", script)).stdout


def committed(store, script):
    ok(store("commit", "c", "snap:1"))
    return in_image(store, "snap:1", script)


def tar_names(data):
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return sorted(m.name.rstrip("/") for m in t.getmembers())


def test_files_and_directories_in_and_out_of_a_stopped_container(store, workdir):
    host = os.path.join(workdir, "host")
    write(f"{host}/f.txt", "hello\n", 0o640)
    os.chown(f"{host}/f.txt", 1234, 1234)
    write(f"{host}/d/sub/a", "A\n")
    write(f"{host}/d/b", "B\n")
    ok(store("cp", f"{host}/f.txt", "c:/data.txt"))        # a new file
    ok(store("cp", f"{host}/f.txt", "c:/etc/"))            # into an existing directory
    ok(store("cp", f"{host}/f.txt", "c:/etc/os-release"))  # over a file of the image (copy-up)
    ok(store("cp", "-a", f"{host}/f.txt", "c:/kept.txt"))  # -a keeps the owner
    ok(store("cp", f"{host}/d", "c:/srv"))                 # a directory to a new name
    ok(store("cp", f"{host}/d", "c:/tmp"))                 # a directory into a directory
    ok(store("cp", f"{host}/d/.", "c:/home/app"))          # the contents of a directory
    diff = ok(store("diff", "c")).stdout.splitlines()
    assert "A /data.txt" in diff and "A /srv" in diff and "C /etc/os-release" in diff and "A /etc/f.txt" in diff
    out = committed(store, "cat /data.txt /etc/f.txt /etc/os-release /srv/sub/a /tmp/d/b /home/app/sub/a; "
                           "stat -c '%u:%g %a' /data.txt /kept.txt /srv/b; ls /home/app")
    assert out.splitlines() == ["hello"] * 3 + ["A", "B", "A", "0:0 640", "1234:1234 640", "0:0 644", "b", "sub"]

    # Out again: owned by the caller, docker's rules on the host side.
    out = os.path.join(workdir, "out")
    os.mkdir(out)
    ok(store("cp", "c:/kept.txt", f"{out}/k.txt"))
    st = os.stat(f"{out}/k.txt")
    assert read(f"{out}/k.txt") == "hello\n" and (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    ok(store("cp", "-a", "c:/kept.txt", f"{out}/k2.txt"))
    assert os.stat(f"{out}/k2.txt").st_uid == 1234
    ok(store("cp", "c:/srv", out))
    ok(store("cp", "c:/srv/.", f"{out}/flat"))
    ok(store("cp", "c:/etc/os-release", f"{out}/"))
    assert read(f"{out}/srv/sub/a") == "A\n" and read(f"{out}/flat/b") == "B\n" and read(f"{out}/os-release") == "hello\n"

    # Tar streams both ways.
    r = store("cp", "c:/srv", "-", text=False, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert tar_names(r.stdout) == ["srv", "srv/b", "srv/sub", "srv/sub/a"]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in (("streamed/x", b"X\n"), ("top.txt", b"T\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    r = subprocess.run([tool("strata"), "--root", store.root, "cp", "-", "c:/tmp"], input=buf.getvalue(),
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    assert committed(store, "cat /tmp/streamed/x /tmp/top.txt") == "X\nT\n"


def test_mistakes_get_one_clear_line(store, workdir):
    write(f"{workdir}/f", "f\n")
    os.mkdir(f"{workdir}/dir")
    cases = [
        (["cp", "c:/nope", f"{workdir}/x"], 1, "Could not find the file /nope in container c"),
        (["cp", "ghost:/etc/hosts", f"{workdir}/x"], 1, "no such container"),
        (["cp", f"{workdir}/f", f"{workdir}/g"], 2, "one of SRC and DEST must be CONTAINER:PATH"),
        (["cp", "c:/etc/hosts", "c:/tmp/"], 2, "copying between containers is not supported"),
        (["cp", "c:/etc/hosts"], 2, "dest"),
        (["cp", f"{workdir}/f", "c:/nodir/"], 1, "does not exist"),
        (["cp", f"{workdir}/dir", "c:/etc/hosts"], 1, "cannot copy a directory to the file"),
        (["cp", "c:/etc/hosts/.", f"{workdir}/y"], 1, "is not a directory"),
        (["cp", f"{workdir}/missing", "c:/tmp"], 1, "no such file or directory"),
        (["cp", "-", "c:/etc/hosts"], 1, "must be an existing directory"),
    ]
    for args, code, text in cases:
        r = store(*args)
        assert r.returncode == code and text in r.stderr and r.stderr.count("\n") == 1, (args, r.returncode, r.stderr)
    assert not os.path.exists(f"{workdir}/x") and not os.path.exists(f"{workdir}/g")


def make_running(store, name="c"):
    """Replaces the stopped container NAME by a running one of the same image."""
    ok(store("rm", name))
    ok(store("run", "-d", "--name", name, "base:1", "sleep", "300"))


def seen_inside(store, script, running):
    """SCRIPT's output in container c as it is now: by exec when it runs, else in a commit of it."""
    if running:
        return ok(store("exec", "c", "sh", "-c", script)).stdout
    return committed(store, script)


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_symlinks_resolve_inside_the_container(store, workdir, request, running):
    if running:
        make_running(store)
    victim = os.path.join(workdir, "victim")
    write(f"{victim}/secret", "host secret\n")
    links = os.path.join(workdir, "links")
    os.mkdir(links)
    os.symlink("/", f"{links}/evil")
    os.symlink("../../../etc", f"{links}/up")
    os.symlink(victim, f"{links}/escape")          # an absolute host path
    os.symlink(f"{victim}/secret", f"{links}/escfile")
    fd, hostfile = tempfile.mkstemp(prefix="strata-cp-victim.", dir="/tmp")
    os.close(fd)
    request.addfinalizer(lambda: os.unlink(hostfile))
    os.symlink(hostfile, f"{links}/tmpfile")
    ok(store("cp", f"{links}/.", "c:/"))
    container_passwd = in_image(store, "base:1", "cat /etc/passwd")
    assert container_passwd != read("/etc/passwd")
    out = os.path.join(workdir, "out")
    os.mkdir(out)

    # Reading through the links gives the container's files, never the host's.
    ok(store("cp", "c:/evil/etc/passwd", f"{out}/p1"))
    ok(store("cp", "c:/up/passwd", f"{out}/p2"))
    ok(store("cp", "-L", "c:/up", f"{out}/etc"))
    assert read(f"{out}/p1") == read(f"{out}/p2") == read(f"{out}/etc/passwd") == container_passwd
    r = store("cp", "-L", "c:/escfile", f"{out}/s")
    assert r.returncode == 1 and "Could not find the file /escfile" in r.stderr
    assert not os.path.exists(f"{out}/s")
    # Without -L a link is copied as a link.
    ok(store("cp", "c:/escape", f"{out}/l"))
    assert os.readlink(f"{out}/l") == victim

    # Writing through them lands inside the container.
    write(f"{workdir}/f", "pwned\n")
    ok(store("cp", f"{workdir}/f", "c:/evil/etc/owned"))
    ok(store("cp", f"{workdir}/f", "c:/up/owned2"))
    ok(store("cp", f"{workdir}/f", "c:/tmpfile"))  # a dangling link: its target is made inside the container
    r = store("cp", f"{workdir}/f", "c:/escfile")  # its target's directory does not exist in the container
    assert r.returncode == 1 and "does not exist" in r.stderr
    assert not os.path.exists("/etc/owned") and not os.path.exists("/etc/owned2")
    assert read(f"{victim}/secret") == "host secret\n" and os.listdir(victim) == ["secret"] and read(hostfile) == ""
    assert seen_inside(store, f"cat /etc/owned /etc/owned2 {hostfile}", running) == "pwned\n" * 3

    # A container-made link does not redirect the host side of a copy out.
    r = subprocess.run([tool("strata"), "--root", store.root, "cp", "-", "c:/tmp"], capture_output=True,
                       input=tar_bytes([("pkg/link", victim, tarfile.SYMTYPE), ("pkg/f", "F\n", tarfile.REGTYPE)]))
    assert r.returncode == 0, r.stderr
    os.makedirs(f"{out}/pkg")
    ok(store("cp", "c:/tmp/pkg", out))
    assert os.readlink(f"{out}/pkg/link") == victim and os.listdir(victim) == ["secret"]


def tar_bytes(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as t:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE or kind == tarfile.LNKTYPE:
                info.linkname = data
                t.addfile(info)
            else:
                info.size = len(data)
                t.addfile(info, io.BytesIO(data.encode()))
    return buf.getvalue()


@pytest.mark.parametrize("entries", [
    [("../x", "dotdot\n", tarfile.REGTYPE)],
    [("a/../../x", "dotdot\n", tarfile.REGTYPE)],
    [("/x", "absolute\n", tarfile.REGTYPE)],
    [("l", "/tmp", tarfile.SYMTYPE), ("l/x", "through a link\n", tarfile.REGTYPE)],
    [("h", "/etc/passwd", tarfile.LNKTYPE)],
])
@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_hostile_tar_on_stdin_is_refused(store, workdir, entries, running):
    if running:
        make_running(store)
    cwd = os.path.join(workdir, "cwd")
    os.mkdir(cwd)
    r = subprocess.run([tool("strata"), "--root", store.root, "cp", "-", "c:/tmp"], capture_output=True,
                       input=tar_bytes(entries), cwd=cwd)
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    assert os.listdir(cwd) == [] and not os.path.exists("/x") and not os.path.exists("/tmp/x")
    assert ok(store("diff", "c")).stdout == ""
    if running:
        assert seen_inside(store, "ls -A /tmp; ls /x 2>&1 || true", running) == "ls: /x: No such file or directory\n"


def test_a_running_container_is_copied_through_its_own_view(store, workdir):
    ok(store("run", "-d", "--name", "r", "base:1", "sh", "-c",
             "echo made after start > /tmp/late.txt; mkdir -p /srv/d; echo x > /srv/d/x; exec sleep 300"))
    eventually(lambda: store("exec", "r", "test", "-f", "/srv/d/x").returncode == 0, "the container wrote its files")
    # Out: a file and a directory the container wrote after it started.
    ok(store("cp", "r:/tmp/late.txt", f"{workdir}/late"))
    assert read(f"{workdir}/late") == "made after start\n"
    assert os.stat(f"{workdir}/late").st_uid == os.getuid()
    ok(store("cp", "r:/srv/d", f"{workdir}/d"))
    assert read(f"{workdir}/d/x") == "x\n"
    ok(store("cp", "r:/srv/d/.", f"{workdir}/contents"))
    assert os.listdir(f"{workdir}/contents") == ["x"]
    # In: seen by the container's processes at once.
    write(f"{workdir}/f", "into a running one\n")
    write(f"{workdir}/tree/sub/a", "A\n")
    ok(store("cp", f"{workdir}/f", "r:/tmp/in.txt"))
    ok(store("cp", f"{workdir}/f", "r:/etc/"))
    ok(store("cp", f"{workdir}/tree", "r:/srv"))
    out = ok(store("exec", "r", "sh", "-c", "cat /tmp/in.txt /etc/f /srv/tree/sub/a; stat -c '%u:%g %a' /tmp/in.txt"))
    assert out.stdout == "into a running one\n" * 2 + "A\n0:0 644\n"
    # Tar streams both ways.
    r = store("cp", "r:/srv/d", "-", text=False, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert tar_names(r.stdout) == ["d", "d/x"]
    r = subprocess.run([tool("strata"), "--root", store.root, "cp", "-", "r:/tmp"], capture_output=True,
                       input=tar_bytes([("pkg/f", "F\n", tarfile.REGTYPE)]))
    assert r.returncode == 0, r.stderr
    assert ok(store("exec", "r", "cat", "/tmp/pkg/f")).stdout == "F\n"
    # Mistakes are the stopped container's.
    r = store("cp", "r:/nope", f"{workdir}/x")
    assert r.returncode == 1 and r.stderr == "strata: Could not find the file /nope in container r\n", r.stderr
    r = store("cp", "-", "r:/etc/hosts", text=False, capture_output=True, input=b"")
    assert r.returncode == 1 and b"must be an existing directory" in r.stderr
    r = store("cp", f"{workdir}/tree", "r:/etc/hosts")
    assert r.returncode == 1 and "cannot copy a directory to the file" in r.stderr
    assert not os.path.exists(f"{workdir}/x")
    # No mount on the host, and the container runs on.
    assert strata_mounts() == []
    assert ok(store("inspect", "-f", "{{.State.Status}}", "r")).stdout == "running\n"
    ok(store("kill", "r"))
    ok(store("wait", "r"))
    # Stopped, what was copied in is in its upper.
    ok(store("cp", "r:/tmp/in.txt", f"{workdir}/back"))
    assert read(f"{workdir}/back") == "into a running one\n"


def test_export_of_a_running_container_writes_its_merged_view(store, workdir):
    ok(store("run", "-d", "--name", "r", "-v", f"{workdir}:/vol", "base:1", "sh", "-c",
             "rm /etc/os-release; echo new > /new; exec sleep 300"))
    eventually(lambda: store("exec", "r", "test", "-f", "/new").returncode == 0, "the container wrote /new")
    write(f"{workdir}/on-volume", "v\n")
    r = store("export", "r", text=False, capture_output=True)
    assert r.returncode == 0, r.stderr
    names = tar_names(r.stdout)
    assert "new" in names and "etc/passwd" in names and "etc/os-release" not in names
    # What is mounted in the container is not part of its file system.
    assert "vol/on-volume" not in names and not any(n.startswith("proc/") for n in names)
    ok(store("export", "-o", f"{workdir}/r.tar", "r"))
    assert "new" in tar_names(open(f"{workdir}/r.tar", "rb").read())
    assert ok(store("inspect", "-f", "{{.State.Status}}", "r")).stdout == "running\n"


def test_cp_into_a_container_that_ends_midway_fails_cleanly(store, workdir):
    ok(store("run", "-d", "--name", "r", "base:1", "sleep", "300"))
    p = subprocess.Popen([tool("strata"), "--root", store.root, "cp", "-", "r:/tmp"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        data = tar_bytes([("big", "x" * (1 << 20), tarfile.REGTYPE), ("after", "late\n", tarfile.REGTYPE)])
        p.stdin.write(data[:200 << 10])  # cp is copying when the container ends
        p.stdin.flush()
        ok(store("kill", "r"))
        ok(store("wait", "r"))
        p.stdin.write(data[200 << 10:])
        p.stdin.close()
        err = p.stderr.read().decode()
        assert p.wait(timeout=60) == 1, err
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert err.startswith("strata: ") and err.count("\n") == 1, err
    assert ok(store("inspect", "-f", "{{.State.Status}}", "r")).stdout == "exited\n"
    assert strata_mounts() == []
    r = store("cp", "r:/tmp/after", f"{workdir}/after")
    assert r.returncode == 1 and not os.path.exists(f"{workdir}/after")


def test_export_writes_the_merged_tree(store, workdir):
    ok(store("run", "--name", "e", "base:1", "sh", "-c", "rm -r /home/app /etc/os-release; echo new > /new"))
    r = store("export", "e", text=False, capture_output=True)
    assert r.returncode == 0, r.stderr
    names = tar_names(r.stdout)
    assert "new" in names and "etc/passwd" in names and "bin/busybox" in names
    assert "home/app" not in names and "etc/os-release" not in names and "home" in names
    assert not any(".wh." in n for n in names)
    out = os.path.join(workdir, "e.tar")
    ok(store("export", "-o", out, "e"))
    with open(out, "rb") as f:
        assert f.read() == r.stdout
    # A FIFO (as /dev/null or /dev/fd/N) is written through, not replaced by a file.
    fifo = os.path.join(workdir, "fifo")
    os.mkfifo(fifo)
    got = []

    def read_fifo():
        with open(fifo, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read_fifo, daemon=True)  # a failed export must not hang the run
    reader.start()
    ok(store("export", "-o", fifo, "e"))
    reader.join(60)
    assert got == [r.stdout]
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    os.unlink(fifo)
    # Failures leave no file behind.
    os.mkdir(f"{workdir}/adir")
    r = store("export", "-o", f"{workdir}/adir", "e")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    r = store("export", "-o", f"{workdir}/missing.tar", "nosuch")
    assert r.returncode == 1 and "no such container" in r.stderr
    assert sorted(os.listdir(workdir)) == ["adir", "e.tar", "store"] and os.listdir(f"{workdir}/adir") == []
    # Not to a terminal.
    master, slave = pty.openpty()
    try:
        r = subprocess.run([tool("strata"), "--root", store.root, "export", "e"], stdout=slave, stderr=subprocess.PIPE,
                           text=True, timeout=60)
    finally:
        os.close(slave)
        os.close(master)
    assert r.returncode == 1 and "terminal" in r.stderr


def test_a_killed_cp_leaves_no_mount(store, workdir):
    import signal
    # A file larger than a pipe holds: cp blocks writing its tar while the container is mounted.
    big = os.path.join(workdir, "big")
    with open(big, "wb") as f:
        f.write(os.urandom(4 << 20))
    ok(store("cp", big, "c:/big"))
    p = subprocess.Popen([tool("strata"), "--root", store.root, "cp", "c:/big", "-"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        eventually(strata_mounts, "cp mounted the container")
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        p.stdout.close()
    # The daemon watches its owner and unmounts when it dies.
    eventually(lambda: strata_mounts() == [], "the killed cp's mount went away")
    ok(store("start", "-a", "c"))


def test_an_unprivileged_users_running_container(user, workdir, base_tar):
    """Rootless: the container's root is a FUSE mount that only its user namespace may use."""
    home, tar = user_home_and_base_tar(user, workdir, base_tar)
    # The container itself shows that it sees what cp put in: it copies /tmp/f to /seen once it appears.
    script = (f"S={tool('strata')}; R={home}/store; H={home}; $S --root $R import {tar} base:1 >/dev/null && "
              "$S --root $R run -d --network none --name r base:1 sh -c 'echo inside > /made; "
              "until [ -f /tmp/f ]; do sleep 0.1; done; cat /tmp/f > /seen; exec sleep 300' >/dev/null && "
              "until $S --root $R cp r:/made $H/made 2>/dev/null; do sleep 0.1; done && "
              "echo hi > $H/f && $S --root $R cp $H/f r:/tmp/f && "
              "until $S --root $R cp r:/seen $H/seen 2>/dev/null; do sleep 0.1; done && cat $H/seen && "
              "cat $H/made && "
              "$S --root $R export r | tar -t | grep -x made; "
              "echo rc=$?; $S --root $R rm -f r >/dev/null")
    r = user.shell_with_fuse(script, workdir)
    assert r.stdout.splitlines() == ["hi", "inside", "made", "rc=0"], r.stderr
    assert strata_mounts() == []


def test_an_unprivileged_user_execs_into_its_running_container(user, workdir, base_tar):
    """Rootless exec: the command joins the container's namespaces (its pid namespace too), runs as
    its root or, with subordinate ids, as another of its users, and its exit code comes back."""
    home, tar = user_home_and_base_tar(user, workdir, base_tar)
    other = "$S --root $R exec -u 1000 r id -u; " if user.subids else ""
    script = (f"S={tool('strata')}; R={home}/store; $S --root $R import {tar} base:1 >/dev/null && "
              "$S --root $R run -d --network none --name r base:1 sh -c 'echo up > /up; exec sleep 300' >/dev/null && "
              "until $S --root $R cp r:/up - >/dev/null 2>&1; do sleep 0.1; done; "
              "$S --root $R exec r sh -c 'id -u; cat /proc/1/cmdline | tr \"\\0\" \" \"; echo; "
              "echo made > /by-exec'; "
              + other +
              "$S --root $R exec r sh -c 'exit 7'; echo rc=$?; "
              "$S --root $R cp r:/by-exec - | tar -xO; "
              "$S --root $R rm -f r >/dev/null")
    r = user.shell_with_fuse(script, workdir)
    expected = ["0", "sleep 300 "] + (["1000"] if user.subids else []) + ["rc=7", "made"]
    assert r.stdout.splitlines() == expected, r.stderr
    assert strata_mounts() == []
