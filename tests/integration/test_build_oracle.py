"""strata build against buildah: the same Dockerfile and context must give the
same file tree (names, types, modes, owners, contents, link targets) and the
same config fields. buildah runs with chroot isolation and vfs storage in a
private root, so it needs no daemon and leaves nothing behind.

Both builds start FROM scratch with the offline busybox root file system
ADDed, so the two tools see the same base.
"""
import io
import json
import os
import shutil
import subprocess
import tarfile

import pytest

from conftest import SOURCE_DIR, run, tool
from fsutil import snapshot

BUILDAH = shutil.which("buildah")
pytestmark = pytest.mark.skipif(BUILDAH is None, reason="buildah is not installed (scripts/install-deps.sh test)")

CONFIG_FIELDS = ["Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Labels", "Volumes", "StopSignal"]


def tree(root):
    """{path: (type, mode, uid, gid, content or link target)}: what both
    builders must agree on (xattrs and sizes are left to the fs tests)."""
    return {p: (kind, mode, uid, gid, body) for p, (kind, mode, uid, gid, _size, body, _x) in snapshot(root).items()}


def buildah(workdir, *args):
    root = os.path.join(workdir, "buildah-root")
    runroot = os.path.join(workdir, "buildah-run")
    return run([BUILDAH, "--storage-driver", "vfs", "--root", root, "--runroot", runroot, *args])


def buildah_cleanup(workdir):
    root = os.path.join(workdir, "buildah-root")
    runroot = os.path.join(workdir, "buildah-run")
    subprocess.run([BUILDAH, "--storage-driver", "vfs", "--root", root, "--runroot", runroot, "rm", "--all"],
                   capture_output=True)
    subprocess.run([BUILDAH, "--storage-driver", "vfs", "--root", root, "--runroot", runroot, "umount", "--all"],
                   capture_output=True)


CASES = {
    "instructions": (
        "FROM scratch\n"
        "ADD base.tar /\n"
        "ARG V=2\n"
        "ENV APP=/srv/app PATH=/usr/local/bin:/usr/bin:/bin\n"
        "LABEL a=b c=\"d e\"\n"
        "WORKDIR $APP\n"
        "COPY a.txt b.txt ./\n"
        "COPY dir/ /opt/dir/\n"
        "COPY --chmod=0750 a.txt /opt/exec\n"
        "COPY --chown=app:app a.txt /home/app/\n"
        "ADD pkg.tar /opt/pkg/\n"
        "RUN echo $V > v && mkdir -p /var/x && ln -s /srv/app/v /var/x/link && rm /etc/os-release\n"
        "USER app\n"
        "EXPOSE 80 53/udp\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGINT\n"
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]\n"
        "CMD [\"echo hi\"]\n"
    ),
    "multistage": (
        "FROM scratch AS base\n"
        "ADD base.tar /\n"
        "FROM base AS builder\n"
        "RUN mkdir /out && echo built > /out/result && chmod 640 /out/result\n"
        "FROM base\n"
        "COPY --from=builder /out /result\n"
        "CMD sh -c 'cat /result/result'\n"
    ),
}


def make_context(ctx, base_tar):
    os.makedirs(os.path.join(ctx, "dir", "sub"))
    shutil.copy(base_tar, os.path.join(ctx, "base.tar"))
    with open(os.path.join(ctx, "a.txt"), "w") as f:
        f.write("a\n")
    with open(os.path.join(ctx, "b.txt"), "w") as f:
        f.write("b\n")
    os.chmod(os.path.join(ctx, "b.txt"), 0o600)
    with open(os.path.join(ctx, "dir", "sub", "c"), "w") as f:
        f.write("c\n")
    os.symlink("sub/c", os.path.join(ctx, "dir", "link"))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        ti = tarfile.TarInfo("inner/file")
        ti.size = 6
        ti.mode = 0o640
        tf.addfile(ti, io.BytesIO(b"inner\n"))
    with open(os.path.join(ctx, "pkg.tar"), "wb") as f:
        f.write(buf.getvalue())


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_tree_and_config_as_buildah(workdir, mounts, base_tar, case):
    ctx = os.path.join(workdir, "ctx")
    os.makedirs(ctx)
    make_context(ctx, base_tar)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(CASES[case])
    compare_with_buildah(workdir, mounts, ctx)


def compare_with_buildah(workdir, mounts, ctx):
    """Builds CTX with strata and with buildah and asserts the same config fields and tree;
    returns the strata store's path (the image is oracle:1)."""
    store = os.path.join(workdir, "store")
    r = run([tool("strata"), "--root", store, "build", "-t", "oracle:1", ctx], check=False, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    insp = run([tool("strata"), "--root", store, "inspect", "--type", "image", "oracle:1"])
    ours = json.loads(insp.stdout)
    ours = ours[0] if isinstance(ours, list) else ours
    our_config = ours.get("Config") or ours.get("config", {}).get("config") or {}

    try:
        buildah(workdir, "build", "--isolation", "chroot", "-t", "oracle:1", ctx)
        theirs = json.loads(buildah(workdir, "inspect", "--type", "image", "oracle:1").stdout)["OCIv1"]["config"]
        container = buildah(workdir, "from", "oracle:1").stdout.strip()
        their_root = buildah(workdir, "mount", container).stdout.strip()
        their_tree = tree(their_root)
    finally:
        buildah_cleanup(workdir)

    # buildah adds its version as a label; docker does not.
    theirs.get("Labels", {}).pop("io.buildah.version", None)
    if theirs.get("Labels") == {}:
        theirs.pop("Labels")
    for field in CONFIG_FIELDS:
        assert our_config.get(field) == theirs.get(field), field

    # our tree, through a read-only mount of the image's layers
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    run([tool("strata"), "--root", store, "mount", "oracle:1", mnt])
    try:
        our_tree = tree(mnt)
    finally:
        run([tool("strata"), "--root", store, "umount", mnt], check=False)
    # Both sandboxes leave an empty file where they bind the host's
    # resolv.conf (and buildah /etc/hostname, /run/.containerenv) into a RUN;
    # the modes of these empty mount points differ and mean nothing.
    for path in ("etc/hostname", "etc/resolv.conf", "run/.containerenv"):
        for t in (our_tree, their_tree):
            if path in t and t[path][4] == b"":
                del t[path]
    our_only = sorted(set(our_tree) - set(their_tree))
    their_only = sorted(set(their_tree) - set(our_tree))
    assert our_only == [] and their_only == []
    differing = {p: (our_tree[p], their_tree[p]) for p in our_tree if our_tree[p] != their_tree[p]}
    assert differing == {}
    return store


# ---- realistic multi-stage builds ------------------------------------------
# tests/contexts/CASE: a program built in one stage (with a cache mount) and
# copied into a small runtime stage, on a toolchain base made offline from
# this machine's Debian packages (PACKAGES, by scripts/make-host-rootfs.py);
# the image prints EXPECTED_OUTPUT. bench/extras.sh times the same builds.

CONTEXTS = os.path.join(SOURCE_DIR, "tests", "contexts")
REALISTIC = sorted(d for d in os.listdir(CONTEXTS) if os.path.isdir(os.path.join(CONTEXTS, d)))


def context_file(case, name):
    with open(os.path.join(CONTEXTS, case, name)) as f:
        return f.read()


@pytest.fixture(scope="module")
def toolchain_tars(tmp_path_factory):
    """{case: the toolchain base tar of that case}, made once for this file."""
    tars = {}
    for case in REALISTIC:
        packages = context_file(case, "PACKAGES").split()
        if subprocess.run(["dpkg-query", "-W", *packages], capture_output=True).returncode != 0:
            continue
        out = str(tmp_path_factory.mktemp("toolchain") / f"{case}.tar")
        run(["/usr/bin/python3", os.path.join(SOURCE_DIR, "scripts", "make-host-rootfs.py"), out, *packages], timeout=600)
        tars[case] = out
    return tars


@pytest.mark.parametrize("case", REALISTIC)
def test_realistic_multistage_build_same_as_buildah_and_runs(workdir, mounts, base_tar, toolchain_tars, case):
    if case not in toolchain_tars:
        pytest.skip(f"{context_file(case, 'PACKAGES').strip()} not installed (scripts/install-deps.sh test)")
    ctx = os.path.join(workdir, "ctx")
    shutil.copytree(os.path.join(CONTEXTS, case), ctx)
    shutil.copy(base_tar, os.path.join(ctx, "base.tar"))
    try:
        os.link(toolchain_tars[case], os.path.join(ctx, "toolchain.tar"))
    except OSError:
        shutil.copy(toolchain_tars[case], os.path.join(ctx, "toolchain.tar"))
    store = compare_with_buildah(workdir, mounts, ctx)
    r = run([tool("strata"), "--root", store, "run", "--rm", "--network", "none", "oracle:1"], check=False, timeout=120)
    assert (r.returncode, r.stdout) == (0, context_file(case, "EXPECTED_OUTPUT")), r.stderr
