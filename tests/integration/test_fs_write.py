"""stratafs with a writable upper layer: every write path through a real
mount, copy-up, whiteouts and opaque directories on disk, and the upper read
back by kernel overlayfs."""
import ctypes
import errno
import fcntl
import mmap
import os
import signal
import stat
import struct
import subprocess
import time

import pytest

from conftest import is_mounted, run, tool
from fsutil import listing, oci_whiteout, snapshot, stratafs_mount, unmount_now, wait_until_mounted, whiteout, write

libc = ctypes.CDLL(None, use_errno=True)
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 1, 2


def renameat2(old, new, flags):
    if libc.renameat2(-100, old.encode(), -100, new.encode(), flags) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def link_fd(fd, new):
    """linkat(2) of the file open at FD to NEW, through its /proc/self/fd link."""
    AT_SYMLINK_FOLLOW = 0x400
    if libc.linkat(-100, f"/proc/self/fd/{fd}".encode(), -100, new.encode(), AT_SYMLINK_FOLLOW) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def punch_hole(fd, off, length):
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
    if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, length) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def assert_kernel_overlayfs_shows(rw, mounts, ours):
    """Kernel overlayfs on RW's layers and upper (stratafs unmounted) shows
    the tree OURS, and stratafs, mounted again, still shows it after."""
    kmnt, kwork = os.path.join(rw.wd, "kmnt"), os.path.join(rw.wd, "kwork")
    os.makedirs(kmnt)
    os.makedirs(kwork)
    mounts.add(kmnt)
    run(["mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={rw.top}:{rw.bot},upperdir={rw.upper},workdir={kwork}", kmnt])
    try:
        assert snapshot(kmnt) == ours
    finally:
        run(["umount", kmnt])
    rw.mount()
    assert snapshot(rw.mnt) == ours


def is_whiteout(path):
    st = os.lstat(path)
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


@pytest.fixture
def rw(workdir, mounts):
    """Two lower layers, an empty upper, mounted writable. Returns a namespace of paths."""
    class P:
        pass
    p = P()
    p.wd = workdir
    p.top, p.bot = os.path.join(workdir, "top"), os.path.join(workdir, "bot")
    p.upper, p.work, p.mnt = (os.path.join(workdir, n) for n in ("upper", "work", "mnt"))
    write(f"{p.bot}/etc/passwd", "root:x:0:0\n")
    write(f"{p.bot}/etc/group", "root:x:0:\n")
    write(f"{p.bot}/dir/a", "a")
    write(f"{p.bot}/dir/sub/deep", "deep")
    write(f"{p.bot}/tree/x/y/z", "z")
    write(f"{p.bot}/tree/file", "f")
    write(f"{p.top}/etc/motd", "motd\n")
    write(f"{p.top}/dir/b", "b")
    write(f"{p.top}/tree/x/top-only", "t")
    write(f"{p.top}/exec.bin", b"\x7fELF" + b"\0" * 100)
    os.chown(f"{p.top}/exec.bin", 123, 456)
    os.chmod(f"{p.top}/exec.bin", 0o4755)
    os.setxattr(f"{p.top}/exec.bin", "user.origin", b"lower")
    # security.capability v2: cap_net_raw permitted + effective
    os.setxattr(f"{p.top}/exec.bin", "security.capability", struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0))
    os.utime(f"{p.top}/exec.bin", ns=(1_111_111_111_222_333_444, 1_222_222_222_333_444_555))
    os.makedirs(p.upper)
    os.makedirs(p.work)
    p.mount = lambda extra=(): stratafs_mount(mounts, p.mnt, [p.top, p.bot], p.upper, p.work, extra=extra)
    p.lowers_before = (snapshot(p.top), snapshot(p.bot))
    p.mount()
    yield p
    # Whatever a test did, the lower layers were never touched.
    if is_mounted(p.mnt):
        unmount_now(p.mnt)
    assert (snapshot(p.top), snapshot(p.bot)) == p.lowers_before


def test_create_open_flags_and_writes(rw):
    m = rw.mnt
    fd = os.open(f"{m}/new", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o640)
    os.write(fd, b"hello ")
    os.pwrite(fd, b"HELLO", 0)
    os.writev(fd, [b"wor", b"ld"])
    os.close(fd)
    assert open(f"{m}/new", "rb").read() == b"HELLO world"
    assert stat.S_IMODE(os.stat(f"{m}/new").st_mode) == 0o640
    with pytest.raises(FileExistsError):
        os.open(f"{m}/new", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    with pytest.raises(FileExistsError):
        os.open(f"{m}/etc/passwd", os.O_CREAT | os.O_EXCL | os.O_WRONLY)  # lower file
    with open(f"{m}/etc/passwd", "a") as f:  # O_APPEND on a lower file: copy-up keeps the data
        f.write("me:x:1000:1000\n")
    assert open(f"{m}/etc/passwd").read() == "root:x:0:0\nme:x:1000:1000\n"
    with open(f"{m}/etc/group", "w") as f:  # O_TRUNC on a lower file
        f.write("new\n")
    assert open(f"{m}/etc/group").read() == "new\n"
    assert open(f"{rw.upper}/etc/group").read() == "new\n"
    assert sorted(os.listdir(f"{rw.upper}/etc")) == ["group", "passwd"]


def test_copy_up_preserves_everything(rw):
    m = rw.mnt
    before = os.lstat(f"{m}/exec.bin")
    os.setxattr(f"{m}/exec.bin", "user.added", b"1")  # a metadata change copies the file up
    after = os.lstat(f"{m}/exec.bin")
    assert after.st_ino == before.st_ino, "copy-up changed the inode number"
    assert (after.st_uid, after.st_gid, stat.S_IMODE(after.st_mode)) == (123, 456, 0o4755)
    assert after.st_mtime_ns == 1_222_222_222_333_444_555
    assert os.getxattr(f"{m}/exec.bin", "user.origin") == b"lower"
    assert os.getxattr(f"{m}/exec.bin", "security.capability") == struct.pack("<IIIII", 0x02000001, 1 << 13, 0, 0, 0)
    up = os.lstat(f"{rw.upper}/exec.bin")
    assert (up.st_uid, up.st_gid, stat.S_IMODE(up.st_mode), up.st_mtime_ns) == (123, 456, 0o4755, 1_222_222_222_333_444_555)
    assert open(f"{rw.upper}/exec.bin", "rb").read() == open(f"{rw.top}/exec.bin", "rb").read()
    # The parent directory was copied up without its other children.
    os.setxattr(f"{m}/dir/sub/deep", "user.x", b"1")
    assert listing(f"{rw.upper}/dir") == ["sub"]
    assert listing(f"{rw.upper}/dir/sub") == ["deep"]
    assert listing(f"{m}/dir") == ["a", "b", "sub"]
    # Nothing is left in the work dir.
    assert os.listdir(f"{rw.work}/strata.work") == []


def test_sparse_copy_up_and_huge_files(rw):
    with open(f"{rw.bot}/sparse", "wb") as f:
        f.write(b"start")
        f.seek(200 * 1024**2)
        f.write(b"end")
    rw.lowers_before = (snapshot(rw.top), snapshot(rw.bot))
    unmount_now(rw.mnt)
    rw.mount()
    with open(f"{rw.mnt}/sparse", "ab") as f:
        f.write(b"!")
    st = os.stat(f"{rw.upper}/sparse")
    assert st.st_size == 200 * 1024**2 + 4
    assert st.st_blocks * 512 < 4 * 1024**2, "copy-up filled the hole"
    with open(f"{rw.mnt}/sparse", "rb") as f:
        assert f.read(5) == b"start"
        f.seek(200 * 1024**2)
        assert f.read() == b"end!"
    # Over 4 GiB through the mount.
    with open(f"{rw.mnt}/big", "wb") as f:
        f.seek(5 * 1024**3)
        f.write(b"beyond")
    assert os.stat(f"{rw.mnt}/big").st_size == 5 * 1024**3 + 6
    with open(f"{rw.mnt}/big", "rb") as f:
        f.seek(5 * 1024**3)
        assert f.read() == b"beyond"


def test_truncate_chmod_chown_utimens(rw):
    m = rw.mnt
    os.truncate(f"{m}/dir/a", 0)
    assert open(f"{m}/dir/a").read() == ""
    with open(f"{m}/dir/b", "r+") as f:
        os.ftruncate(f.fileno(), 1000)
    assert os.stat(f"{m}/dir/b").st_size == 1000
    os.chmod(f"{m}/etc/motd", 0o4711)
    assert stat.S_IMODE(os.stat(f"{m}/etc/motd").st_mode) == 0o4711
    os.chown(f"{m}/etc/motd", 4242, 2424)
    st = os.stat(f"{m}/etc/motd")
    assert (st.st_uid, st.st_gid) == (4242, 2424)
    os.utime(f"{m}/etc/motd", ns=(1_000_000_000_000_000_001, 2_000_000_000_000_000_002))
    st = os.stat(f"{m}/etc/motd")
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_000_000_000_001, 2_000_000_000_000_000_002)
    # UTIME_OMIT keeps a time, UTIME_NOW sets it to now (touch -m / -a).
    run(["touch", "-m", f"{m}/etc/motd"])
    st = os.stat(f"{m}/etc/motd")
    assert st.st_atime_ns == 1_000_000_000_000_000_001 and abs(st.st_mtime - time.time()) < 60
    os.chmod(f"{m}/dir", 0o700)  # a lower directory
    assert stat.S_IMODE(os.stat(f"{m}/dir").st_mode) == 0o700
    assert listing(f"{m}/dir") == ["a", "b", "sub"]


def test_whiteouts_and_opaque_dirs_on_disk(rw):
    m = rw.mnt
    os.unlink(f"{m}/etc/passwd")  # lower only
    assert not os.path.exists(f"{m}/etc/passwd")
    assert is_whiteout(f"{rw.upper}/etc/passwd")
    write(f"{m}/scratch", "tmp")  # upper only: deleting leaves nothing
    os.unlink(f"{m}/scratch")
    assert not os.path.lexists(f"{rw.upper}/scratch")
    os.mkdir(f"{m}/newdir")
    os.rmdir(f"{m}/newdir")
    assert not os.path.lexists(f"{rw.upper}/newdir")
    # rm -rf of a merged dir, then mkdir: an empty opaque directory.
    run(["rm", "-rf", f"{m}/dir"])
    assert not os.path.exists(f"{m}/dir")
    assert is_whiteout(f"{rw.upper}/dir")
    os.mkdir(f"{m}/dir")
    assert listing(f"{m}/dir") == []
    assert os.getxattr(f"{rw.upper}/dir", "trusted.overlay.opaque") == b"y"
    write(f"{m}/dir/again", "x")
    assert listing(f"{m}/dir") == ["again"]
    # Re-creating a deleted file replaces its whiteout.
    write(f"{m}/etc/passwd", "fresh")
    assert open(f"{m}/etc/passwd").read() == "fresh"
    assert stat.S_ISREG(os.lstat(f"{rw.upper}/etc/passwd").st_mode)
    with pytest.raises(OSError) as e:
        os.rmdir(f"{m}/tree")
    assert e.value.errno == errno.ENOTEMPTY


def test_rename_files_and_dirs_from_any_layer(rw):
    m = rw.mnt
    os.rename(f"{m}/etc/motd", f"{m}/motd2")  # lower file
    assert open(f"{m}/motd2").read() == "motd\n"
    assert not os.path.exists(f"{m}/etc/motd")
    assert is_whiteout(f"{rw.upper}/etc/motd")
    ino = os.stat(f"{m}/tree/x").st_ino
    os.rename(f"{m}/tree", f"{m}/moved")  # a directory merged from both lowers
    assert not os.path.exists(f"{m}/tree")
    assert listing(f"{m}/moved") == ["file", "x"]
    assert listing(f"{m}/moved/x") == ["top-only", "y"]
    assert open(f"{m}/moved/x/y/z").read() == "z"
    assert os.stat(f"{m}/moved/x").st_ino == ino
    os.rename(f"{m}/moved", f"{m}/tree")  # and back over its own whiteout
    assert listing(f"{m}/tree/x") == ["top-only", "y"]
    # Rename over an existing lower file replaces it.
    write(f"{m}/src", "src")
    os.rename(f"{m}/src", f"{m}/etc/group")
    assert open(f"{m}/etc/group").read() == "src"
    # RENAME_NOREPLACE
    write(f"{m}/one", "1")
    with pytest.raises(FileExistsError):
        renameat2(f"{m}/one", f"{m}/etc/group", RENAME_NOREPLACE)
    renameat2(f"{m}/one", f"{m}/two", RENAME_NOREPLACE)
    assert open(f"{m}/two").read() == "1"
    # RENAME_EXCHANGE between a lower file and an upper file, and two dirs.
    renameat2(f"{m}/two", f"{m}/dir/a", RENAME_EXCHANGE)
    assert open(f"{m}/two").read() == "a" and open(f"{m}/dir/a").read() == "1"
    renameat2(f"{m}/dir", f"{m}/tree", RENAME_EXCHANGE)
    assert listing(f"{m}/tree") == ["a", "b", "sub"]
    assert listing(f"{m}/dir") == ["file", "x"]
    # A directory moved over a lower name must not merge with it.
    os.mkdir(f"{m}/fresh")
    write(f"{m}/fresh/only", "o")
    run(["rm", "-rf", f"{m}/etc"])
    os.rename(f"{m}/fresh", f"{m}/etc")
    assert listing(f"{m}/etc") == ["only"]


def test_links_symlinks_and_special_files(rw):
    m = rw.mnt
    os.link(f"{m}/etc/passwd", f"{m}/passwd.link")  # a lower file
    a, b = os.stat(f"{m}/etc/passwd"), os.stat(f"{m}/passwd.link")
    assert a.st_ino == b.st_ino and a.st_nlink == 2 and b.st_nlink == 2
    with open(f"{m}/passwd.link", "a") as f:
        f.write("via link\n")
    assert open(f"{m}/etc/passwd").read() == "root:x:0:0\nvia link\n"
    os.symlink("etc/passwd", f"{m}/sl")
    assert os.readlink(f"{m}/sl") == "etc/passwd" and open(f"{m}/sl").read().startswith("root")
    os.mkfifo(f"{m}/fifo", 0o600)
    assert stat.S_ISFIFO(os.lstat(f"{m}/fifo").st_mode)
    os.mknod(f"{m}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    st = os.lstat(f"{m}/null")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{m}/sock")
    s.close()
    assert stat.S_ISSOCK(os.lstat(f"{m}/sock").st_mode)


def test_xattrs_fallocate_sync_locks_mmap(rw):
    m = rw.mnt
    os.setxattr(f"{m}/etc/passwd", "user.a", b"1")
    assert os.getxattr(f"{m}/etc/passwd", "user.a") == b"1"
    os.removexattr(f"{m}/etc/passwd", "user.a")
    assert "user.a" not in os.listxattr(f"{m}/etc/passwd")
    os.setxattr(f"{m}/dir", "user.d", b"dir")  # a lower directory
    assert os.getxattr(f"{m}/dir", "user.d") == b"dir"
    with pytest.raises(OSError):
        os.setxattr(f"{m}/dir", "trusted.overlay.opaque", b"y")
    with open(f"{m}/data", "wb") as f:
        f.write(b"x" * (1 << 20))
    fd = os.open(f"{m}/data", os.O_RDWR)
    try:
        punch_hole(fd, 4096, 65536)
        assert os.pread(fd, 16, 8192) == b"\0" * 16
        os.posix_fallocate(fd, 0, 2 << 20)
        assert os.fstat(fd).st_size == 2 << 20
        os.fsync(fd)
        os.fdatasync(fd)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)
        # A second open file description cannot take the flock.
        fd2 = os.open(f"{m}/data", os.O_RDONLY)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd2, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd2)
        mm = mmap.mmap(fd, 1 << 20)
        mm[0:5] = b"MMAPD"
        mm.flush()
        mm.close()
    finally:
        os.close(fd)
    assert open(f"{m}/data", "rb").read(5) == b"MMAPD"
    os.sync()


def test_xattrs_of_a_removed_or_replaced_name(rw):
    """getxattr and listxattr on a file whose name went away (unlinked, or
    renamed over) answer ENOENT or the file's own value, as on the kernel:
    never EIO, and never the xattrs of the file that has the name now."""
    m = rw.mnt
    os.setxattr(f"{m}/etc/motd", "user.k", b"motd")
    write(f"{m}/other", "o")
    os.setxattr(f"{m}/other", "user.k", b"other")
    write(f"{m}/scratch", "s")
    os.setxattr(f"{m}/scratch", "user.k", b"scratch")
    lower = os.open(f"{m}/exec.bin", os.O_PATH)
    upper = os.open(f"{m}/etc/motd", os.O_PATH)
    gone = os.open(f"{m}/scratch", os.O_PATH)
    try:
        os.unlink(f"{m}/exec.bin")
        os.rename(f"{m}/other", f"{m}/etc/motd")
        os.unlink(f"{m}/scratch")
        for fd, key, value in ((lower, "user.origin", b"lower"), (upper, "user.k", b"motd"),
                               (gone, "user.k", b"scratch")):
            path = f"/proc/self/fd/{fd}"
            for call, want in ((lambda: os.getxattr(path, key), value), (lambda: key in os.listxattr(path), True)):
                try:
                    got = call()
                except OSError as e:
                    assert e.errno == errno.ENOENT, f"{key} of a removed name: {e}"
                else:
                    assert got == want
    finally:
        for fd in (lower, upper, gone):
            os.close(fd)
    assert os.getxattr(f"{m}/etc/motd", "user.k") == b"other"


def test_o_tmpfile_and_linkat(rw):
    """open(O_TMPFILE) makes a nameless file in the upper, which linkat(2)
    names (how programs write a file whole before it appears); with O_EXCL it
    can never be named. Nothing of them is left behind."""
    m = rw.mnt
    fd = os.open(f"{m}/etc", os.O_TMPFILE | os.O_RDWR, 0o640)
    try:
        os.write(fd, b"written whole")
        st = os.fstat(fd)
        assert st.st_nlink == 0 and stat.S_IMODE(st.st_mode) == 0o640 and st.st_uid == 0
        assert listing(f"{m}/etc") == ["group", "motd", "passwd"]
        link_fd(fd, f"{m}/etc/linked")
        os.pwrite(fd, b"W", 0)
        assert os.stat(f"{m}/etc/linked").st_ino == os.fstat(fd).st_ino
    finally:
        os.close(fd)
    assert open(f"{m}/etc/linked", "rb").read() == b"Written whole"
    assert stat.S_IMODE(os.stat(f"{m}/etc/linked").st_mode) == 0o640
    fd = os.open(m, os.O_TMPFILE | os.O_WRONLY | os.O_EXCL, 0o600)
    try:
        with pytest.raises(FileNotFoundError):
            link_fd(fd, f"{m}/never")
    finally:
        os.close(fd)
    assert not os.path.lexists(f"{m}/never")
    unmount_now(m)
    assert open(f"{rw.upper}/etc/linked", "rb").read() == b"Written whole"
    assert sorted(os.listdir(rw.upper)) == ["etc"] and sorted(os.listdir(f"{rw.upper}/etc")) == ["linked"]
    assert os.listdir(f"{rw.work}/strata.work") == []


def test_kernel_overlayfs_reads_the_upper_the_same(rw, mounts):
    m = rw.mnt
    os.unlink(f"{m}/etc/passwd")
    run(["rm", "-rf", f"{m}/dir"])
    os.mkdir(f"{m}/dir")
    write(f"{m}/dir/new", "n")
    os.rename(f"{m}/tree", f"{m}/tree2")
    os.link(f"{m}/etc/group", f"{m}/glink")
    os.symlink("x", f"{m}/sym")
    os.chmod(f"{m}/etc", 0o711)
    os.setxattr(f"{m}/etc/motd", "user.k", b"v")
    ours = snapshot(m)
    unmount_now(m)
    assert_kernel_overlayfs_shows(rw, mounts, ours)


def test_renamed_merged_dir_holds_no_whiteouts(rw, mounts):
    """A merged directory with deleted children, renamed: its opaque upper
    copy holds no whiteouts, and kernel overlayfs on the same upper shows
    what stratafs showed."""
    m = rw.mnt
    os.unlink(f"{m}/dir/a")  # lower child of a merged directory
    os.unlink(f"{m}/dir/sub/deep")  # and of a lower-only subdirectory
    os.unlink(f"{m}/tree/x/top-only")
    os.rename(f"{m}/dir", f"{m}/moved")
    renameat2(f"{m}/tree", f"{m}/etc", RENAME_EXCHANGE)
    assert listing(f"{m}/moved") == ["b", "sub"] and listing(f"{m}/moved/sub") == []
    assert listing(f"{m}/etc/x") == ["y"]
    ours = snapshot(m)
    unmount_now(m)
    for d in ("moved", "moved/sub", "etc", "etc/x", "tree"):
        names = os.listdir(f"{rw.upper}/{d}")
        left = [n for n in names if n.startswith(".wh.") or is_whiteout(f"{rw.upper}/{d}/{n}")]
        assert left == [], f"the opaque upper copy {d} holds whiteouts {left}"
    assert_kernel_overlayfs_shows(rw, mounts, ours)


def test_changes_survive_remount_and_inodes_stay(rw):
    m = rw.mnt
    ino = os.stat(f"{m}/etc/motd").st_ino
    with open(f"{m}/etc/motd", "a") as f:
        f.write("more\n")
    os.mkdir(f"{m}/keep")
    unmount_now(m)
    rw.mount()
    assert open(f"{m}/etc/motd").read() == "motd\nmore\n"
    assert os.stat(f"{m}/etc/motd").st_ino == ino
    assert os.path.isdir(f"{m}/keep")


def test_concurrent_writers_in_one_directory(rw):
    script = f"""
import os, sys
d = "{rw.mnt}/busy"
os.makedirs(d, exist_ok=True)
me = sys.argv[1]
for i in range(150):
    p = f"{{d}}/{{me}}-{{i}}"
    with open(p, "w") as f:
        f.write(p)
    if i % 3 == 0:
        os.rename(p, p + ".r")
    elif i % 3 == 1:
        os.unlink(p)
    os.listdir(d)
"""
    procs = [subprocess.Popen(["python3", "-c", script, str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    names = set(os.listdir(f"{rw.mnt}/busy"))
    want = set()
    for n in range(4):
        for i in range(150):
            if i % 3 == 0:
                want.add(f"{n}-{i}.r")
            elif i % 3 == 2:
                want.add(f"{n}-{i}")
    assert names == want


def test_listing_in_progress_while_the_directory_changes(rw):
    """A pass over a directory that changes midway lists every entry that
    was there when it started and was not removed exactly once, and no name
    that never existed. Afterwards a new pass sees the change."""
    d = f"{rw.mnt}/many"
    os.makedirs(d)
    first = {f"entry-{i:05d}" for i in range(4000)}
    for name in first:
        open(f"{d}/{name}", "w").close()
    it = os.scandir(d)
    seen = []
    for entry in it:
        seen.append(entry.name)
        if len(seen) == 100:
            break
    removed = set(sorted(first - set(seen))[-200:])
    added = {f"new-{i}" for i in range(300)}
    for name in removed:
        os.unlink(f"{d}/{name}")
    for name in added:
        open(f"{d}/{name}", "w").close()
    seen.extend(entry.name for entry in it)
    it.close()
    assert len(seen) == len(set(seen)), "an entry was listed twice"
    assert (first - removed) <= set(seen)
    assert set(seen) <= first | added
    assert set(os.listdir(d)) == (first - removed) | added


def test_oci_markers_in_lowers_with_upper(workdir, mounts):
    low = os.path.join(workdir, "low")
    base = os.path.join(workdir, "base")
    write(f"{base}/d/gone", "x")
    write(f"{base}/d/kept", "k")
    oci_whiteout(f"{low}/d", "gone")
    up, wk, mnt = (os.path.join(workdir, n) for n in ("up", "wk", "mnt"))
    os.makedirs(up)
    os.makedirs(wk)
    stratafs_mount(mounts, mnt, [low, base], up, wk)
    assert listing(f"{mnt}/d") == ["kept"]
    write(f"{mnt}/d/gone", "back")
    assert listing(f"{mnt}/d") == ["gone", "kept"]
    assert open(f"{mnt}/d/gone").read() == "back"


# --- pre-mount checks and faults ---

def test_bad_upper_and_work_dirs(workdir, mounts):
    low, up, wk, mnt = (os.path.join(workdir, n) for n in ("low", "up", "wk", "mnt"))
    for d in (low, up, wk, mnt):
        os.makedirs(d, exist_ok=True)
    write(f"{low}/f", "x")
    other = os.path.join(workdir, "otherfs")
    os.makedirs(other)
    mounts.add(other)
    run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", other])
    rofs = os.path.join(workdir, "rofs")
    os.makedirs(rofs)
    mounts.add(rofs)
    run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", rofs])
    os.makedirs(f"{rofs}/up")
    os.makedirs(f"{rofs}/wk")
    run(["mount", "-o", "remount,ro", rofs])
    write(f"{workdir}/busywk/something", "x")
    os.makedirs(f"{low}/inner")
    cases = [
        (f"lowerdir={low},upperdir={up},workdir={other}", "not on the same file system"),
        (f"lowerdir={low},upperdir={up},workdir={workdir}/busywk", "is not empty"),
        (f"lowerdir={low},upperdir={low}/inner,workdir={wk}", "is inside lowerdir"),
        (f"lowerdir={low},upperdir={rofs}/up,workdir={rofs}/wk", "read-only"),
        (f"lowerdir={low},upperdir={up}", "upperdir given without workdir"),
    ]
    for opts, msg in cases:
        mounts.add(mnt)
        r = run([tool("stratafs"), "-o", opts, mnt], check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and msg in lines[0], (opts, r.stderr)
        assert not is_mounted(mnt)
    # A work dir in use by another mount.
    stratafs_mount(mounts, mnt, [low], up, wk)
    mnt2 = os.path.join(workdir, "mnt2")
    os.makedirs(mnt2)
    mounts.add(mnt2)
    up2 = os.path.join(workdir, "up2")
    os.makedirs(up2)
    r = run([tool("stratafs"), "-o", f"lowerdir={low},upperdir={up2},workdir={wk}", mnt2], check=False)
    assert r.returncode != 0 and "in use by another mount" in r.stderr
    assert not is_mounted(mnt2)


def test_remount_right_after_unmount_reuses_the_workdir(workdir, mounts):
    """A script unmounts and mounts the same upper and work dir again on the
    next line: the new mount must not find the work dir still in use."""
    low, up, wk, mnt = (os.path.join(workdir, n) for n in ("low", "up", "wk", "mnt"))
    write(f"{low}/f", "lower\n")
    os.makedirs(up)
    os.makedirs(wk)
    for i in range(8):
        stratafs_mount(mounts, mnt, [low], up, wk)
        with open(f"{mnt}/f", "a") as f:
            f.write(f"{i}\n")
        run(["fusermount3", "-u", mnt])
    stratafs_mount(mounts, mnt, [low], up, wk)
    with open(f"{mnt}/f") as f:
        assert f.read() == "lower\n" + "".join(f"{i}\n" for i in range(8))


def test_enospc_during_copy_up_leaves_nothing(workdir, mounts):
    low = os.path.join(workdir, "low")
    write(f"{low}/big", os.urandom(6 * 1024**2))
    small = os.path.join(workdir, "small")
    os.makedirs(small)
    mounts.add(small)
    run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small])
    os.makedirs(f"{small}/up")
    os.makedirs(f"{small}/wk")
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [low], f"{small}/up", f"{small}/wk")
    with pytest.raises(OSError) as e:
        with open(f"{mnt}/big", "ab") as f:
            f.write(b"!")
    assert e.value.errno in (errno.ENOSPC, errno.EDQUOT)
    assert open(f"{mnt}/big", "rb").read() == open(f"{low}/big", "rb").read()
    assert os.listdir(f"{small}/up") == []
    assert os.listdir(f"{small}/wk/strata.work") == []


def test_sigkill_then_remount(workdir, mounts):
    low, up, wk, mnt = (os.path.join(workdir, n) for n in ("low", "up", "wk", "mnt"))
    write(f"{low}/f", "lower")
    os.makedirs(up)
    os.makedirs(wk)
    os.makedirs(mnt)
    mounts.add(mnt)
    p = subprocess.Popen([tool("stratafs"), "-f", "-o", f"lowerdir={low},upperdir={up},workdir={wk}", mnt],
                         stderr=subprocess.DEVNULL)
    try:
        wait_until_mounted(mnt)
        with open(f"{mnt}/synced", "w") as f:
            f.write("durable")
            f.flush()
            os.fsync(f.fileno())
        write(f"{wk}/strata.work/#leftover", "half a copy")  # what a killed copy-up leaves
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    run(["fusermount3", "-uz", mnt], check=False)
    stratafs_mount(mounts, mnt, [low], up, wk)
    assert open(f"{mnt}/synced").read() == "durable"
    assert open(f"{mnt}/f").read() == "lower"
    assert os.listdir(f"{wk}/strata.work") == []


@pytest.mark.parametrize("volatile", [False, True])
def test_volatile_never_syncs_the_upper(workdir, mounts, volatile):
    """-o volatile (as overlayfs's): copy-up, fsync and fdatasync reach the upper's disk never, and
    everything else is as without it. The daemon runs under strace, which counts its syncs."""
    bot, upper, work, mnt = (os.path.join(workdir, n) for n in ("bot", "upper", "work", "mnt"))
    write(f"{bot}/big", b"x" * 100_000)
    write(f"{bot}/dir/f", "f")
    os.makedirs(upper)
    os.makedirs(work)
    os.makedirs(mnt)
    log = os.path.join(workdir, "strace.log")
    opts = f"lowerdir={bot},upperdir={upper},workdir={work}" + (",volatile" if volatile else "")
    mounts.add(mnt)
    daemon = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=fsync,fdatasync", "-o", log,
                               tool("stratafs"), "-f", "-o", opts, mnt])
    try:
        wait_until_mounted(mnt, seconds=10)  # under strace
        with open(f"{mnt}/big", "ab") as f:  # a copy-up
            f.write(b"y")
            f.flush()
            os.fsync(f.fileno())
            os.fdatasync(f.fileno())
        dfd = os.open(f"{mnt}/dir", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        with open(f"{mnt}/big", "rb") as f:
            assert f.read() == b"x" * 100_000 + b"y"
    finally:
        unmount_now(mnt)
        daemon.wait(timeout=30)
    with open(f"{upper}/big", "rb") as f:
        assert f.read() == b"x" * 100_000 + b"y"
    with open(log) as f:
        syncs = [line for line in f if "fsync(" in line or "fdatasync(" in line]
    if volatile:
        assert syncs == []
    else:
        assert len(syncs) >= 3, syncs  # the copy-up's, the file's two, the directory's
