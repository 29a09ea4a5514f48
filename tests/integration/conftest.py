"""Shared fixtures of the integration tests.

Every fixture that mounts something unmounts it in its finalizer, whatever the
test did, so a failing test never leaves a stuck mount for the next run.
"""
import os
import shutil
import subprocess
import tempfile
import time

import pytest

BUILD_DIR = os.environ.get("STRATA_BUILD_DIR", os.path.join(os.path.dirname(__file__), "..", "..", "build"))
SOURCE_DIR = os.environ.get("STRATA_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))


def tool(name):
    """Path of a built tool (build/tools/NAME); the test is skipped if it was not built."""
    path = os.path.join(BUILD_DIR, "tools", name)
    if not os.path.exists(path):
        pytest.fail(f"{name} was not built at {path}")
    return path


def is_mounted(path):
    real = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 1 and fields[1].encode().decode("unicode_escape") == real:
                return True
    return False


def unmount(path):
    """Unmounts PATH however it was mounted; never raises."""
    for cmd in (["fusermount3", "-u", path], ["umount", path], ["umount", "-l", path], ["fusermount3", "-uz", path]):
        if not is_mounted(path):
            return
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if not is_mounted(path):
                return
            time.sleep(0.02)


class Mounts:
    """Remembers every mount point a test creates and unmounts them all at the end."""

    def __init__(self):
        self.points = []

    def add(self, path):
        self.points.append(path)
        return path

    def cleanup(self):
        for p in reversed(self.points):
            unmount(p)


@pytest.fixture
def mounts():
    m = Mounts()
    try:
        yield m
    finally:
        m.cleanup()


@pytest.fixture
def workdir():
    """A fresh directory for the test, removed afterwards (after the mounts in it are gone)."""
    d = tempfile.mkdtemp(prefix="strata-test.", dir=os.environ.get("STRATA_TEST_TMP", "/tmp"))
    try:
        yield d
    finally:
        # Never delete through a mount that a failed test left behind.
        with open("/proc/self/mounts") as f:
            stuck = [line.split()[1] for line in f if line.split()[1].startswith(d + "/")]
        for p in sorted(stuck, reverse=True):
            unmount(p)
        shutil.rmtree(d, ignore_errors=True)


def run(cmd, check=True, **kw):
    """Runs CMD, capturing text output; on failure the assertion shows stderr."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    r = subprocess.run(cmd, **kw)
    if check:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}: {r.stderr}"
    return r


@pytest.fixture(scope="session")
def base_tar(tmp_path_factory):
    """The offline busybox base rootfs (scripts/make-base-rootfs.sh), made once per test file."""
    out = str(tmp_path_factory.mktemp("base") / "base.tar")
    run(["bash", os.path.join(SOURCE_DIR, "scripts", "make-base-rootfs.sh"), out])
    return out


def base_store(workdir, base_tar):
    """A store under WORKDIR with the busybox base imported as base:1 (CMD echo base-cmd): a function
    running `strata --root STORE ARGS...` without check, with the store's path as its `root`."""
    root = os.path.join(workdir, "store")

    def s(*args, **kw):
        kw.setdefault("timeout", 60)
        return run([tool("strata"), "--root", root, *args], check=False, **kw)

    r = s("import", "-c", "CMD [\"sh\", \"-c\", \"echo base-cmd\"]", base_tar, "base:1")
    assert r.returncode == 0, r.stderr
    s.root = root
    return s


def remove_all_containers(store):
    """`rm -f` of every container of STORE (a base_store function), running or not."""
    ids = store("ps", "-a", "-q", "--no-trunc").stdout.split()
    if ids:
        store("rm", "-f", *ids)


# ---- unprivileged users (test_run.py, test_resources.py) --------------------


class User:
    def __init__(self, name, subids):
        self.name = name
        args = ["useradd", "--no-create-home", "--shell", "/bin/sh"]
        if not subids:
            args += ["-K", "SUB_UID_COUNT=0", "-K", "SUB_GID_COUNT=0"]
        run(args + [name])
        if subids:
            # Own ranges, whatever useradd's defaults are.
            for opt in ("--del-subuids", "--del-subgids"):
                subprocess.run(["usermod", opt, "1-4294967294", name], capture_output=True)
            run(["usermod", "--add-subuids", "400000-465535", "--add-subgids", "400000-465535", name])
        self.uid = int(run(["id", "-u", name]).stdout)
        self.gid = int(run(["id", "-g", name]).stdout)

    def remove(self):
        subprocess.run(["userdel", self.name], capture_output=True)

    def strata(self, *args, **kw):
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--reset-env",
               tool("strata"), "run", *args]
        kw.setdefault("timeout", 60)
        return run(with_open_tun(cmd), check=False, **kw)

    def shell_with_fuse(self, script, workdir, timeout=120):
        """Runs SCRIPT with sh as the user, where the user can open /dev/fuse and /dev/net/tun."""
        cmd = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--init-groups", "--reset-env", "sh", "-c",
               script]
        return run(with_open_tun(with_open_fuse(cmd, workdir)), check=False, timeout=timeout)


def with_open_fuse(cmd, workdir):
    """CMD, run where the user can open /dev/fuse: it is usually 0666; where this host keeps it
    root-only, the command gets its own node (made in WORKDIR) in a private mount namespace."""
    if os.stat("/dev/fuse").st_mode & 0o006 == 0o006:
        return cmd
    dev = os.path.join(workdir, "devfuse")
    os.makedirs(dev, exist_ok=True)
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            f"mount -t tmpfs -o mode=755 none {dev} && mknod -m 666 {dev}/fuse c 10 229 && "
            f"mount --bind {dev}/fuse /dev/fuse && exec \"$@\"", "sh", *cmd]


def with_open_tun(cmd):
    """CMD, run where the user can open /dev/net/tun (slirp4netns opens it as the user): it is usually 0666;
    where this host keeps it root-only, the command gets its own node in a private mount namespace."""
    if os.stat("/dev/net/tun").st_mode & 0o006 == 0o006:
        return cmd
    return ["unshare", "-m", "--propagation", "private", "sh", "-c",
            "mount -t tmpfs -o mode=755 none /dev/net && mknod -m 666 /dev/net/tun c 10 200 && exec \"$@\"", "sh", *cmd]


@pytest.fixture(params=[True, False], ids=["subuid", "single-id"])
def user(request):
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    u = User(f"strun{os.getpid() % 100000}{'s' if request.param else 'n'}", request.param)
    u.subids = request.param
    try:
        yield u
    finally:
        u.remove()


def user_home_and_base_tar(user, workdir, base_tar):
    """A home directory owned by USER in WORKDIR, and a copy of the base
    image's tar that USER can read. Returns (home, tar)."""
    os.chmod(workdir, 0o755)
    home = os.path.join(workdir, "user")
    os.mkdir(home)
    os.chown(home, user.uid, user.gid)
    tar = os.path.join(workdir, "base.tar")
    shutil.copy(base_tar, tar)
    os.chmod(tar, 0o644)
    return home, tar


@pytest.fixture
def user_rootfs(user, workdir, base_tar):
    home, tar = user_home_and_base_tar(user, workdir, base_tar)
    root = os.path.join(home, "root")
    run(["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups", "sh", "-c",
         f"mkdir {root} && tar -xf {tar} -C {root} --no-same-owner --preserve-permissions"])
    return root
