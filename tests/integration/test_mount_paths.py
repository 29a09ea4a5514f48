"""Every way strata starts stratafs (run, start, build, mount, cp) with a store whose path holds the
characters stratafs's option list treats specially: ':' and '\\' (escaped in lowerdir=, verbatim in
upperdir= and workdir=), a space (octal-escaped in the mount table), and ',' (cannot be expressed)."""
import os

import pytest

from conftest import is_mounted, remove_all_containers, run, tool


def mounts_under(path):
    """Mount points below PATH, unescaped as the kernel writes them."""
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if point.startswith(path + "/"):
                out.append(point)
    return out


class Store:
    def __init__(self, root):
        self.root = root

    def __call__(self, *args, **kw):
        kw.setdefault("timeout", 120)
        return run([tool("strata"), "--root", self.root, *args], check=False, **kw)


@pytest.fixture(params=["a:b", "back\\slash", "with space", "all: of\\ them"])
def store(request, workdir, base_tar):
    """A store in a directory named with the parameter, holding base:1; nothing of it stays mounted."""
    parent = os.path.join(workdir, request.param)
    os.mkdir(parent)
    s = Store(os.path.join(parent, "store"))
    r = s("import", "-c", 'CMD ["sh", "-c", "echo base-cmd"]', base_tar, "base:1")
    assert r.returncode == 0, r.stderr
    try:
        yield s
    finally:
        remove_all_containers(s)
        assert mounts_under(workdir) == []


def ok(r):
    assert r.returncode == 0, r.stderr
    return r


def test_run_and_start_write_to_the_containers_upper(store):
    r = ok(store("run", "--name", "c", "base:1", "sh", "-c", "echo kept > /f; cat /f"))
    assert r.stdout == "kept\n"
    r = ok(store("start", "-a", "c"))
    assert r.stdout == "kept\n"
    assert ok(store("diff", "c")).stdout.split("\n").count("A /f") == 1


def test_build_run_step_and_its_mounts_are_gone(store, workdir):
    ctx = os.path.join(workdir, "ctx")
    os.mkdir(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write("FROM base:1\nRUN echo built > /built\nRUN cat /built > /again\n")
    ok(store("build", "-t", "img:1", ctx))
    r = ok(store("run", "--rm", "img:1", "cat", "/again"))
    assert r.stdout == "built\n"
    assert mounts_under(os.path.dirname(store.root)) == []


def test_mount_a_container_and_an_image_then_cp(store, workdir, mounts):
    ok(store("create", "--name", "c", "base:1"))
    mnt = mounts.add(os.path.join(workdir, "mnt"))
    os.mkdir(mnt)
    ok(store("mount", "c", mnt))
    assert is_mounted(mnt)
    with open(os.path.join(mnt, "via-mount"), "w") as f:
        f.write("m\n")
    ok(store("umount", mnt))
    assert not is_mounted(mnt)
    ok(store("mount", "base:1", mnt))
    assert os.path.exists(os.path.join(mnt, "bin", "busybox"))
    ok(store("umount", mnt))
    out = os.path.join(workdir, "out")
    ok(store("cp", "c:/via-mount", out))
    with open(out) as f:
        assert f.read() == "m\n"


def test_a_comma_in_the_store_path_is_refused_in_one_line(workdir, base_tar, mounts):
    parent = os.path.join(workdir, "a,b")
    os.mkdir(parent)
    s = Store(os.path.join(parent, "store"))
    ok(s("import", base_tar, "base:1"))
    r = s("run", "--rm", "base:1", "true")
    assert r.returncode == 125
    assert "contains ','" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    mnt = mounts.add(os.path.join(workdir, "mnt"))
    os.mkdir(mnt)
    r = s("mount", "base:1", mnt)
    assert r.returncode == 1
    assert r.stderr.strip().startswith("strata: ") and "contains ','" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not is_mounted(mnt)
    assert mounts_under(workdir) == []
