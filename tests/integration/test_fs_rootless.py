"""stratafs used rootless, as an unprivileged user the test creates: mounted
through fusermount3 and inside user namespaces (`unshare -Urm`, and the
user's subordinate ids through `unshare --map-auto`), with owners and device
nodes the host cannot store kept in user.containers.override_stat, and
fuse-overlayfs's uidmapping/gidmapping options.

Everything the user sees is observed as that user (the mounts are theirs;
root may not look into them). Mounts made inside a namespace live in a
subprocess with its own pid namespace: when it exits, or is killed on a
timeout, the daemon dies with it and the mount goes with the namespace."""
import json
import os
import pwd
import stat
import struct
import subprocess
import time

import pytest

from conftest import is_mounted, run, tool
from fsutil import snapshot, whiteout, write

USER = "strata-test"
SUBID_RANGE = (300000, 65536)  # given to USER when it has no subordinate ids yet
OVERRIDE = "user.containers.override_stat"
ACL_XATTR = "system.posix_acl_access"
PYTHON = "/usr/bin/python3"  # the system interpreter: readable by every user
TIMEOUT = 30

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating an unprivileged user needs root")


# ---- the user, its subordinate ids, its access to /dev/fuse -----------------------------


def subid_base(path, name):
    with open(path) as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == name and int(fields[2]) >= 65536:
                return int(fields[1])
    return None


class User:
    def __init__(self):
        try:
            pw = pwd.getpwnam(USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER],
                           capture_output=True)
            pw = pwd.getpwnam(USER)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        if subid_base("/etc/subuid", USER) is None or subid_base("/etc/subgid", USER) is None:
            lo, n = SUBID_RANGE
            run(["usermod", "--add-subuids", f"{lo}-{lo + n - 1}", "--add-subgids", f"{lo}-{lo + n - 1}", USER])
        self.subuid = subid_base("/etc/subuid", USER)
        self.subgid = subid_base("/etc/subgid", USER)

    def cmd(self, args, home, caps=()):
        pre = ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups"]
        if caps:
            c = ",".join("+" + x for x in caps)
            pre += [f"--inh-caps={c}", f"--ambient-caps={c}"]
        return pre + ["env", "-i", f"HOME={home}", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *args]

    def run(self, args, home, check=True, caps=(), timeout=TIMEOUT):
        return run(self.cmd(args, home, caps), check=check, timeout=timeout)


def _acl_entry(tag, perm, ident=0xFFFFFFFF):
    return struct.pack("<HHI", tag, perm, ident)


@pytest.fixture(scope="module")
def user():
    u = User()
    # /dev/fuse must be openable by the user (libfuse opens it before it
    # falls back to fusermount3). Where it is 0600, the user gets an ACL
    # entry for the module's duration; mode and ACL are put back afterwards.
    dev = "/dev/fuse"
    st = os.stat(dev)
    try:
        old_acl = os.getxattr(dev, ACL_XATTR)
    except OSError:
        old_acl = None
    changed = None
    if st.st_mode & 0o006 != 0o006 and old_acl is None:
        acl = struct.pack("<I", 2) + b"".join([
            _acl_entry(0x01, 6), _acl_entry(0x02, 6, u.uid), _acl_entry(0x04, (st.st_mode >> 3) & 7),
            _acl_entry(0x10, 6), _acl_entry(0x20, st.st_mode & 7)])
        try:
            os.setxattr(dev, ACL_XATTR, acl)
            changed = "acl"
        except OSError:
            os.chmod(dev, stat.S_IMODE(st.st_mode) | 0o006)
            changed = "mode"
    try:
        yield u
    finally:
        if changed == "acl":
            os.removexattr(dev, ACL_XATTR)
        if changed:
            os.chmod(dev, stat.S_IMODE(st.st_mode))
        assert stat.S_IMODE(os.stat(dev).st_mode) == stat.S_IMODE(st.st_mode)


@pytest.fixture(scope="module")
def map_auto(user):
    """Whether `unshare -r --map-auto` gives the user its subordinate ids."""
    r = user.run(["unshare", "-r", "--map-auto", "cat", "/proc/self/uid_map"], "/", check=False)
    if r.returncode != 0 or len(r.stdout.split("\n")) < 3:
        pytest.skip(f"unshare --map-auto does not work here: {r.stderr.strip()}")
    return True


# ---- layers --------------------------------------------------------------------------------


class Stack:
    """Lower layers (made by root, as an image would be) and the user's upper, work
    and mount directories, under a workdir the user can reach."""

    def __init__(self, workdir, user):
        os.chmod(workdir, 0o755)
        self.user = user
        self.home = os.path.join(workdir, "home")
        os.mkdir(self.home)
        os.chown(self.home, user.uid, user.gid)
        self.l1, self.l2 = os.path.join(workdir, "l1"), os.path.join(workdir, "l2")
        self.upper, self.work, self.mnt = (os.path.join(self.home, n) for n in ("upper", "work", "mnt"))
        for d in (self.upper, self.work, self.mnt):
            os.mkdir(d)
            os.chown(d, user.uid, user.gid)

    def opts(self, writable=True, extra=""):
        o = f"lowerdir={self.l2}:{self.l1}"
        if writable:
            o += f",upperdir={self.upper},workdir={self.work}"
        return o + ("," + extra if extra else "")

    def lower_snapshot(self):
        return {"l1": snapshot(self.l1), "l2": snapshot(self.l2)}


def owned(path, uid, gid):
    os.lchown(path, uid, gid)


def build_lowers(s, dir_owner):
    """Two lowers: files owned by other ids, an override_stat device and owner
    (as a rootless image import writes them), a whiteout, a merged directory and
    a directory to be replaced. Directories belong to DIR_OWNER."""
    u = s.user
    write(f"{s.l1}/etc/base", "base\n", 0o644)
    write(f"{s.l1}/gone", "gone\n")
    write(f"{s.l1}/data/old1", "old1\n")
    write(f"{s.l1}/doomed/a", "a\n")
    write(f"{s.l1}/doomed/b", "b\n")
    write(f"{s.l2}/etc/owned", "owned\n", 0o666)
    owned(f"{s.l2}/etc/owned", 1234, 5678)
    write(f"{s.l2}/etc/mine", "mine\n", 0o644)
    owned(f"{s.l2}/etc/mine", u.uid, u.gid)
    write(f"{s.l2}/etc/sub", "sub\n", 0o644)
    owned(f"{s.l2}/etc/sub", u.subuid + 1233, u.subgid + 1233)  # id 1234 of the user's namespace
    write(f"{s.l2}/etc/over", "over\n", 0o644)
    owned(f"{s.l2}/etc/over", u.uid, u.gid)
    os.setxattr(f"{s.l2}/etc/over", OVERRIDE, b"0:0:0640")
    write(f"{s.l2}/dev/null", "", 0o644)
    owned(f"{s.l2}/dev/null", u.uid, u.gid)
    os.setxattr(f"{s.l2}/dev/null", OVERRIDE, b"0:0:0666:char-1-3")
    write(f"{s.l2}/data/new", "new\n")
    whiteout(f"{s.l2}/gone")
    others = {f"{s.l2}/etc/owned", f"{s.l2}/etc/sub", f"{s.l2}/gone"}
    for layer in (s.l1, s.l2):
        for dirpath, dirnames, filenames in os.walk(layer):
            os.chown(dirpath, *dir_owner)
            os.chmod(dirpath, 0o755)
            for n in filenames:
                if os.path.join(dirpath, n) not in others:
                    os.lchown(os.path.join(dirpath, n), *dir_owner)


# ---- what the user sees --------------------------------------------------------------------

# Runs as the user (in or out of a namespace): prints a JSON view of a tree,
# or of single paths, without following symlinks.
VIEW = r'''
import json, os, stat, sys
def entry(p):
    s = os.lstat(p)
    body = None
    if stat.S_ISREG(s.st_mode):
        try:
            with open(p, "rb") as f:
                body = f.read().decode("latin-1")
        except PermissionError:
            body = "EACCES"
    return [stat.filemode(s.st_mode), s.st_uid, s.st_gid, os.major(s.st_rdev), os.minor(s.st_rdev), s.st_ino, body]
def tree(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            out[os.path.relpath(p, root)] = entry(p)
    return out
'''

# Shared by the scripts that run inside a namespace: mount there, and always
# unmount (the pid namespace also kills the daemon when the script ends).
NS_PRELUDE = VIEW + r'''
import subprocess, time
OUT = {}
MOUNTED = []
def is_mounted(m):
    with open("/proc/self/mounts") as f:
        return any(l.split()[1] == m for l in f)
def mount(opts, mnt):
    r = subprocess.run([STRATAFS, "-o", opts, mnt], capture_output=True, text=True)
    assert r.returncode == 0, "stratafs: " + r.stderr
    MOUNTED.append(mnt)
def umount(mnt):
    subprocess.run(["umount", mnt], check=True)
    MOUNTED.remove(mnt)
    for _ in range(100):
        if not is_mounted(mnt):
            return
        time.sleep(0.02)
def override(p):
    try:
        return os.getxattr(p, "user.containers.override_stat", follow_symlinks=False).decode()
    except OSError:
        return None
def attempt(fn, *a):
    try:
        fn(*a)
        return 0
    except OSError as e:
        return e.errno
'''


def user_view(s, code, home=None, caps=()):
    """Runs Python CODE as the user (after VIEW); CODE prints JSON."""
    r = s.user.run([PYTHON, "-c", VIEW + code], home or s.home, caps=caps)
    return json.loads(r.stdout)


def in_namespace(s, unshare_args, code, timeout=TIMEOUT):
    """Runs CODE as the user inside `unshare UNSHARE_ARGS -m` with its own pid
    namespace; returns the OUT dict it filled in."""
    script = (f"STRATAFS = {tool('stratafs')!r}\n" + NS_PRELUDE + "try:\n" +
              "".join("    " + line + "\n" for line in code.strip("\n").split("\n")) +
              "finally:\n    for m in reversed(MOUNTED):\n        subprocess.run(['umount', '-l', m])\n" +
              "print(json.dumps(OUT))\n")
    args = ["unshare", *unshare_args, "-m", "--pid", "--fork", "--mount-proc", "--kill-child", PYTHON, "-c", script]
    r = s.user.run(args, s.home, timeout=timeout)
    return json.loads(r.stdout)


def mount_as_user(s, mounts, opts, mnt=None):
    mnt = mnt or s.mnt
    mounts.add(mnt)
    s.user.run([tool("stratafs"), "-o", opts, mnt], s.home)
    assert is_mounted(mnt)
    return mnt


def unmount_as_user(s, mnt=None):
    mnt = mnt or s.mnt
    s.user.run(["fusermount3", "-u", mnt], s.home)
    for _ in range(100):
        if not is_mounted(mnt):
            return
        time.sleep(0.02)
    raise AssertionError(f"{mnt} still mounted after fusermount3 -u")


def mount_line(mnt):
    with open("/proc/self/mounts") as f:
        for line in f:
            if line.split()[1] == mnt:
                return line
    return None


def xattr(path):
    try:
        return os.getxattr(path, OVERRIDE, follow_symlinks=False).decode()
    except OSError:
        return None


@pytest.fixture
def stack(workdir, user):
    s = Stack(workdir, user)
    build_lowers(s, (user.uid, user.gid))
    return s


# ---- through fusermount3, as the user ---------------------------------------------------------


def test_read_only_mount_through_fusermount3_shows_owners_and_hides_markers(stack, mounts):
    s, u = stack, stack.user
    before = s.lower_snapshot()
    mount_as_user(s, mounts, s.opts(writable=False))
    line = mount_line(s.mnt)
    assert "fuse.stratafs" in line and f"user_id={u.uid}" in line and " ro," in line
    v = user_view(s, f"""
t = tree({s.mnt!r})
try:
    open({s.mnt!r} + "/etc/new", "w")
    err = 0
except OSError as e:
    err = e.errno
print(json.dumps([t, err]))""")
    t, err = v
    assert sorted(t) == ["data", "data/new", "data/old1", "dev", "dev/null", "doomed", "doomed/a", "doomed/b",
                         "etc", "etc/base", "etc/mine", "etc/over", "etc/owned", "etc/sub"]
    assert t["etc/owned"][:3] == ["-rw-rw-rw-", 1234, 5678] and t["etc/owned"][6] == "owned\n"
    assert t["etc/mine"][1:3] == [u.uid, u.gid]
    # override_stat from the layer: owner, mode and device type as recorded.
    assert t["etc/over"][:3] == ["-rw-r-----", 0, 0] and t["etc/over"][6] == "EACCES"
    assert t["dev/null"][:5] == ["crw-rw-rw-", 0, 0, 1, 3]
    assert err == 30  # EROFS
    unmount_as_user(s)
    assert s.lower_snapshot() == before


def test_copy_up_through_fusermount3_keeps_owner_mode_and_content(stack, mounts):
    s, u = stack, stack.user
    before = s.lower_snapshot()
    mount_as_user(s, mounts, s.opts())
    t = user_view(s, f"""
m = {s.mnt!r}
with open(m + "/etc/owned", "a") as f:
    f.write("more\\n")
with open(m + "/etc/mine", "a") as f:
    f.write("more\\n")
os.chmod(m + "/etc/mine", 0o600)
with open(m + "/etc/fresh", "w") as f:
    f.write("fresh\\n")
print(json.dumps(tree(m)))""")
    assert t["etc/owned"][:3] == ["-rw-rw-rw-", 1234, 5678]
    assert t["etc/owned"][6] == "owned\nmore\n"
    assert t["etc/mine"][:3] == ["-rw-------", u.uid, u.gid] and t["etc/mine"][6] == "mine\nmore\n"
    assert t["etc/fresh"][:3] == ["-rw-r--r--", u.uid, u.gid]
    unmount_as_user(s)
    # On disk: the user owns every copy; the owner it could not give is in override_stat.
    st = os.lstat(f"{s.upper}/etc/owned")
    assert (st.st_uid, st.st_gid) == (u.uid, u.gid)
    assert xattr(f"{s.upper}/etc/owned") == "1234:5678:0666"
    assert xattr(f"{s.upper}/etc/mine") is None and xattr(f"{s.upper}/etc/fresh") is None
    assert s.lower_snapshot() == before


def test_symlink_copied_up_through_fusermount3_keeps_its_owner(stack, mounts):
    """A lower symlink of another owner, renamed (so copied up) by a user who
    cannot give the copy that owner: the mount goes on showing it, also
    after a remount and a second rename, and not once it is replaced."""
    s, u = stack, stack.user
    os.symlink("owned", f"{s.l2}/etc/lnk")
    os.lchown(f"{s.l2}/etc/lnk", 1234, 5678)
    mount_as_user(s, mounts, s.opts())
    code = f"""
m = {s.mnt!r}
os.rename(m + "/etc/lnk", m + "/etc/moved")
print(json.dumps([entry(m + "/etc/moved"), os.readlink(m + "/etc/moved")]))"""
    t = user_view(s, code)
    assert t[0][:3] == ["lrwxrwxrwx", 1234, 5678] and t[1] == "owned"
    unmount_as_user(s)
    mount_as_user(s, mounts, s.opts())
    t = user_view(s, f"""
m = {s.mnt!r}
before = entry(m + "/etc/moved")
os.mkdir(m + "/elsewhere")
os.rename(m + "/etc/moved", m + "/elsewhere/again")
after = entry(m + "/elsewhere/again")
os.unlink(m + "/elsewhere/again")
os.symlink("mine", m + "/elsewhere/again")
print(json.dumps([before, after, entry(m + "/elsewhere/again")]))""")
    assert t[0][:3] == ["lrwxrwxrwx", 1234, 5678]
    assert t[1][:3] == ["lrwxrwxrwx", 1234, 5678]
    assert t[2][:3] == ["lrwxrwxrwx", u.uid, u.gid]
    unmount_as_user(s)
    assert os.lstat(f"{s.l2}/etc/lnk").st_uid == 1234


def test_o_tmpfile_through_fusermount3(stack, mounts):
    """A user's O_TMPFILE file, named by linkat(2), is the user's, with its
    mode and what was written to it."""
    s, u = stack, stack.user
    mount_as_user(s, mounts, s.opts())
    t = user_view(s, f"""
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
m = {s.mnt!r}
fd = os.open(m + "/etc", os.O_TMPFILE | os.O_RDWR, 0o640)
os.write(fd, b"whole")
r = libc.linkat(-100, ("/proc/self/fd/%d" % fd).encode(), -100, (m + "/etc/made").encode(), 0x400)
os.close(fd)
print(json.dumps([r, entry(m + "/etc/made")]))""")
    assert t[0] == 0
    assert t[1][:3] == ["-rw-r-----", u.uid, u.gid] and t[1][6] == "whole"
    unmount_as_user(s)
    assert open(f"{s.upper}/etc/made").read() == "whole"


def test_whiteouts_and_opaque_dirs_through_fusermount3(stack, mounts):
    s = stack
    before = s.lower_snapshot()
    mount_as_user(s, mounts, s.opts())
    v = user_view(s, f"""
import shutil
m = {s.mnt!r}
os.unlink(m + "/etc/base")
os.unlink(m + "/data/new")
shutil.rmtree(m + "/doomed")
os.mkdir(m + "/doomed")
with open(m + "/doomed/c", "w") as f:
    f.write("c\\n")
print(json.dumps([sorted(os.listdir(m + "/etc")), sorted(os.listdir(m + "/data")), sorted(os.listdir(m + "/doomed")),
                  os.path.exists(m + "/etc/base")]))""")
    assert v == [["mine", "over", "owned", "sub"], ["old1"], ["c"], False]
    unmount_as_user(s)
    # The upper uses overlayfs's markers: unprivileged users may create 0/0
    # whiteouts (Linux 5.8+) and user.overlay.* xattrs.
    for name in ("etc/base", "data/new"):
        st = os.lstat(f"{s.upper}/{name}")
        assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0, name
    assert os.getxattr(f"{s.upper}/doomed", "user.overlay.opaque") == b"y"
    assert sorted(os.listdir(f"{s.upper}/doomed")) == ["c"]
    assert s.lower_snapshot() == before


def test_rootless_upper_reads_back_the_same_after_remount(stack, mounts):
    s = stack
    mount_as_user(s, mounts, s.opts())
    code = f"""
import shutil
m = {s.mnt!r}
with open(m + "/etc/owned", "a") as f:
    f.write("more\\n")
os.chmod(m + "/etc/mine", 0o604)
os.unlink(m + "/etc/base")
shutil.rmtree(m + "/doomed")
os.mkdir(m + "/doomed")
os.mkfifo(m + "/fifo")
os.symlink("etc/mine", m + "/link")
os.link(m + "/etc/mine", m + "/hard")
print(json.dumps(tree(m)))"""
    first = user_view(s, code)
    assert first["etc/mine"][0] == "-rw----r--" and first["etc/owned"][1:3] == [1234, 5678]
    assert first["fifo"][0] == "prw-r--r--" and first["link"][0].startswith("l") and first["hard"] == first["etc/mine"]
    unmount_as_user(s)
    mount_as_user(s, mounts, s.opts())
    again = user_view(s, f"print(json.dumps(tree({s.mnt!r})))")
    unmount_as_user(s)
    assert again == first


def test_device_node_made_by_a_caller_the_daemon_cannot_match_is_kept_in_override_stat(stack, mounts):
    # The kernel lets only callers with CAP_MKNOD make device nodes; the
    # user's daemon has no such privilege, so the node is an empty file with
    # override_stat on disk, and a device through the mount.
    s, u = stack, stack.user
    mount_as_user(s, mounts, s.opts())
    code = f"""
m = {s.mnt!r}
os.mknod(m + "/dev/zero", 0o640 | stat.S_IFCHR, os.makedev(1, 5))
os.mknod(m + "/blk", 0o600 | stat.S_IFBLK, os.makedev(7, 0))
print(json.dumps([entry(m + "/dev/zero"), entry(m + "/blk")]))"""
    zero, blk = user_view(s, code, caps=("mknod",))
    assert zero[:5] == ["crw-r-----", u.uid, u.gid, 1, 5]
    assert blk[:5] == ["brw-------", u.uid, u.gid, 7, 0]
    unmount_as_user(s)
    st = os.lstat(f"{s.upper}/dev/zero")
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    assert xattr(f"{s.upper}/dev/zero") == f"{u.uid}:{u.gid}:0640:char-1-5"
    assert xattr(f"{s.upper}/blk") == f"{u.uid}:{u.gid}:0600:block-7-0"
    mount_as_user(s, mounts, s.opts())
    again = user_view(s, f"print(json.dumps([entry({s.mnt!r} + '/dev/zero'), entry({s.mnt!r} + '/blk')]))")
    unmount_as_user(s)
    assert [again[0][:5], again[1][:5]] == [zero[:5], blk[:5]]


def test_chown_from_the_users_namespace_is_kept_in_override_stat(stack, mounts, map_auto):
    # The user mounts, then enters a namespace with its subordinate ids and,
    # as root there, gives files to other ids: the daemon (the plain user)
    # cannot chown, so the upper keeps the owner in override_stat.
    s, u = stack, stack.user
    mount_as_user(s, mounts, s.opts())
    code = f"""
import json, os
m = {s.mnt!r}
os.chown(m + "/etc/mine", 7, 8)
with open(m + "/etc/new", "w") as f:
    f.write("n")
os.chown(m + "/etc/new", 10, 11)
print(json.dumps({{n: [os.lstat(m + "/etc/" + n).st_uid, os.lstat(m + "/etc/" + n).st_gid]
                  for n in ("mine", "new", "sub")}}))"""
    r = u.run(["unshare", "-r", "--map-auto", PYTHON, "-c", code], s.home)
    inside = json.loads(r.stdout)
    assert inside == {"mine": [7, 8], "new": [10, 11], "sub": [1234, 1234]}
    outside = user_view(s, f"print(json.dumps({{n: entry({s.mnt!r} + '/etc/' + n)[1:3] for n in ('mine', 'new')}}))")
    assert outside == {"mine": [u.subuid + 6, u.subgid + 7], "new": [u.subuid + 9, u.subgid + 10]}
    unmount_as_user(s)
    assert xattr(f"{s.upper}/etc/mine") == f"{u.subuid + 6}:{u.subgid + 7}:0644"
    assert os.lstat(f"{s.upper}/etc/mine").st_uid == u.uid


# ---- inside user namespaces ---------------------------------------------------------------------


def test_inside_unshare_Urm(stack):
    # One id: the user is root in there, every other id shows as the
    # overflow id 65534, as the kernel shows ids a namespace does not map.
    s, u = stack, stack.user
    before = s.lower_snapshot()
    out = in_namespace(s, ["-U", "-r"], f"""
import shutil
m = {s.mnt!r}
mount({s.opts()!r}, m)
OUT["stat"] = {{n: entry(m + "/" + n)[:5] for n in ("etc/mine", "etc/owned", "etc/over", "dev/null", "etc")}}
with open(m + "/etc/new", "w") as f:
    f.write("n")
with open(m + "/etc/mine", "a") as f:
    f.write("more")
os.unlink(m + "/etc/base")
shutil.rmtree(m + "/doomed")
os.mkdir(m + "/doomed")
os.mkfifo(m + "/fifo", 0o600)
OUT["mknod_dev"] = attempt(os.mknod, m + "/dev/zero", 0o600 | stat.S_IFCHR, os.makedev(1, 5))
OUT["chown_unmapped"] = attempt(os.chown, m + "/etc/new", 7, 7)
os.chmod(m + "/etc/over", 0o604)
OUT["after"] = {{n: entry(m + "/" + n)[:5] for n in ("etc/new", "etc/mine", "fifo", "doomed", "etc/over")}}
OUT["doomed"] = os.listdir(m + "/doomed")
OUT["etc"] = sorted(os.listdir(m + "/etc"))
first = tree(m)
umount(m)
mount({s.opts()!r}, m)
OUT["same_after_remount"] = tree(m) == first
umount(m)
""")
    assert out["stat"] == {
        "etc/mine": ["-rw-r--r--", 0, 0, 0, 0],
        "etc/owned": ["-rw-rw-rw-", 65534, 65534, 0, 0],
        "etc/over": ["-rw-r-----", 0, 0, 0, 0],
        "dev/null": ["crw-rw-rw-", 0, 0, 1, 3],
        "etc": ["drwxr-xr-x", 0, 0, 0, 0],
    }
    # The kernel refuses device nodes to anyone without CAP_MKNOD on the host.
    assert out["mknod_dev"] == 1  # EPERM
    assert out["chown_unmapped"] == 22  # EINVAL: 7 does not exist in there
    assert out["after"] == {
        "etc/new": ["-rw-r--r--", 0, 0, 0, 0],
        "etc/mine": ["-rw-r--r--", 0, 0, 0, 0],
        "fifo": ["prw-------", 0, 0, 0, 0],
        "doomed": ["drwxr-xr-x", 0, 0, 0, 0],
        "etc/over": ["-rw----r--", 0, 0, 0, 0],
    }
    assert xattr(f"{s.upper}/etc/over") == "0:0:0604"
    assert out["doomed"] == [] and out["etc"] == ["mine", "new", "over", "owned", "sub"]
    assert out["same_after_remount"]
    assert not os.path.exists(f"{s.upper}/dev/zero")
    assert os.lstat(f"{s.upper}/etc/new").st_uid == u.uid
    st = os.lstat(f"{s.upper}/etc/base")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(f"{s.upper}/doomed", "user.overlay.opaque") == b"y"
    assert s.lower_snapshot() == before


def test_inside_map_auto_namespace_owners_show_and_chown_is_real(stack, map_auto):
    s, u = stack, stack.user
    before = s.lower_snapshot()
    out = in_namespace(s, ["-r", "--map-auto"], f"""
m = {s.mnt!r}
mount({s.opts()!r}, m)
OUT["stat"] = {{n: entry(m + "/etc/" + n)[:3] for n in ("mine", "sub", "owned", "over")}}
os.chown(m + "/etc/mine", 42, 43)
with open(m + "/etc/sub", "a") as f:
    f.write("more")
OUT["after"] = {{n: entry(m + "/etc/" + n)[:3] for n in ("mine", "sub")}}
first = tree(m)
umount(m)
mount({s.opts()!r}, m)
OUT["same_after_remount"] = tree(m) == first
umount(m)
""")
    assert out["stat"] == {"mine": ["-rw-r--r--", 0, 0], "sub": ["-rw-r--r--", 1234, 1234],
                           "owned": ["-rw-rw-rw-", 65534, 65534], "over": ["-rw-r-----", 0, 0]}
    assert out["after"] == {"mine": ["-rw-r--r--", 42, 43], "sub": ["-rw-r--r--", 1234, 1234]}
    assert out["same_after_remount"]
    # Ids the namespace maps are stored for real, as the host ids they stand for.
    st = os.lstat(f"{s.upper}/etc/mine")
    assert (st.st_uid, st.st_gid) == (u.subuid + 41, u.subgid + 42) and xattr(f"{s.upper}/etc/mine") is None
    st = os.lstat(f"{s.upper}/etc/sub")
    assert (st.st_uid, st.st_gid) == (u.subuid + 1233, u.subgid + 1233) and xattr(f"{s.upper}/etc/sub") is None
    assert s.lower_snapshot() == before


def test_uidmapping_and_gidmapping_map_both_ways(workdir, user, map_auto):
    # As podman runs fuse-overlayfs: inside the user's namespace, with
    # container ids 0..99 stored as the namespace's 1000..1099, and 100..109
    # as 70000..70009, which the namespace cannot hold (so those owners go
    # to override_stat).
    s, u = Stack(workdir, user), user
    host = lambda ns_id: u.subuid + ns_id - 1  # noqa: E731  (namespace id -> host uid)
    hostg = lambda ns_id: u.subgid + ns_id - 1  # noqa: E731
    write(f"{s.l1}/five", "5\n", 0o644)
    owned(f"{s.l1}/five", host(1005), hostg(1006))
    write(f"{s.l1}/outside", "o\n", 0o644)
    owned(f"{s.l1}/outside", host(2000), hostg(2000))
    write(f"{s.l1}/over", "v\n", 0o644)
    owned(f"{s.l1}/over", host(1000), hostg(1000))
    os.setxattr(f"{s.l1}/over", OVERRIDE, b"1003:1004:0600")
    os.mkdir(s.l2)
    for d in (s.l1, s.l2, s.upper):
        owned(d, host(1000), hostg(1000))
        os.chmod(d, 0o755)
    # allow_other: a second caller (uid 500 in there) uses the mount too.
    maps = "uidmapping=0:1000:100:100:70000:10,gidmapping=0:1000:100:100:70000:10,allow_other"
    out = in_namespace(s, ["-r", "--map-auto"], f"""
m = {s.mnt!r}
mount({s.opts(extra=maps)!r}, m)
OUT["stat"] = {{n: entry(m + "/" + n)[:3] for n in ("five", "outside", "over", ".")}}
with open(m + "/new", "w") as f:
    f.write("n")
os.chown(m + "/five", 7, 8)
os.chown(m + "/new", 101, 102)
OUT["unmapped_chown"] = attempt(os.chown, m + "/over", 500, 500)
os.chmod(m, 0o1777)
pid = os.fork()
if pid == 0:
    os.setgid(500)
    os.setuid(500)
    os._exit(attempt(lambda: open(m + "/by500", "w")))
OUT["unmapped_create"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
OUT["after"] = {{n: entry(m + "/" + n)[:3] for n in ("five", "new")}}
first = tree(m)
umount(m)
mount({s.opts(extra=maps)!r}, m)
OUT["same_after_remount"] = tree(m) == first
umount(m)
""")
    assert out["stat"] == {"five": ["-rw-r--r--", 5, 6], "outside": ["-rw-r--r--", 65534, 65534],
                           "over": ["-rw-------", 3, 4], ".": ["drwxr-xr-x", 0, 0]}
    assert out["unmapped_chown"] == 22  # EINVAL: 500 has no mapping
    assert out["unmapped_create"] == 75  # EOVERFLOW: nor has a caller running as 500
    assert not os.path.exists(f"{s.upper}/by500")
    assert out["after"] == {"five": ["-rw-r--r--", 7, 8], "new": ["-rw-r--r--", 101, 102]}
    assert out["same_after_remount"]
    # On disk: the unmapped ids, for real where the namespace holds them, in
    # override_stat where it does not.
    st = os.lstat(f"{s.upper}/five")
    assert (st.st_uid, st.st_gid) == (host(1007), hostg(1008)) and xattr(f"{s.upper}/five") is None
    assert xattr(f"{s.upper}/new") == "70001:70002:0644"
    st = os.lstat(f"{s.upper}/new")
    assert (st.st_uid, st.st_gid) == (host(1000), hostg(1000))


def test_root_mount_shows_and_changes_real_owners(stack, mounts):
    # override_stat is the rootless convention: a root daemon without id maps
    # shows real owners, and chown through it changes them for real.
    s = stack
    from fsutil import stratafs_mount
    stratafs_mount(mounts, s.mnt, [s.l2, s.l1], s.upper, s.work)
    st = os.lstat(f"{s.mnt}/etc/over")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (s.user.uid, s.user.gid, 0o644)
    os.chown(f"{s.mnt}/etc/over", 5, 6)
    os.chmod(f"{s.mnt}/etc/over", 0o600)
    st = os.lstat(f"{s.mnt}/etc/over")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (5, 6, 0o600)
    st = os.lstat(f"{s.upper}/etc/over")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (5, 6, 0o600)
