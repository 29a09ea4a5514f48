"""strata pull, push, login and logout against real registries on loopback
ports (Debian's docker-registry: plain, htpasswd Basic auth, TLS, Bearer
tokens), skopeo as the independent client both ways, and the verbs that pull
what they lack (run, create, mount, build)."""
import base64
import json
import os
import stat
import subprocess
import tempfile

import pytest

from conftest import is_mounted, run, tool, unmount
from registries import (Distribution, TokenServer, htpasswd_file, make_ca_and_cert, servers, sha)  # noqa: F401


class Strata:
    """strata with a store of its own and registry settings isolated from the machine's."""

    def __init__(self, workdir, name="store"):
        self.workdir = workdir
        self.root = os.path.join(workdir, name)
        self.conf = os.path.join(workdir, "registries.conf")
        self.auth = os.path.join(workdir, "auth.json")
        self.certs = os.path.join(workdir, "certs.d")
        if not os.path.exists(self.conf):
            open(self.conf, "w").close()

    def env(self, extra=None):
        e = dict(os.environ)
        e.pop("STRATA_ROOT", None)
        e.update({"CONTAINERS_REGISTRIES_CONF": self.conf, "REGISTRY_AUTH_FILE": self.auth,
                  "STRATA_CERTS_D": self.certs})
        e.update(extra or {})
        return e

    def __call__(self, *args, check=True, env=None, **kw):
        return run([tool("strata"), "--root", self.root, *args], check=check, env=self.env(env), **kw)

    def digest(self, name):
        for img in json.loads(self("images", "--format", "json").stdout):
            if f"{img['Repository']}:{img['Tag']}" == name:
                return img["Digest"]
        return None

    def state(self):
        with open(os.path.join(self.root, "index.json")) as f:
            index = json.dumps(json.load(f), sort_keys=True)
        return index, sorted(os.listdir(os.path.join(self.root, "layers")))


def skopeo(*args, check=True):
    return run(["skopeo", *args], check=check)


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    reg = Distribution(str(tmp_path_factory.mktemp("plain-registry")))
    try:
        yield reg
    finally:
        reg.stop()


@pytest.fixture
def strata(workdir):
    return Strata(workdir)


@pytest.fixture
def based(strata, base_tar):
    """A store holding the offline busybox base as base:1."""
    strata("import", base_tar, "base:1")
    return strata


def mounted_file(strata, image, path, mounts_dir):
    mnt = os.path.join(mounts_dir, "mnt-" + os.urandom(4).hex())
    os.makedirs(mnt)
    strata("mount", image, mnt)
    try:
        with open(os.path.join(mnt, path.lstrip("/")), "rb") as f:
            return f.read()
    finally:
        unmount(mnt)


# ------------------------------------------------------------------ plain registry

def test_push_then_pull_round_trip_keeps_the_digest(based, plain, workdir):
    ref = f"{plain.host}/rt/base:1"
    r = based("push", "--tls-verify=false", "base:1", ref)
    assert f"The push refers to repository [{plain.host}/rt/base]" in r.stdout
    pushed = r.stdout.strip().splitlines()[-1]
    assert pushed.startswith("1: digest: sha256:") and " size: " in pushed
    digest = pushed.split()[2]
    assert digest == based.digest(ref.split("/", 1)[0] + "/rt/base:1") or digest == based.digest("base:1")
    # skopeo reads what strata pushed, under the same digest.
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert info["Digest"] == digest

    other = Strata(workdir, "store2")
    r = other("pull", "--tls-verify=false", ref)
    assert f"Digest: {digest}" in r.stdout
    assert f"Status: Downloaded newer image for {ref}" in r.stdout
    assert "Pull complete" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == ref
    assert other.digest(ref) == digest
    assert mounted_file(other, ref, "/etc/passwd", workdir) == mounted_file(based, "base:1", "/etc/passwd", workdir)

    # Again: nothing to fetch.
    r = other("pull", "--tls-verify=false", ref)
    assert "Already exists" in r.stdout and f"Status: Image is up to date for {ref}" in r.stdout
    # -q: the digest alone.
    assert other("pull", "-q", "--tls-verify=false", ref).stdout == digest + "\n"
    # By digest: the same image, no new tag.
    r = other("pull", "--tls-verify=false", f"{plain.host}/rt/base@{digest}")
    assert f"Digest: {digest}" in r.stdout


def test_plain_http_needs_insecure_or_tls_verify_false(based, plain, workdir):
    ref = f"{plain.host}/insecure/base:1"
    r = based("push", "base:1", ref, check=False)
    assert r.returncode == 1
    assert "does not speak TLS" in r.stderr and "--tls-verify=false" in r.stderr
    with open(based.conf, "w") as f:
        f.write(f'[[registry]]\nlocation = "{plain.host}"\ninsecure = true\n')
    based("push", "base:1", ref)
    based("pull", ref)
    # --tls-verify=true overrides registries.conf.
    r = based("pull", "--tls-verify=true", ref, check=False)
    assert r.returncode == 1


def test_short_names_resolve_through_registries_conf(based, plain, workdir):
    based("push", "--tls-verify=false", "base:1", f"{plain.host}/short/base:7")
    other = Strata(workdir, "store2")
    with open(other.conf, "w") as f:
        f.write(f'unqualified-search-registries = ["{plain.host}"]\n'
                f'[[registry]]\nlocation = "{plain.host}"\ninsecure = true\n'
                f'[aliases]\n"nick" = "{plain.host}/short/base"\n')
    r = other("pull", "short/base:7")
    assert f"Status: Downloaded newer image for {plain.host}/short/base:7" in r.stdout
    r = other("pull", "nick:7")
    assert f"{plain.host}/short/base:7" in r.stdout
    # A short name the search registries lack names each one tried.
    r = other("pull", "short/absent:1", check=False)
    assert r.returncode == 1 and "manifest unknown" in r.stderr
    # A blocked registry is refused before any request.
    with open(other.conf, "a") as f:
        f.write(f'[[registry]]\nlocation = "{plain.host}/short"\nblocked = true\n')
    r = other("pull", f"{plain.host}/short/base:7", check=False)
    assert r.returncode == 1 and "blocked" in r.stderr


def test_missing_manifest_is_one_line_and_changes_nothing(based, plain):
    before = based.state()
    r = based("pull", "--tls-verify=false", f"{plain.host}/nothing/here:1", check=False)
    assert r.returncode == 1
    assert r.stderr == f"strata: manifest unknown: {plain.host}/nothing/here:1\n"
    assert based.state() == before


def test_multi_layer_image_pulls_layers_at_once_and_reuses_what_it_has(based, plain, workdir):
    # Three layers: base, and two commits.
    for i in range(2):
        based("create", "--name", f"c{i}", "base:1" if i == 0 else "ml:1")
        mnt = os.path.join(workdir, f"m{i}")
        os.makedirs(mnt)
        based("mount", f"c{i}", mnt)
        with open(os.path.join(mnt, f"file{i}"), "wb") as f:
            f.write(os.urandom(300000))
        unmount(mnt)
        based("commit", f"c{i}", "ml:1")
    ref = f"{plain.host}/multi/ml:1"
    based("push", "--tls-verify=false", "ml:1", ref)
    other = Strata(workdir, "store2")
    other("pull", "--tls-verify=false", f"{plain.host}/multi/base:1", check=False)  # absent: nothing pulled
    based("push", "--tls-verify=false", "base:1", f"{plain.host}/multi/base:1")
    other("pull", "--tls-verify=false", f"{plain.host}/multi/base:1")
    r = other("pull", "--tls-verify=false", "--max-concurrent-downloads", "2", ref)
    assert r.stdout.count("Already exists") == 1
    assert r.stdout.count("Pull complete") == 2
    assert other.digest(ref) == based.digest("ml:1")
    assert mounted_file(other, ref, "/file1", workdir) == mounted_file(based, "ml:1", "/file1", workdir)
    r = other("pull", "--tls-verify=false", "--max-concurrent-downloads", "0", ref, check=False)
    assert r.returncode == 2


def test_push_formats_and_compression(based, plain):
    ref = f"{plain.host}/fmt/base"
    stored = based.digest("base:1")
    r = based("push", "--tls-verify=false", "--format", "v2s2", "base:1", ref + ":v2")
    v2digest = r.stdout.strip().splitlines()[-1].split()[2]
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}:v2").stdout)
    assert raw["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
    assert raw["config"]["mediaType"] == "application/vnd.docker.container.image.v1+json"
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}:v2").stdout)
    assert info["Digest"] == v2digest and v2digest != stored

    r = based("push", "--tls-verify=false", "--compression", "zstd", "base:1", ref + ":zstd")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}:zstd").stdout)
    assert all(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+zstd" for layer in raw["layers"])
    r = based("push", "--tls-verify=false", "--compression", "gzip", "base:1", ref + ":gzip")
    raw = json.loads(skopeo("inspect", "--raw", "--tls-verify=false", f"docker://{ref}:gzip").stdout)
    assert all(layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip" for layer in raw["layers"])
    # Both read back into a store and give the same tree.
    for tag in ("zstd", "gzip", "v2"):
        based("pull", "--tls-verify=false", f"{ref}:{tag}")
    r = based("push", "--tls-verify=false", "--format", "v2s2", "--compression", "zstd", "base:1", ref + ":bad",
              check=False)
    assert r.returncode == 2 and "zstd" in r.stderr
    r = based("push", "--tls-verify=false", "--format", "xml", "base:1", ref + ":bad", check=False)
    assert r.returncode == 2


def test_push_mounts_blobs_from_another_repository(based, plain, workdir):
    based("push", "--tls-verify=false", "base:1", f"{plain.host}/mnt/one:1")
    other = Strata(workdir, "store2")
    other("pull", "--tls-verify=false", f"{plain.host}/mnt/one:1")
    r = other("push", "--tls-verify=false", f"{plain.host}/mnt/one:1", f"{plain.host}/mnt/two:1")
    assert "Mounted from mnt/one" in r.stdout
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{plain.host}/mnt/two:1").stdout)
    assert info["Digest"] == other.digest(f"{plain.host}/mnt/one:1")
    # Pushed again: every blob is there already.
    r = other("push", "--tls-verify=false", f"{plain.host}/mnt/one:1", f"{plain.host}/mnt/two:1")
    assert "Layer already exists" in r.stdout


def test_push_needs_a_name_or_a_destination(based, plain):
    img_id = json.loads(based("images", "--format", "json").stdout)[0]["ID"].split(":")[1][:12]
    r = based("push", "--tls-verify=false", img_id, check=False)
    assert r.returncode == 2 and "DESTINATION" in r.stderr
    r = based("push", "--tls-verify=false", "base:1", f"{plain.host}/x@sha256:{'a' * 64}", check=False)
    assert r.returncode == 2
    r = based("push", "--tls-verify=false", "nosuch:1", f"{plain.host}/x:1", check=False)
    assert r.returncode == 1 and "no such image" in r.stderr


# ------------------------------------------------------------------ skopeo pushes, strata pulls

def test_what_skopeo_pushes_strata_pulls_mounts_and_runs(based, plain, workdir):
    # An image skopeo copies from the store's OCI layout (gzip-compressed on the way).
    ref = f"{plain.host}/fromskopeo/base:1"
    skopeo("copy", "--dest-tls-verify=false", "--dest-compress-format", "gzip", f"oci:{based.root}:base:1",
           f"docker://{ref}")
    other = Strata(workdir, "store2")
    other("pull", "--tls-verify=false", ref)
    assert other("run", "--rm", ref, "cat", "/etc/hostname", check=False).returncode in (0, 1)
    r = other("run", "--rm", ref, "echo", "ran")
    assert r.stdout == "ran\n"
    assert mounted_file(other, ref, "/etc/passwd", workdir) == mounted_file(based, "base:1", "/etc/passwd", workdir)
    # And a docker v2s2 image as skopeo writes it.
    skopeo("copy", "--dest-tls-verify=false", "--format", "v2s2", f"oci:{based.root}:base:1",
           f"docker://{ref}-v2s2")
    other("pull", "--tls-verify=false", f"{ref}-v2s2")
    info = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}-v2s2").stdout)
    assert other.digest(f"{ref}-v2s2") == info["Digest"]


# ------------------------------------------------------------------ Basic auth

def test_basic_auth_login_push_pull_logout(based, workdir, servers):
    htpasswd = htpasswd_file(os.path.join(workdir, "htpasswd"), "alice", "wonder land")
    reg = servers.add(Distribution(os.path.join(workdir, "basic"), htpasswd=htpasswd))
    ref = f"{reg.host}/private/base:1"
    before = based.state()
    r = based("push", "--tls-verify=false", "base:1", ref, check=False)
    assert r.returncode == 1 and f"strata login {reg.host}" in r.stderr
    r = based("pull", "--tls-verify=false", ref, check=False)
    assert r.returncode == 1 and "unauthorized" in r.stderr and f"strata login {reg.host}" in r.stderr
    assert based.state() == before

    # Wrong password: refused, nothing saved, the password never shown.
    r = based("login", "--tls-verify=false", "-u", "alice", "--password-stdin", reg.host, input="wrong\n",
              check=False)
    assert r.returncode == 1 and "login to" in r.stderr and "wrong" not in r.stderr + r.stdout
    assert not os.path.exists(based.auth)
    r = based("login", "--tls-verify=false", "-u", "alice", "--password-stdin", reg.host, input="wonder land\n")
    assert r.stdout == "Login Succeeded\n"
    assert stat.S_IMODE(os.stat(based.auth).st_mode) == 0o600
    with open(based.auth) as f:
        saved = json.load(f)
    assert base64.b64decode(saved["auths"][reg.host]["auth"]) == b"alice:wonder land"

    based("push", "--tls-verify=false", "base:1", ref)
    other = Strata(workdir, "store2")
    other("pull", "--tls-verify=false", ref)  # the same auth file
    # skopeo reads the same file.
    skopeo("inspect", "--tls-verify=false", "--authfile", based.auth, f"docker://{ref}")

    # -p works but warns.
    r = based("login", "--tls-verify=false", "-u", "alice", "-p", "wonder land", reg.host)
    assert "WARNING! Using --password via the CLI is insecure" in r.stderr

    r = based("logout", reg.host)
    assert r.stdout == f"Removed login credentials for {reg.host}\n"
    r = based("logout", reg.host, check=False)
    assert r.returncode == 1 and "not logged in" in r.stderr
    r = based("pull", "--tls-verify=false", ref, check=False)
    assert r.returncode == 1 and "strata login" in r.stderr
    # --password-stdin without a user name is a usage error.
    r = based("login", "--password-stdin", reg.host, input="x\n", check=False)
    assert r.returncode == 2


# ------------------------------------------------------------------ TLS

def test_tls_registry_trusted_through_certs_d_or_cert_dir(based, workdir, servers):
    certs = os.path.join(workdir, "pki")
    os.makedirs(certs)
    ca, crt, key = make_ca_and_cert(certs)
    reg = servers.add(Distribution(os.path.join(workdir, "tls"), tls=(crt, key)))
    ref = f"{reg.host}/secure/base:1"
    r = based("push", "base:1", ref, check=False)
    assert r.returncode == 1 and "not trusted" in r.stderr
    # --cert-dir DIR with the CA.
    cert_dir = os.path.join(workdir, "mycerts")
    os.makedirs(cert_dir)
    with open(ca) as src, open(os.path.join(cert_dir, "ca.crt"), "w") as dst:
        dst.write(src.read())
    based("push", "--cert-dir", cert_dir, "base:1", ref)
    # certs.d/HOST:PORT/ca.crt as containers-certs.d(5) has it.
    host_dir = os.path.join(based.certs, reg.host)
    os.makedirs(host_dir)
    with open(ca) as src, open(os.path.join(host_dir, "ca.crt"), "w") as dst:
        dst.write(src.read())
    other = Strata(workdir, "store2")
    r = other("pull", ref)
    assert "Pull complete" in r.stdout
    # --tls-verify=false does not check the certificate.
    Strata(workdir, "store3")("pull", "--tls-verify=false", ref, env={"STRATA_CERTS_D": "/nonexistent"})


# ------------------------------------------------------------------ Bearer tokens

def test_bearer_token_flow(based, workdir, servers):
    token = servers.add(TokenServer(workdir, {"bob": "builder"}))
    reg = servers.add(Distribution(os.path.join(workdir, "token"), token=token))
    ref = f"{reg.host}/team/base:1"
    r = based("push", "--tls-verify=false", "base:1", ref, check=False)
    assert r.returncode == 1 and f"strata login {reg.host}" in r.stderr
    r = based("login", "--tls-verify=false", "-u", "bob", "--password-stdin", reg.host, input="nope", check=False)
    assert r.returncode == 1 and "unauthorized" in r.stderr
    based("login", "--tls-verify=false", "-u", "bob", "--password-stdin", reg.host, input="builder")
    token.requests.clear()
    based("push", "--tls-verify=false", "base:1", ref)
    scopes = [s for req in token.requests for s in req["scopes"]]
    assert "repository:team/base:pull,push" in scopes
    # One token per scope, reused for every blob of the push.
    assert scopes.count("repository:team/base:pull,push") == 1
    assert all(req["user"] == "bob" for req in token.requests)
    token.requests.clear()
    other = Strata(workdir, "store2")
    other("pull", "--tls-verify=false", ref)
    assert [s for req in token.requests for s in req["scopes"]] == ["repository:team/base:pull"]
    assert other.digest(ref) == json.loads(
        skopeo("inspect", "--tls-verify=false", "--authfile", based.auth, f"docker://{ref}").stdout)["Digest"]


# ------------------------------------------------------------------ pulling what they lack

def test_run_create_and_mount_pull_what_they_lack(based, plain, workdir):
    ref = f"{plain.host}/auto/base:1"
    based("push", "--tls-verify=false", "base:1", ref)
    other = Strata(workdir, "store2")
    r = other("run", "--rm", "--pull=never", ref, "true", check=False)
    assert r.returncode == 125 and "no such image" in r.stderr
    r = other("run", "--rm", "--tls-verify=false", ref, "echo", "hello")
    assert r.stdout == "hello\n"
    assert f"Unable to find image '{ref}' locally" in r.stderr and "Pull complete" in r.stderr
    # Present now: no pull at all.
    r = other("run", "--rm", ref, "true")
    assert "Pulling" not in r.stderr
    # --pull=always asks again (and finds it up to date).
    r = other("run", "--rm", "--pull=always", "--tls-verify=false", ref, "true")
    assert "Image is up to date" in r.stderr
    r = other("run", "--rm", "--pull=sometimes", ref, "true", check=False)
    assert r.returncode == 125

    third = Strata(workdir, "store3")
    r = third("create", "--name", "c", "--tls-verify=false", ref)
    assert len(r.stdout.strip()) == 64 and "Pull complete" in r.stderr
    fourth = Strata(workdir, "store4")
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    try:
        fourth("mount", "--tls-verify=false", ref, mnt)
        assert os.path.exists(os.path.join(mnt, "etc/passwd"))
    finally:
        unmount(mnt)


def test_seed_workflow_across_machines(based, plain, workdir):
    """Build FROM a pulled base, push, remove everything, run pulls it back:
    the same manifest digest, the same tree."""
    base_ref = f"{plain.host}/seed/base:1"
    based("push", "--tls-verify=false", "base:1", base_ref)
    dev = Strata(workdir, "dev")  # a second machine: nothing but the registry in common
    ctx = os.path.join(workdir, "ctx")
    os.makedirs(ctx)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(f"FROM {base_ref}\nRUN echo seeded > /seed && mkdir -p /app\nCOPY hello.txt /app/\n"
                'CMD ["cat", "/seed"]\n')
    with open(os.path.join(ctx, "hello.txt"), "w") as f:
        f.write("hello from the seed\n")
    app = f"{plain.host}/seed/app:1"
    r = dev("build", "--tls-verify=false", "-t", app, ctx)
    assert "Pull complete" in r.stdout
    built = dev.digest(app)
    tree = {p: mounted_file(dev, app, p, workdir) for p in ("/seed", "/app/hello.txt", "/etc/passwd")}
    r = dev("push", "--tls-verify=false", app)
    assert r.stdout.strip().splitlines()[-1] == f"1: digest: {built} size: " + r.stdout.strip().split()[-1]

    # Everything removed: images and all.
    dev("rmi", app)
    dev("rmi", base_ref)
    dev("prune")
    assert dev.digest(app) is None
    r = dev("run", "--rm", "--tls-verify=false", app)
    assert r.stdout == "seeded\n"
    assert dev.digest(app) == built
    assert {p: mounted_file(dev, app, p, workdir) for p in tree} == tree


def test_help_of_the_registry_verbs(strata):
    for verb, words in (("pull", ["--platform", "--max-concurrent-downloads", "--tls-verify", "-q"]),
                        ("push", ["--format", "--compression", "--tls-verify"]),
                        ("login", ["--password-stdin", "--username"]),
                        ("logout", ["--authfile"])):
        r = strata(verb, "--help")
        for w in words:
            assert w in r.stdout, (verb, w)
    r = strata("pull", check=False)
    assert r.returncode == 2
    r = strata("pull", "--platform", "linux", "x", check=False)
    assert r.returncode == 2 and "OS/ARCH" in r.stderr
    r = strata("pull", "Not/Valid", check=False)
    assert r.returncode == 2
