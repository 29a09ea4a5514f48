"""The whole workflow as an unprivileged user with a home, XDG directories and a store of its own:
import, build with RUN steps as several users, run, commit, images and rmi; and what the same
user without subordinate ids can do and is told."""
import io
import os
import subprocess
import tarfile

import pytest

from conftest import User, run, tool, user_home_and_base_tar, with_open_fuse, with_open_tun

DOCKERFILE = """\
FROM base:1
RUN touch /by-root && mkdir /shared && chmod 1777 /shared
# busybox has no useradd nor adduser: the user is made by hand, as an image without them would
RUN echo 'builder:x:2000:2000:builder:/home/builder:/bin/sh' >> /etc/passwd \\
 && echo 'builder:x:2000:' >> /etc/group \\
 && mkdir /home/builder && chown builder:builder /home/builder
USER 1000
# Mounts whose points the step must create, and remove again: a cache the step's user owns, and the context.
RUN --mount=type=cache,target=/cache,uid=1000 --mount=type=bind,target=/ctx \
    echo hit >> /cache/n && test -f /ctx/Dockerfile && touch /shared/by-1000 && id > /shared/id-1000
USER builder
RUN touch /shared/by-builder /home/builder/in-home && id > /shared/id-builder
# A system user of gid nogroup (65534, the top of the container's range), as Debian's _apt, which
# apt-get update becomes to write its lists (there is no apt in busybox and no network here: the
# step does what apt-get update does to the files, as that user)
USER root
RUN echo '_apt:x:42:65534::/nonexistent:/bin/false' >> /etc/passwd \
 && mkdir -p /var/lib/apt/lists/partial && chown -R _apt:root /var/lib/apt/lists
USER _apt
RUN echo lists > /var/lib/apt/lists/partial/Release && mv /var/lib/apt/lists/partial/Release /var/lib/apt/lists/ \
 && id > /shared/id-apt
USER root
RUN test ! -e /cache && test ! -e /ctx && stat -c '%n %u:%g' /by-root /shared/by-1000 /shared/by-builder /home/builder/in-home \
    /var/lib/apt/lists/Release > /owners
USER builder
WORKDIR /home/builder
CMD ["sh", "-c", "cat /owners /shared/id-1000 /shared/id-builder /shared/id-apt; id; pwd"]
"""


class Session:
    """USER with HOME, XDG_DATA_HOME (so its default store), XDG_RUNTIME_DIR and XDG_CONFIG_HOME
    of its own under HOME; `sh(script)` runs SCRIPT as the user with $S the strata tool."""

    def __init__(self, user, workdir, home):
        self.user, self.workdir, self.home = user, workdir, home
        self.env = {"HOME": home, "XDG_DATA_HOME": f"{home}/.local/share", "XDG_CONFIG_HOME": f"{home}/.config",
                    "XDG_RUNTIME_DIR": f"{home}/run", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "S": tool("strata")}
        self.sh("mkdir -m 700 -p $XDG_RUNTIME_DIR $XDG_DATA_HOME $XDG_CONFIG_HOME")

    def sh(self, script, timeout=300):
        cmd = ["setpriv", f"--reuid={self.user.uid}", f"--regid={self.user.gid}", "--init-groups", "--reset-env",
               "env", *[f"{k}={v}" for k, v in self.env.items()], "sh", "-c", script]
        return run(with_open_tun(with_open_fuse(cmd, self.workdir)), check=False, timeout=timeout)

    def strata(self, *args, **kw):
        return self.sh('exec "$S" ' + " ".join(shell_quote(a) for a in args), **kw)

    def mounts(self):
        with open("/proc/self/mounts") as f:
            return [line.split()[1] for line in f if line.split()[1].startswith(self.workdir + "/")]


def shell_quote(s):
    return "'" + s.replace("'", "'\\''") + "'"


def new_session(subids, workdir, base_tar):
    """A new user (with or without subordinate ids) and its Session; the user is removed and
    nothing may stay mounted when the test ends."""
    if os.geteuid() != 0:
        pytest.skip("creating a user needs root")
    user = User(f"strwf{os.getpid() % 100000}{'s' if subids else 'n'}", subids)
    user.subids = subids
    try:
        home, tar = user_home_and_base_tar(user, workdir, base_tar)
        s = Session(user, workdir, home)
        s.tar = tar
        yield s
        assert s.mounts() == []
    finally:
        subprocess.run(["pkill", "-9", "-u", user.name], capture_output=True)
        user.remove()


@pytest.fixture
def session(workdir, base_tar):
    """A user with subordinate ids."""
    yield from new_session(True, workdir, base_tar)


@pytest.fixture
def single_id_session(workdir, base_tar):
    """A user without subordinate ids: its containers have only uid and gid 0."""
    yield from new_session(False, workdir, base_tar)


def write_context(session, dockerfile):
    ctx = os.path.join(session.home, "ctx")
    os.makedirs(ctx, exist_ok=True)
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(dockerfile)
    os.chown(ctx, session.user.uid, session.user.gid)
    return ctx


def test_import_build_run_commit_images_rmi(session):
    r = session.strata("import", session.tar, "base:1")
    assert r.returncode == 0, r.stderr
    # The store is the user's own, where XDG_DATA_HOME says.
    assert os.path.isdir(os.path.join(session.home, ".local/share/strata"))
    assert os.stat(os.path.join(session.home, ".local/share/strata")).st_uid == session.user.uid
    ctx = write_context(session, DOCKERFILE)
    r = session.strata("build", "-t", "img:1", ctx)
    assert r.returncode == 0, r.stdout + r.stderr

    r = session.strata("run", "--rm", "img:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "/by-root 0:0",
        "/shared/by-1000 1000:1000",
        "/shared/by-builder 2000:2000",
        "/home/builder/in-home 2000:2000",
        "/var/lib/apt/lists/Release 42:65534",
        "uid=1000(app) gid=1000(app)",
        "uid=2000(builder) gid=2000(builder)",
        "uid=42(_apt) gid=65534(nogroup)",
        "uid=2000(builder) gid=2000(builder)",
        "/home/builder",
    ]

    # A changed container, committed: its owners survive.
    r = session.strata("run", "--name", "c1", "-u", "root", "img:1", "sh", "-c",
                       "echo changed > /shared/new && chown 1000:2000 /shared/new && rm /by-root")
    assert r.returncode == 0, r.stderr
    r = session.strata("commit", "c1", "img:2")
    assert r.returncode == 0, r.stderr
    r = session.strata("run", "--rm", "img:2", "sh", "-c",
                       "stat -c '%n %u:%g' /shared/new /shared/by-builder; cat /shared/new; ls /by-root")
    assert r.stdout.splitlines() == ["/shared/new 1000:2000", "/shared/by-builder 2000:2000", "changed"], r.stderr
    assert "/by-root" in r.stderr

    r = session.strata("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert r.returncode == 0, r.stderr
    assert sorted(r.stdout.split()) == ["base:1", "img:1", "img:2"]
    r = session.strata("rmi", "img:2")
    assert r.returncode != 0 and "c1" in r.stderr or r.returncode == 0, r.stderr
    assert session.strata("rm", "c1").returncode == 0
    r = session.strata("rmi", "img:2")
    assert r.returncode == 0, r.stderr
    assert sorted(session.strata("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()) == [
        "base:1", "img:1"]
    # Nothing in the user's store belongs to anyone outside the user's own ids.
    for top, dirs, files in os.walk(os.path.join(session.home, ".local/share/strata")):
        for name in dirs + files:
            uid = os.lstat(os.path.join(top, name)).st_uid
            assert uid == session.user.uid or 400000 <= uid < 465536, os.path.join(top, name)


def single_owner_then(session, dockerfile):
    r = session.strata("import", session.tar, "base:1")
    assert r.returncode == 0, r.stderr
    ctx = write_context(session, dockerfile)
    return session.strata("build", "-t", "img:1", ctx)


@pytest.mark.parametrize("subids", [True, False], ids=["subuid", "single-id"])
def test_copy_add_workdir_and_heredocs_give_files_to_the_containers_root(subids, workdir, base_tar):
    for session in new_session(subids, workdir, base_tar):
        assert session.strata("import", session.tar, "base:1").returncode == 0
        ctx = write_context(session, "FROM base:1\n"
                                     "COPY app.txt /app/\n"
                                     "COPY <<EOF /inline.txt\ninline\nEOF\n"
                                     "WORKDIR /work\n"
                                     "RUN <<EOF\nstat -c '%n %u:%g' /app /app/app.txt /inline.txt /work > /owners\nEOF\n"
                                     "CMD [\"cat\", \"/owners\", \"/app/app.txt\"]\n")
        with open(os.path.join(ctx, "app.txt"), "w") as f:
            f.write("from the context\n")
        os.chown(os.path.join(ctx, "app.txt"), session.user.uid, session.user.gid)
        r = session.strata("build", "-t", "copy:1", ctx)
        assert r.returncode == 0, r.stdout + r.stderr
        r = session.strata("run", "--rm", "--network", "none", "copy:1")
        assert r.returncode == 0, r.stderr
        assert r.stdout == "/app 0:0\n/app/app.txt 0:0\n/inline.txt 0:0\n/work 0:0\nfrom the context\n"
        # Giving a copied file to another of the image's users is one clear line.
        ctx = write_context(session, "FROM base:1\nCOPY --chown=1000:1000 app.txt /app/\n")
        r = session.strata("build", "-t", "copy:2", ctx)
        assert r.returncode == 1
        errors = [line for line in r.stderr.splitlines() if line.startswith("strata: ")]
        assert len(errors) == 1 and "an unprivileged build can give copied files only to the container's root" in errors[0]


def test_without_subordinate_ids_an_image_of_one_owner_works(single_id_session):
    session = single_id_session
    r = single_owner_then(session, "FROM base:1\nRUN echo made > /made && id -u > /id\nCMD [\"cat\", \"/made\", \"/id\"]\n")
    assert r.returncode == 0, r.stdout + r.stderr
    r = session.strata("run", "--rm", "img:1")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "made\n0\n"
    r = session.strata("run", "--name", "c1", "img:1", "sh", "-c", "echo more >> /made")
    assert r.returncode == 0, r.stderr
    assert session.strata("commit", "c1", "img:2").returncode == 0
    assert session.strata("run", "--rm", "img:2").stdout == "made\nmore\n0\n"


def test_without_subordinate_ids_another_user_is_one_clear_line(single_id_session):
    session = single_id_session
    r = single_owner_then(session, "FROM base:1\nUSER 1000\nRUN true\n")
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("strata: ") and "warning" not in line]
    assert "/etc/subuid" in errors[0] and "newuidmap" in errors[0], r.stderr
    assert len(errors) == 1 and "id 1000 is not mapped in the container's user namespace" in errors[0], r.stderr


def test_without_subordinate_ids_a_chown_is_refused_and_the_warning_says_why(single_id_session):
    session = single_id_session
    r = single_owner_then(session, "FROM base:1\nRUN chown 1000 /home/app\n")
    assert r.returncode != 0
    warnings = [line for line in r.stderr.splitlines() if line.startswith("strata: warning: ")]
    assert len(warnings) == 1, r.stderr
    assert "/etc/subuid" in warnings[0] and "newuidmap" in warnings[0], r.stderr


def test_without_subordinate_ids_an_image_with_other_owners_is_one_clear_line(single_id_session):
    session = single_id_session
    tar = os.path.join(session.home, "owned.tar")
    with tarfile.open(session.tar) as src, tarfile.open(tar, "w") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m) if m.isfile() else None)
        info = tarfile.TarInfo("home/app/file")
        info.uid = info.gid = 1000
        info.size = 3
        dst.addfile(info, io.BytesIO(b"hi\n"))
    os.chmod(tar, 0o644)
    r = session.strata("import", tar, "owned:1")
    if r.returncode == 0:
        r = session.strata("run", "--rm", "owned:1", "cat", "/home/app/file")
    if r.returncode != 0:
        lines = [line for line in r.stderr.splitlines() if line.startswith("strata:")]
        assert len(lines) == 1 and "/etc/subuid" in lines[0] and "newuidmap" in lines[0], r.stderr
    else:
        assert r.stdout == "hi\n"
