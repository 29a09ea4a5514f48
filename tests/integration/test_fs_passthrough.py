"""FUSE passthrough: with a root daemon on a kernel that offers it, reads and
writes of open files go from the kernel to the layer file without a request
to the daemon. These tests check that it is in use (the daemon's request log
has no READ or WRITE), that -o nopassthrough turns it off, and that what a
user sees is unchanged where handles of one file mix: copy-up under a reader,
shared mappings, truncation, executables."""
import gzip
import mmap
import os
import re
import shutil
import stat
import subprocess
import time

import pytest

from conftest import is_mounted, run, tool
from fsutil import unmount_now, write


def kernel_offers_passthrough():
    release = os.uname().release
    m = re.match(r"(\d+)\.(\d+)", release)
    if not m or (int(m.group(1)), int(m.group(2))) < (6, 9):
        return False, f"kernel {release} predates FUSE passthrough (6.9)"
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            if "CONFIG_FUSE_PASSTHROUGH=y" not in f.read():
                return False, "kernel built without CONFIG_FUSE_PASSTHROUGH"
    except OSError:
        pass  # no config to read: the version says it can
    return True, ""


def in_initial_user_namespace():
    with open("/proc/self/uid_map") as f:
        return f.read().split() == ["0", "0", "4294967295"]


offered, why_not = kernel_offers_passthrough()
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0 or not in_initial_user_namespace(),
                       reason="passthrough needs a daemon that is root of the initial user namespace"),
    pytest.mark.skipif(not offered, reason=why_not),
]


class DebugMount:
    """stratafs -d in the foreground, its request log in a file."""

    def __init__(self, mounts, wd, extra=()):
        self.bot, self.upper, self.work, self.mnt = (os.path.join(wd, n) for n in ("bot", "upper", "work", "mnt"))
        for d in (self.bot, self.upper, self.work, self.mnt):
            os.makedirs(d, exist_ok=True)
        self.log_path = os.path.join(wd, "daemon.log")
        self.extra = list(extra)
        self.mounts = mounts
        self.proc = None

    def start(self):
        opts = f"lowerdir={self.bot},upperdir={self.upper},workdir={self.work}"
        self.mounts.add(self.mnt)
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen([tool("stratafs"), "-d", "-o", opts, *self.extra, self.mnt],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        for _ in range(250):
            if is_mounted(self.mnt):
                return
            assert self.proc.poll() is None, open(self.log_path).read()
            time.sleep(0.02)
        raise AssertionError("stratafs did not mount")

    def stop(self):
        if self.proc is None:
            return
        if is_mounted(self.mnt):
            unmount_now(self.mnt)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        self.proc = None

    def opcodes(self):
        with open(self.log_path, errors="replace") as f:
            return re.findall(r"opcode: (\w+)", f.read())


@pytest.fixture
def daemon(mounts, workdir):
    made = []

    def make(extra=()):
        d = DebugMount(mounts, workdir, extra)
        made.append(d)
        return d
    yield make
    for d in made:
        d.stop()


def test_reads_and_writes_skip_the_daemon(daemon):
    d = daemon()
    data = os.urandom(3 << 20)
    write(f"{d.bot}/big.bin", data)
    d.start()
    with open(f"{d.mnt}/big.bin", "rb") as f:
        assert f.read() == data
        f.seek(12345)
        assert f.read(4096) == data[12345:12345 + 4096]
    with open(f"{d.mnt}/new.txt", "w") as f:
        f.write("written by the kernel\n" * 1000)
    with open(f"{d.mnt}/big.bin", "r+b") as f:  # copy-up, then a write to the upper copy
        f.seek(1 << 20)
        f.write(b"X" * 10)
    d.stop()
    ops = d.opcodes()
    assert "OPEN" in ops and "CREATE" in ops, ops
    assert "READ" not in ops and "WRITE" not in ops, "a read or write reached the daemon"
    assert open(f"{d.upper}/new.txt").read() == "written by the kernel\n" * 1000
    changed = open(f"{d.upper}/big.bin", "rb").read()
    assert changed == data[:1 << 20] + b"X" * 10 + data[(1 << 20) + 10:]
    assert open(f"{d.bot}/big.bin", "rb").read() == data


def test_nopassthrough_serves_reads_itself(daemon):
    d = daemon(["-o", "nopassthrough"])
    write(f"{d.bot}/f", b"lower data")
    d.start()
    assert open(f"{d.mnt}/f", "rb").read() == b"lower data"
    with open(f"{d.mnt}/g", "wb") as f:
        f.write(b"new")
    d.stop()
    ops = d.opcodes()
    assert "READ" in ops and "WRITE" in ops
    assert open(f"{d.upper}/g", "rb").read() == b"new"


def test_copy_up_under_an_open_reader(daemon):
    """A reader keeps the lower copy it opened (as with kernel overlayfs); a
    writer opened meanwhile gets the upper copy, served by the daemon."""
    d = daemon()
    write(f"{d.bot}/f", b"0123456789")
    d.start()
    reader = open(f"{d.mnt}/f", "rb")
    try:
        with open(f"{d.mnt}/f", "r+b") as w:
            w.seek(0)
            w.write(b"AB")
            w.flush()
            w.seek(0)
            assert w.read() == b"AB23456789"
        reader.seek(0)
        assert reader.read() == b"0123456789"
        assert open(f"{d.mnt}/f", "rb").read() == b"AB23456789"
    finally:
        reader.close()
    # Every handle closed: the next open passes through to the upper copy.
    with open(f"{d.mnt}/f", "r+b") as f:
        f.seek(0, 2)
        f.write(b"!")
    assert open(f"{d.mnt}/f", "rb").read() == b"AB23456789!"
    assert os.stat(f"{d.mnt}/f").st_size == 11
    assert open(f"{d.bot}/f", "rb").read() == b"0123456789"


def test_changes_through_a_reader_opened_before_copy_up(daemon):
    """fchmod and fsetxattr through a reader that still reads the lower copy
    apply to the file, as kernel overlayfs applies them to its one inode:
    the name shows them, and the upper copy carries them."""
    d = daemon()
    write(f"{d.bot}/f", b"0123456789")
    os.chmod(f"{d.bot}/f", 0o644)
    d.start()
    with open(f"{d.mnt}/f", "rb") as reader:
        with open(f"{d.mnt}/f", "r+b") as w:
            w.write(b"AB")
        os.fchmod(reader.fileno(), 0o600)
        os.setxattr(reader.fileno(), "user.through", b"reader")
        assert stat.S_IMODE(os.stat(f"{d.mnt}/f").st_mode) == 0o600
        assert os.getxattr(f"{d.mnt}/f", "user.through") == b"reader"
        assert reader.read() == b"0123456789"
    assert stat.S_IMODE(os.stat(f"{d.upper}/f").st_mode) == 0o600
    assert open(f"{d.upper}/f", "rb").read() == b"AB23456789"
    assert stat.S_IMODE(os.stat(f"{d.bot}/f").st_mode) == 0o644


def test_truncate_by_name_under_an_open_reader(daemon):
    """A copy-up without an open (truncate by name), then a new reader: the
    new reader sees the upper copy, the old one its lower copy."""
    d = daemon()
    write(f"{d.bot}/g", b"abcdefgh")
    d.start()
    with open(f"{d.mnt}/g", "rb") as old:
        os.truncate(f"{d.mnt}/g", 3)
        with open(f"{d.mnt}/g", "rb") as new:
            assert new.read() == b"abc"
        assert old.read() == b"abcdefgh"
        assert os.stat(f"{d.mnt}/g").st_size == 3
    assert open(f"{d.upper}/g", "rb").read() == b"abc"


def test_shared_mapping_truncate_and_sizes(daemon):
    d = daemon()
    os.makedirs(d.bot, exist_ok=True)
    d.start()
    path = f"{d.mnt}/mapped"
    with open(path, "w+b") as f:
        f.truncate(8192)
        with mmap.mmap(f.fileno(), 8192) as m:
            m[0:5] = b"hello"
            m[4096:4101] = b"world"
            m.flush()
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == 8192 and data[:5] == b"hello" and data[4096:4101] == b"world"
    st = os.stat(path)
    assert st.st_size == 8192
    with open(path, "r+b") as f:
        f.write(b"x" * 100)
        f.flush()
        os.ftruncate(f.fileno(), 50)
    assert os.stat(path).st_size == 50
    assert open(path, "rb").read() == b"x" * 50
    before = os.stat(path).st_mtime_ns
    time.sleep(0.01)
    with open(path, "ab") as f:
        f.write(b"tail")
    st = os.stat(path)
    assert st.st_size == 54 and st.st_mtime_ns > before
    assert open(f"{d.upper}/mapped", "rb").read() == b"x" * 50 + b"tail"


def test_executables_run_from_the_lower_layer(daemon):
    d = daemon()
    os.makedirs(f"{d.bot}/bin", exist_ok=True)
    shutil.copy2(shutil.which("true"), f"{d.bot}/bin/true")
    shutil.copy2(shutil.which("echo") or "/bin/echo", f"{d.bot}/bin/echo")
    d.start()
    assert run([f"{d.mnt}/bin/true"]).returncode == 0
    assert run([f"{d.mnt}/bin/echo", "from the mount"]).stdout == "from the mount\n"
    # Written through the mount, then run: the upper copy passes through too.
    shutil.copy2(f"{d.bot}/bin/true", f"{d.mnt}/bin/true2")
    assert run([f"{d.mnt}/bin/true2"]).returncode == 0
