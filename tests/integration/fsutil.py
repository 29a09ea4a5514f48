"""Helpers shared by the stratafs integration tests: build layer trees, mount
them with stratafs (registered with the `mounts` fixture so that they are
unmounted even when a test fails), and read a tree back as a comparable dict."""
import os
import stat
import subprocess
import time

from conftest import is_mounted, run, tool


def stratafs_mount(mounts, mnt, lowers, upper=None, work=None, extra=(), check=True):
    """Mounts LOWERS (topmost first) on MNT; returns the completed process."""
    os.makedirs(mnt, exist_ok=True)
    opts = "lowerdir=" + ":".join(str(l).replace("\\", "\\\\").replace(":", "\\:") for l in lowers)
    if upper is not None:
        opts += f",upperdir={upper},workdir={work}"
    mounts.add(mnt)
    r = run([tool("stratafs"), "-o", opts, *extra, mnt], check=False)
    if check:
        assert r.returncode == 0, f"stratafs failed: {r.stderr}"
        assert is_mounted(mnt), "stratafs returned before the mount was ready"
    return r


def wait_until_mounted(mnt, seconds=5):
    """Waits for a stratafs started in the foreground (-f) to be mounted on MNT; fails after SECONDS."""
    for _ in range(int(seconds / 0.02)):
        if is_mounted(mnt):
            return
        time.sleep(0.02)
    raise AssertionError(f"stratafs did not mount {mnt} within {seconds} s")


def unmount_now(mnt):
    run(["fusermount3", "-u", mnt])
    for _ in range(100):
        if not is_mounted(mnt):
            return
        time.sleep(0.02)
    raise AssertionError(f"{mnt} still mounted")


def write(path, data=b"", mode=None):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    if mode is not None:
        os.chmod(path, mode)


def whiteout(path):
    """An overlayfs whiteout: a 0/0 character device."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o000, os.makedev(0, 0))


def oci_whiteout(dirpath, name):
    write(os.path.join(dirpath, ".wh." + name))


def snapshot(root):
    """Walks ROOT without following symlinks: {relpath: (type, mode, uid, gid, size, content/target, xattrs)}."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    body = f.read()
            elif stat.S_ISLNK(st.st_mode):
                body = os.readlink(p)
            else:
                body = None
            try:
                xattrs = {k: os.getxattr(p, k, follow_symlinks=False) for k in os.listxattr(p, follow_symlinks=False)}
            except OSError:
                xattrs = {}
            out[rel] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                        st.st_size if not stat.S_ISDIR(st.st_mode) else None, body, xattrs)
    return out


def listing(path):
    return sorted(os.listdir(path))
