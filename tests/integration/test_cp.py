"""strata cp and strata export: docker's copy rules, tar streams, running and stopped containers,
and paths that try to leave the container or to redirect a write on the host."""
import io
import os
import pty
import subprocess
import tarfile
import tempfile

import pytest

from conftest import tool
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


def test_symlinks_resolve_inside_the_container(store, workdir, request):
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
    assert committed(store, f"cat /etc/owned /etc/owned2 {hostfile}") == "pwned\n" * 3

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
def test_hostile_tar_on_stdin_is_refused(store, workdir, entries):
    cwd = os.path.join(workdir, "cwd")
    os.mkdir(cwd)
    r = subprocess.run([tool("strata"), "--root", store.root, "cp", "-", "c:/tmp"], capture_output=True,
                       input=tar_bytes(entries), cwd=cwd)
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1, r.stderr
    assert os.listdir(cwd) == [] and not os.path.exists("/x") and not os.path.exists("/tmp/x")
    assert ok(store("diff", "c")).stdout == ""


def test_a_running_container_is_refused_and_left_alone(store, workdir):
    ok(store("run", "-d", "--name", "r", "base:1", "sleep", "60"))
    write(f"{workdir}/f", "into a running one\n")
    for args in (["cp", f"{workdir}/f", "r:/tmp/in.txt"], ["cp", "r:/etc/passwd", f"{workdir}/p"], ["export", "r"]):
        r = store(*args)
        assert r.returncode == 1 and "container 'r' is running; stop it first" in r.stderr, (args, r.stderr)
        assert r.stdout == "" and r.stderr.count("\n") == 1
    assert not os.path.exists(f"{workdir}/p")
    assert ok(store("diff", "r")).stdout == ""
    assert ok(store("inspect", "-f", "{{.State.Status}}", "r")).stdout == "running\n"
    ok(store("kill", "r"))
    ok(store("wait", "r"))
    # Stopped, it can be copied from and into.
    ok(store("cp", f"{workdir}/f", "r:/tmp/in.txt"))
    ok(store("cp", "r:/tmp/in.txt", f"{workdir}/back"))
    assert read(f"{workdir}/back") == "into a running one\n"


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
