"""stratafs read-only union mounts: every rule of the merged view checked
through a real FUSE mount, as a user would see it."""
import errno
import os
import shutil
import signal
import stat
import subprocess
import time

import pytest

from conftest import is_mounted, run, tool
from fsutil import listing, oci_whiteout, snapshot, stratafs_mount, unmount_now, wait_until_mounted, whiteout, write


@pytest.fixture
def stack(workdir):
    """Three layers exercising merge, both whiteout formats and both opaque formats."""
    top, mid, bot = (os.path.join(workdir, n) for n in ("top", "mid", "bot"))
    # bottom
    write(f"{bot}/etc/passwd", "root:x:0:0\n")
    write(f"{bot}/etc/hosts", "bottom hosts\n")
    write(f"{bot}/etc/gone_ovl", "x")
    write(f"{bot}/etc/gone_oci", "x")
    write(f"{bot}/opq_ovl/old", "old")
    write(f"{bot}/opq_oci/old", "old")
    write(f"{bot}/opq_user/old", "old")
    write(f"{bot}/file_then_dir", "i was a file")
    write(f"{bot}/dir_then_file/inner", "hidden")
    write(f"{bot}/deepdir/sub/leaf", "leaf")
    # middle
    write(f"{mid}/etc/hosts", "middle hosts\n")
    whiteout(f"{mid}/etc/gone_ovl")
    oci_whiteout(f"{mid}/etc", "gone_oci")
    write(f"{mid}/opq_ovl/new", "new")
    os.setxattr(f"{mid}/opq_ovl", "trusted.overlay.opaque", b"y")
    write(f"{mid}/opq_oci/new", "new")
    write(f"{mid}/opq_oci/.wh..wh..opq")
    write(f"{mid}/opq_user/new", "new")
    os.setxattr(f"{mid}/opq_user", "user.overlay.opaque", b"y")
    write(f"{mid}/file_then_dir/now_a_dir", "d")
    write(f"{mid}/dir_then_file", "now a file")
    oci_whiteout(f"{mid}/deepdir/sub", "leaf")
    # top
    write(f"{top}/etc/motd", "hello\n")
    write(f"{top}/etc/hosts", "top hosts\n")
    oci_whiteout(top, "nothing_below")  # a whiteout of a name that exists nowhere
    return workdir, [top, mid, bot]


def test_merged_view_follows_overlay_rules(stack, mounts):
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    stratafs_mount(mounts, mnt, layers)
    assert listing(mnt) == ["deepdir", "dir_then_file", "etc", "file_then_dir", "opq_oci", "opq_ovl", "opq_user"]
    assert listing(f"{mnt}/etc") == ["hosts", "motd", "passwd"]
    assert open(f"{mnt}/etc/hosts").read() == "top hosts\n"
    assert open(f"{mnt}/etc/passwd").read() == "root:x:0:0\n"
    for d in ("opq_ovl", "opq_oci", "opq_user"):
        assert listing(f"{mnt}/{d}") == ["new"], d
        assert not os.path.exists(f"{mnt}/{d}/old")
    assert os.path.isdir(f"{mnt}/file_then_dir") and listing(f"{mnt}/file_then_dir") == ["now_a_dir"]
    assert os.path.isfile(f"{mnt}/dir_then_file")
    assert open(f"{mnt}/dir_then_file").read() == "now a file"
    assert listing(f"{mnt}/deepdir/sub") == []
    # Whited-out names are gone for lookup too.
    for p in ("etc/gone_ovl", "etc/gone_oci", "deepdir/sub/leaf", "nothing_below"):
        assert not os.path.lexists(f"{mnt}/{p}"), p


def test_markers_are_never_visible(stack, mounts):
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    stratafs_mount(mounts, mnt, layers)
    for dirpath, dirnames, filenames in os.walk(mnt):
        for n in dirnames + filenames:
            assert not n.startswith(".wh."), os.path.join(dirpath, n)
            st = os.lstat(os.path.join(dirpath, n))
            assert not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
    # Looking a marker up by name finds nothing either.
    assert not os.path.lexists(f"{mnt}/etc/.wh.gone_oci")
    assert not os.path.lexists(f"{mnt}/opq_oci/.wh..wh..opq")
    # Overlay-private xattrs are hidden from listxattr and getxattr.
    for d in ("opq_ovl", "opq_user"):
        assert [x for x in os.listxattr(f"{mnt}/{d}") if "overlay" in x] == []
        with pytest.raises(OSError) as e:
            os.getxattr(f"{mnt}/{d}", "trusted.overlay.opaque" if d == "opq_ovl" else "user.overlay.opaque")
        assert e.value.errno == errno.ENODATA


def test_every_file_type_and_attribute_is_faithful(workdir, mounts):
    low = os.path.join(workdir, "low")
    os.makedirs(low)
    write(f"{low}/plain", "data", mode=0o640)
    write(f"{low}/setuid", "x", mode=0o4755)
    os.makedirs(f"{low}/sticky")
    os.chmod(f"{low}/sticky", 0o1777)
    os.symlink("plain", f"{low}/link")
    os.symlink("/etc/../nowhere/abs", f"{low}/abslink")
    write(f"{low}/hard1", "shared")
    os.link(f"{low}/hard1", f"{low}/hard2")
    os.mkfifo(f"{low}/fifo")
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.bind(f"{low}/sock")
    s.close()
    os.mknod(f"{low}/null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.mknod(f"{low}/blk", stat.S_IFBLK | 0o600, os.makedev(7, 0))
    os.chown(f"{low}/plain", 1234, 5678)
    os.setxattr(f"{low}/plain", "user.note", b"hello\x00bin")
    os.utime(f"{low}/plain", ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321))
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [low])
    want, got = snapshot(low), snapshot(mnt)
    assert got == want
    st = os.lstat(f"{mnt}/plain")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1234, 5678, 0o640)
    assert st.st_mtime_ns == 1_500_000_000_987_654_321  # (atime moves: the snapshot read the file)
    assert os.lstat(f"{mnt}/sticky").st_mtime_ns == os.lstat(f"{low}/sticky").st_mtime_ns
    assert os.getxattr(f"{mnt}/plain", "user.note") == b"hello\x00bin"
    assert stat.S_IMODE(os.lstat(f"{mnt}/setuid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(f"{mnt}/sticky").st_mode) == 0o1777
    assert os.readlink(f"{mnt}/link") == "plain" and open(f"{mnt}/link").read() == "data"
    assert os.readlink(f"{mnt}/abslink") == "/etc/../nowhere/abs"
    h1, h2 = os.lstat(f"{mnt}/hard1"), os.lstat(f"{mnt}/hard2")
    assert h1.st_ino == h2.st_ino and h1.st_nlink == 2 and h2.st_nlink == 2
    assert h1.st_ino != os.lstat(f"{mnt}/plain").st_ino
    assert stat.S_ISFIFO(os.lstat(f"{mnt}/fifo").st_mode)
    assert stat.S_ISSOCK(os.lstat(f"{mnt}/sock").st_mode)
    n = os.lstat(f"{mnt}/null")
    assert stat.S_ISCHR(n.st_mode) and n.st_rdev == os.makedev(1, 3)
    b = os.lstat(f"{mnt}/blk")
    assert stat.S_ISBLK(b.st_mode) and b.st_rdev == os.makedev(7, 0)


def test_sparse_and_huge_files(workdir, mounts):
    low = os.path.join(workdir, "low")
    os.makedirs(low)
    with open(f"{low}/huge", "wb") as f:
        f.seek(5 * 1024**3)
        f.write(b"end-of-huge")
    with open(f"{low}/sparse", "wb") as f:
        f.write(b"head")
        f.seek(64 * 1024**2)
        f.write(b"tail")
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [low])
    st = os.stat(f"{mnt}/huge")
    assert st.st_size == 5 * 1024**3 + 11
    assert st.st_blocks * 512 < 1024**2, "a sparse file must not look allocated"
    with open(f"{mnt}/huge", "rb") as f:
        f.seek(5 * 1024**3 - 3)
        assert f.read() == b"\0\0\0end-of-huge"
    with open(f"{mnt}/sparse", "rb") as f:
        data = f.read()
    assert len(data) == 64 * 1024**2 + 4 and data[:4] == b"head" and data[-4:] == b"tail"
    assert data[4:-4].count(0) == len(data) - 8
    # SEEK_DATA/SEEK_HOLE see the hole through the mount.
    fd = os.open(f"{mnt}/sparse", os.O_RDONLY)
    try:
        assert os.lseek(fd, 0, os.SEEK_HOLE) < 64 * 1024**2
    finally:
        os.close(fd)


def test_odd_names_and_long_paths(workdir, mounts):
    low = os.path.join(workdir, "low").encode()
    os.makedirs(low)
    odd = [b"x" * 255, b"new\nline", b"\xff\xfe not utf-8", b" lead and trail ", b"-dash", b"colon:semi;"]
    for n in odd:
        with open(os.path.join(low, n), "wb") as f:
            f.write(n)
    # A path of about 4,000 bytes: nested directories of 200-byte names.
    deep = low
    rel = b""
    while len(rel) < 3900:
        rel = os.path.join(rel, b"d" * 200) if rel else b"d" * 200
    fd = os.open(low, os.O_RDONLY | os.O_DIRECTORY)
    for part in rel.split(b"/"):
        os.mkdir(part, dir_fd=fd)
        nfd = os.open(part, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    with open(os.open(b"leaf", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd), "wb") as f:
        f.write(b"deep")
    os.close(fd)
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [low.decode()])
    names = os.listdir(mnt.encode())
    for n in odd:
        assert n in names
        with open(os.path.join(mnt.encode(), n), "rb") as f:
            assert f.read() == n
    full = os.path.join(mnt.encode(), rel, b"leaf")
    assert len(full) > 4000
    with open(full, "rb") as f:
        assert f.read() == b"deep"


def test_inode_numbers_are_stable_unique_and_match_readdir(workdir, mounts):
    a, b = os.path.join(workdir, "a"), os.path.join(workdir, "b")
    # Layer b lives on its own tmpfs: inode numbers of two file systems overlap.
    os.makedirs(b)
    mounts.add(b)
    run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", b])
    for layer in (a, b):
        for i in range(30):
            write(f"{layer}/{os.path.basename(layer)}{i}", str(i))
            write(f"{layer}/sub/{os.path.basename(layer)}{i}", str(i))
    mnt = os.path.join(workdir, "mnt")

    def inos():
        seen = {}
        for dirpath, dirnames, filenames in os.walk(mnt):
            with os.scandir(dirpath) as it:
                for e in it:
                    st = os.lstat(e.path)
                    assert e.inode() == st.st_ino, e.path
                    seen[os.path.relpath(e.path, mnt)] = st.st_ino
        return seen

    stratafs_mount(mounts, mnt, [a, b])
    first = inos()
    assert len(set(first.values())) == len(first), "two different files share an inode number"
    unmount_now(mnt)
    stratafs_mount(mounts, mnt, [a, b])
    assert inos() == first, "inode numbers changed across a remount"


def test_every_write_is_erofs(stack, mounts):
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    stratafs_mount(mounts, mnt, layers)
    before = {l: snapshot(l) for l in layers}
    p = f"{mnt}/etc/hosts"
    attempts = [
        lambda: open(p, "w"),
        lambda: open(p, "a"),
        lambda: open(f"{mnt}/etc/new", "w"),
        lambda: os.truncate(p, 0),
        lambda: os.mkdir(f"{mnt}/newdir"),
        lambda: os.rmdir(f"{mnt}/deepdir/sub"),
        lambda: os.unlink(p),
        lambda: os.rename(p, f"{mnt}/etc/h2"),
        lambda: os.chmod(p, 0o600),
        lambda: os.chown(p, 1, 1),
        lambda: os.utime(p, (1, 1)),
        lambda: os.symlink("x", f"{mnt}/sl"),
        lambda: os.link(p, f"{mnt}/hl"),
        lambda: os.mkfifo(f"{mnt}/ff"),
        lambda: os.setxattr(p, "user.x", b"1"),
        lambda: os.removexattr(p, "user.x"),
    ]
    for i, attempt in enumerate(attempts):
        with pytest.raises(OSError) as e:
            attempt()
        assert e.value.errno == errno.EROFS, f"attempt {i}: {e.value}"
    assert {l: snapshot(l) for l in layers} == before


def test_statfs_answers(stack, mounts):
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    stratafs_mount(mounts, mnt, layers)
    sv = os.statvfs(mnt)
    assert sv.f_blocks > 0 and sv.f_namemax == 255
    assert sv.f_flag & os.ST_RDONLY


def test_allow_other_enforces_permissions(workdir, mounts):
    low = os.path.join(workdir, "low")
    write(f"{low}/secret", "no", mode=0o600)
    write(f"{low}/public", "yes", mode=0o644)
    os.chmod(workdir, 0o755)
    os.chmod(low, 0o755)
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [low], extra=["-o", "allow_other"])
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat"]
    r = run(nobody + [f"{mnt}/public"])
    assert r.stdout == "yes"
    r = run(nobody + [f"{mnt}/secret"], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr


def test_root_mounts_let_other_users_in_by_default(workdir, mounts):
    """Mounted by root without options, other users may enter the mount (as
    with kernel overlayfs), the kernel checking permissions, and what they
    create is theirs; -o noallow_other keeps them out."""
    low = os.path.join(workdir, "low")
    write(f"{low}/secret", "no", mode=0o600)
    write(f"{low}/public", "yes", mode=0o644)
    os.makedirs(f"{low}/tmp")
    os.chmod(f"{low}/tmp", 0o1777)
    for d in (workdir, low):
        os.chmod(d, 0o755)
    upper, work, mnt = (os.path.join(workdir, n) for n in ("upper", "work", "mnt"))
    os.makedirs(upper)
    os.makedirs(work)
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
    stratafs_mount(mounts, mnt, [low], upper, work)
    assert run(nobody + ["cat", f"{mnt}/public"]).stdout == "yes"
    r = run(nobody + ["cat", f"{mnt}/secret"], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    r = run(nobody + ["touch", f"{mnt}/mine"], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    run(nobody + ["touch", f"{mnt}/tmp/mine"])
    st = os.stat(f"{mnt}/tmp/mine")
    assert (st.st_uid, st.st_gid) == (65534, 65534)
    unmount_now(mnt)
    stratafs_mount(mounts, mnt, [low], upper, work, extra=["-o", "noallow_other"])
    r = run(nobody + ["ls", mnt], check=False)
    assert r.returncode != 0 and "Permission denied" in r.stderr
    assert listing(f"{mnt}/tmp") == ["mine"]


def test_many_layers_and_the_limit(workdir, mounts):
    layers = []
    for i in range(200):
        d = os.path.join(workdir, f"l{i:03d}")
        write(f"{d}/f{i:03d}", str(i))
        write(f"{d}/common", str(i))
        layers.append(d)
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, layers[:128])
    assert len(os.listdir(mnt)) == 129
    assert open(f"{mnt}/common").read() == "0"
    assert open(f"{mnt}/f127").read() == "127"
    unmount_now(mnt)
    stratafs_mount(mounts, mnt, layers)
    assert open(f"{mnt}/f199").read() == "199"
    unmount_now(mnt)
    too_many = layers + [os.path.join(workdir, f"x{i}") for i in range(60)]
    for d in too_many[200:]:
        os.makedirs(d)
    r = stratafs_mount(mounts, mnt, too_many, check=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "stratafs: too many lower layers: 260 (at most 255)"
    assert not is_mounted(mnt)


def _probe(mnt, rel):
    """What a user sees of MNT/REL: an errno name, or its type, size and content."""
    path = os.path.join(mnt, rel)
    try:
        st = os.lstat(path)
    except OSError as e:
        return errno.errorcode[e.errno]
    if stat.S_ISREG(st.st_mode):
        return ("file", st.st_size, open(path, "rb").read())
    return (stat.S_IFMT(st.st_mode), sorted(os.listdir(path)) if stat.S_ISDIR(st.st_mode) else None)


PROBES = ["etc/hosts", "etc/passwd", "etc/motd", "etc/gone_ovl", "etc/gone_oci", "etc/nothing",
          "opq_ovl/old", "opq_ovl/new", "opq_oci/old", "opq_oci/new", "opq_user/old", "opq_user/new",
          "file_then_dir/now_a_dir", "dir_then_file", "dir_then_file/inner", "deepdir/sub/leaf",
          "nothing_below", "missing", ".wh.nothing_below", "etc/.wh.gone_oci", "opq_oci/.wh..wh..opq"]


def test_lookups_answered_from_name_filters_match_fresh_lookups(stack, mounts):
    """A lower directory's names are remembered after its first miss or
    listing, and later lookups skip the layers that lack a name: what a user
    sees must not change, whiteouts (both formats) and opaque directories
    included."""
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    stratafs_mount(mounts, mnt, layers)
    fresh = {rel: _probe(mnt, rel) for rel in PROBES}
    unmount_now(mnt)
    assert fresh["etc/hosts"] == ("file", 10, b"top hosts\n")
    assert fresh["etc/gone_oci"] == "ENOENT" and fresh["deepdir/sub/leaf"] == "ENOENT"
    # Misses in every directory first, so each lower copy is scanned and
    # filtered before the real names are looked up; then listings.
    stratafs_mount(mounts, mnt, layers)
    for d in ("", "etc", "opq_ovl", "opq_oci", "opq_user", "file_then_dir", "deepdir", "deepdir/sub"):
        for i in range(3):
            assert not os.path.lexists(os.path.join(mnt, d, f"absent-{i}"))
    assert {rel: _probe(mnt, rel) for rel in PROBES} == fresh
    unmount_now(mnt)
    stratafs_mount(mounts, mnt, layers)
    for root, dirs, files in os.walk(mnt):
        pass
    assert {rel: _probe(mnt, rel) for rel in PROBES} == fresh


def test_a_miss_in_many_layers_is_answered_and_counted(workdir, mounts):
    """100 layers that all hold the same directory: a missing name is missing,
    a name in the bottom layer is found, and `-o stats=FILE` counts the
    lookups per opcode on SIGUSR1 and at unmount."""
    layers = []
    for i in range(100):
        d = os.path.join(workdir, f"l{i:03d}")
        write(f"{d}/usr/lib/f{i:03d}", str(i))
        layers.append(d)
    mnt = os.path.join(workdir, "mnt")
    stats = os.path.join(workdir, "stats.txt")
    stratafs_mount(mounts, mnt, layers, extra=["-o", "stats=" + os.path.relpath(stats)])
    for i in range(500):
        assert not os.path.lexists(f"{mnt}/usr/lib/missing{i}")
    assert open(f"{mnt}/usr/lib/f099").read() == "99"
    assert open(f"{mnt}/usr/lib/f000").read() == "0"
    daemon = int(run(["pgrep", "-f", "-n", f"stratafs.*{mnt}"]).stdout.split()[0])
    os.kill(daemon, signal.SIGUSR1)
    for _ in range(250):
        if os.path.exists(stats):
            break
        time.sleep(0.02)
    table = {line.split()[0]: line.split()[1:] for line in open(stats).read().splitlines()[1:]}
    assert int(table["LOOKUP"][0]) >= 502
    assert is_mounted(mnt), "SIGUSR1 must not end the daemon"
    unmount_now(mnt)
    for _ in range(250):
        if not os.path.exists(f"/proc/{daemon}"):
            break
        time.sleep(0.02)
    final = open(stats).read()
    assert final.splitlines()[0].split() == ["opcode", "count", "errors", "mean_us", "p50_us", "p99_us",
                                              "max_us", "total_ms"]
    assert int(final.split("\nLOOKUP")[1].split()[0]) >= 502


@pytest.mark.parametrize("case", ["missing_lower", "file_lower", "no_mountpoint", "no_lowerdir", "duplicate", "unknown"])
def test_bad_input_is_one_line_and_mounts_nothing(workdir, mounts, case):
    low = os.path.join(workdir, "low")
    write(f"{low}/f", "x")
    write(f"{workdir}/afile", "x")
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    args = {
        "missing_lower": (["-o", f"lowerdir={low}:{workdir}/nope", mnt], "nope"),
        "file_lower": (["-o", f"lowerdir={workdir}/afile", mnt], "is not a directory"),
        "no_mountpoint": (["-o", f"lowerdir={low}", f"{workdir}/nomnt"], "nomnt"),
        "no_lowerdir": ([mnt], "no lowerdir"),
        "duplicate": (["-o", f"lowerdir={low}:{workdir}/../{os.path.basename(workdir)}/low", mnt], "given twice"),
        "unknown": (["-o", f"lowerdir={low},frobnicate", mnt], "frobnicate"),
    }[case]
    r = run([tool("stratafs"), *args[0]], check=False)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stratafs: ") and args[1] in lines[0], r.stderr
    assert not is_mounted(mnt)


def test_help_and_version():
    r = run([tool("stratafs"), "--help"])
    assert r.stdout.startswith("Usage: stratafs") and "lowerdir=" in r.stdout
    r = run([tool("stratafs"), "--version"])
    assert r.stdout.strip().startswith("stratafs ")


def test_mount_helper_and_fstab(stack, mounts):
    """`mount -t fuse.stratafs` and an fstab line reach stratafs through
    mount.fuse3, which looks the driver up in a fixed PATH: a private mount
    namespace puts the built binary in /usr/local/sbin for the test only."""
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    opts = "lowerdir=" + ":".join(layers)
    fstab = os.path.join(wd, "fstab")
    with open(fstab, "w") as f:
        f.write(f"mylayers {mnt} fuse.stratafs {opts},allow_other,nofail 0 0\n")
    script = f"""
set -e
mount -t tmpfs tmpfs /usr/local/sbin
ln -s {tool("stratafs")} /usr/local/sbin/stratafs
trap 'umount {mnt} 2>/dev/null || true' EXIT
mount -t fuse.stratafs -o {opts} stratafs {mnt}
cat {mnt}/etc/hosts
grep -c " {mnt} fuse.stratafs " /proc/self/mounts
umount {mnt}
mount -T {fstab} {mnt}
ls {mnt}/opq_oci
grep " {mnt} " /proc/self/mounts | cut -d' ' -f1,3
umount {mnt}
"""
    r = run(["unshare", "-m", "--propagation", "private", "sh", "-c", script])
    assert r.stdout.splitlines() == ["top hosts", "1", "new", "mylayers fuse.stratafs"]
    # The old `fuse` type with PROGRAM#SOURCE works without any PATH setup.
    run(["mount", "-t", "fuse", "-o", opts, tool("stratafs") + "#stratafs", mnt])
    assert is_mounted(mnt) and open(f"{mnt}/etc/hosts").read() == "top hosts\n"
    run(["umount", mnt])
    assert not is_mounted(mnt)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT", "fusermount"])
def test_foreground_daemon_stops_cleanly(stack, mounts, how):
    wd, layers = stack
    mnt = os.path.join(wd, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    p = subprocess.Popen([tool("stratafs"), "-f", "-o", "lowerdir=" + ":".join(layers), mnt],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_until_mounted(mnt)
        assert listing(f"{mnt}/etc") == ["hosts", "motd", "passwd"]
        if how == "fusermount":
            run(["fusermount3", "-u", mnt])
        else:
            p.send_signal(getattr(signal, how))
        assert p.wait(timeout=10) == 0
        assert not is_mounted(mnt)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


def test_removed_layer_gives_eio_not_a_crash(workdir, mounts):
    top, bot = os.path.join(workdir, "top"), os.path.join(workdir, "bot")
    write(f"{top}/t", "t")
    write(f"{bot}/dir/f", "f")
    write(f"{bot}/dir/g", "g")
    mnt = os.path.join(workdir, "mnt")
    stratafs_mount(mounts, mnt, [top, bot])
    assert open(f"{mnt}/dir/f").read() == "f"
    shutil.rmtree(bot)
    with pytest.raises(OSError) as e:
        open(f"{mnt}/dir/f").read()
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.listdir(f"{mnt}/dir")
    assert e.value.errno == errno.EIO
    with pytest.raises(OSError) as e:
        os.stat(f"{mnt}/dir/new-name")
    assert e.value.errno == errno.EIO
    # The daemon is still alive and serves what is left.
    assert open(f"{mnt}/t").read() == "t"
    unmount_now(mnt)
