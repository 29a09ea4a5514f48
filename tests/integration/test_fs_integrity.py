"""Data integrity of copied-up files, fsx-style.

A file that starts in a lower layer (with a hole in it) is opened through the
writable mount and hit with a seeded random mix of reads, writes (also far
past EOF, leaving holes), truncates, MAP_SHARED writes and reads, punched
holes, fsyncs and reopens; every read is checked against an in-memory model
of the file. At the end the whole file is checked, again after a remount, and
the lower layer must be unchanged. Running the same sequence on kernel
overlayfs checks the model itself.

STRATA_TEST_SEED=N (or =random) picks another sequence.
"""
import hashlib
import mmap
import os
import random
import stat

import pytest

from fsdiff import (FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, HangGuard, chosen_seed, fallocate, fs_label,
                    mount_fuse, mount_kernel, umount_now)

OPS = 3000
MAX_LEN = 1 << 20
INITIAL_LEN = 300_000


class Fsx:
    """Random operations on one file, reached through one or more names
    (hardlinks): every operation goes through a randomly chosen name."""

    def __init__(self, paths, model, rng, log):
        self.paths, self.model, self.rng, self.log = paths, model, rng, log
        self.fds = [os.open(p, os.O_RDWR) for p in paths]
        self.fd = self.fds[0]

    def fail(self, what):
        recent = "\n".join(self.log[-25:])
        pytest.fail(f"{what}\nlast operations:\n{recent}")

    def check_range(self, got, off, length, how):
        want = bytes(self.model[off:off + length])
        if got != want:
            bad = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
            self.fail(f"{how} at {off}+{length}: {len(got)} bytes back, expected {len(want)}; "
                      f"first difference at file offset {off + bad}")

    def step(self):
        r = self.rng
        size = len(self.model)
        which = r.randrange(len(self.fds))
        self.fd = self.fds[which]
        if len(self.fds) > 1:
            self.log.append(f"through name {which}:")
        k = r.choices(["read", "write", "truncate", "mapwrite", "mapread", "punch", "fsync", "reopen"],
                      [25, 30, 8, 12, 8, 6, 3, 3])[0]
        if k == "read":
            off = r.randrange(0, size + 1000)
            n = r.randint(1, 70_000)
            self.log.append(f"read {off}+{n}")
            self.check_range(os.pread(self.fd, n, off), off, n, "read")
        elif k == "write":
            off = r.randrange(0, MAX_LEN) if r.random() < 0.8 else r.randrange(0, size + 1)
            n = r.randint(1, 65_536)
            n = min(n, MAX_LEN + 65_536 - off)
            data = r.randbytes(n)
            self.log.append(f"write {off}+{n} (size {size})")
            if os.pwrite(self.fd, data, off) != n:
                self.fail("short write")
            if off > size:
                self.model.extend(bytes(off - size))
            self.model[off:off + n] = data
        elif k == "truncate":
            new = r.randrange(0, MAX_LEN)
            self.log.append(f"truncate {new} (size {size})")
            os.ftruncate(self.fd, new)
            if new < size:
                del self.model[new:]
            else:
                self.model.extend(bytes(new - size))
        elif k in ("mapwrite", "mapread") and size > 0:
            off = r.randrange(0, size)
            n = r.randint(1, min(size - off, 100_000))
            self.log.append(f"{k} {off}+{n} (size {size})")
            with mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE) as m:
                if k == "mapwrite":
                    data = r.randbytes(n)
                    m[off:off + n] = data
                    self.model[off:off + n] = data
                    if r.random() < 0.5:
                        m.flush()
                else:
                    self.check_range(m[off:off + n], off, n, "mmap read")
            if k == "mapwrite":
                # read(2) sees what the mapping wrote.
                self.check_range(os.pread(self.fd, n, off), off, n, "read after mmap write")
        elif k == "punch" and size > 0:
            off = r.randrange(0, size)
            n = r.randint(1, 200_000)
            self.log.append(f"punch hole {off}+{n} (size {size})")
            fallocate(self.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, n)
            end = min(size, off + n)
            self.model[off:end] = bytes(end - off)
        elif k == "fsync":
            self.log.append("fsync")
            os.fsync(self.fd)
        elif k == "reopen":
            self.log.append("close and reopen")
            os.close(self.fd)
            self.fd = self.fds[which] = os.open(self.paths[which], os.O_RDWR)
        st = os.fstat(self.fd)
        if st.st_size != len(self.model):
            self.fail(f"size is {st.st_size} after the last operation, expected {len(self.model)}")

    def close(self):
        for fd in self.fds:
            os.close(fd)


def whole_file_matches(path, model):
    with open(path, "rb") as f:
        return f.read() == bytes(model)


def make_lower(workdir, seed):
    """A two-layer stack whose bottom layer has dir/file: data, a 100 KB hole, data."""
    rng = random.Random(seed)
    bottom, top = os.path.join(workdir, "l0"), os.path.join(workdir, "l1")
    os.makedirs(os.path.join(bottom, "dir"))
    os.makedirs(os.path.join(top, "other"))
    initial = bytearray(rng.randbytes(INITIAL_LEN))
    initial[100_000:200_000] = bytes(100_000)
    path = os.path.join(bottom, "dir", "file")
    with open(path, "wb") as f:
        f.write(initial[:100_000])
        f.seek(200_000)
        f.write(initial[200_000:])
    os.chmod(path, 0o640)
    return [top, bottom], initial, hashlib.sha256(initial).hexdigest()


def mount_writable(impl, mounts, workdir, lowers, name):
    upper, work = os.path.join(workdir, name + "-upper"), os.path.join(workdir, name + "-work")
    os.makedirs(upper, exist_ok=True)
    os.makedirs(work, exist_ok=True)
    mnt = os.path.join(workdir, name)
    if impl == "kernel":
        return mount_kernel(mounts, mnt, lowers, upper, work)
    return mount_fuse(mounts, mnt, lowers, upper, work)


CASES = [("fuse", 1001, 1), ("fuse", 2002, 1), ("fuse", 3003, 1), ("fuse", 4004, 2),
         ("kernel", 1001, 1), ("kernel", 4004, 2)]


@pytest.mark.parametrize("impl,default_seed,names", CASES,
                         ids=[f"{i}-{s}" + ("-two-names" if n > 1 else "") for i, s, n in CASES])
def test_fsx_on_copied_up_file(workdir, mounts, impl, default_seed, names):
    """NAMES 2: the lower file is first hardlinked through the mount (the
    link copies it up), then every operation goes through either name."""
    seed = chosen_seed(default_seed)
    print(f"fsx seed {seed} on {impl}")
    lowers, initial, lower_digest = make_lower(workdir, seed)
    mnt = mount_writable(impl, mounts, workdir, lowers, "mnt")
    path = os.path.join(mnt, "dir", "file")
    paths = [path]
    if names > 1:
        paths.append(os.path.join(mnt, "other", "second-name"))
        os.link(paths[0], paths[1])
    model = bytearray(initial)
    log = []
    guard = [mnt] if impl == "fuse" else []
    with HangGuard(guard, 180):
        fsx = Fsx(paths, model, random.Random(seed), log)
        fsx.check_range(os.pread(fsx.fd, INITIAL_LEN + 10, 0), 0, INITIAL_LEN + 10, "first read")
        for _ in range(OPS):
            fsx.step()
        fsx.close()
        for p in paths:
            assert whole_file_matches(p, model), f"{p}: the whole file differs from the model after close"
        if names > 1:
            assert os.stat(paths[0]).st_ino == os.stat(paths[1]).st_ino
            assert os.stat(paths[0]).st_nlink == 2 and os.stat(paths[1]).st_nlink == 2
    umount_now(mnt)
    lower_file = os.path.join(lowers[1], "dir", "file")
    with open(lower_file, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == lower_digest, "the lower layer's file was modified"
    mnt = mount_writable(impl, mounts, workdir, lowers, "mnt")
    with HangGuard([mnt] if impl == "fuse" else [], 60):
        for p in paths:
            assert whole_file_matches(p, model), f"{p}: the file differs from the model after a remount"


@pytest.mark.parametrize("impl", ["fuse", "kernel"])
def test_copy_up_keeps_metadata_sparseness_and_inode(workdir, mounts, impl):
    """A metadata change copies the file up whole: content, mode, owner,
    nanosecond mtime, xattrs, holes, and the inode number are kept."""
    lower = os.path.join(workdir, "l0")
    os.makedirs(lower)
    p = os.path.join(lower, "sparse")
    with open(p, "wb") as f:
        f.write(b"head")
        f.seek(64 << 20)
        f.write(b"tail")
    os.setxattr(p, "user.kept", b"yes")
    os.setxattr(p, "trusted.kept", b"also")
    os.chown(p, 1000, 1001)
    os.chmod(p, 0o4751)
    os.utime(p, ns=(1_111_111_111_222_222_222, 1_333_333_333_444_444_444))
    mnt = mount_writable(impl, mounts, workdir, [lower], "mnt")
    merged = os.path.join(mnt, "sparse")
    with HangGuard([mnt] if impl == "fuse" else [], 60):
        before = os.lstat(merged)
        os.setxattr(merged, "user.added", b"1")  # forces a copy-up, changes no data
        after = os.lstat(merged)
        assert after.st_ino == before.st_ino, "the inode number changed on copy-up"
        for field in ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns"):
            assert getattr(after, field) == getattr(before, field), f"{field} changed on copy-up"
        assert os.getxattr(merged, "user.kept") == b"yes"
        assert os.getxattr(merged, "trusted.kept") == b"also"
        with open(merged, "rb") as f:
            assert f.read(4) == b"head"
            f.seek(64 << 20)
            assert f.read() == b"tail"
    umount_now(mnt)
    upper_copy = os.path.join(workdir, "mnt-upper", "sparse")
    st = os.lstat(upper_copy)
    assert stat.S_ISREG(st.st_mode), f"no copy in the upper after a copy-up through {fs_label()}"
    assert st.st_size == (64 << 20) + 4
    # The kernel skips holes at 1 MiB granularity (it allocates just over
    # 1 MiB here); a copy that fills the holes allocates 64 MiB.
    assert st.st_blocks * 512 < (4 << 20), f"the copy-up filled the holes: {st.st_blocks * 512} bytes allocated"
    assert os.getxattr(upper_copy, "user.added") == b"1"
    assert os.stat(p).st_mode & 0o7777 == 0o4751, "the lower file changed"
    with pytest.raises(OSError):
        os.getxattr(p, "user.added")


@pytest.mark.parametrize("impl", ["fuse", "kernel"])
def test_copy_up_of_file_over_4_gib_stays_sparse(workdir, mounts, impl):
    """A 5 GiB sparse lower file with data past the 4 GiB line: one byte
    written through the mount copies it up whole and sparse, 64-bit offsets intact."""
    lower = os.path.join(workdir, "l0")
    os.makedirs(lower)
    p = os.path.join(lower, "huge")
    far = (4 << 30) + 12_345
    with open(p, "wb") as f:
        f.write(b"start")
        f.seek(far)
        f.write(b"past the 4 GiB line")
        f.truncate(5 << 30)
    mnt = mount_writable(impl, mounts, workdir, [lower], "mnt")
    merged = os.path.join(mnt, "huge")
    with HangGuard([mnt] if impl == "fuse" else [], 120):
        fd = os.open(merged, os.O_RDWR)
        try:
            os.pwrite(fd, b"X", (4 << 30) + 1)
            assert os.pread(fd, 5, 0) == b"start"
            assert os.pread(fd, 19, far) == b"past the 4 GiB line"
            assert os.pread(fd, 3, 4 << 30) == b"\0X\0"
            assert os.fstat(fd).st_size == 5 << 30
        finally:
            os.close(fd)
    umount_now(mnt)
    st = os.lstat(os.path.join(workdir, "mnt-upper", "huge"))
    assert st.st_size == 5 << 30
    assert st.st_blocks * 512 < (16 << 20), f"the copy-up filled the holes: {st.st_blocks * 512} bytes allocated"
    with open(p, "rb") as f:
        f.seek((4 << 30) + 1)
        assert f.read(1) == b"\0", "the lower file was modified"
