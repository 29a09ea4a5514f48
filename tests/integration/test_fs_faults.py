"""Faults of a writable union: a full upper filesystem during copy-up, a daemon
with fewer file descriptors than the tree has directories, and the daemon
killed with SIGKILL in the middle of writes.

The ENOSPC case also runs on kernel overlayfs, which checks the test itself.
"""
import errno
import hashlib
import os
import random
import signal
import stat
import subprocess
import sys
import time

import pytest

from conftest import is_mounted
from fsdiff import HangGuard, _layer_opts, chosen_seed, daemon_pid, fs_label, fs_under_test, mount_fuse, mount_kernel, umount_now

MiB = 1 << 20


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(MiB):
            h.update(chunk)
    return h.hexdigest()


def non_directories(root):
    """Every entry under ROOT that is not a directory, relative to ROOT."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            out.append(os.path.relpath(os.path.join(dirpath, n), root))
    return sorted(out)


def append_and_sync(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


@pytest.mark.parametrize("impl", ["fuse", "kernel"])
def test_enospc_during_copy_up(workdir, mounts, impl):
    """Copy-up of a 16 MiB file into an upper on a 4 MiB tmpfs: the caller
    gets ENOSPC, the lower file stays visible and unchanged, and nothing of
    the failed copy is left in the upper or the work dir, nor its space."""
    lower = os.path.join(workdir, "lower")
    os.makedirs(lower)
    big = os.path.join(lower, "big")
    with open(big, "wb") as f:
        f.write(random.Random(7).randbytes(16 * MiB))
    with open(os.path.join(lower, "small"), "wb") as f:
        f.write(b"small lower file")
    digest = sha(big)

    small_fs = os.path.join(workdir, "small-fs")
    os.makedirs(small_fs)
    mounts.add(small_fs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0755", "strata-test-small", small_fs], check=True)
    upper, work = os.path.join(small_fs, "upper"), os.path.join(small_fs, "work")
    os.makedirs(upper)
    os.makedirs(work)
    mnt = os.path.join(workdir, "mnt")
    if impl == "kernel":
        mount_kernel(mounts, mnt, [lower], upper, work)
    else:
        mount_fuse(mounts, mnt, [lower], upper, work)
    free_before = os.statvfs(small_fs).f_bfree

    with HangGuard([mnt] if impl == "fuse" else [], 60):
        with pytest.raises(OSError) as failure:
            append_and_sync(os.path.join(mnt, "big"), b"one more byte")
        assert failure.value.errno == errno.ENOSPC, f"copy-up into a full upper gave {failure.value}, not ENOSPC"
        assert sha(os.path.join(mnt, "big")) == digest, "the file shows other content after the failed copy-up"
        assert os.stat(os.path.join(mnt, "big")).st_size == 16 * MiB
        assert sha(big) == digest, "the lower file was modified"
        assert "big" not in os.listdir(upper), "the failed copy-up left the file in the upper"
        assert not [p for p in non_directories(upper) if not stat.S_ISCHR(os.lstat(os.path.join(upper, p)).st_mode)], \
            f"the upper holds leftovers: {non_directories(upper)}"
        assert non_directories(work) == [], f"the work dir holds leftovers: {non_directories(work)}"
        assert os.statvfs(small_fs).f_bfree >= free_before - 2, "the failed copy-up still holds space"

        # The mount goes on working: a small copy-up and a new file fit.
        append_and_sync(os.path.join(mnt, "small"), b", appended")
        with open(os.path.join(mnt, "new"), "wb") as f:
            f.write(b"new file")
        with open(os.path.join(mnt, "small"), "rb") as f:
            assert f.read() == b"small lower file, appended"


# Descriptors the daemon may hold in test_more_directories_than_descriptors:
# far fewer than the merged directories it serves times their layers.
FD_LIMIT = 256


def test_more_directories_than_descriptors(workdir, mounts):
    """A walk over 3 x 441 layer directories by a daemon limited to 256 file
    descriptors (soft and hard, so it cannot raise them): every entry is
    listed, and afterwards the mount still lists, reads, writes and renames
    everywhere, with no EMFILE and no EIO."""
    lowers = [os.path.join(workdir, f"layer{i}") for i in range(3)]
    dirs = [f"d{a:02}" for a in range(21)] + [f"d{a:02}/e{b:02}" for a in range(21) for b in range(20)]
    for i, layer in enumerate(lowers):
        for d in dirs:
            os.makedirs(os.path.join(layer, d), exist_ok=True)
            with open(os.path.join(layer, d, f"from{i}"), "w") as f:
                f.write(f"{d} in layer {i}\n")
    upper, work, mnt = (os.path.join(workdir, n) for n in ("upper", "work", "mnt"))
    for d in (upper, work, mnt):
        os.makedirs(d)
    mounts.add(mnt)
    r = subprocess.run(["prlimit", f"--nofile={FD_LIMIT}:{FD_LIMIT}", fs_under_test(), "-o",
                        _layer_opts(lowers, upper, work), mnt], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"{fs_label()} mount exited {r.returncode}: {r.stderr}"

    expected = {mnt} | {os.path.join(mnt, d) for d in dirs} | \
        {os.path.join(mnt, d, f"from{i}") for d in dirs for i in range(3)}
    with HangGuard([mnt], 120):
        walk = subprocess.run(["find", mnt], capture_output=True, text=True, timeout=300)
        assert walk.returncode == 0 and walk.stderr == "", f"find failed: {walk.stderr[:2000]}"
        assert set(walk.stdout.split("\n")) - {""} == expected
        # Every directory the kernel now holds still answers.
        for d in dirs:
            names = sorted(n for n in os.listdir(os.path.join(mnt, d)) if n.startswith("from"))
            assert names == ["from0", "from1", "from2"], f"{d} lists {names}"
            for i in range(3):
                with open(os.path.join(mnt, d, f"from{i}")) as f:
                    assert f.read() == f"{d} in layer {i}\n"
        for d in dirs[-30:]:
            with open(os.path.join(mnt, d, "new"), "w") as f:
                f.write("new")
            append_and_sync(os.path.join(mnt, d, "from2"), b"more\n")
        os.rename(os.path.join(mnt, "d20"), os.path.join(mnt, "moved"))
        assert sorted(os.listdir(os.path.join(mnt, "moved", "e19"))) == ["from0", "from1", "from2", "new"]
        with open(os.path.join(mnt, "moved", "e19", "from2")) as f:
            assert f.read() == "d20/e19 in layer 2\nmore\n"
        walk = subprocess.run(["find", mnt], capture_output=True, text=True, timeout=300)
        assert walk.returncode == 0 and walk.stderr == "", f"find failed: {walk.stderr[:2000]}"


# The writer runs in its own process so that it can be left blocked or failing
# when the daemon dies. Each line of the log is written only after the change
# it names was fsynced (and, for a rename, the directory too).
WRITER = r"""
import os, sys
mnt, log_path, rounds, bigs, trees = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
log = os.open(log_path, os.O_WRONLY | os.O_APPEND)
def note(line):
    os.write(log, (line + "\n").encode())
    os.fsync(log)
def pattern(i):
    return (b"file %d " % i) * 4000
os.makedirs(os.path.join(mnt, "new"), exist_ok=True)
for i in range(rounds):
    p = os.path.join(mnt, "new", "f%d" % i)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, pattern(i))
    os.fsync(fd)
    os.close(fd)
    note("new %d" % i)
    if i % 3 == 0:
        os.rename(p, os.path.join(mnt, "new", "r%d" % i))
        dfd = os.open(os.path.join(mnt, "new"), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        note("renamed %d" % i)
    if i % 4 == 0 and i // 4 < bigs:
        k = i // 4
        fd = os.open(os.path.join(mnt, "data", "big%d" % k), os.O_WRONLY | os.O_APPEND)
        os.write(fd, b"appended to big %d\n" % k)
        os.fsync(fd)
        os.close(fd)
        note("big %d" % k)
    if i % 5 == 2 and i // 5 < trees:
        k = i // 5
        os.rename(os.path.join(mnt, "data", "tree%d" % k), os.path.join(mnt, "data", "moved%d" % k))
        dfd = os.open(os.path.join(mnt, "data"), os.O_RDONLY | os.O_DIRECTORY)
        os.fsync(dfd)
        os.close(dfd)
        note("moved %d" % k)
"""

BIGS = 8
BIG_SIZE = 12 * MiB
TREES = 6  # lower directories the writer renames (a whole-tree move, or a redirect)
TREE_FILES = 150


def tree_files(k):
    """{relative path: content} of lower directory data/tree<k>."""
    files = {f"file{j}": b"tree %d file %d\n" % (k, j) for j in range(TREE_FILES)}
    files.update({f"sub/inner{j}": b"tree %d inner %d\n" % (k, j) for j in range(10)})
    return files


def big_content(k):
    return (b"lower big file %d\n" % k) * (BIG_SIZE // 18)


@pytest.mark.parametrize("default_seed", [1, 2, 3])
def test_sigkill_during_writes_then_remount(workdir, mounts, default_seed):
    seed = chosen_seed(default_seed)
    rng = random.Random(seed)
    lower = os.path.join(workdir, "lower")
    os.makedirs(os.path.join(lower, "data"))
    for k in range(BIGS):
        with open(os.path.join(lower, "data", f"big{k}"), "wb") as f:
            f.write(big_content(k))
    for k in range(TREES):
        for rel, content in tree_files(k).items():
            os.makedirs(os.path.dirname(os.path.join(lower, "data", f"tree{k}", rel)), exist_ok=True)
            with open(os.path.join(lower, "data", f"tree{k}", rel), "wb") as f:
                f.write(content)
    lower_digests = {k: sha(os.path.join(lower, "data", f"big{k}")) for k in range(BIGS)}
    upper, work = os.path.join(workdir, "upper"), os.path.join(workdir, "work")
    os.makedirs(upper)
    os.makedirs(work)
    mnt = mount_fuse(mounts, os.path.join(workdir, "mnt"), [lower], upper, work)
    pid = daemon_pid(mnt)
    assert pid, f"no daemon process found for {mnt}"

    log_path = os.path.join(workdir, "log")
    open(log_path, "w").close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, mnt, log_path, "400", str(BIGS),
                               str(TREES)], stderr=subprocess.PIPE)
    try:
        # Kill once some changes are durable, at a seeded moment while more are under way.
        deadline = time.monotonic() + 20
        want_lines = rng.randint(3, 40)
        while time.monotonic() < deadline and writer.poll() is None:
            with open(log_path) as f:
                if len(f.readlines()) >= want_lines:
                    break
            time.sleep(0.005)
        time.sleep(rng.random() * 0.05)
        os.kill(pid, signal.SIGKILL)
        try:
            writer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail("a writer stayed blocked after the daemon was killed")
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    writer_err = writer.stderr.read()
    assert writer.returncode != 0, "the writer finished before the daemon was killed; nothing was tested"

    r = subprocess.run(["fusermount3", "-u", mnt], capture_output=True, text=True)
    assert r.returncode == 0 and not is_mounted(mnt), f"fusermount3 -u after the kill failed: {r.stderr}"
    # Remount without any repair.
    mount_fuse(mounts, mnt, [lower], upper, work)

    with open(log_path) as f:
        log = [line.split() for line in f.read().splitlines()]
    durable_new = {int(n) for what, n in log if what == "new"}
    durable_renamed = {int(n) for what, n in log if what == "renamed"}
    durable_big = {int(n) for what, n in log if what == "big"}
    durable_moved = {int(n) for what, n in log if what == "moved"}
    last_words = (writer_err.decode(errors="replace").strip().splitlines() or [""])[-1]
    assert durable_new, f"nothing was fsynced before the kill; nothing was tested. The writer said: {last_words}"

    with HangGuard([mnt], 60):
        pattern = lambda i: (b"file %d " % i) * 4000  # noqa: E731
        for i in sorted(durable_new):
            # A rename under way at the kill may or may not have happened; the
            # file is under exactly one of its names either way.
            names = [f"r{i}"] if i in durable_renamed else [f"f{i}", f"r{i}"] if i % 3 == 0 else [f"f{i}"]
            present = [n for n in names if os.path.lexists(os.path.join(mnt, "new", n))]
            assert len(present) == 1, f"fsynced file {i} shows as {present or 'nothing'} after the kill and remount"
            name = present[0]
            p = os.path.join(mnt, "new", name)
            with open(p, "rb") as f:
                assert f.read() == pattern(i), f"fsynced file new/{name} lost data"
        allowed = {f"f{i}" for i in range(400)} | {f"r{i}" for i in range(0, 400, 3)}
        stray = sorted(set(os.listdir(os.path.join(mnt, "new"))) - allowed)
        assert not stray, f"names no one created are visible: {stray}"
        assert sorted(os.listdir(mnt)) == ["data", "new"], f"unexpected top-level names: {os.listdir(mnt)}"
        data_names = set(os.listdir(os.path.join(mnt, "data")))
        assert data_names - {f"tree{k}" for k in range(TREES)} - {f"moved{k}" for k in range(TREES)} \
            == {f"big{k}" for k in range(BIGS)}, f"unexpected names in data/: {sorted(data_names)}"
        for k in range(TREES):
            # A renamed directory is whole under exactly one of its names.
            present = [n for n in (f"tree{k}", f"moved{k}") if n in data_names]
            assert len(present) == 1, f"directory {k} shows under {present or 'no name'} after the kill"
            if k in durable_moved:
                assert present == [f"moved{k}"], f"the fsynced rename of data/tree{k} is lost"
            root = os.path.join(mnt, "data", present[0])
            seen = {os.path.relpath(os.path.join(dp, n), root) for dp, _, fs in os.walk(root) for n in fs}
            assert seen == set(tree_files(k)), f"data/{present[0]} is incomplete or has extra files: " \
                f"{sorted(seen ^ set(tree_files(k)))[:10]}"
            for rel, content in tree_files(k).items():
                with open(os.path.join(root, rel), "rb") as f:
                    assert f.read() == content, f"data/{present[0]}/{rel} has other content"
        for k in range(BIGS):
            with open(os.path.join(mnt, "data", f"big{k}"), "rb") as f:
                got = f.read()
            appended = big_content(k) + b"appended to big %d\n" % k
            if k in durable_big:
                assert got == appended, f"fsynced append to data/big{k} is lost"
            else:
                assert got in (big_content(k), appended), \
                    f"data/big{k} is half-copied: {len(got)} bytes, expected {len(big_content(k))} or {len(appended)}"
        # The mount works as before.
        p = os.path.join(mnt, "new", "after-remount")
        with open(p, "wb") as f:
            f.write(b"works")
        os.rename(p, p + "-renamed")
        with open(p + "-renamed", "rb") as f:
            assert f.read() == b"works"
        os.unlink(p + "-renamed")
    umount_now(mnt)

    for k in range(BIGS):
        assert sha(os.path.join(lower, "data", f"big{k}")) == lower_digests[k], "a lower file was modified"
    # Nothing half-done stays on disk: stale work-dir copies are cleaned at
    # mount, and the upper holds only names the writer made.
    assert non_directories(work) == [], f"stale leftovers in the work dir after a remount: {non_directories(work)}"
    # Whiteout and opaque markers (".wh." names, 0/0 devices) are allowed.
    upper_files = {p for p in non_directories(upper) if not os.path.basename(p).startswith(".wh.")
                   and not stat.S_ISCHR(os.lstat(os.path.join(upper, p)).st_mode)}
    expected = {f"new/{n}" for n in allowed} | {f"data/big{k}" for k in range(BIGS)} | {
        f"data/{name}{k}/{rel}" for k in range(TREES) for name in ("tree", "moved") for rel in tree_files(k)}
    assert upper_files <= expected, f"unexpected files in the upper: {sorted(upper_files - expected)}"
    print(f"{fs_label()}: killed after {len(log)} durable changes")
