"""The image store and its verbs as a user drives them: import, create,
mount, change, commit, save, load, interop with skopeo and umoci, hostile
archives, and crash safety."""
import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import stat
import subprocess
import tarfile
import time

import pytest

from conftest import is_mounted, run, tool
from fsutil import snapshot


# ------------------------------------------------------------------ helpers

class Strata:
    def __init__(self, root):
        self.root = root

    def __call__(self, *args, check=True, env=None, **kw):
        e = dict(os.environ)
        e.pop("STRATA_ROOT", None)
        if env:
            e.update(env)
        return run([tool("strata"), "--root", self.root, *args], check=check, env=e, **kw)

    def json(self, *args):
        return json.loads(self(*args).stdout)

    def index(self):
        with open(os.path.join(self.root, "index.json")) as f:
            return json.load(f)

    def layer_blobs(self, ref):
        """The digests of REF's layer blobs, as its manifest lists them (what registries and skopeo see)."""
        digest = self.json("images", "--format", "json", ref)[0]["Digest"]
        with open(os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])) as f:
            return [layer["digest"] for layer in json.load(f)["layers"]]

    def state(self):
        """What a user can observe of the store: index, layers, containers, staging."""
        return (json.dumps(self.index(), sort_keys=True), sorted(os.listdir(os.path.join(self.root, "layers"))),
                sorted(os.listdir(os.path.join(self.root, "containers"))),
                sorted(os.listdir(os.path.join(self.root, "tmp"))))


@pytest.fixture
def strata(workdir):
    return Strata(os.path.join(workdir, "store"))


def mount(strata, mounts, target, mnt, *extra):
    os.makedirs(mnt, exist_ok=True)
    mounts.add(mnt)
    strata("mount", *extra, target, mnt)
    assert is_mounted(mnt), "strata mount returned before the mount was ready"
    return mnt


def umount(strata, mnt):
    strata("umount", mnt)
    assert not is_mounted(mnt)


def make_tar(path, entries, compress=""):
    """ENTRIES: list of (TarInfo-kwargs dict, bytes or None)."""
    with tarfile.open(path, "w" + (":" + compress if compress else ""), format=tarfile.PAX_FORMAT) as t:
        for info, data in entries:
            ti = tarfile.TarInfo(info.pop("name"))
            for k, v in info.items():
                setattr(ti, k, v)
            if data is not None:
                ti.size = len(data)
                t.addfile(ti, io.BytesIO(data))
            else:
                t.addfile(ti)
    return path


def f(name, data=b"x", **kw):
    return ({"name": name, "type": tarfile.REGTYPE, "mode": 0o644, **kw}, data)


def d(name, **kw):
    return ({"name": name, "type": tarfile.DIRTYPE, "mode": 0o755, **kw}, None)


def sym(name, target):
    return (dict(name=name, type=tarfile.SYMTYPE, linkname=target), None)


def hard(name, target):
    return (dict(name=name, type=tarfile.LNKTYPE, linkname=target), None)


def tree(path):
    """snapshot() plus which names share an inode (hardlinks)."""
    snap = snapshot(path)
    inodes = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for n in filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                inodes.setdefault(st.st_ino, []).append(os.path.relpath(p, path))
    links = sorted(tuple(sorted(v)) for v in inodes.values() if len(v) > 1)
    return snap, links


# ------------------------------------------------------------------ basics

def test_import_lists_image_with_history_and_layout(strata, base_tar):
    out = strata("import", "-m", "base image", base_tar, "base:1").stdout.strip()
    assert out.startswith("sha256:") and len(out) == 71
    imgs = strata.json("images", "--format", "json")
    assert [(i["Repository"], i["Tag"]) for i in imgs] == [("base", "1")]
    assert imgs[0]["ID"] == out
    table = strata("images").stdout.splitlines()
    assert table[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    assert table[1].split()[:3] == ["base", "1", out[7:19]]
    hist = strata.json("history", "--format", "json", "base:1")
    assert len(hist) == 1 and hist[0]["Comment"] == "base image"
    assert hist[0]["CreatedBy"].startswith("strata import")
    # The root is an OCI image layout.
    with open(os.path.join(strata.root, "oci-layout")) as fh:
        assert json.load(fh)["imageLayoutVersion"] == "1.0.0"
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in strata.index()["manifests"]]
    assert names == ["base:1"]


def test_same_rootfs_gives_same_layer_digest(workdir, base_tar):
    a, b = Strata(os.path.join(workdir, "a")), Strata(os.path.join(workdir, "b"))
    a("import", base_tar, "x")
    b("import", base_tar, "y")
    la = a.json("inspect", "x")[0]["RootFS"]["Layers"]
    lb = b.json("inspect", "y")[0]["RootFS"]["Layers"]
    assert la == lb and len(la) == 1


def test_default_root_follows_env(workdir, base_tar):
    root = os.path.join(workdir, "envroot")
    env = dict(os.environ, STRATA_ROOT=root)
    run([tool("strata"), "import", base_tar, "e"], env=env)
    assert os.path.exists(os.path.join(root, "index.json"))


def test_references_tag_and_rmi(strata, base_tar):
    strata("import", base_tar, "base")
    strata("tag", "base", "localhost:5000/team/app:v2")
    strata("tag", "base", "docker.io/library/other:latest")
    names = sorted((i["Repository"], i["Tag"]) for i in strata.json("images", "--format", "json"))
    assert names == [("base", "latest"), ("localhost:5000/team/app", "v2"), ("other", "latest")]
    r = strata("tag", "base", "Bad:Name", check=False)
    assert r.returncode == 2 and "invalid reference format" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = strata("images", "nosuch:tag", check=False)
    assert r.returncode == 0
    r = strata("history", "nosuch", check=False)
    assert r.returncode == 1 and "no such image: 'nosuch'" in r.stderr
    # A container pins its image.
    strata("create", "--name", "c", "other")
    r = strata("rmi", "base", check=False)
    assert r.returncode == 0 and "Untagged: base:latest" in r.stdout
    strata("rmi", "localhost:5000/team/app:v2")
    r = strata("rmi", "other", check=False)
    assert r.returncode == 1 and "used by container 'c'" in r.stderr
    assert strata("rmi", "-f", "other").returncode == 0
    assert strata.json("images", "--format", "json") == []
    # The container still mounts its (now untagged) image's data.
    assert strata.json("ps", "--format", "json")[0]["Names"] == "c"
    strata("rm", "c")
    strata("prune")
    assert os.listdir(os.path.join(strata.root, "layers")) == []


# ------------------------------------------------------------------ the round trip

def change_tree(mnt):
    with open(f"{mnt}/etc/motd", "w") as fh:
        fh.write("added\n")
    with open(f"{mnt}/etc/passwd", "a") as fh:
        fh.write("node:x:1001:1001::/home/node:/bin/sh\n")
    os.unlink(f"{mnt}/etc/hosts")
    shutil.rmtree(f"{mnt}/home")  # then recreated: an opaque directory
    os.makedirs(f"{mnt}/home/node")
    with open(f"{mnt}/home/node/app.js", "w") as fh:
        fh.write("console.log(1)\n")
    os.link(f"{mnt}/home/node/app.js", f"{mnt}/home/node/app-link.js")
    os.setxattr(f"{mnt}/etc/motd", "user.note", b"hello")
    os.symlink("../etc/motd", f"{mnt}/root/motd-link")
    os.chmod(f"{mnt}/etc/motd", 0o640)


def test_round_trip_commit_save_load(workdir, mounts, base_tar):
    s = Strata(os.path.join(workdir, "s1"))
    s("import", base_tar, "base")
    s("create", "--name", "ctr", "base")
    mnt = mount(s, mounts, "ctr", os.path.join(workdir, "mnt"))
    change_tree(mnt)
    before, links = tree(mnt)
    # Busy container: commit is refused while mounted.
    r = s("commit", "ctr", "x", check=False)
    assert r.returncode == 1 and "is mounted at" in r.stderr
    umount(s, mnt)
    diff = s("diff", "ctr").stdout.splitlines()
    assert "A /etc/motd" in diff and "C /etc/passwd" in diff and "D /etc/hosts" in diff
    assert "A /home/node/app.js" in diff and "D /home/app" in diff
    out = s("commit", "-m", "Add node", "-a", "dev <dev@example.com>", "-c", "CMD node app.js",
            "-c", "ENV NODE_ENV=production", "-c", "WORKDIR /home/node", "-c", "EXPOSE 8080",
            "-c", "LABEL a=b", "-c", "USER node", "ctr", "node-base").stdout.strip()
    assert out.startswith("sha256:")
    hist = s.json("history", "--format", "json", "node-base")
    assert hist[0]["Comment"] == "Add node" and hist[0]["Author"] == "dev <dev@example.com>"
    assert len(hist) == 2
    cfg = s.json("inspect", "node-base")[0]["Config"]
    assert cfg["Cmd"] == ["/bin/sh", "-c", "node app.js"]
    assert "NODE_ENV=production" in cfg["Env"] and cfg["WorkingDir"] == "/home/node"
    assert cfg["ExposedPorts"] == {"8080/tcp": {}} and cfg["Labels"] == {"a": "b"} and cfg["User"] == "node"
    # The container goes on from the new image with an empty upper.
    assert s("diff", "ctr").stdout == ""
    assert s.json("ps", "--format", "json")[0]["ImageDigest"] == s.json("inspect", "node-base")[0]["Digest"]
    # The image mounts (read-only) with exactly the committed tree.
    img_mnt = mount(s, mounts, "node-base", os.path.join(workdir, "img"))
    assert tree(img_mnt) == (before, links)
    assert links == [("home/node/app-link.js", "home/node/app.js")]
    assert "hosts" not in os.listdir(f"{img_mnt}/etc")
    assert os.listdir(f"{img_mnt}/home") == ["node"]
    with pytest.raises(OSError):
        open(f"{img_mnt}/etc/new", "w")
    umount(s, img_mnt)
    layers = s.json("inspect", "node-base")[0]["RootFS"]["Layers"]
    digest = s.json("inspect", "node-base")[0]["Digest"]
    for fmt in ("docker", "oci"):
        out_tar = os.path.join(workdir, f"saved-{fmt}.tar")
        s("save", "--format", fmt, "-o", out_tar, "node-base")
        s2 = Strata(os.path.join(workdir, "s2-" + fmt))
        loaded = s2("load", "-i", out_tar).stdout
        assert "Loaded image: node-base:latest" in loaded
        insp = s2.json("inspect", "node-base")[0]
        assert insp["RootFS"]["Layers"] == layers
        if fmt == "oci":
            assert insp["Digest"] == digest
        m2 = mount(s2, mounts, "node-base", os.path.join(workdir, "m-" + fmt))
        assert tree(m2) == (before, links)
        umount(s2, m2)


def test_commit_is_deterministic(workdir, base_tar):
    digests = []
    for n in ("a", "b"):
        s = Strata(os.path.join(workdir, n))
        s("import", base_tar, "base")
        c = s("create", "base").stdout.strip()
        upper = s.json("inspect", c)[0]["GraphDriver"]["Data"]["UpperDir"]
        os.makedirs(f"{upper}/opt/app")
        for name in ("z", "a", "m"):
            with open(f"{upper}/opt/app/{name}", "w") as fh:
                fh.write(name)
            os.utime(f"{upper}/opt/app/{name}", (1700000000, 1700000000))
        os.utime(f"{upper}/opt/app", (1700000000, 1700000000))
        os.utime(f"{upper}/opt", (1700000000, 1700000000))
        s("commit", c, "app")
        digests.append(s.json("inspect", "app")[0]["RootFS"]["Layers"][-1])
    assert digests[0] == digests[1]


def test_overlay_whiteouts_become_oci_whiteouts(strata, base_tar, workdir):
    strata("import", base_tar, "base")
    c = strata("create", "base").stdout.strip()
    upper = strata.json("inspect", c)[0]["GraphDriver"]["Data"]["UpperDir"]
    os.makedirs(f"{upper}/etc")
    os.mknod(f"{upper}/etc/hosts", stat.S_IFCHR, os.makedev(0, 0))
    os.makedirs(f"{upper}/home")
    os.setxattr(f"{upper}/home", "trusted.overlay.opaque", b"y")
    strata("commit", c, "wh")
    top = strata.layer_blobs("wh")[-1]
    blob = os.path.join(strata.root, "blobs", "sha256", top.split(":")[1])
    with tarfile.open(blob) as t:
        names = t.getnames()
        assert "etc/.wh.hosts" in names and "home/.wh..wh..opq" in names
        for m in t.getmembers():
            assert not m.ischr()
            assert not [k for k in m.pax_headers if "overlay" in k], m.name


# ------------------------------------------------------------------ interop

@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_reads_store_and_saved_layouts_and_strata_loads_skopeo_output(strata, base_tar, workdir):
    strata("import", "-c", "CMD sh", base_tar, "base:1")
    insp = json.loads(run(["skopeo", "inspect", f"oci:{strata.root}:base:1"]).stdout)
    assert insp["Layers"] == strata.layer_blobs("base:1")
    saved = os.path.join(workdir, "saved.tar")
    strata("save", "--format", "oci", "-o", saved, "base:1")
    insp2 = json.loads(run(["skopeo", "inspect", f"oci-archive:{saved}"]).stdout)
    assert insp2["Digest"] == insp["Digest"]
    dsaved = os.path.join(workdir, "dsaved.tar")
    strata("save", "--format", "docker", "-o", dsaved, "base:1")
    insp3 = json.loads(run(["skopeo", "inspect", f"docker-archive:{dsaved}"]).stdout)
    # docker-archive layers are plain tars named by diff_id, as docker save writes them.
    assert insp3["Layers"] == strata.json("inspect", "base:1")[0]["RootFS"]["Layers"]
    # skopeo writes, strata loads: a gzip-compressing docker-archive and an OCI layout.
    run(["skopeo", "copy", f"oci:{strata.root}:base:1", f"oci:{workdir}/sk:copied"])
    run(["skopeo", "copy", "--dest-compress", f"oci:{strata.root}:base:1", f"docker-archive:{workdir}/sk.tar:sk/img:2"])
    s2 = Strata(os.path.join(workdir, "s2"))
    s2("load", "-i", f"{workdir}/sk")
    s2("load", "-i", f"{workdir}/sk.tar")
    names = sorted(i["Repository"] + ":" + i["Tag"] for i in s2.json("images", "--format", "json"))
    assert names == ["copied:latest", "sk/img:2"]
    assert s2.json("inspect", "sk/img:2")[0]["RootFS"]["Layers"] == strata.json("inspect", "base:1")[0]["RootFS"]["Layers"]


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_umoci_unpacks_store_and_strata_loads_umoci_repack(strata, base_tar, workdir, mounts):
    strata("import", base_tar, "base")
    bundle = os.path.join(workdir, "bundle")
    run(["umoci", "unpack", "--image", f"{strata.root}:base:latest", bundle])
    assert os.path.exists(f"{bundle}/rootfs/bin/busybox")
    # ... and what `strata save --format oci` writes, as a directory.
    saved = os.path.join(workdir, "saved")
    strata("save", "--format", "oci", "-o", saved + "/", "base")
    run(["umoci", "unpack", "--image", f"{saved}:base:latest", os.path.join(workdir, "bundle2")])
    assert os.path.exists(f"{workdir}/bundle2/rootfs/etc/passwd")
    layout = os.path.join(workdir, "layout")
    run(["umoci", "init", "--layout", layout])
    run(["umoci", "new", "--image", f"{layout}:t"])
    b2 = os.path.join(workdir, "b2")
    run(["umoci", "unpack", "--image", f"{layout}:t", b2])
    os.makedirs(f"{b2}/rootfs/data")
    with open(f"{b2}/rootfs/data/file", "w") as fh:
        fh.write("from umoci\n")
    run(["umoci", "repack", "--image", f"{layout}:t", b2])
    strata("load", "-i", layout)
    mnt = mount(strata, mounts, "t", os.path.join(workdir, "mnt"))
    assert open(f"{mnt}/data/file").read() == "from umoci\n"
    umount(strata, mnt)


# ------------------------------------------------------------------ hostile input

HOSTILE = {
    "dotdot": [f("../escaped", b"evil")],
    "dotdot_inner": [d("a"), f("a/../../escaped", b"evil")],
    "absolute": [f("/tmp/strata-escaped-abs", b"evil")],
    "symlink_then_write": [sym("link", "/tmp"), f("link/strata-escaped-sym", b"evil")],
    "symlink_dir_then_write": [d("d"), sym("d/up", "../.."), f("d/up/escaped", b"evil")],
    "hardlink_outside": [hard("passwd", "../../etc/passwd")],
    "hardlink_absolute": [hard("passwd", "/etc/passwd")],
    "hardlink_missing": [hard("x", "nonexistent")],
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_layer_is_refused_and_store_unchanged(strata, base_tar, workdir, case):
    strata("import", base_tar, "base")
    before = strata.state()
    os.makedirs(os.path.join(workdir, "sub"))
    evil = make_tar(os.path.join(workdir, "sub", "evil.tar"), [(dict(i), data) for i, data in HOSTILE[case]])
    r = strata("import", evil, "evil", check=False)
    assert r.returncode == 1, r.stdout
    assert r.stderr.startswith("strata: ") and len(r.stderr.strip().splitlines()) == 1
    assert "refusing" in r.stderr
    assert strata.state() == before
    assert not os.path.exists(os.path.join(workdir, "escaped"))
    assert not os.path.exists(os.path.join(workdir, "sub", "escaped"))
    assert not os.path.exists("/tmp/strata-escaped-abs") and not os.path.exists("/tmp/strata-escaped-sym")


@pytest.mark.parametrize("case", ["truncated_gzip", "corrupt_gzip", "garbage", "truncated_tar", "bad_header"])
def test_malformed_archive_is_refused(strata, base_tar, workdir, case):
    strata("import", base_tar, "base")
    before = strata.state()
    good = make_tar(os.path.join(workdir, "good.tar.gz"), [f("a", os.urandom(200000))], compress="gz")
    data = open(good, "rb").read()
    path = os.path.join(workdir, "bad")
    if case == "truncated_gzip":
        data = data[: len(data) // 2]
    elif case == "corrupt_gzip":
        data = data[:100] + bytes(b ^ 0xFF for b in data[100:400]) + data[400:]
    elif case == "garbage":
        data = os.urandom(5000)
    elif case == "truncated_tar":
        plain = make_tar(os.path.join(workdir, "p.tar"), [f("a", os.urandom(100000))])
        data = open(plain, "rb").read()[:30000]
    elif case == "bad_header":
        plain = make_tar(os.path.join(workdir, "p.tar"), [f("a", b"x" * 100)])
        raw = bytearray(open(plain, "rb").read())
        raw[148:156] = b"99999999"  # wrong header checksum
        # and a size field that is not octal
        raw[124:136] = b"zzzzzzzzzzz\0"
        data = bytes(raw)
    open(path, "wb").write(data)
    r = strata("import", path, "bad", check=False)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1
    assert strata.state() == before


def test_device_nodes_in_layer(strata, workdir, mounts):
    tarp = make_tar(os.path.join(workdir, "dev.tar"), [
        d("dev"), (dict(name="dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
        f("etc/owned", b"x", uid=1234, gid=5678)])
    strata("import", tarp, "devs")
    mnt = mount(strata, mounts, "devs", os.path.join(workdir, "mnt"))
    st = os.lstat(f"{mnt}/dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    st = os.lstat(f"{mnt}/etc/owned")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    umount(strata, mnt)


def test_load_refuses_digest_mismatch(strata, base_tar, workdir):
    strata("import", base_tar, "base")
    out = os.path.join(workdir, "layout/")
    strata("save", "--format", "oci", "-o", out, "base")
    layout = out.rstrip("/")
    manifest_digest = json.load(open(f"{layout}/index.json"))["manifests"][0]["digest"].split(":")[1]
    manifest = json.load(open(f"{layout}/blobs/sha256/{manifest_digest}"))
    layer = manifest["layers"][0]["digest"].split(":")[1]
    # Tamper with the layer blob (same size, different content).
    p = f"{layout}/blobs/sha256/{layer}"
    os.chmod(p, 0o644)
    data = bytearray(open(p, "rb").read())
    data[600] ^= 0x01
    os.unlink(p)
    open(p, "wb").write(bytes(data))
    s2 = Strata(os.path.join(workdir, "s2"))
    s2("images")
    before = s2.state()
    r = s2("load", "-i", layout, check=False)
    assert r.returncode == 1 and "does not match" in r.stderr
    assert s2.state() == before


def test_docker_archive_layout(strata, base_tar, workdir):
    strata("import", base_tar, "base:7")
    out = os.path.join(workdir, "d.tar")
    strata("save", "-o", out, "base:7")
    with tarfile.open(out) as t:
        names = t.getnames()
        manifest = json.load(t.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == ["base:7"]
    assert manifest[0]["Config"] in names
    for l in manifest[0]["Layers"]:
        assert l in names and l.endswith("/layer.tar")
    cfg = strata.json("inspect", "base:7")[0]
    assert manifest[0]["Config"] == cfg["Id"].split(":")[1] + ".json"


# ------------------------------------------------------------------ crash safety

@pytest.mark.parametrize("verb", ["import", "commit", "load", "prune"])
def test_sigkill_leaves_a_consistent_store(workdir, base_tar, mounts, verb):
    s = Strata(os.path.join(workdir, "s"))
    s("import", base_tar, "base")
    big = os.path.join(workdir, "big.tar")
    make_tar(big, [f(f"data/{i}", os.urandom(100000)) for i in range(60)])
    if verb == "commit":
        c = s("create", "--name", "c", "base").stdout.strip()
        upper = s.json("inspect", c)[0]["GraphDriver"]["Data"]["UpperDir"]
        for i in range(60):
            with open(f"{upper}/f{i}", "wb") as fh:
                fh.write(os.urandom(100000))
        cmd = ["commit", "c", "committed"]
    elif verb == "load":
        s("import", big, "big")
        saved = os.path.join(workdir, "saved.tar")
        s("save", "-o", saved, "big")
        s = Strata(os.path.join(workdir, "s-load"))
        s("import", base_tar, "base")
        cmd = ["load", "-i", saved]
    elif verb == "prune":
        for i in range(8):
            s("import", make_tar(os.path.join(workdir, f"x{i}.tar"), [f(f"d{i}/{j}", os.urandom(50000)) for j in range(40)]),
              f"x{i}")
            s("rmi", f"x{i}")
        cmd = ["prune"]
    else:
        cmd = ["import", big, "big"]
    rng = random.Random(4)
    for attempt in range(6):
        p = subprocess.Popen([tool("strata"), "--root", s.root, *cmd], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, 0.4))
        p.send_signal(signal.SIGKILL)
        p.wait()
        # Every command still reads the store; what is referenced is intact.
        imgs = s.json("images", "--format", "json")
        assert "base" in [i["Repository"] for i in imgs]
        s("history", "base")
        for i in imgs:
            s("inspect", i["ID"])
        s("ps")
    s("prune")
    assert os.listdir(os.path.join(s.root, "tmp")) == []
    mnt = mount(s, mounts, "base", os.path.join(workdir, "mnt"))
    assert os.path.exists(f"{mnt}/bin/busybox")
    umount(s, mnt)
    # The interrupted command completes when run again.
    s(*cmd)


# ------------------------------------------------------------------ help and usage

def test_every_store_verb_has_help_and_usage_errors(strata):
    for verb in ["import", "images", "tag", "rmi", "history", "inspect", "create", "ps", "rm", "mount", "umount",
                 "diff", "commit", "save", "load", "prune"]:
        r = strata(verb, "--help")
        assert r.stdout.startswith("Usage: strata " + verb), verb
    r = strata("commit", "-c", "RUN rm -rf /", "nosuch", check=False)
    assert r.returncode == 2 and "RUN cannot be applied to a config" in r.stderr
    r = strata("save", "--format", "tarball", "-o", "/dev/null", "x", check=False)
    assert r.returncode == 2


# ------------------------------------------------------------------ rootless extraction

def unprivileged_user():
    """A user without privileges (created when missing); None when that is impossible."""
    import pwd
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("strata-test")
    except KeyError:
        pass
    if shutil.which("useradd") is None:
        return None
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "strata-test"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return pwd.getpwnam("strata-test")
    except KeyError:
        return None


def test_unprivileged_import_keeps_devices_and_owners_in_override_xattr(workdir, mounts):
    user = unprivileged_user()
    if user is None:
        pytest.skip("needs root to create an unprivileged user")
    tarp = make_tar(os.path.join(workdir, "dev.tar"), [
        d("dev"), (dict(name="dev/null", type=tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666), None),
        f("etc/owned", b"x", uid=1234, gid=5678), d("locked", mode=0o500), f("locked/inner", b"y", mode=0o400)])
    os.chmod(workdir, 0o755)
    os.chmod(tarp, 0o644)
    root = os.path.join(workdir, "userstore")
    os.makedirs(root)
    os.chown(root, user.pw_uid, user.pw_gid)
    env = dict(os.environ, HOME=workdir)
    r = run(["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups",
             tool("strata"), "--root", root, "import", tarp, "devs"], env=env)
    assert r.stdout.startswith("sha256:")
    layer = [n for n in os.listdir(os.path.join(root, "layers")) if not n.endswith(".json")][0]
    ldir = os.path.join(root, "layers", layer)
    st = os.lstat(f"{ldir}/dev/null")
    assert stat.S_ISREG(st.st_mode) and st.st_uid == user.pw_uid
    assert os.getxattr(f"{ldir}/dev/null", "user.containers.override_stat") == b"0:0:0666:char-1-3"
    assert os.getxattr(f"{ldir}/etc/owned", "user.containers.override_stat") == b"1234:5678:0644:file"
    # Mounted the way a rootless user's mount reads it (stratafs honours the
    # override where ids are mapped), it gives what the archive said. The
    # mount program is swapped through STRATA_MOUNT_PROGRAM to add the map.
    wrapper = os.path.join(workdir, "stratafs-mapped")
    with open(wrapper, "w") as fh:
        fh.write(f'#!/bin/sh\nexec {tool("stratafs")} -o uidmapping=0:0:65536,gidmapping=0:0:65536 "$@"\n')
    os.chmod(wrapper, 0o755)
    s = Strata(root)
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    s("mount", "devs", mnt, env={"STRATA_MOUNT_PROGRAM": wrapper})
    assert is_mounted(mnt)
    st = os.lstat(f"{mnt}/dev/null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    st = os.lstat(f"{mnt}/etc/owned")
    assert (st.st_uid, st.st_gid) == (1234, 5678)
    assert stat.S_IMODE(os.lstat(f"{mnt}/locked").st_mode) == 0o500
    assert open(f"{mnt}/locked/inner").read() == "y"
    umount(s, mnt)


@pytest.mark.parametrize("tool_name,ext", [("gzip", "gz"), ("xz", "xz"), ("zstd", "zst")])
def test_import_compressed_rootfs_same_diff_id(strata, base_tar, workdir, tool_name, ext, mounts):
    if shutil.which(tool_name) is None:
        pytest.skip(f"{tool_name} is not installed")
    comp = os.path.join(workdir, f"base.tar.{ext}")
    with open(comp, "wb") as out:
        subprocess.run([tool_name, "-c", base_tar], stdout=out, check=True)
    strata("import", base_tar, "plain")
    strata("import", comp, "packed")
    plain = strata.json("inspect", "plain")[0]["RootFS"]["Layers"]
    packed = strata.json("inspect", "packed")[0]["RootFS"]["Layers"]
    assert plain == packed
    # A docker save of it has the uncompressed layer docker expects.
    out = os.path.join(workdir, "d.tar")
    strata("save", "-o", out, "packed")
    s2 = Strata(os.path.join(workdir, "s2"))
    s2("load", "-i", out)
    assert s2.json("inspect", "packed")[0]["RootFS"]["Layers"] == plain
    mnt = mount(s2, mounts, "packed", os.path.join(workdir, "mnt"))
    assert os.path.islink(f"{mnt}/bin/sh")
    umount(s2, mnt)


def test_mounted_container_shows_in_ps_and_rm_needs_force(strata, base_tar, workdir, mounts):
    strata("import", base_tar, "base")
    strata("create", "--name", "m", "base")
    mnt = mount(strata, mounts, "m", os.path.join(workdir, "mnt"))
    ps = strata.json("ps", "--format", "json")
    assert ps[0]["Status"] == "Mounted" and ps[0]["Mounts"] == [os.path.realpath(mnt)]
    r = strata("mount", "m", os.path.join(workdir, "mnt"), check=False)
    assert r.returncode == 1 and "already mounted" in r.stderr
    r = strata("rm", "m", check=False)
    assert r.returncode == 1 and "is mounted at" in r.stderr
    assert is_mounted(mnt)
    strata("rm", "-f", "m")
    assert not is_mounted(mnt)
    assert strata.json("ps", "--format", "json") == []
    r = strata("rm", "m", check=False)
    assert r.returncode == 1 and "no such container: 'm'" in r.stderr


def test_load_refuses_archive_symlink_leading_outside(strata, workdir):
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}}).encode()
    manifest = json.dumps([{"Config": "c.json", "RepoTags": ["evil:1"], "Layers": ["l/layer.tar"]}]).encode()
    arc = make_tar(os.path.join(workdir, "evil-docker.tar"), [
        f("manifest.json", manifest), f("c.json", config), d("l"), sym("l/layer.tar", "/etc/passwd")])
    strata("images")
    before = strata.state()
    r = strata("load", "-i", arc, check=False)
    assert r.returncode == 1 and "leads outside the archive" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert strata.state() == before


# ------------------------------------------------------------------ hostile and unusual archives

# security.capability for cap_net_raw=ep (VFS_CAP_REVISION_2, effective flag,
# permitted bit 13), as `setcap cap_net_raw=ep` writes it.
NET_RAW_CAP = bytes([0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00] + [0x00] * 12)


def layer_dir_of(strata, ref):
    diff_id = strata.json("inspect", ref)[0]["RootFS"]["Layers"][-1]
    return os.path.join(strata.root, "layers", diff_id.split(":")[1])


def test_file_capabilities_survive_import_and_load(strata, workdir, mounts):
    if os.geteuid() != 0 or shutil.which("getcap") is None:
        pytest.skip("setting security.capability needs root and getcap")
    # A capability on a file owned by someone else too: chown clears it
    # unless it is applied after the owner.
    cap = {"SCHILY.xattr.security.capability": NET_RAW_CAP.decode("latin-1")}
    tar = make_tar(os.path.join(workdir, "caps.tar"), [
        d("bin"), f("bin/ping", b"#!/bin/true\n", mode=0o4755, uid=0, gid=0, pax_headers=cap),
        f("bin/mine", b"x", mode=0o755, uid=1000, gid=1000, pax_headers=dict(cap))])
    strata("import", tar, "caps")
    layer = layer_dir_of(strata, "caps")
    for name, owner in (("ping", 0), ("mine", 1000)):
        p = os.path.join(layer, "bin", name)
        assert os.getxattr(p, "security.capability") == NET_RAW_CAP
        assert "cap_net_raw=ep" in run(["getcap", p]).stdout
        assert os.lstat(p).st_uid == owner
    assert stat.S_IMODE(os.lstat(os.path.join(layer, "bin", "ping")).st_mode) == 0o4755
    # The same through save and load into another store, and through a mount.
    out = os.path.join(workdir, "caps-saved.tar")
    strata("save", "-o", out, "caps")
    s2 = Strata(os.path.join(workdir, "s2"))
    s2("load", "-i", out)
    assert os.getxattr(os.path.join(layer_dir_of(s2, "caps"), "bin", "mine"), "security.capability") == NET_RAW_CAP
    mnt = mount(s2, mounts, "caps", os.path.join(workdir, "mnt"))
    assert os.getxattr(f"{mnt}/bin/mine", "security.capability") == NET_RAW_CAP
    assert "cap_net_raw=ep" in run(["getcap", f"{mnt}/bin/ping"]).stdout
    umount(s2, mnt)


@pytest.mark.parametrize("case", ["crc", "length"])
def test_gzip_with_a_wrong_trailer_is_refused(strata, base_tar, workdir, case):
    """A plain rootfs tar.gz has no digest to check it against: the gzip trailer must."""
    strata("import", base_tar, "base")
    before = strata.state()
    raw = open(make_tar(os.path.join(workdir, "p.tar"), [f("a", os.urandom(100000)), f("b", b"y" * 5000)]), "rb").read()
    data = bytearray(gzip.compress(raw))
    data[-8 if case == "crc" else -4] ^= 0x01  # CRC-32, then ISIZE, little-endian
    path = os.path.join(workdir, "bad.tar.gz")
    open(path, "wb").write(bytes(data))
    r = strata("import", path, "bad", check=False)
    assert r.returncode == 1, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad.tar.gz" in r.stderr and "gzip" in r.stderr
    assert strata.state() == before


def test_concatenated_gzip_members_are_one_layer(strata, workdir):
    raw = open(make_tar(os.path.join(workdir, "p.tar"), [f("a", os.urandom(70000)), f("b", b"z" * 3000)]), "rb").read()
    path = os.path.join(workdir, "multi.tar.gz")
    open(path, "wb").write(gzip.compress(raw[:30000]) + gzip.compress(raw[30000:]))
    strata("import", path, "multi")
    layer = layer_dir_of(strata, "multi")
    assert open(os.path.join(layer, "b"), "rb").read() == b"z" * 3000
    assert strata.json("inspect", "multi")[0]["RootFS"]["Layers"][0] == "sha256:" + hashlib.sha256(raw).hexdigest()


class Layout:
    """An OCI image layout written blob by blob, for archives no tool would make."""

    INDEX = "application/vnd.oci.image.index.v1+json"
    MANIFEST = "application/vnd.oci.image.manifest.v1+json"

    def __init__(self, path):
        self.path = path
        os.makedirs(os.path.join(path, "blobs", "sha256"))
        with open(os.path.join(path, "oci-layout"), "w") as out:
            out.write('{"imageLayoutVersion":"1.0.0"}')

    def blob(self, data, media_type):
        if isinstance(data, (dict, list)):
            data = json.dumps(data).encode()
        digest = hashlib.sha256(data).hexdigest()
        with open(os.path.join(self.path, "blobs", "sha256", digest), "wb") as out:
            out.write(data)
        return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}

    def image(self, workdir, files=(("hello", b"hi\n"),), config_extra=None):
        """Writes a one-layer image; returns its manifest descriptor."""
        tar = make_tar(os.path.join(workdir, "layer-%d.tar" % random.randrange(1 << 30)),
                       [f(name, data) for name, data in files])
        layer_bytes = open(tar, "rb").read()
        layer = self.blob(layer_bytes, "application/vnd.oci.image.layer.v1.tar")
        config = {"architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
                  "os": "linux", "rootfs": {"type": "layers", "diff_ids": [layer["digest"]]}}
        config.update(config_extra or {})
        cfg = self.blob(config, "application/vnd.oci.image.config.v1+json")
        return self.blob({"schemaVersion": 2, "mediaType": self.MANIFEST, "config": cfg, "layers": [layer]},
                         self.MANIFEST)

    def index(self, descriptors):
        return {"schemaVersion": 2, "mediaType": self.INDEX, "manifests": descriptors}

    def finish(self, descriptors):
        with open(os.path.join(self.path, "index.json"), "w") as out:
            json.dump(self.index(descriptors), out)
        return self.path


def named(desc, name):
    return dict(desc, annotations={"org.opencontainers.image.ref.name": name})


def assert_refused(strata, before, r, *words):
    assert r.returncode == 1, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr
    assert strata.state() == before


def test_load_refuses_indexes_nested_10000_deep(strata, workdir):
    lay = Layout(os.path.join(workdir, "deep"))
    desc = lay.image(workdir)
    for _ in range(10000):
        desc = lay.blob(lay.index([desc]), Layout.INDEX)
    lay.finish([desc])
    strata("images")
    before = strata.state()
    r = strata("load", "-i", lay.path, check=False)
    assert_refused(strata, before, r, "nest deeper than 16 levels", "deep")


def test_load_reads_shared_sub_indexes_once(strata, workdir):
    # Twelve levels, each index naming the one below twice: 4096 paths to
    # the same two images.
    lay = Layout(os.path.join(workdir, "dag"))
    bottom = [lay.image(workdir, files=(("one", b"1"),)), lay.image(workdir, files=(("two", b"2"),))]
    desc = lay.blob(lay.index(bottom), Layout.INDEX)
    for _ in range(12):
        desc = lay.blob(lay.index([desc, desc]), Layout.INDEX)
    lay.finish([desc])
    out = strata("load", "-i", lay.path).stdout.splitlines()
    assert len(out) == 2 and len(set(out)) == 2, out[:4]


@pytest.mark.parametrize("what", ["layer", "config", "manifest"])
def test_load_refuses_a_fifo_where_a_blob_should_be(strata, workdir, what):
    lay = Layout(os.path.join(workdir, "fifo"))
    desc = lay.image(workdir)
    manifest = json.load(open(os.path.join(lay.path, "blobs", "sha256", desc["digest"].split(":")[1])))
    digest = {"layer": manifest["layers"][0]["digest"], "config": manifest["config"]["digest"],
              "manifest": desc["digest"]}[what]
    p = os.path.join(lay.path, "blobs", "sha256", digest.split(":")[1])
    os.unlink(p)
    os.mkfifo(p)
    lay.finish([named(desc, "fifo:1")])
    strata("images")
    before = strata.state()
    # Without the check, opening the FIFO blocks for ever: the timeout only
    # keeps a regression from hanging the suite.
    r = strata("load", "-i", lay.path, check=False, timeout=120)
    assert_refused(strata, before, r, "not a regular file", digest.split(":")[1])


def test_load_refuses_oversized_config_and_manifest_and_too_many_names(strata, workdir):
    strata("images")
    before = strata.state()
    lay = Layout(os.path.join(workdir, "bigcfg"))
    lay.finish([named(lay.image(workdir, config_extra={"padding": "x" * (9 << 20)}), "big:1")])
    assert_refused(strata, before, strata("load", "-i", lay.path, check=False), "more than the 8.0 MiB allowed", "bigcfg")
    lay = Layout(os.path.join(workdir, "bigman"))
    desc = lay.image(workdir)
    m = json.load(open(os.path.join(lay.path, "blobs", "sha256", desc["digest"].split(":")[1])))
    m["annotations"] = {"padding": "x" * (5 << 20)}
    lay.finish([named(lay.blob(m, Layout.MANIFEST), "big:2")])
    assert_refused(strata, before, strata("load", "-i", lay.path, check=False), "more than the 4.0 MiB allowed")
    lay = Layout(os.path.join(workdir, "names"))
    desc = lay.image(workdir)
    lay.finish([named(desc, "many:%d" % i) for i in range(5000)])
    assert_refused(strata, before, strata("load", "-i", lay.path, check=False), "at most 128")


def zero_bomb(workdir, megabytes):
    """A tar.gz of one file of zeros: about 1/1000 of its size compressed."""
    path = os.path.join(workdir, "bomb.tar.gz")
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT) as t:
        ti = tarfile.TarInfo("zeros")
        ti.size = megabytes << 20

        class Zeros(io.RawIOBase):
            def readable(self):
                return True

            def readinto(self, b):
                b[:] = bytes(len(b))
                return len(b)
        t.addfile(ti, io.BufferedReader(Zeros()))
    return path


def test_gzip_bomb_is_refused_before_it_fills_the_disk(workdir, mounts):
    small = mounts.add(os.path.join(workdir, "small"))
    os.makedirs(small)
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", small])
    s = Strata(os.path.join(small, "store"))
    s("images")
    before = s.state()
    bomb = zero_bomb(workdir, 200)
    assert os.path.getsize(bomb) < 1 << 20
    r = s("import", bomb, "bomb", check=False)
    assert_refused(s, before, r, "inflates to more than", "free space", "STRATA_MAX_LAYER_SIZE", "bomb.tar.gz")


def test_layer_size_limit_follows_the_environment(strata, workdir):
    bomb = zero_bomb(workdir, 8)
    strata("images")
    before = strata.state()
    r = strata("import", bomb, "bomb", check=False, env={"STRATA_MAX_LAYER_SIZE": "4M"})
    assert_refused(strata, before, r, "inflates to more than 4.0 MiB", "STRATA_MAX_LAYER_SIZE")
    r = strata("import", bomb, "bomb", check=False, env={"STRATA_MAX_LAYER_SIZE": "lots"})
    assert_refused(strata, before, r, "STRATA_MAX_LAYER_SIZE", "not a size")
    strata("import", bomb, "bomb", env={"STRATA_MAX_LAYER_SIZE": "9M"})
    assert os.path.getsize(os.path.join(layer_dir_of(strata, "bomb"), "zeros")) == 8 << 20


def make_deep(top, depth, component="level-%03d"):
    """Directories DEPTH deep under TOP (made relative to each parent, as no
    path to the bottom fits in PATH_MAX) with a file at the bottom; returns
    the relative path of that file."""
    names = [component % i for i in range(depth)]
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in names:
            os.mkdir(n, dir_fd=fd)
            child = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd)
        os.write(leaf, b"deep\n")
        os.close(leaf)
    finally:
        os.close(fd)
    return "/".join(names + ["leaf"])


def read_deep(top, rel):
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for n in rel.split("/")[:-1]:
            child = os.open(n, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        leaf = os.open(rel.split("/")[-1], os.O_RDONLY, dir_fd=fd)
        data = os.read(leaf, 100)
        os.close(leaf)
        return data
    finally:
        os.close(fd)


def test_diff_and_commit_handle_paths_longer_than_path_max(strata, base_tar, workdir):
    strata("import", base_tar, "base")
    c = strata("create", "base").stdout.strip()
    upper = strata.json("inspect", c)[0]["GraphDriver"]["Data"]["UpperDir"]
    rel = make_deep(upper, 420)
    assert len(rel) > os.pathconf("/", "PC_PATH_MAX")
    lines = strata("diff", c).stdout.splitlines()
    assert "A /" + rel in lines
    assert len([l for l in lines if l.startswith("A /level-000")]) == 421
    strata("commit", c, "deep")
    assert read_deep(layer_dir_of(strata, "deep"), rel) == b"deep\n"
    # and back in through save and load
    out = os.path.join(workdir, "deep.tar")
    strata("save", "-o", out, "deep")
    s2 = Strata(os.path.join(workdir, "s2"))
    s2("load", "-i", out)
    assert read_deep(layer_dir_of(s2, "deep"), rel) == b"deep\n"


def test_prune_reclaimed_counts_extracted_layers(strata, workdir):
    # 4 MB of incompressible data: about 4 MB of blob and 4 MB of layer tree.
    tar = make_tar(os.path.join(workdir, "big.tar"), [f("big", os.urandom(4 << 20))])
    strata("import", tar, "big")
    strata("rmi", "big")
    out = strata("prune").stdout
    reclaimed = out.rsplit("reclaimed ", 1)[1].strip()
    value, unit = float(reclaimed.rstrip("kMGTB")), reclaimed.lstrip("0123456789.")
    scale = {"B": 1, "kB": 1e3, "MB": 1e6, "GB": 1e9}[unit]
    assert value * scale >= 8e6, out


def test_messages_name_the_users_file_and_what_to_give(strata, workdir):
    import zipfile
    strata("images")
    before = strata.state()
    z = os.path.join(workdir, "image.zip")
    with zipfile.ZipFile(z, "w") as out:
        out.writestr("rootfs/hello", "hi")
    r = strata("load", "-i", z, check=False)
    assert_refused(strata, before, r, "image.zip", "not a tar archive", "docker save", "strata import")
    r = strata("import", z, "x", check=False)
    assert_refused(strata, before, r, "image.zip", "not a tar archive", "strata load")
    # A rootfs tar given to load: says what load wants, with the user's file
    # and the archive's own names, never the staging directory.
    rootfs = make_tar(os.path.join(workdir, "rootfs.tar"), [d("etc"), f("etc/hostname", b"box\n")])
    r = strata("load", "-i", rootfs, check=False)
    assert_refused(strata, before, r, rootfs, "not an image archive", "strata import")
    assert strata.root not in r.stderr
    bad = make_tar(os.path.join(workdir, "broken.tar"), [f("manifest.json", b"{not json")])
    r = strata("load", "-i", bad, check=False)
    assert_refused(strata, before, r, "'manifest.json' in '%s'" % bad, "invalid JSON")
    assert strata.root not in r.stderr
