"""The store's on-disk layout as other tools see it: images that skopeo and
umoci write into the store root are listed, mounted and run (their layers
extracted on first use); a missing blob breaks only its own image; layers
strata makes are kept once, compressed, beside their extracted directory."""
import json
import os
import shutil

import pytest

from conftest import is_mounted, run, tool

OCI_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"


class Strata:
    def __init__(self, root):
        self.root = root

    def __call__(self, *args, check=True, **kw):
        e = dict(os.environ)
        e.pop("STRATA_ROOT", None)
        return run([tool("strata"), "--root", self.root, *args], check=check, env=e, **kw)

    def json(self, *args):
        return json.loads(self(*args).stdout)

    def blob(self, digest):
        return os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])

    def manifest(self, ref):
        digest = self.json("images", "--format", "json", ref)[0]["Digest"]
        with open(self.blob(digest)) as f:
            return json.load(f)

    def extracted(self, diff_id):
        return os.path.isdir(os.path.join(self.root, "layers", diff_id.split(":", 1)[1]))


def mounted(strata, mounts, ref, mnt):
    os.makedirs(mnt, exist_ok=True)
    mounts.add(mnt)
    strata("mount", ref, mnt)
    assert is_mounted(mnt)
    return mnt


@pytest.fixture
def source(workdir, base_tar):
    """An OCI layout holding the busybox base and a child image with one more layer."""
    s = Strata(os.path.join(workdir, "source"))
    s("import", "-c", "CMD [\"sh\"]", base_tar, "base")
    s("create", "--name", "c", "base")
    upper = s.json("inspect", "c")[0]["GraphDriver"]["Data"]["UpperDir"]
    os.makedirs(os.path.join(upper, "srv"))
    with open(os.path.join(upper, "srv", "child.txt"), "w") as f:
        f.write("child layer\n")
    s("commit", "c", "child")
    layout = os.path.join(workdir, "layout")
    s("save", "--format", "oci", "-o", layout + "/", "base", "child")
    return layout


needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")


@needs_skopeo
def test_image_skopeo_copies_into_the_store_is_listed_mounted_and_run(workdir, source, mounts):
    s = Strata(os.path.join(workdir, "store"))
    s("images")  # the store exists first, as a user's would
    run(["skopeo", "copy", f"oci:{source}:child:latest", f"oci:{s.root}:debian"])
    listed = s.json("images", "--format", "json")
    assert [(i["Repository"], i["Tag"]) for i in listed] == [("debian", "latest")]
    diff_ids = s.json("inspect", "debian")[0]["RootFS"]["Layers"]
    # inspect resolved the image: its layers are extracted now, once.
    assert all(s.extracted(d) for d in diff_ids)
    mnt = mounted(s, mounts, "debian", os.path.join(workdir, "mnt"))
    assert open(f"{mnt}/srv/child.txt").read() == "child layer\n"
    assert os.path.exists(f"{mnt}/bin/busybox")
    s("umount", mnt)
    r = s("run", "--rm", "--pull=never", "debian", "cat", "/srv/child.txt")
    assert r.stdout == "child layer\n"


@needs_skopeo
def test_a_listing_extracts_nothing_and_the_first_mount_does(workdir, source, mounts):
    s = Strata(os.path.join(workdir, "store"))
    s("images")
    run(["skopeo", "copy", f"oci:{source}:child:latest", f"oci:{s.root}:child"])
    s("images")
    m = s.manifest("child")
    assert not os.listdir(os.path.join(s.root, "layers"))
    mnt = mounted(s, mounts, "child", os.path.join(workdir, "mnt"))
    assert os.path.exists(f"{mnt}/srv/child.txt")
    s("umount", mnt)
    assert len([n for n in os.listdir(os.path.join(s.root, "layers")) if not n.endswith(".json")]) == len(m["layers"])


@needs_skopeo
def test_a_missing_blob_breaks_only_its_own_image(workdir, source, mounts):
    s = Strata(os.path.join(workdir, "store"))
    s("images")
    run(["skopeo", "copy", f"oci:{source}:base:latest", f"oci:{s.root}:base"])
    run(["skopeo", "copy", f"oci:{source}:child:latest", f"oci:{s.root}:child"])
    top = s.manifest("child")["layers"][-1]["digest"]
    os.unlink(s.blob(top))
    r = s("images", "--format", "json")
    assert sorted(i["Repository"] for i in json.loads(r.stdout)) == ["base", "child"]
    assert top in r.stderr
    os.makedirs(os.path.join(workdir, "m1"))
    bad = s("mount", "child", os.path.join(workdir, "m1"), check=False)
    assert bad.returncode != 0
    assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert top in bad.stderr and "child" in bad.stderr
    assert not is_mounted(os.path.join(workdir, "m1"))
    # The other image is untouched, and the broken one can be removed.
    mnt = mounted(s, mounts, "base", os.path.join(workdir, "m2"))
    assert os.path.exists(f"{mnt}/bin/busybox")
    s("umount", mnt)
    s("rmi", "child")
    assert [i["Repository"] for i in s.json("images", "--format", "json")] == ["base"]


@needs_skopeo
def test_a_corrupt_blob_is_refused_at_first_use_and_nothing_is_extracted(workdir, source):
    s = Strata(os.path.join(workdir, "store"))
    s("images")
    run(["skopeo", "copy", f"oci:{source}:child:latest", f"oci:{s.root}:child"])
    top = s.manifest("child")["layers"][-1]["digest"]
    path = s.blob(top)
    os.chmod(path, 0o644)
    data = bytearray(open(path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(path, "wb").write(bytes(data))
    r = s("run", "--rm", "--pull=never", "child", "true", check=False)
    assert r.returncode != 0
    assert top in r.stderr
    layers = os.listdir(os.path.join(s.root, "layers"))
    top_diff = json.load(open(s.blob(s.manifest("child")["config"]["digest"])))["rootfs"]["diff_ids"][-1]
    assert top_diff.split(":", 1)[1] not in layers
    assert not [n for n in os.listdir(os.path.join(s.root, "tmp")) if n.startswith("tree")]


@pytest.mark.skipif(shutil.which("umoci") is None, reason="umoci is not installed")
def test_image_umoci_writes_into_the_store_is_mounted(workdir, mounts):
    s = Strata(os.path.join(workdir, "store"))
    s("images")
    run(["umoci", "new", "--image", f"{s.root}:um"])
    bundle = os.path.join(workdir, "bundle")
    run(["umoci", "unpack", "--image", f"{s.root}:um", bundle])
    with open(os.path.join(bundle, "rootfs", "hello.txt"), "w") as f:
        f.write("written by umoci\n")
    run(["umoci", "repack", "--image", f"{s.root}:um", bundle])
    assert "um" in [i["Repository"] for i in s.json("images", "--format", "json")]
    mnt = mounted(s, mounts, "um", os.path.join(workdir, "mnt"))
    assert open(f"{mnt}/hello.txt").read() == "written by umoci\n"
    s("umount", mnt)


def commit_note(s, name, image):
    s("create", "--name", name, "base")
    upper = s.json("inspect", name)[0]["GraphDriver"]["Data"]["UpperDir"]
    note = os.path.join(upper, "note.txt")
    with open(note, "w") as f:
        f.write("x" * 100000)
    os.utime(note, (1000000000, 1000000000))
    s("commit", name, image)
    return s.manifest(image)


def test_layers_strata_makes_are_stored_once_compressed(workdir, base_tar):
    s = Strata(os.path.join(workdir, "store"))
    s("import", base_tar, "base")
    m = commit_note(s, "c", "child")
    top = m["layers"][-1]
    assert top["mediaType"] == OCI_GZIP
    with open(s.blob(top["digest"]), "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    assert top["size"] < 100000  # compressed, not the tar
    diff_id = json.load(open(s.blob(m["config"]["digest"])))["rootfs"]["diff_ids"][-1]
    # No uncompressed tar beside the blob: the diff_id names no stored blob.
    assert not os.path.exists(s.blob(diff_id))
    assert s.extracted(diff_id)
    # The same change committed again gives the same blob (no timestamp in the gzip header).
    m2 = commit_note(s, "d", "child2")
    assert m2["layers"][-1]["digest"] == top["digest"]


def write_blob(root, data):
    import hashlib
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    path = os.path.join(root, "blobs", "sha256", digest.split(":", 1)[1])
    with open(path, "wb") as f:
        f.write(data)
    return digest, len(data)


def test_a_config_field_of_the_wrong_type_does_not_break_the_listing(workdir, base_tar):
    """Another tool writes an image whose config says "created": 5; the other images stay listed."""
    import gzip
    import io
    import tarfile
    s = Strata(os.path.join(workdir, "store"))
    s("import", base_tar, "base")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as t:
        info = tarfile.TarInfo("odd.txt")
        info.size = 3
        t.addfile(info, io.BytesIO(b"odd"))
    diff_id = "sha256:" + __import__("hashlib").sha256(raw.getvalue()).hexdigest()
    layer, layer_size = write_blob(s.root, gzip.compress(raw.getvalue(), mtime=0))
    config = json.dumps({"architecture": "amd64", "os": "linux", "created": 5,
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    cfg, cfg_size = write_blob(s.root, config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg,
                                      "size": cfg_size},
                           "layers": [{"mediaType": OCI_GZIP, "digest": layer, "size": layer_size}]}).encode()
    man, man_size = write_blob(s.root, manifest)
    index_path = os.path.join(s.root, "index.json")
    index = json.load(open(index_path))
    index["manifests"].append({"mediaType": 1, "digest": man, "size": man_size,
                               "annotations": {"org.opencontainers.image.ref.name": "odd:1"}})
    with open(index_path, "w") as f:
        json.dump(index, f)
    names = sorted(i["Repository"] for i in s.json("images", "--format", "json"))
    assert names == ["base", "odd"]
    r = s("run", "--rm", "--pull=never", "odd:1", "cat", "/odd.txt", check=False)
    # No shell in that image: what matters is that it resolved and extracted.
    assert s.extracted(diff_id)
    assert r.returncode in (0, 127)
