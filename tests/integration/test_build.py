"""strata build: real builds on a real store, checked as a user would see them.

The base image is the offline busybox root file system of
scripts/make-base-rootfs.sh imported into a fresh store. Resulting images are
read through the store's on-disk OCI layout (index.json, the config blob) and
their trees through a read-only stratafs mount of their layers.
"""
import contextlib
import http.server
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tarfile
import threading
import time

import pytest

from conftest import run, tool
from fsutil import snapshot, stratafs_mount


def command_output(progress):
    """What the RUN steps printed, without the "#N SECONDS " each line has in the progress output."""
    return "".join(m + "\n" for m in re.findall(r"^#\d+ \d+\.\d{3} (.*)$", progress, re.M))


class Env:
    def __init__(self, workdir, mounts, base_tar):
        self.workdir = workdir
        self.mounts = mounts
        self.root = os.path.join(workdir, "store")
        self.ctx = os.path.join(workdir, "ctx")
        os.makedirs(self.ctx)
        self.n = 0
        r = self.strata("import", base_tar, "base:1")
        assert r.returncode == 0, r.stderr

    def strata(self, *args, check=False, **kw):
        return run([tool("strata"), "--root", self.root, *args], check=check, **kw)

    def write(self, rel, data, mode=None):
        path = os.path.join(self.ctx, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
        if mode is not None:
            os.chmod(path, mode)
        return path

    def build(self, dockerfile, *args, ok=True):
        self.write("Dockerfile", dockerfile)
        r = self.strata("build", *args, self.ctx)
        if ok:
            assert r.returncode == 0, f"build failed: {r.stdout}\n{r.stderr}"
        return r

    def index(self):
        with open(os.path.join(self.root, "index.json")) as f:
            return json.load(f)

    def blob(self, digest):
        with open(os.path.join(self.root, "blobs", "sha256", digest.split(":", 1)[1])) as f:
            return json.load(f)

    def tags(self):
        return {m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in self.index()["manifests"]}

    def config(self, name):
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return self.blob(self.blob(m["digest"])["config"]["digest"])
        raise AssertionError(f"no image {name} in {self.tags()}")

    def image_id(self, name):
        for m in self.index()["manifests"]:
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == name:
                return self.blob(m["digest"])["config"]["digest"]
        raise AssertionError(f"no image {name}")

    def layer_dirs(self):
        d = os.path.join(self.root, "layers")
        return sorted(e for e in os.listdir(d) if os.path.isdir(os.path.join(d, e)))

    def mount(self, name):
        """Mounts the image NAME read-only; returns the mount point."""
        cfg = self.config(name)
        lowers = [os.path.join(self.root, "layers", d.split(":", 1)[1]) for d in reversed(cfg["rootfs"]["diff_ids"])]
        lowers = list(dict.fromkeys(lowers))  # a layer held twice counts at its topmost place, as strata mounts it
        self.n += 1
        mnt = os.path.join(self.workdir, f"mnt{self.n}")
        stratafs_mount(self.mounts, mnt, lowers)
        return mnt


@pytest.fixture
def env(workdir, mounts, base_tar):
    return Env(workdir, mounts, base_tar)


def read(path):
    with open(path) as f:
        return f.read()


def test_run_copy_and_config_evolution(env):
    env.write("hello.txt", "hello from the context\n", 0o640)
    env.write("app/main.sh", "#!/bin/sh\necho main\n", 0o755)
    env.write("app/lib/util.sh", "util\n")
    r = env.build(
        "FROM base:1\n"
        "ARG VERSION=1.0\n"
        "ENV APP_HOME=/srv/app GREETING=hi\n"
        "LABEL org.example.version=$VERSION maintainer=\"a b\"\n"
        "WORKDIR $APP_HOME\n"
        "COPY hello.txt .\n"
        "COPY app/ ./app/\n"
        "COPY --chown=app:app --chmod=0600 hello.txt /home/app/private.txt\n"
        "RUN echo \"built $VERSION by $(id -u) in $(pwd)\" > built.txt && cat hello.txt\n"
        "RUN rm /etc/os-release && mkdir -p /var/lib/thing && echo state > /var/lib/thing/state\n"
        "USER app\n"
        "EXPOSE 8080 53/udp\n"
        "VOLUME /data\n"
        "STOPSIGNAL SIGINT\n"
        "ENTRYPOINT [\"/bin/sh\", \"-c\"]\n"
        "CMD [\"echo hi\"]\n",
        "-t", "app:1", "-t", "app:latest",
    )
    # BuildKit's plain progress: numbered vertices, the steps that make a layer labelled [I/N].
    assert re.search(r"^#\d+ \[1/\d+\] FROM base:1$", r.stdout, re.M), r.stdout
    assert re.search(r"^#(\d+) \[ ?\d+/\d+\] RUN echo .*\n(#\1 .*\n)*#\1 DONE \d+\.\ds$", r.stdout, re.M), r.stdout
    assert re.search(r"^#\d+ \d+\.\d{3} hello from the context$", r.stdout, re.M)  # RUN output, timed
    assert "naming to app:1 done" in r.stdout and "naming to app:latest done" in r.stdout
    assert f"writing image {env.image_id('app:1')} done" in r.stdout
    assert env.image_id("app:1") == env.image_id("app:latest")
    cfg = env.config("app:1")
    c = cfg["config"]
    assert c["WorkingDir"] == "/srv/app"
    assert "APP_HOME=/srv/app" in c["Env"] and "GREETING=hi" in c["Env"]
    assert c["Labels"] == {"org.example.version": "1.0", "maintainer": "a b"}
    assert c["User"] == "app"
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Volumes"] == {"/data": {}}
    assert c["StopSignal"] == "SIGINT"
    assert c["Entrypoint"] == ["/bin/sh", "-c"]
    assert c["Cmd"] == ["echo hi"]
    history = [h["created_by"] for h in cfg["history"]]
    assert "ENV APP_HOME=/srv/app GREETING=hi" in history
    assert "COPY hello.txt . # buildkit" in history
    assert any(h.startswith("RUN |1 VERSION=1.0 /bin/sh -c echo") for h in history)
    # one non-empty history entry per layer
    assert len([h for h in cfg["history"] if not h.get("empty_layer")]) == len(cfg["rootfs"]["diff_ids"])

    mnt = env.mount("app:1")
    assert read(f"{mnt}/srv/app/hello.txt") == "hello from the context\n"
    assert os.stat(f"{mnt}/srv/app/hello.txt").st_mode & 0o7777 == 0o640
    assert os.stat(f"{mnt}/srv/app/hello.txt").st_uid == 0
    assert read(f"{mnt}/srv/app/app/lib/util.sh") == "util\n"
    assert os.access(f"{mnt}/srv/app/app/main.sh", os.X_OK)
    st = os.stat(f"{mnt}/home/app/private.txt")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o600)
    assert read(f"{mnt}/srv/app/built.txt") == "built 1.0 by 0 in /srv/app\n"
    assert not os.path.exists(f"{mnt}/etc/os-release")  # deleted by a RUN: a whiteout in its layer
    assert read(f"{mnt}/var/lib/thing/state") == "state\n"
    assert os.path.islink(f"{mnt}/bin/sh")  # the base is still there


def test_rebuild_uses_the_cache_and_a_changed_source_invalidates(env):
    env.write("a.txt", "one\n")
    env.write("b.txt", "one\n")
    df = ("FROM base:1\n"
          "COPY a.txt /a.txt\n"
          "RUN echo RAN-A-$((40+2)) && cat /a.txt > /a.copy\n"
          "COPY b.txt /b.txt\n"
          "RUN echo RAN-B-$((40+2)) && cat /b.txt > /b.copy\n")
    first = env.build(df, "-t", "c:1")
    assert "RAN-A-42" in first.stdout and "RAN-B-42" in first.stdout
    layers = env.layer_dirs()
    image = env.image_id("c:1")

    again = env.build(df, "-t", "c:1")
    assert again.stdout.count(" CACHED\n") == 4
    assert "-42" not in again.stdout
    assert env.layer_dirs() == layers  # no new layer
    assert env.image_id("c:1") == image

    # mtime alone is not a change
    os.utime(os.path.join(env.ctx, "b.txt"), (1, 1))
    assert "-42" not in env.build(df, "-t", "c:1").stdout

    env.write("b.txt", "two\n")
    changed = env.build(df, "-t", "c:1")
    assert "RAN-A-42" not in changed.stdout
    assert "RAN-B-42" in changed.stdout
    assert changed.stdout.count(" CACHED\n") == 2
    assert env.image_id("c:1") != image
    mnt = env.mount("c:1")
    assert read(f"{mnt}/b.copy") == "two\n"
    assert read(f"{mnt}/a.copy") == "one\n"

    nocache = env.build(df, "-t", "c:1", "--no-cache")
    assert "RAN-A-42" in nocache.stdout and "RAN-B-42" in nocache.stdout
    assert "CACHED" not in nocache.stdout

    # a build arg the RUN uses is part of its key
    df2 = "FROM base:1\nARG V=1\nRUN echo RUN-V-$V\n"
    assert "RUN-V-1" in env.build(df2).stdout
    assert "RUN-V-1" not in env.build(df2).stdout
    assert "RUN-V-2" in env.build(df2, "--build-arg", "V=2").stdout


def test_multi_stage_copy_from_and_target(env):
    env.write("src.txt", "source\n")
    df = ("FROM base:1 AS builder\n"
          "COPY src.txt /work/src.txt\n"
          "RUN mkdir -p /out && tr a-z A-Z < /work/src.txt > /out/result && echo BUILDER-RAN\n"
          "FROM base:1 AS unused\n"
          "RUN echo UNUSED-RAN\n"
          "FROM scratch\n"
          "COPY --from=builder /out/result /result\n"
          "COPY --from=0 /bin/busybox /bin/busybox\n"
          "COPY --from=base:1 /etc/passwd /etc/passwd\n"
          "CMD [\"/bin/busybox\", \"cat\", \"/result\"]\n")
    r = env.build(df, "-t", "ms:1")
    assert "BUILDER-RAN" in r.stdout
    assert "UNUSED-RAN" not in r.stdout  # stages the target does not need are not built
    mnt = env.mount("ms:1")
    assert sorted(os.listdir(mnt)) == ["bin", "etc", "result"]
    assert read(f"{mnt}/result") == "SOURCE\n"
    assert read(f"{mnt}/etc/passwd").startswith("root:x:0:0:")
    cfg = env.config("ms:1")
    assert len(cfg["rootfs"]["diff_ids"]) == 3

    t = env.build(df, "--target", "builder", "-t", "ms:builder")
    assert "UNUSED-RAN" not in t.stdout
    mnt = env.mount("ms:builder")
    assert read(f"{mnt}/out/result") == "SOURCE\n"
    assert os.path.exists(f"{mnt}/bin/busybox")


def gzip_tar(name, data):
    """A .tar.gz holding one file NAME (mode 0644) with DATA."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(data)
        ti.mode = 0o644
        tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


@contextlib.contextmanager
def http_serving(workdir, files):
    """Serves FILES ({name: bytes}) over http on 127.0.0.1; yields the base URL."""
    served = os.path.join(workdir, "www")
    os.makedirs(served)
    for name, data in files.items():
        with open(os.path.join(served, name), "wb") as f:
            f.write(data)
    with serving_directory(served) as base:
        yield base


@contextlib.contextmanager
def serving_directory(served):
    """Serves the directory SERVED over http on 127.0.0.1; yields the base URL."""

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=served, **kw)

        def log_message(self, *a):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    th = threading.Thread(target=httpd.serve_forever, daemon=True)
    th.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_add_local_tar_is_unpacked_and_url_downloaded(env, workdir):
    env.write("pkg.tar.gz", gzip_tar("pkg/data.txt", b"from the tarball\n"))
    with http_serving(workdir, {"remote.txt": b"downloaded\n"}) as base:
        env.build("FROM base:1\n"
                  "ADD pkg.tar.gz /opt/\n"
                  f"ADD {base}/remote.txt /downloads/\n"
                  "ADD --chown=app pkg.tar.gz /owned/\n", "-t", "add:1")
    mnt = env.mount("add:1")
    assert read(f"{mnt}/opt/pkg/data.txt") == "from the tarball\n"
    assert read(f"{mnt}/downloads/remote.txt") == "downloaded\n"
    assert os.stat(f"{mnt}/downloads/remote.txt").st_mode & 0o777 == 0o600
    assert os.stat(f"{mnt}/owned/pkg/data.txt").st_uid == 1000


def test_add_unpack_flag(env, workdir):
    archive = gzip_tar("pkg/data.txt", b"packed\n")
    env.write("pkg.tar.gz", archive)
    with http_serving(workdir, {"remote.tar.gz": archive}) as base:
        env.build("FROM base:1\n"
                  "ADD --unpack=false pkg.tar.gz /kept/\n"
                  "ADD --unpack pkg.tar.gz /local/\n"
                  f"ADD {base}/remote.tar.gz /remote-kept/\n"
                  f"ADD --unpack=true {base}/remote.tar.gz /remote/\n", "-t", "unpack:1")
    mnt = env.mount("unpack:1")
    with open(f"{mnt}/kept/pkg.tar.gz", "rb") as f:
        assert f.read() == archive
    assert read(f"{mnt}/local/pkg/data.txt") == "packed\n"
    assert os.listdir(f"{mnt}/remote-kept") == ["remote.tar.gz"]
    assert read(f"{mnt}/remote/pkg/data.txt") == "packed\n"
    r = env.build("FROM base:1\nADD --unpack=maybe pkg.tar.gz /x/\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert "expecting boolean value for flag --unpack, not: maybe" in r.stderr
    r = env.build("FROM base:1\nCOPY --unpack=false pkg.tar.gz /x/\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert "unknown flag: --unpack for COPY" in r.stderr


def hostile_tar(entries):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind, target in entries:
            ti = tarfile.TarInfo(name)
            if kind == "file":
                ti.size = 4
                tf.addfile(ti, io.BytesIO(b"evil"))
            elif kind == "root-owned-by-nobody-valid":
                ti.size = 4
                ti.uid = 4294967295
                tf.addfile(ti, io.BytesIO(b"evil"))
            elif kind == "sym":
                ti.type = tarfile.SYMTYPE
                ti.linkname = target
                tf.addfile(ti)
            elif kind == "hard":
                ti.type = tarfile.LNKTYPE
                ti.linkname = target
                tf.addfile(ti)
    return buf.getvalue()


@pytest.mark.parametrize("entries,message", [
    ([("../../../../../../tmp/strata-escaped", "file", None)], "path contains '..'"),
    ([("esc", "sym", "/tmp"), ("esc/strata-escaped", "file", None)], "'esc' on its path is a symlink"),
    ([("/tmp/strata-escaped", "file", None)], "absolute path"),
    ([("strata-escaped", "hard", "../../../../../../etc/passwd")], "hardlink target"),
    ([("strata-escaped", "root-owned-by-nobody-valid", None)], "owner uid 4294967295 is not a valid id"),
])
def test_hostile_add_tar_is_refused(env, entries, message):
    if os.path.exists("/tmp/strata-escaped"):
        os.unlink("/tmp/strata-escaped")
    env.write("evil.tar", hostile_tar(entries))
    r = env.build("FROM base:1\nADD evil.tar /x/\n", "-t", "evil:1", ok=False)
    assert r.returncode == 1
    assert r.stderr.startswith("strata: Dockerfile:2:1: ADD 'evil.tar': refusing "), r.stderr
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not os.path.exists("/tmp/strata-escaped")
    assert "evil:1" not in env.tags()


def test_add_tar_compressed_merges_into_the_destination(env, workdir):
    """ADD of plain, gzip, bzip2, xz and zstd tars: merged into the destination with what the image
    has there, the destination's mode kept (the tar's "./" entry does not change it)."""
    def tar_bytes(entries):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tf:
            for name, data in entries:
                ti = tarfile.TarInfo(name)
                if data is None:
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    tf.addfile(ti)
                    continue
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        return buf.getvalue()
    plain = tar_bytes([("./", None), ("new", b"n\n"), ("sub/deeper", b"d\n")])
    names = ["t.tar"]
    env.write("t.tar", plain)
    for tool_name, ext in (("gzip", "gz"), ("bzip2", "bz2"), ("xz", "xz"), ("zstd", "zst")):
        if shutil.which(tool_name) is None:
            continue
        packed = subprocess.run([tool_name, "-c"], input=plain, capture_output=True, check=True).stdout
        env.write(f"t.tar.{ext}", packed)
        names.append(f"t.tar.{ext}")
    steps = "".join(f"RUN mkdir -p /d{i} && chmod 700 /d{i} && echo kept > /d{i}/old\nADD {n} /d{i}/\n"
                    for i, n in enumerate(names))
    env.build("FROM base:1\n" + steps, "-t", "merged:1")
    mnt = env.mount("merged:1")
    for i in range(len(names)):
        assert read(f"{mnt}/d{i}/old") == "kept\n"
        assert read(f"{mnt}/d{i}/new") == "n\n"
        assert read(f"{mnt}/d{i}/sub/deeper") == "d\n"
        assert os.stat(f"{mnt}/d{i}").st_mode & 0o777 == 0o700


def test_copy_outside_the_context_is_refused(env, workdir):
    with open(os.path.join(workdir, "secret"), "w") as f:
        f.write("secret\n")
    r = env.build("FROM base:1\nCOPY ../secret /secret\n", "-t", "x:1", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip() == ("strata: Dockerfile:2:1: forbidden path outside the build context: '../secret': "
                                "'COPY ../secret /secret'")
    # a symlink in the context resolves inside the context, not on the host
    os.symlink(os.path.join(workdir, "secret"), os.path.join(env.ctx, "link"))
    r = env.build("FROM base:1\nCOPY link /secret\n", "-t", "x:1", ok=False)
    assert r.returncode == 1
    assert "file not found in build context" in r.stderr
    assert "x:1" not in env.tags()


def test_dockerignore(env):
    env.write("keep.txt", "keep\n")
    env.write("secret.key", "key\n")
    env.write("logs/a.log", "log\n")
    env.write("logs/important.log", "important\n")
    env.write(".dockerignore", "*.key\nlogs/*.log\n!logs/important.log\n")
    env.build("FROM base:1\nCOPY . /ctx/\n", "-t", "ign:1")
    mnt = env.mount("ign:1")
    assert sorted(os.listdir(f"{mnt}/ctx")) == [".dockerignore", "Dockerfile", "keep.txt", "logs"]
    assert os.listdir(f"{mnt}/ctx/logs") == ["important.log"]


def test_symbolic_chmod_changes_each_entrys_own_mode(env):
    env.write("tree/run.sh", "#!/bin/sh\n", mode=0o700)
    env.write("tree/data.txt", "d\n", mode=0o600)
    env.write("tree/sub/x.txt", "x\n", mode=0o666)
    os.chmod(os.path.join(env.ctx, "tree/sub"), 0o700)
    os.chmod(os.path.join(env.ctx, "tree"), 0o700)
    env.build("FROM base:1\n"
              "COPY --chmod=u=rwX,go=rX tree /t/\n"
              "ADD --chmod=+x tree/data.txt /added\n"
              "COPY --chmod=g+s,o-rwx <<EOF /inline/\nhi\nEOF\n", "-t", "m:1")
    mnt = env.mount("m:1")

    def mode(rel):
        return oct(os.lstat(f"{mnt}/{rel}").st_mode & 0o7777)

    assert [mode(p) for p in ("t/run.sh", "t/data.txt", "t/sub", "t/sub/x.txt")] == ["0o755", "0o644", "0o755", "0o644"]
    assert mode("added") == "0o711"
    assert mode("inline/EOF") == "0o2640"
    r = env.build("FROM base:1\nCOPY --chmod=u+q tree /t/\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert r.stderr.startswith("strata: Dockerfile:2:6: invalid --chmod 'u+q'"), r.stderr


def test_dockerfile_specific_ignore_file_wins_over_the_contexts(env, workdir):
    env.write("a.txt", "a\n")
    env.write("b.txt", "b\n")
    env.write(".dockerignore", "a.txt\n")

    def texts(tag):
        return sorted(n for n in os.listdir(f"{env.mount(tag)}/ctx") if n.endswith(".txt"))

    env.build("FROM base:1\nCOPY . /ctx/\n", "-t", "i:1")
    assert texts("i:1") == ["b.txt"]
    # Dockerfile.dockerignore beside the default Dockerfile replaces .dockerignore
    env.write("Dockerfile.dockerignore", "b.txt\n")
    env.build("FROM base:1\nCOPY . /ctx/\n", "-t", "i:2")
    assert texts("i:2") == ["a.txt"]
    # -f NAME outside the context: NAME.dockerignore beside it, not Dockerfile.dockerignore
    other = os.path.join(workdir, "other")
    os.makedirs(other)
    df = os.path.join(other, "app.Dockerfile")
    with open(df, "w") as f:
        f.write("FROM base:1\nCOPY . /ctx/\n")
    with open(os.path.join(other, "Dockerfile.dockerignore"), "w") as f:
        f.write("*\n")
    r = env.strata("build", "-f", df, "-t", "i:3", env.ctx)
    assert r.returncode == 0, r.stderr
    assert texts("i:3") == ["b.txt"]  # the context's .dockerignore
    with open(df + ".dockerignore", "w") as f:
        f.write("b.txt\n")
    r = env.strata("build", "-f", df, "-t", "i:4", env.ctx)
    assert r.returncode == 0, r.stderr
    assert texts("i:4") == ["a.txt"]


@pytest.mark.parametrize("dockerfile,expected", [
    ("FROM base:1\nRUNN echo hi\n", "Dockerfile:2:1: unknown instruction: RUNN"),
    ("FROM base:1\nCOPY onlyone\n", "Dockerfile:2:6: COPY requires at least two arguments"),
    ("FROM nothere:1\n", "Dockerfile:1:6: base image 'nothere:1' is not in the local store"),
    ("FROM base:1\nEXPOSE 80/xyz\n", "Dockerfile:2:"),
    ("FROM base:1\nENV A=${B:?B is required}\n", "Dockerfile:2:"),
])
def test_malformed_dockerfile_errors_name_file_line_column(env, dockerfile, expected):
    # --pull=never: a missing base is not looked for in a registry.
    r = env.build(dockerfile, "-t", "bad:1", "--pull=never", ok=False)
    assert r.returncode == 1
    assert r.stderr.startswith("strata: " + expected), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert "bad:1" not in env.tags()


def test_failing_run_stops_the_build_and_keeps_earlier_layers_cached(env):
    df = "FROM base:1\nRUN echo STEP-$((0+1))\nRUN echo failing; exit 3\nRUN echo never-$((0+1))\n"
    r = env.build(df, "-t", "fail:1", ok=False)
    assert r.returncode == 1
    assert "STEP-1" in r.stdout
    assert "never-1" not in r.stdout
    assert ("Dockerfile:3:1: the command '/bin/sh -c echo failing; exit 3' returned a non-zero code: 3"
            in r.stderr)
    assert "fail:1" not in env.tags()
    again = env.build(df, "-t", "fail:1", ok=False)
    assert "STEP-1" not in again.stdout  # the first RUN came from the cache


def test_onbuild_and_quiet(env):
    env.build("FROM base:1\nONBUILD RUN echo TRIGGERED > /triggered\n", "-t", "parent:1")
    assert env.config("parent:1")["config"]["OnBuild"] == ["RUN echo TRIGGERED > /triggered"]
    r = env.build("FROM parent:1\nCMD [\"true\"]\n", "-q", "-t", "child:1")
    assert r.stdout.strip() == env.image_id("child:1")
    assert "OnBuild" not in env.config("child:1")["config"]
    mnt = env.mount("child:1")
    assert read(f"{mnt}/triggered") == "TRIGGERED\n"
    # --progress quiet is -q: only the id, nothing the command prints.
    r = env.build("FROM base:1\nRUN echo SHOWN-NOWHERE\n", "--progress", "quiet", "-t", "quiet:1")
    assert r.stdout.strip() == env.image_id("quiet:1")
    assert "SHOWN-NOWHERE" not in r.stdout + r.stderr


def test_help_and_usage(env):
    r = env.strata("build", "--help")
    assert r.returncode == 0
    assert "--build-arg" in r.stdout and "--target" in r.stdout and "--no-cache" in r.stdout
    assert "--squash" in r.stdout
    r = env.strata("build")
    assert r.returncode == 2
    r = env.strata("build", env.ctx, "--pull=sometimes")
    assert r.returncode == 2 and "--pull must be missing, always or never" in r.stderr


def test_run_as_the_image_user_and_workdir_created(env):
    env.build("FROM base:1\n"
              "USER app\n"
              "WORKDIR /home/app/work\n"
              "RUN id -u > uid && id -g > gid && pwd > pwd\n"
              "USER root\n"
              "RUN --network=none cat /home/app/work/uid > /root/seen\n", "-t", "user:1")
    mnt = env.mount("user:1")
    assert read(f"{mnt}/home/app/work/uid") == "1000\n"
    assert read(f"{mnt}/home/app/work/pwd") == "/home/app/work\n"
    assert os.stat(f"{mnt}/home/app/work/uid").st_uid == 1000
    assert read(f"{mnt}/root/seen") == "1000\n"
    r = env.strata("inspect", "user:1")
    assert r.returncode == 0, r.stderr
    assert '"WorkingDir": "/home/app/work"' in r.stdout or '"WorkingDir":"/home/app/work"' in r.stdout


@pytest.mark.parametrize("user", ["4294967295", "app:4294967295", "huge"])
def test_user_4294967295_is_refused(env, user):
    prefix = "RUN echo 'huge:x:4294967295:0::/:/bin/sh' >> /etc/passwd\n" if user == "huge" else ""
    r = env.build(f"FROM base:1\n{prefix}USER {user}\nRUN echo ran-as-$(id -u)\n", ok=False)
    assert r.returncode == 1
    assert "\nran-as-" not in r.stdout
    assert "4294967295" in r.stderr
    r = env.build("FROM base:1\nCOPY --chown=4294967295 Dockerfile /f\n", ok=False)
    assert r.returncode == 1 and "4294967295" in r.stderr


def test_copy_resolves_symlinks_as_the_container_sees_them_and_cleans_up(env):
    env.write("a.txt", "through the link\n")
    env.build("FROM base:1\n"
              "RUN mkdir -p /srv/real && ln -s /srv/real /link && ln -s /etc /etclink\n"
              "COPY a.txt /link/\n", "-t", "link:1")
    mnt = env.mount("link:1")
    assert read(f"{mnt}/srv/real/a.txt") == "through the link\n"
    assert os.path.islink(f"{mnt}/link")
    # a failing build leaves no staging directory and no mount behind
    r = env.build("FROM base:1\nCOPY a.txt /x\nRUN exit 1\n", ok=False)
    assert r.returncode == 1
    assert os.listdir(os.path.join(env.root, "tmp")) == []
    with open("/proc/self/mounts") as f:
        assert env.root not in f.read()


def test_dangling_symlink_workdir_and_copy_destinations_resolve_inside_the_image(env):
    env.write("a.txt", "copied\n")
    env.build("FROM base:1\n"
              "RUN ln -s /srv/app /wlink && ln -s ../opt/dir /dlink && ln -s /etc/app/conf /flink\n"
              "WORKDIR /wlink/sub\n"
              "RUN pwd -P > /where\n"
              "COPY a.txt /dlink/\n"
              "COPY a.txt /flink\n", "-t", "dangle:1")
    mnt = env.mount("dangle:1")
    assert read(f"{mnt}/where") == "/srv/app/sub\n"
    assert read(f"{mnt}/opt/dir/a.txt") == "copied\n"
    assert read(f"{mnt}/etc/app/conf") == "copied\n"
    assert os.path.islink(f"{mnt}/wlink") and os.path.islink(f"{mnt}/dlink") and os.path.islink(f"{mnt}/flink")


def start_long_build(env, tag):
    """Starts a build of TAG whose RUN sleeps; returns the process once the RUN has started."""
    import subprocess
    env.write("Dockerfile", "FROM base:1\nRUN echo started-$((1+1)) && sleep 30\n")
    p = subprocess.Popen([tool("strata"), "--root", env.root, "build", "-t", tag, env.ctx],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    deadline = time.time() + 30
    while "started-2" not in line and time.time() < deadline:
        line = p.stdout.readline()
    if "started-2" not in line:
        p.kill()
        p.wait()
        raise AssertionError(f"the RUN step never started: {p.stderr.read()}")
    return p


def test_interrupt_stops_the_build_and_cleans_up(env):
    import signal
    p = start_long_build(env, "int:1")
    try:
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 1
    assert "returned a non-zero code: 130" in err
    assert "int:1" not in env.tags()
    assert os.listdir(os.path.join(env.root, "tmp")) == []
    with open("/proc/self/mounts") as f:
        assert env.root not in f.read()


def stratafs_daemons_of(root):
    pids = []
    for pid in os.listdir("/proc"):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().decode(errors="replace")
        except (FileNotFoundError, ProcessLookupError, NotADirectoryError, PermissionError):
            continue
        if "stratafs" in cmdline and root in cmdline:
            pids.append(pid)
    return pids


def test_kill_9_of_the_build_leaves_no_mount_no_daemon_and_prune_cleans(env):
    import signal
    p = start_long_build(env, "killed:1")
    try:
        assert stratafs_daemons_of(env.root) != []
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    # The daemon watches the build and unmounts when it dies.
    deadline = time.time() + 20
    while time.time() < deadline and (stratafs_daemons_of(env.root) or env.root in read("/proc/self/mounts")):
        time.sleep(0.05)
    assert stratafs_daemons_of(env.root) == []
    assert env.root not in read("/proc/self/mounts")
    tmp = os.path.join(env.root, "tmp")
    assert any(n.startswith("step-") for n in os.listdir(tmp))
    r = env.strata("prune")
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp) == []


SQUASH_DOCKERFILE = (
    "FROM base:1\n"
    "RUN mkdir -p /opt/op /opt/keep && echo old > /opt/op/old && echo tmp > /opt/tmp.txt"
    " && echo first > /opt/over.txt && echo kept > /opt/keep/a\n"
    "COPY over.txt /opt/over.txt\n"
    "COPY added.txt /opt/keep/\n"
    "ENV STAGE=squash\n"
    "RUN rm /etc/os-release /opt/tmp.txt && rm -rf /opt/op && mkdir /opt/op && echo new > /opt/op/new\n"
    "RUN rm -rf /home/app\n"
    "RUN mkdir /home/app && echo back > /home/app/back && rm /opt/keep/a\n"
    "CMD [\"sh\"]\n"
)


def test_an_image_holding_the_same_layer_twice_runs(env):
    env.write("a", "hi\n")
    env.build("FROM base:1\nCOPY a /a\nRUN rm /a\nCOPY a /a\n", "-t", "dup:1")
    layers = env.config("dup:1")["rootfs"]["diff_ids"]
    assert layers[1] == layers[3] and len(set(layers)) == 3  # the two COPYs made the same layer
    r = env.strata("run", "--rm", "dup:1", "cat", "/a")
    assert r.returncode == 0 and r.stdout == "hi\n", r.stderr
    r = env.build("FROM dup:1\nRUN cat /a\n")
    assert "hi" in command_output(r.stdout)


def test_squash_merges_the_new_layers_into_one(env):
    env.write("over.txt", "overwritten by COPY\n")
    env.write("added.txt", "added by COPY\n")
    env.build(SQUASH_DOCKERFILE, "-t", "plain:1")
    r = env.build(SQUASH_DOCKERFILE, "--squash", "-t", "sq:1")
    # The cache holds the separate steps: nothing runs again.
    assert r.stdout.count(" CACHED\n") == 6, r.stdout
    assert "naming to sq:1 done" in r.stdout

    def inspect(name):
        r = env.strata("inspect", name)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)[0]

    base, plain, sq = inspect("base:1"), inspect("plain:1"), inspect("sq:1")
    base_layers = base["RootFS"]["Layers"]
    assert plain["RootFS"]["Layers"][:len(base_layers)] == base_layers
    assert len(plain["RootFS"]["Layers"]) == len(base_layers) + 6
    assert sq["RootFS"]["Layers"][:len(base_layers)] == base_layers
    assert len(sq["RootFS"]["Layers"]) == len(base_layers) + 1
    assert sq["RootFS"]["Layers"][-1] not in plain["RootFS"]["Layers"]
    # Every history entry is kept; only the last step's entry has the layer.
    assert [h.get("created_by") for h in sq["History"]] == [h.get("created_by") for h in plain["History"]]
    new = sq["History"][len(base["History"]):]
    assert len(new) == 8
    plain_new = plain["History"][len(base["History"]):]
    assert [i for i, h in enumerate(plain_new) if not h.get("empty_layer", False)] == [0, 1, 2, 4, 5, 6]
    assert [i for i, h in enumerate(new) if not h.get("empty_layer", False)] == [6]
    assert "mkdir /home/app" in new[6]["created_by"]
    assert sq["Config"]["Cmd"] == ["sh"] and "STAGE=squash" in sq["Config"]["Env"]
    # The unsquashed layers stay stored for the cache.
    for d in plain["RootFS"]["Layers"]:
        assert os.path.isdir(os.path.join(env.root, "layers", d.split(":", 1)[1]))

    plain_tree = snapshot(env.mount("plain:1"))
    sq_mnt = env.mount("sq:1")
    assert snapshot(sq_mnt) == plain_tree
    assert not os.path.lexists(os.path.join(sq_mnt, "etc/os-release"))
    assert not os.path.lexists(os.path.join(sq_mnt, "opt/tmp.txt"))
    assert sorted(os.listdir(os.path.join(sq_mnt, "opt/op"))) == ["new"]
    assert sorted(os.listdir(os.path.join(sq_mnt, "opt/keep"))) == ["added.txt"]
    assert read(os.path.join(sq_mnt, "opt/over.txt")) == "overwritten by COPY\n"
    assert read(os.path.join(sq_mnt, "home/app/back")) == "back\n"

    # The merged layer itself: the base file stays whited out, the replaced
    # directory is opaque, and what later steps removed is not in it.
    layer = os.path.join(env.root, "layers", sq["RootFS"]["Layers"][-1].split(":", 1)[1])
    assert os.path.exists(os.path.join(layer, "etc/.wh.os-release"))
    assert os.path.exists(os.path.join(layer, "opt/op/.wh..wh..opq"))
    assert sorted(os.listdir(os.path.join(layer, "opt/op"))) == [".wh..wh..opq", "new"]
    assert not os.path.lexists(os.path.join(layer, "opt/tmp.txt"))
    assert not os.path.lexists(os.path.join(layer, "opt/keep/a"))
    assert os.path.exists(os.path.join(layer, "home/app/.wh..wh..opq"))

    # The same squashed build again, a while later, is the same image.
    time.sleep(1.1)
    env.build(SQUASH_DOCKERFILE, "--squash", "-t", "sq:2")
    assert env.image_id("sq:2") == env.image_id("sq:1")


# ---- the context on standard input (strata build -) ---------------------------


def context_tar(files, compress=""):
    """A tar of FILES ({name: text or (text, mode) or tarfile.TarInfo}) as bytes, optionally gzipped."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:" + compress) as t:
        for name, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                t.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            raw = data.encode()
            info.size = len(raw)
            t.addfile(info, io.BytesIO(raw))
    return buf.getvalue()


def stdin_build(env, data, *args):
    return run([tool("strata"), "--root", env.root, "build", *args, "-"], check=False, input=data,
               capture_output=True, text=False)


def no_context_left_behind():
    import tempfile
    return [n for n in os.listdir(tempfile.gettempdir()) if n.startswith("strata-build-context.")]


def test_dockerfile_on_stdin_builds_with_an_empty_context(env):
    before = no_context_left_behind()
    r = stdin_build(env, b"FROM base:1\nRUN echo from-stdin > /f\n", "-t", "stdin:1")
    assert r.returncode == 0, r.stderr
    assert read(f"{env.mount('stdin:1')}/f") == "from-stdin\n"
    r = stdin_build(env, b"FROM base:1\nCOPY anything /x\n")
    assert r.returncode == 1 and b"file not found in build context" in r.stderr
    assert no_context_left_behind() == before


@pytest.mark.parametrize("compress", ["", "gz"])
def test_tar_context_on_stdin_with_a_dockerfile_inside(env, compress):
    files = {"Dockerfile": "FROM base:1\nCOPY a.txt /a\n", "other.df": "FROM base:1\nCOPY a.txt /b\n",
             "a.txt": "from the tar\n", ".dockerignore": "secret\n", "secret": "no\n"}
    r = stdin_build(env, context_tar(files, compress), "-t", "tarctx:1")
    assert r.returncode == 0, r.stderr
    assert read(f"{env.mount('tarctx:1')}/a") == "from the tar\n"
    r = stdin_build(env, context_tar(files, compress), "-f", "other.df", "-t", "tarctx:2")
    assert r.returncode == 0, r.stderr
    assert read(f"{env.mount('tarctx:2')}/b") == "from the tar\n"
    files["Dockerfile"] = "FROM base:1\nCOPY secret /s\n"
    r = stdin_build(env, context_tar(files, compress))
    assert r.returncode == 1 and b"excluded by .dockerignore" in r.stderr


@pytest.mark.parametrize("name", ["../escape", "a/../../escape", "/abs-escape"])
def test_hostile_tar_context_on_stdin_is_refused(env, workdir, name):
    before = no_context_left_behind()
    r = stdin_build(env, context_tar({"Dockerfile": "FROM base:1\n", name: "x\n"}))
    assert r.returncode == 1, r.stderr
    assert r.stderr.decode().startswith("strata: build context on standard input: ")
    assert len(r.stderr.decode().strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(workdir, "escape")) and not os.path.exists("/abs-escape")
    assert no_context_left_behind() == before


def test_stdin_cannot_be_context_and_dockerfile(env):
    r = stdin_build(env, b"FROM base:1\n", "-f", "-")
    assert r.returncode == 2 and b"cannot be both the context and the Dockerfile" in r.stderr


@pytest.mark.parametrize("name", ["../../../../../../../../{out}", "{out}"])
def test_copy_heredoc_named_like_a_path_writes_nothing_outside(env, workdir, name):
    out = os.path.join(workdir, "heredoc-escape")
    marker = name.format(out=out)
    r = env.build(f"FROM base:1\nCOPY <<{marker} /d/\nbody\n{marker}\n", ok=False)
    assert r.returncode == 1 and "cannot be a file name" in r.stderr, r.stderr
    assert not os.path.exists(out)


def test_build_checks_warn_and_the_build_goes_on(env):
    r = env.build("FROM base:1\nENV A b\nCMD echo hi\n", "-t", "checked:1")
    assert "strata: warning: Dockerfile:2: LegacyKeyValueFormat: " in r.stderr
    assert ("strata: warning: Dockerfile:3: JSONArgsRecommended: JSON arguments recommended for CMD "
            "to prevent unintended behavior related to OS signals") in r.stderr
    assert "checked:1" in env.tags()
    # A clean Dockerfile prints no check line.
    r = env.build('FROM base:1\nCMD ["sh"]\n')
    assert "warning" not in r.stderr


def test_check_error_true_fails_before_any_step_and_tags_nothing(env):
    r = env.build("# check=error=true\nFROM base:1\nRUN touch /ran\nCMD echo hi\nMAINTAINER me\n",
                  "-t", "lint:1", ok=False)
    assert r.returncode == 1, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last == ("strata: Dockerfile:1:1: lint violation found for rules: "
                    "JSONArgsRecommended, MaintainerDeprecated"), r.stderr
    assert "RUN touch" not in r.stdout
    assert "lint:1" not in env.tags()
    # The build argument overrides the directive; skipped rules do not count.
    r = env.build("# check=error=true\nFROM base:1\nCMD echo hi\n", "-t", "lint:2",
                  "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=skip=JSONArgsRecommended;error=true")
    assert "lint:2" in env.tags()
    assert "warning" not in r.stderr
    r = env.build("FROM base:1\n", "--build-arg", "BUILDKIT_DOCKERFILE_CHECK=bogus", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip() == ("strata: build argument BUILDKIT_DOCKERFILE_CHECK: check 'bogus' is not "
                                "KEY=VALUE (skip=RULES, error=true|false, experimental=RULES)")


def test_check_flag_reports_without_building(env):
    before = env.layer_dirs()
    r = env.build("FROM base:1\nRUN touch /x\nLABEL x=$nothere\n", "--check", "-t", "never:1", ok=False)
    assert r.returncode == 1
    assert r.stdout.splitlines() == ["Dockerfile:3: UndefinedVar: Usage of undefined variable '$nothere'"]
    assert r.stderr.strip() == "strata: 1 build check warning found in Dockerfile"
    assert "never:1" not in env.tags()
    assert env.layer_dirs() == before
    r = env.build('FROM base:1\nRUN ["true"]\n', "--check")
    assert r.stdout == "Check complete, no warnings found.\n"


def test_iidfile_holds_the_image_id_and_a_failed_build_leaves_none(env, workdir):
    iid = os.path.join(workdir, "iid")
    env.build("FROM base:1\nRUN echo x > /x\n", "-t", "iid:1", "--iidfile", iid)
    with open(iid) as f:
        assert f.read() == env.image_id("iid:1")
    r = env.build("FROM base:1\nRUN exit 3\n", "--iidfile", iid, ok=False)
    assert r.returncode == 1
    assert not os.path.exists(iid)
    assert [n for n in os.listdir(workdir) if n.startswith("iid")] == []


OUTPUT_DOCKERFILE = "FROM base:1\nRUN echo made > /made && rm -f /bin/true\n"


def test_output_local_writes_the_merged_tree(env, workdir):
    dest = os.path.join(workdir, "out", "tree")
    r = env.build(OUTPUT_DOCKERFILE, "-o", dest)
    assert "writing image sha256:" in r.stdout
    with open(os.path.join(dest, "made")) as f:
        assert f.read() == "made\n"
    assert os.path.exists(os.path.join(dest, "bin", "sh"))
    # What a later layer removed is not there, and no whiteout marks it.
    assert not os.path.lexists(os.path.join(dest, "bin", "true"))
    assert not [n for n in os.listdir(os.path.join(dest, "bin")) if n.startswith(".wh.")]


def test_output_tar_to_a_file_and_to_standard_output(env, workdir):
    dest = os.path.join(workdir, "img.tar")
    env.build(OUTPUT_DOCKERFILE, "--output", f"type=tar,dest={dest}")
    with tarfile.open(dest) as t:
        names = t.getnames()
    assert "made" in names and "bin/sh" in names and "bin/true" not in names
    assert not [n for n in names if ".wh." in n]
    assert [n for n in os.listdir(workdir) if "strata-output" in n] == []
    # A destination that is not a regular file is written through, not replaced.
    env.build(OUTPUT_DOCKERFILE, "--output", "type=tar,dest=/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    # '-': the tar is standard output, the progress goes to standard error.
    r = env.strata("build", "-o", "-", env.ctx, text=False)
    assert r.returncode == 0, r.stderr
    assert b"writing image sha256:" in r.stderr
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        assert t.extractfile("made").read() == b"made\n"


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_output_image_archives_load_into_another_store(env, workdir, kind):
    dest = os.path.join(workdir, f"img-{kind}.tar")
    env.build(OUTPUT_DOCKERFILE, "-t", "archived:1", "--output", f"type={kind},dest={dest}")
    other = os.path.join(workdir, "other-store")
    r = run([tool("strata"), "--root", other, "load", "-i", dest])
    assert r.returncode == 0, r.stderr
    r = run([tool("strata"), "--root", other, "images", "-q", "--no-trunc"])
    assert env.image_id("archived:1") in r.stdout


@pytest.mark.parametrize("spec, message", [
    ("type=registry,dest=x", "type=registry is not supported: tag the image with -t and use 'strata push'"),
    ("type=zip,dest=x", "type must be local, tar, oci or docker"),
    ("type=tar", "dest= is missing"),
    ("type=tar,dest=x,compression=gzip", "unknown key 'compression' (type, dest)"),
    ("type=local,dest=-", "type=local writes a directory, not standard output"),
])
def test_bad_output_specs_are_usage_errors_before_any_step(env, spec, message):
    r = env.build("FROM base:1\nRUN echo should-not-run\n", "--output", spec, ok=False)
    assert r.returncode == 2
    assert r.stderr.strip() == f"strata: build: --output '{spec}': {message}"
    assert "should-not-run" not in r.stdout


def test_no_cache_filter_reruns_only_the_named_stages(env):
    dockerfile = ("FROM base:1 AS deps\nRUN cat /proc/sys/kernel/random/uuid > /stamp\n"
                  "FROM base:1 AS other\nRUN echo fixed > /fixed\n"
                  "FROM base:1\nCOPY --from=deps /stamp /stamp\nCOPY --from=other /fixed /fixed\n")

    def cached_steps(r):
        names = dict(re.findall(r"^#(\d+) \[[^\]]*\] (.*)$", r.stdout, re.M))
        return [names[n] for n in re.findall(r"^#(\d+) CACHED$", r.stdout, re.M)]

    env.build(dockerfile, "-t", "ncf:1")
    first = env.image_id("ncf:1")
    r = env.build(dockerfile, "-t", "ncf:1")
    assert env.image_id("ncf:1") == first
    r = env.build(dockerfile, "-t", "ncf:1", "--no-cache-filter", "DEPS")
    cached = cached_steps(r)
    assert "RUN cat /proc/sys/kernel/random/uuid > /stamp" not in cached
    assert "RUN echo fixed > /fixed" in cached
    assert env.image_id("ncf:1") != first
    r = env.build(dockerfile, "--no-cache-filter", "nosuch", ok=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "strata: build: --no-cache-filter: no stage 'nosuch' in the Dockerfile"


def test_copy_parents_keeps_the_source_paths(env):
    env.write("app/a/one.txt", "one\n")
    env.write("app/b/two.txt", "two\n")
    env.write("app/b/skip.md", "skip\n")
    env.write("other/deep/x.txt", "x\n")
    env.build("FROM base:1 AS files\n"
              "COPY --parents app/*/*.txt /dest/\n"
              "FROM base:1\n"
              "COPY --parents --from=files /dest/./app/a /from-stage/\n"
              "COPY --from=files /dest /plain/\n", "-t", "parents:1")
    mnt = env.mount("parents:1")
    assert read(os.path.join(mnt, "plain/app/a/one.txt")) == "one\n"
    assert read(os.path.join(mnt, "plain/app/b/two.txt")) == "two\n"
    assert not os.path.exists(os.path.join(mnt, "plain/app/b/skip.md"))
    assert read(os.path.join(mnt, "from-stage/app/a/one.txt")) == "one\n"
    assert os.listdir(os.path.join(mnt, "from-stage")) == ["app"]
    env.build("FROM base:1\nCOPY --parents ./app/./b/two.txt /pivot/\nCOPY --parents other /tree\n", "-t", "parents:2")
    mnt = env.mount("parents:2")
    assert read(os.path.join(mnt, "pivot/b/two.txt")) == "two\n"
    assert read(os.path.join(mnt, "tree/other/deep/x.txt")) == "x\n"
    # A pattern before the pivot makes each match a pivot.
    env.write("src/x/lib/l.txt", "l\n")
    env.write("src/y/lib/m.txt", "m\n")
    env.build("FROM base:1\nCOPY --parents src/*/./lib /g/\n", "-t", "parents:3")
    mnt = env.mount("parents:3")
    assert sorted(os.listdir(os.path.join(mnt, "g", "lib"))) == ["l.txt", "m.txt"]
    # The same sources with and without --parents are different steps.
    env.build("FROM base:1\nCOPY app/b/two.txt /out/\n", "-t", "parents:4")
    env.build("FROM base:1\nCOPY --parents app/b/two.txt /out/\n", "-t", "parents:5")
    assert os.listdir(os.path.join(env.mount("parents:4"), "out")) == ["two.txt"]
    assert read(os.path.join(env.mount("parents:5"), "out/app/b/two.txt")) == "two\n"
    # A path out of the context is refused as without --parents.
    r = env.build("FROM base:1\nCOPY --parents ../x /d/\n", ok=False)
    assert r.returncode == 1
    assert "outside the build context" in r.stderr


def test_run_security_insecure_needs_allow_and_gets_every_capability(env):
    dockerfile = ("FROM base:1\n"
                  "RUN grep CapEff /proc/self/status > /default\n"
                  "RUN --security=insecure grep CapEff /proc/self/status > /insecure\n")
    r = env.build(dockerfile, "-t", "insecure:1", ok=False)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(
        "strata: Dockerfile:3:5: RUN --security=insecure is not allowed: give strata build --allow security.insecure")
    assert "insecure:1" not in env.tags()
    r = env.build(dockerfile, "-t", "insecure:1", "--allow", "security.insecure")
    mnt = env.mount("insecure:1")
    cap_sys_admin = 1 << 21
    assert not int(read(os.path.join(mnt, "default")).split()[1], 16) & cap_sys_admin
    assert int(read(os.path.join(mnt, "insecure")).split()[1], 16) & cap_sys_admin
    r = env.build(dockerfile, "--allow", "network.host", ok=False)
    assert r.returncode == 2
    assert r.stderr.strip() == "strata: build: --allow 'network.host': the only entitlement is security.insecure"


def test_iidfile_that_is_not_a_regular_file_is_written_through_not_removed(env):
    r = env.build("FROM base:1\nRUN true\n", "-t", "iidnull:1", "--iidfile", "/dev/null")
    assert r.returncode == 0
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_cache_from_an_image_with_an_inline_cache(env, workdir):
    env.write("a", "one\n")
    dockerfile = ("FROM base:1\nCOPY a /a\nRUN echo ran-first && echo 1 > /b\nENV X=1\n"
                  "RUN echo ran-second && echo 2 > /c\n")
    env.build(dockerfile, "-t", "src:1", "--cache-to", "type=inline")
    archive = os.path.join(workdir, "src.tar")
    r = env.strata("save", "-o", archive, "base:1", "src:1")
    assert r.returncode == 0, r.stderr
    # Another store (another machine) with the same base and the image, not its build cache.
    other = os.path.join(workdir, "other-store")

    def strata_other(*args):
        return run([tool("strata"), "--root", other, *args])
    assert strata_other("load", "-i", archive).returncode == 0
    r = strata_other("build", "--cache-from", "src:1", "-t", "out:1", env.ctx)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(" CACHED\n") == 3 and "ran-" not in command_output(r.stdout), r.stdout
    out_layers = json.loads(strata_other("inspect", "out:1").stdout)[0]["RootFS"]["Layers"]
    assert out_layers == env.config("src:1")["rootfs"]["diff_ids"]
    # The entries were taken into the store's own cache: the next build needs no --cache-from.
    r = strata_other("build", "-t", "out:1", env.ctx)
    assert r.stdout.count(" CACHED\n") == 3, r.stdout
    # A changed source misses from that step on.
    env.write("a", "two\n")
    r = strata_other("build", "--cache-from", "type=registry,ref=src:1", "-t", "out:2", env.ctx)
    assert "ran-first" in command_output(r.stdout) and "CACHED" not in r.stdout
    # Sources that give nothing are warnings; the build goes on.
    r = strata_other("build", "--cache-from", "base:1", "--cache-from", "nosuch:1", "--pull", "never", env.ctx)
    assert r.returncode == 0, r.stderr
    assert "warning: --cache-from 'base:1': the image has no inline cache" in r.stderr
    assert "warning: --cache-from 'nosuch:1':" in r.stderr
    # BUILDKIT_INLINE_CACHE=1 writes it too, and is no unused build argument.
    r = env.build(dockerfile, "--build-arg", "BUILDKIT_INLINE_CACHE=1", "-t", "src:2")
    assert "were not consumed" not in r.stderr
    assert env.config("src:2")["strata.build.cache.v1"]
    for flag, spec, message in [("--cache-to", "type=registry,ref=x", "only type=inline is supported"),
                                ("--cache-from", "type=local,src=/tmp", "only type=registry"),
                                ("--cache-from", "type=registry", "ref= is missing")]:
        r = env.strata("build", flag, spec, env.ctx)
        assert r.returncode == 2 and message in r.stderr, r.stderr
