"""Tools of the union-filesystem differential tests.

Kernel overlayfs is the oracle: a layer stack is described once as data
(`Entry` lists, topmost layer first), built twice on disk (once with the
marker formats the test chose, for the implementation under test, once with
overlayfs's own markers for the kernel), mounted by both, and the two merged
trees are snapshotted and compared entry by entry.

The implementation under test is `stratafs` from the build tree, or whatever
STRATA_FS_UNDER_TEST names (it must take fuse-overlayfs's command line, so
fuse-overlayfs itself works there).

Trees are walked with directory fds and *at() calls, never by whole paths, so
paths longer than PATH_MAX and names with any bytes (newlines, non-UTF-8,
255 bytes) are handled; names are str with surrogateescape, as os gives them.
"""
import ctypes
import errno
import hashlib
import os
import random
import signal
import stat
import subprocess
import threading
import time
from dataclasses import dataclass, field

import pytest

from conftest import is_mounted, tool, unmount

# The overlay-private xattr namespaces: markers and bookkeeping that neither
# implementation may show, so they are never part of a compared tree.
PRIVATE_XATTR_PREFIXES = ("trusted.overlay.", "user.overlay.")

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
FALLOC_FL_KEEP_SIZE = 1
FALLOC_FL_PUNCH_HOLE = 2


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def renameat2(src, dst, flags):
    _check(_libc.renameat2(AT_FDCWD, os.fsencode(src), AT_FDCWD, os.fsencode(dst), ctypes.c_uint(flags)), "renameat2")


def lchmod(path, mode):
    """chmod without following a final symlink (glibc: EOPNOTSUPP on a symlink)."""
    _check(_libc.fchmodat(AT_FDCWD, os.fsencode(path), ctypes.c_uint(mode), AT_SYMLINK_NOFOLLOW), "fchmodat")


def fallocate(fd, mode, offset, length):
    _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    _check(_libc.fallocate(fd, mode, offset, length), "fallocate")


# ---------------------------------------------------------------------------
# The implementation under test and mounting.


def fs_under_test():
    """Path of the FUSE union filesystem under test."""
    chosen = os.environ.get("STRATA_FS_UNDER_TEST")
    return chosen if chosen else tool("stratafs")


def fs_label():
    return os.path.basename(fs_under_test())


def chosen_seed(default):
    """The fixed CI seed, or STRATA_TEST_SEED (a number, or 'random' for a fresh one)."""
    wanted = os.environ.get("STRATA_TEST_SEED")
    if not wanted:
        return default
    seed = random.SystemRandom().randrange(1 << 32) if wanted == "random" else int(wanted)
    print(f"STRATA_TEST_SEED={seed}")
    return seed


def rounds(default):
    """How many random stacks or sequences to run: STRATA_TEST_ROUNDS, else DEFAULT (CI)."""
    return int(os.environ.get("STRATA_TEST_ROUNDS", default))


def _layer_opts(lowers, upper, work):
    for p in list(lowers) + [upper, work]:
        if p is not None:
            assert not any(c in p for c in ":,\\"), f"mount option cannot carry {p!r}"
    opts = "lowerdir=" + ":".join(lowers)
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    return opts


def mount_fuse(mounts, mnt, lowers, upper=None, work=None):
    """Mounts LOWERS (topmost first) [+ UPPER] at MNT with the implementation under test."""
    os.makedirs(mnt, exist_ok=True)
    mounts.add(mnt)
    r = subprocess.run([fs_under_test(), "-o", _layer_opts(lowers, upper, work), mnt],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{fs_label()} mount of {mnt} exited {r.returncode}: {r.stderr}"
    assert is_mounted(mnt), f"{fs_label()} returned but {mnt} is not mounted"
    return mnt


def mount_kernel(mounts, mnt, lowers, upper=None, work=None):
    """Mounts the same stack with kernel overlayfs (the oracle).

    redirect_dir=on makes directory renames succeed as in a FUSE union (else
    the kernel answers EXDEV); index=off and metacopy=off keep the upper a
    plain directory tree that another implementation can read.
    """
    os.makedirs(mnt, exist_ok=True)
    lowers = list(lowers)
    if upper is None and len(lowers) == 1:
        # The kernel wants two lower layers without an upper; an empty one changes nothing.
        empty = mnt + ".empty-lower"
        os.makedirs(empty, exist_ok=True)
        lowers.append(empty)
    opts = _layer_opts(lowers, upper, work)
    if upper is not None:
        opts += ",redirect_dir=on,index=off,metacopy=off"
    mounts.add(mnt)
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, mnt],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"kernel overlay mount of {mnt} failed: {r.stderr}"
    return mnt


def daemon_pid(mnt):
    """Pid of the FUSE daemon serving MNT (the process whose last argument is MNT)."""
    want = os.fsencode(os.path.realpath(mnt))
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                args = f.read().rstrip(b"\0").split(b"\0")
        except OSError:
            continue
        if len(args) >= 2 and os.path.realpath(args[-1]) == want and any(b"-o" == a for a in args):
            return int(d)
    return None


class HangGuard:
    """Kills the daemons of MNTS if the block takes longer than SECONDS.

    A FUSE request that never gets an answer blocks the caller forever; the
    daemon's death aborts the connection, so the test fails with ENOTCONN
    instead of hanging the whole suite."""

    def __init__(self, mnts, seconds):
        self.pids = [p for p in (daemon_pid(m) for m in mnts) if p]
        self.timer = threading.Timer(seconds, self._fire)
        self.fired = False

    def _fire(self):
        self.fired = True
        for p in self.pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        if self.fired:
            pytest.fail("the filesystem under test stopped answering; its daemon was killed")
        return False


# ---------------------------------------------------------------------------
# Layer stacks as data.


@dataclass
class Entry:
    """One entry of one layer. PATH is relative, '/'-separated; parents come first in a layer."""

    path: str
    kind: str  # dir file symlink hardlink fifo sock chr blk whiteout
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    data: bytes = b""
    size: int = -1  # a file's size when it is sparse: DATA is then written at OFFSET
    offset: int = 0
    target: str = ""  # symlink target, or the path (same layer) a hardlink points at
    rdev: tuple = (0, 0)
    xattrs: dict = field(default_factory=dict)
    opaque: str = ""  # a dir: "", "oci" (.wh..wh..opq), "trusted" or "user" (overlay.opaque xattr)
    marker: str = "chr"  # a whiteout: "chr" (0/0 device) or "oci" (.wh.NAME)
    mtime_ns: int = 1_600_000_000_123_456_789


def _open_parent(rootfd, path):
    """(fd of PATH's parent directory, last name); the caller closes the fd."""
    parts = path.split("/")
    fd = os.dup(rootfd)
    for comp in parts[:-1]:
        nfd = os.open(comp, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd, parts[-1]


def _fdpath(dfd, name):
    """A short path for NAME in directory DFD, for the calls that have no *at() form (xattrs)."""
    return f"/proc/self/fd/{dfd}/{name}"


def build_layer(entries, root, for_kernel, root_mtime_ns=1_500_000_000_000_000_001):
    """Creates the layer ENTRIES at ROOT.

    FOR_KERNEL: every whiteout and opaque marker in overlayfs's own format
    (0/0 character device, trusted.overlay.opaque=y), the only one the kernel
    reads; otherwise each in the format the entry names."""
    os.makedirs(root, exist_ok=True)
    os.chmod(root, 0o755)
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for e in entries:
            pfd, name = _open_parent(rootfd, e.path)
            try:
                _create(e, pfd, name, rootfd, for_kernel)
            finally:
                os.close(pfd)
        # Times last, children before parents, so nothing created later moves them.
        for e in reversed(entries):
            if e.kind in ("hardlink", "whiteout"):
                continue
            pfd, name = _open_parent(rootfd, e.path)
            try:
                os.utime(name, ns=(e.mtime_ns, e.mtime_ns), dir_fd=pfd, follow_symlinks=False)
            finally:
                os.close(pfd)
        os.utime(rootfd, ns=(root_mtime_ns, root_mtime_ns))
    finally:
        os.close(rootfd)


def _create(e, pfd, name, rootfd, for_kernel):
    k = e.kind
    if k == "whiteout":
        if for_kernel or e.marker == "chr":
            os.mknod(name, stat.S_IFCHR | 0o644, os.makedev(0, 0), dir_fd=pfd)
        else:
            os.close(os.open(".wh." + name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=pfd))
        return
    if k == "hardlink":
        os.link(e.target, name, src_dir_fd=rootfd, dst_dir_fd=pfd, follow_symlinks=False)
        return
    if k == "dir":
        os.mkdir(name, 0o700, dir_fd=pfd)
        if e.opaque:
            if for_kernel or e.opaque in ("trusted", "user"):
                ns = "trusted" if for_kernel else e.opaque
                os.setxattr(_fdpath(pfd, name), f"{ns}.overlay.opaque", b"y")
            else:
                dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=pfd)
                os.close(os.open(".wh..wh..opq", os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644, dir_fd=dfd))
                os.close(dfd)
    elif k == "file":
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600, dir_fd=pfd)
        try:
            if e.size >= 0:
                os.ftruncate(fd, e.size)
                os.pwrite(fd, e.data, e.offset)
            else:
                os.write(fd, e.data)
        finally:
            os.close(fd)
    elif k == "symlink":
        os.symlink(e.target, name, dir_fd=pfd)
    elif k == "fifo":
        os.mkfifo(name, 0o600, dir_fd=pfd)
    elif k == "sock":
        os.mknod(name, stat.S_IFSOCK | 0o600, dir_fd=pfd)
    elif k in ("chr", "blk"):
        kind = stat.S_IFCHR if k == "chr" else stat.S_IFBLK
        os.mknod(name, kind | 0o600, os.makedev(*e.rdev), dir_fd=pfd)
    else:
        raise ValueError(f"unknown entry kind {k}")
    for xname, xval in e.xattrs.items():
        os.setxattr(_fdpath(pfd, name), xname, xval, follow_symlinks=False)
    os.chown(name, e.uid, e.gid, dir_fd=pfd, follow_symlinks=False)
    if k != "symlink":
        os.chmod(name, e.mode, dir_fd=pfd)  # after chown, which clears setuid


def build_stack(layers, base, for_kernel):
    """Builds LAYERS (topmost first) under BASE; returns the lowerdir list, topmost first."""
    dirs = []
    for i, entries in enumerate(layers):
        d = os.path.join(base, f"l{len(layers) - 1 - i}")
        build_layer(entries, d, for_kernel, root_mtime_ns=1_500_000_000_000_000_001 + 1000 * i)
        dirs.append(d)
    return dirs


def oci_marker_paths(layers):
    """Paths of the OCI marker files the layers hold (never visible through a mount)."""
    out = []
    for entries in layers:
        for e in entries:
            parent, _, name = e.path.rpartition("/")
            if e.kind == "whiteout" and e.marker == "oci":
                out.append((parent + "/" if parent else "") + ".wh." + name)
            if e.kind == "dir" and e.opaque == "oci":
                out.append(e.path + "/.wh..wh..opq")
    return out


# ---------------------------------------------------------------------------
# A seeded generator of random stacks.

POOL = ["a", "b", "c", "d", "e", "f"]
SAFE_LINK_TARGETS = ["a", "b", "c", "/nonexistent-strata-target", "/nonexistent-strata-target/x", "dangling"]
WILD_LINK_TARGETS = SAFE_LINK_TARGETS + ["../a", "../../b/c", "/etc/passwd", "a/b/../c", "x" * 300]
MODES = [0o644, 0o600, 0o755, 0o700, 0o444, 0o4755, 0o2750, 0o1777, 0o000, 0o640]
DIR_MODES = [0o755, 0o700, 0o1777, 0o2775, 0o555]
OWNERS = [(0, 0), (1000, 1000), (65534, 65534), (0, 1000), (4242, 0)]


def random_stack(rng, nlayers, *, ops_safe=False, max_depth=3):
    """NLAYERS random layers (topmost first) over a shared pool of names, so
    that names meet across layers as files, dirs, symlinks and whiteouts.

    OPS_SAFE: no hardlinks or devices and only symlinks that cannot lead out of
    the mount, for stacks that random operations will write through."""
    layers = []
    for _ in range(nlayers):
        entries = []
        files = []
        _random_dir(rng, entries, files, "", 0, max_depth, ops_safe)
        layers.append(entries)
    return layers


def _random_dir(rng, entries, files, prefix, depth, max_depth, ops_safe):
    names = rng.sample(POOL, rng.randint(1, 4 if depth else 5))
    for name in names:
        path = prefix + name
        r = rng.random()
        mtime = 1_600_000_000_000_000_000 + rng.randrange(10 ** 15)
        mode = rng.choice(MODES)
        uid, gid = rng.choice(OWNERS)
        xattrs = {}
        if rng.random() < 0.2:
            xattrs["user.tag"] = rng.randbytes(rng.randint(0, 12))
        if rng.random() < 0.1:
            xattrs["trusted.tag"] = b"t" + rng.randbytes(3)
        if r < 0.38 and depth < max_depth:
            opaque = rng.choice(["oci", "trusted", "user"]) if rng.random() < 0.2 else ""
            entries.append(Entry(path, "dir", mode=rng.choice(DIR_MODES), uid=uid, gid=gid,
                                 xattrs=xattrs, opaque=opaque, mtime_ns=mtime))
            _random_dir(rng, entries, files, path + "/", depth + 1, max_depth, ops_safe)
        elif r < 0.62:
            if rng.random() < 0.15:
                size = rng.randint(1 << 16, 1 << 20)
                data = rng.randbytes(rng.randint(1, 3000))
                e = Entry(path, "file", mode, uid, gid, data=data, size=size,
                          offset=rng.randrange(size - len(data) + 1), xattrs=xattrs, mtime_ns=mtime)
            else:
                e = Entry(path, "file", mode, uid, gid, data=rng.randbytes(rng.choice([0, 1, 100, 5000])),
                          xattrs=xattrs, mtime_ns=mtime)
            entries.append(e)
            files.append(path)
        elif r < 0.72:
            targets = SAFE_LINK_TARGETS if ops_safe else WILD_LINK_TARGETS
            entries.append(Entry(path, "symlink", 0o777, uid, gid, target=rng.choice(targets), mtime_ns=mtime))
        elif r < 0.87:
            entries.append(Entry(path, "whiteout", marker=rng.choice(["chr", "oci"])))
        elif r < 0.92 and files and not ops_safe:
            entries.append(Entry(path, "hardlink", target=rng.choice(files)))
        elif r < 0.96:
            entries.append(Entry(path, "fifo", mode, uid, gid, xattrs={}, mtime_ns=mtime))
        elif not ops_safe:
            entries.append(Entry(path, rng.choice(["chr", "blk", "sock"]), mode, uid, gid,
                                 rdev=(rng.randint(1, 200), rng.randint(0, 255)), mtime_ns=mtime))
        else:
            entries.append(Entry(path, "file", mode, uid, gid, data=b"x", mtime_ns=mtime))


def all_paths(layers):
    return sorted({e.path for entries in layers for e in entries})


# ---------------------------------------------------------------------------
# Snapshots and their comparison.

TYPE_CHARS = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p",
              stat.S_IFSOCK: "s", stat.S_IFCHR: "c", stat.S_IFBLK: "b"}
BIG_FILE = 64 << 20


def content_digest(fd, size):
    """SHA-256 of a file's bytes; of files over 64 MiB only of sampled 1 MiB
    windows (start, end, both sides of the 4 GiB line), so a 5 GiB sparse file
    costs no 5 GiB read but 64-bit offsets are still exercised."""
    h = hashlib.sha256()
    if size <= BIG_FILE:
        windows = [(0, size)]
    else:
        marks = sorted(m for m in {0, size - (1 << 20), (4 << 30) - (1 << 19), 1 << 32} if 0 <= m < size)
        windows = [(m, min(1 << 20, size - m)) for m in marks]
    for start, length in windows:
        pos = start
        while pos < start + length:
            chunk = os.pread(fd, min(1 << 20, start + length - pos), pos)
            if not chunk:
                break
            h.update(chunk)
            pos += len(chunk)
        h.update(f"|{start}:{pos - start}|".encode())
    return h.hexdigest()


def visible_xattrs(dfd, name):
    p = _fdpath(dfd, name)
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError as e:
        return ("listxattr", errno.errorcode.get(e.errno, e.errno))
    out = []
    for n in sorted(names):
        if n.startswith(PRIVATE_XATTR_PREFIXES):
            continue
        try:
            out.append((n, os.getxattr(p, n, follow_symlinks=False)))
        except OSError as e:
            out.append((n, "getxattr:" + errno.errorcode.get(e.errno, str(e.errno))))
    return tuple(out)


class Tree:
    """What a user sees of a tree: ENTRIES maps path -> attributes; INODES
    maps path -> (st_dev, st_ino); DINO_MISMATCH lists readdir d_ino != stat st_ino."""

    def __init__(self, kernel=False):
        self.kernel = kernel
        self.entries = {}
        self.inodes = {}
        self.dino_mismatch = []

    def link_groups(self):
        """Non-directories grouped by identity: which names are one file."""
        groups = {}
        for p, key in self.inodes.items():
            if self.entries[p]["type"] != "d":
                groups.setdefault(key, []).append(p)
        return sorted(tuple(sorted(g)) for g in groups.values())


def snapshot(root, *, times=True, blocks=False, xattrs=True, kernel=False):
    """Walks ROOT (never following symlinks) and records what a user sees.
    KERNEL: ROOT is a kernel overlayfs mount (see its readdir quirk below)."""
    tree = Tree(kernel)
    rootfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.fstat(rootfd)
        tree.entries[""] = _record(st, rootfd, None, times, blocks, xattrs)
        tree.inodes[""] = (st.st_dev, st.st_ino)
        _walk(tree, rootfd, "", times, blocks, xattrs)
    finally:
        os.close(rootfd)
    return tree


def _walk(tree, dfd, rel, times, blocks, xattrs):
    with os.scandir(dfd) as it:
        dents = sorted((d.name, d.inode()) for d in it)
    for name, d_ino in dents:
        path = f"{rel}/{name}" if rel else name
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            if tree.kernel:
                # Kernel quirk: in a directory that only one lower layer has,
                # overlayfs's readdir passes that layer's 0/0 whiteout devices
                # through although lookup hides them. A user sees a name that
                # cannot be stat'ed; what a union must show is no name at all.
                continue
            tree.entries[path] = {"type": "listed by readdir, but lookup gives ENOENT"}
            tree.inodes[path] = (0, d_ino)
            continue
        if d_ino != st.st_ino:
            tree.dino_mismatch.append((path, d_ino, st.st_ino))
        tree.inodes[path] = (st.st_dev, st.st_ino)
        tree.entries[path] = _record(st, dfd, name, times, blocks, xattrs)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dfd)
            try:
                _walk(tree, sub, path, times, blocks, xattrs)
            finally:
                os.close(sub)


def _record(st, dfd, name, times, blocks, xattrs):
    fmt = stat.S_IFMT(st.st_mode)
    rec = {"type": TYPE_CHARS.get(fmt, "?"), "mode": oct(stat.S_IMODE(st.st_mode)),
           "uid": st.st_uid, "gid": st.st_gid}
    if fmt != stat.S_IFDIR:
        # A merged directory's size and link count are the kernel's own
        # choices (it reports nlink 1), not something a layer defines.
        rec["size"] = st.st_size
        rec["nlink"] = st.st_nlink
    if times:
        rec["mtime_ns"] = st.st_mtime_ns
    if fmt in (stat.S_IFCHR, stat.S_IFBLK):
        rec["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
    if fmt == stat.S_IFLNK:
        rec["target"] = os.readlink(name, dir_fd=dfd)
    if fmt == stat.S_IFREG:
        if blocks:
            rec["blocks"] = st.st_blocks
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
        except OSError as e:
            rec["content"] = "open:" + errno.errorcode.get(e.errno, str(e.errno))
        else:
            try:
                rec["content"] = content_digest(fd, st.st_size)
            except OSError as e:
                rec["content"] = "read:" + errno.errorcode.get(e.errno, str(e.errno))
            finally:
                os.close(fd)
    if xattrs:
        rec["xattrs"] = visible_xattrs(dfd, name) if name is not None else visible_xattrs(dfd, ".")
    return rec


def diff_trees(expected, actual, exp_name="kernel overlayfs", act_name=None, limit=40):
    """Human-readable differences between two Trees (empty when they agree)."""
    act_name = act_name or fs_label()
    out = []
    for p in sorted(set(expected.entries) | set(actual.entries)):
        e, a = expected.entries.get(p), actual.entries.get(p)
        if e is None:
            out.append(f"{p!r}: only in {act_name}: {a}")
        elif a is None:
            out.append(f"{p!r}: only in {exp_name}: {e}")
        elif e != a:
            for k in sorted(set(e) | set(a)):
                if e.get(k) != a.get(k):
                    out.append(f"{p!r}: {k}: {exp_name} {e.get(k)!r} != {act_name} {a.get(k)!r}")
    if not out:
        eg, ag = expected.link_groups(), actual.link_groups()
        if eg != ag:
            for g in sorted(set(eg) ^ set(ag)):
                side = exp_name if g in eg else act_name
                out.append(f"hardlink group only in {side}: {g!r}")
    if len(out) > limit:
        out = out[:limit] + [f"... and {len(out) - limit} more differences"]
    return out


def assert_same_tree(expected, actual, exp_name="kernel overlayfs", act_name=None):
    diffs = diff_trees(expected, actual, exp_name, act_name)
    assert not diffs, "trees differ:\n" + "\n".join(diffs)


def regular_files_under(root):
    """Every non-directory under ROOT (a layer or work dir), as relative paths."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def wait_unmounted(mnt, seconds=10):
    deadline = time.monotonic() + seconds
    while is_mounted(mnt) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not is_mounted(mnt)


def umount_now(mnt):
    """Unmounts MNT (FUSE or kernel) and asserts it is gone."""
    unmount(mnt)
    assert not is_mounted(mnt), f"could not unmount {mnt}"
