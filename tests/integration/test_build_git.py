"""ADD of a git repository: real repositories served on loopback by
`git daemon` (git://) and by a plain http server (git's dumb http), fetched by
`strata build` and read back through a mount of the image, as a user would.
The hostile cases check that nothing a URL or a repository says reaches
outside the build: option-like refs, `..` in the directory, symlinks out of
the repository, submodules pointing at the host's files.
"""
import contextlib
import os
import socket
import stat
import subprocess
import time

import pytest

from conftest import run, tool
from test_build import Env  # noqa: F401  (the same fixture as test_build.py)
from test_build import env, read, serving_directory  # noqa: F401

GIT_ENV = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": "/dev/null",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(*args, cwd=None):
    r = subprocess.run(["git", *args], cwd=cwd, env=GIT_ENV, capture_output=True, text=True)
    assert r.returncode == 0, f"git {' '.join(args)}: {r.stderr}"
    return r.stdout.strip()


class Repo:
    """A work tree and the bare repository served from it."""

    def __init__(self, top, name):
        self.work = os.path.join(top, "work-" + name)
        self.bare = os.path.join(top, "served", name + ".git")
        os.makedirs(self.work)
        git("init", "-q", "-b", "main", self.work)

    def write(self, rel, data, mode=0o644):
        path = os.path.join(self.work, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(data)
        os.chmod(path, mode)

    def commit(self, message):
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def publish(self):
        """(Re)writes the bare copy the servers serve, with dumb-http info."""
        if not os.path.exists(self.bare):
            git("clone", "-q", "--bare", self.work, self.bare)
        else:
            git("push", "-q", "--force", "--all", self.bare, cwd=self.work)
            git("push", "-q", "--force", "--tags", self.bare, cwd=self.work)
        git("update-server-info", cwd=self.bare)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def git_daemon(base):
    port = free_port()
    proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={base}",
                             "--listen=127.0.0.1", f"--port={port}", base],
                            env=GIT_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield f"git://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def served(workdir):
    """A repository `app` (main: two commits, an annotated tag v1 on the
    first, a branch dev) served by git daemon; yields (repo, git URL base)."""
    top = os.path.join(workdir, "git")
    repo = Repo(top, "app")
    repo.write("README", "one\n")
    repo.write("src/main.c", "int main(void) { return 0; }\n")
    repo.write("src/lib/util.h", "#define UTIL 1\n")
    repo.write("run.sh", "#!/bin/sh\necho run\n", 0o755)
    os.symlink("src/main.c", os.path.join(repo.work, "link"))
    repo.first = repo.commit("one")
    git("tag", "-a", "v1", "-m", "release 1", cwd=repo.work)
    repo.write("README", "two\n")
    repo.second = repo.commit("two")
    git("checkout", "-q", "-b", "dev", cwd=repo.work)
    repo.write("devonly", "dev\n")
    repo.dev = repo.commit("dev")
    git("checkout", "-q", "main", cwd=repo.work)
    repo.publish()
    with git_daemon(os.path.join(top, "served")) as url:
        yield repo, url


def listing(root):
    """{relative path: (kind, mode, uid, gid, content or link target)} below ROOT."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                body = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                body = ("dir", None)
            else:
                with open(p) as f:
                    body = ("file", f.read())
            out[rel] = (*body, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out


def test_add_git_repository_branch_tag_commit_and_directory(env, served):
    repo, url = served
    r = env.build("FROM base:1\n"
                  f"ADD {url}/app.git /src\n"
                  f"ADD {url}/app.git#v1 /tagged/\n"
                  f"ADD {url}/app.git#dev:src /devsrc\n"
                  f"ADD {url}/app.git#{repo.first} /bycommit\n"
                  f"ADD {url}/app.git##ref=main,subdir=src/lib /lib\n"
                  f"ADD --chown=1000:1000 --chmod=0750 {url}/app.git#main:run.sh /bin/app-run\n",
                  "--progress=plain", "-t", "git:1")
    assert f"fetching {url}/app.git at {repo.second}" in r.stdout
    mnt = env.mount("git:1")
    src = listing(f"{mnt}/src")
    # the tree at main's tip, as git checks it out, owned by root, no .git
    assert src == {
        "README": ("file", "two\n", 0o644, 0, 0),
        "link": ("link", "src/main.c", 0o777, 0, 0),
        "run.sh": ("file", "#!/bin/sh\necho run\n", 0o755, 0, 0),
        "src": ("dir", None, 0o755, 0, 0),
        "src/main.c": ("file", "int main(void) { return 0; }\n", 0o644, 0, 0),
        "src/lib": ("dir", None, 0o755, 0, 0),
        "src/lib/util.h": ("file", "#define UTIL 1\n", 0o644, 0, 0),
    }
    assert read(f"{mnt}/tagged/README") == "one\n"  # the annotated tag, peeled to its commit
    assert sorted(os.listdir(f"{mnt}/devsrc")) == ["lib", "main.c"]
    assert read(f"{mnt}/bycommit/README") == "one\n"
    assert os.listdir(f"{mnt}/lib") == ["util.h"]
    st = os.stat(f"{mnt}/bin/app-run")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o750, 1000, 1000)
    assert not os.path.exists(f"{mnt}/bycommit/.git")
    hist = env.strata("history", "--no-trunc", "--format", "{{.CreatedBy}}", "git:1").stdout
    assert f"ADD {url}/app.git#dev:src /devsrc # buildkit" in hist


def test_add_git_keep_git_dir_is_a_usable_repository(env, served):
    repo, url = served
    env.build(f"FROM base:1\nADD --keep-git-dir {url}/app.git#dev /repo\n", "-t", "keep:1")
    mnt = env.mount("keep:1")
    assert git("--git-dir", f"{mnt}/repo/.git", "rev-parse", "HEAD") == repo.dev
    assert read(f"{mnt}/repo/devonly") == "dev\n"
    # the same ADD without the flag is another step: no cache hit across them
    r = env.build(f"FROM base:1\nADD {url}/app.git#dev /repo\n", "--progress=plain", "-t", "nokeep:1")
    assert "CACHED" not in r.stdout
    assert not os.path.exists(f"{env.mount('nokeep:1')}/repo/.git")


def test_add_git_cache_follows_the_commit(env, served):
    repo, url = served
    df = f"FROM base:1\nADD {url}/app.git#main /src\n"
    env.build(df, "-t", "c:1")
    r = env.build(df, "--progress=plain", "-t", "c:2")
    assert "CACHED" in r.stdout and "fetching" not in r.stdout
    assert env.image_id("c:1") == env.image_id("c:2")
    # a new commit on the branch: the step runs again and sees it
    repo.write("README", "three\n")
    repo.commit("three")
    repo.publish()
    r = env.build(df, "--progress=plain", "-t", "c:3")
    assert "CACHED" not in r.stdout
    assert read(f"{env.mount('c:3')}/src/README") == "three\n"


def test_add_git_over_dumb_http_and_checksum(env, served, workdir):
    repo, _ = served
    with serving_directory(os.path.dirname(repo.bare)) as base:  # git's dumb http
        env.build(f"FROM base:1\nADD --checksum={repo.first} {base}/app.git#v1 /v1\n", "-t", "http:1")
        assert read(f"{env.mount('http:1')}/v1/README") == "one\n"
        r = env.build(f"FROM base:1\nADD --checksum={repo.second} {base}/app.git#v1 /v1\n", "-t", "bad:1", ok=False)
        assert r.returncode == 1
        assert f"is at commit {repo.first}, not {repo.second}" in r.stderr
        assert r.stderr.count("\n") <= 2, r.stderr
    # an http URL whose path does not end in .git is a plain download, not a repository
    r = env.build("FROM base:1\nADD --checksum=sha256:" + "0" * 64 + " http://127.0.0.1:1/app.git/x /x\n", "-t", "bad:2",
                  ok=False)
    assert r.returncode == 1 and "git repository" not in r.stderr


@pytest.mark.parametrize("src, message", [
    ("#--upload-pack=touch${IFS}/tmp/strata-pwned", "is not a branch, tag or commit name"),
    ("#main:../../etc", "leads out of the repository"),
    ("#main~1", "is not a branch, tag or commit name"),
    ("##ref=main,path=x", "unknown key"),
    ("##commit=abc", "is not a full commit id"),
])
def test_add_git_refuses_unsafe_urls_before_running_git(env, served, src, message):
    _, url = served
    r = env.build(f"FROM base:1\nADD {url}/app.git{src} /x\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert message in r.stderr
    assert "Dockerfile:2" in r.stderr
    assert not os.path.exists("/tmp/strata-pwned")


def test_add_option_like_scp_url_is_not_handed_to_git(env):
    r = env.build("FROM base:1\nADD -oProxyCommand=touch${IFS}/tmp/strata-pwned@host:x.git /x\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert not os.path.exists("/tmp/strata-pwned")


def test_add_git_symlink_directory_stays_inside_the_repository(env, served):
    repo, url = served
    os.symlink("/etc", os.path.join(repo.work, "hostetc"))
    os.symlink("../../../../../../etc", os.path.join(repo.work, "upetc"))
    repo.commit("links out")
    repo.publish()
    for sub in ("hostetc", "upetc"):
        r = env.build(f"FROM base:1\nADD {url}/app.git#main:{sub} /x\n", "-t", "bad:1", ok=False)
        assert r.returncode == 1
        assert f"has no '{sub}' inside it" in r.stderr
    # the links themselves are copied as links
    env.build(f"FROM base:1\nADD {url}/app.git /r\n", "-t", "links:1")
    assert os.readlink(f"{env.mount('links:1')}/r/hostetc") == "/etc"


def test_add_git_submodule_cannot_read_host_files(env, served, workdir):
    repo, url = served
    secret = os.path.join(workdir, "host-secret")
    os.makedirs(secret)
    git("init", "-q", "-b", "main", secret)
    with open(os.path.join(secret, "key"), "w") as f:
        f.write("host only\n")
    git("add", "-A", cwd=secret)
    git("commit", "-q", "-m", "s", cwd=secret)
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"file://{secret}", "sub", cwd=repo.work)
    repo.commit("with a submodule on the host")
    repo.publish()
    r = env.build(f"FROM base:1\nADD {url}/app.git /r\n", "-t", "sub:1", ok=False)
    assert r.returncode == 1
    assert "cannot fetch the submodules of" in r.stderr
    assert "transport 'file' not allowed" in r.stderr
    assert "host only" not in r.stderr


def test_add_git_submodule_over_the_network(env, served, workdir):
    repo, url = served
    lib = Repo(os.path.join(workdir, "git"), "lib")
    lib.write("lib.txt", "library\n")
    lib.commit("lib")
    lib.publish()
    git("-c", "protocol.file.allow=always", "submodule", "add", "-q", f"{url}/lib.git", "vendor/lib", cwd=repo.work)
    repo.commit("vendor lib")
    repo.publish()
    env.build(f"FROM base:1\nADD {url}/app.git /r\n", "-t", "sub:1")
    mnt = env.mount("sub:1")
    assert read(f"{mnt}/r/vendor/lib/lib.txt") == "library\n"
    assert not os.path.exists(f"{mnt}/r/vendor/lib/.git")
    assert not os.path.exists(f"{mnt}/r/.git")


def test_add_git_errors_name_the_repository(env, served):
    _, url = served
    r = env.build(f"FROM base:1\nADD {url}/app.git#nosuch /x\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert f"git repository '{url}/app.git' has no branch or tag 'nosuch'" in r.stderr
    port = free_port()
    r = env.build(f"FROM base:1\nADD http://user:hunter2@127.0.0.1:{port}/app.git /x\n", "-t", "bad:2", ok=False)
    assert r.returncode == 1
    assert f"cannot list the refs of 'http://user:xxxxx@127.0.0.1:{port}/app.git'" in r.stderr
    # the password shows only where the error quotes the Dockerfile's own line
    assert "hunter2" not in r.stderr.replace(f"'ADD http://user:hunter2@127.0.0.1:{port}/app.git /x'", "")
    assert "hunter2" not in r.stdout
    r = env.build(f"FROM base:1\nADD git://user:hunter2@127.0.0.1:{port}/app.git /x\n", "-t", "bad:2", ok=False)
    assert r.returncode == 1
    assert "hunter2" not in r.stderr.replace(f"'ADD git://user:hunter2@127.0.0.1:{port}/app.git /x'", "")
    missing = "0" * 40
    r = env.build(f"FROM base:1\nADD {url}/app.git#{missing} /x\n", "-t", "bad:3", ok=False)
    assert r.returncode == 1
    assert f"has no commit {missing}" in r.stderr
    # nothing half-built: no image, and the store's temporary area is empty again
    assert {"bad:1", "bad:2", "bad:3"}.isdisjoint(env.tags())
    assert os.listdir(os.path.join(env.root, "tmp")) == []


def test_copy_of_a_git_url_is_not_a_repository(env, served):
    _, url = served
    r = env.build(f"FROM base:1\nCOPY {url}/app.git /x\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert "COPY cannot copy from a URL; use ADD" in r.stderr or "file not found in build context" in r.stderr


def test_add_git_password_stays_out_of_the_image(env, served, workdir):
    repo, url = served
    with serving_directory(os.path.dirname(repo.bare)) as base:
        authed = base.replace("http://", "http://bob:S3cretPW@")
        r = env.build(f"FROM base:1\nADD --keep-git-dir {authed}/app.git#main /src\n", "--progress=plain", "-t", "pw:1")
        assert r.returncode == 0
    assert "S3cretPW" not in r.stdout + r.stderr
    hist = env.strata("history", "--no-trunc", "--format", "{{.CreatedBy}}", "pw:1").stdout
    assert "S3cretPW" not in hist and "bob:xxxxx@" in hist
    mnt = env.mount("pw:1")
    assert "S3cretPW" not in read(f"{mnt}/src/.git/config")


def test_add_git_ignores_the_repository_strata_runs_in(env, served, workdir):
    """A .git where strata is started (a project's own, or one a tarball brought) lends
    nothing to the fetch: not its credential helper, not its insteadOf."""
    repo, url = served
    cwd = os.path.join(workdir, "evil-cwd")
    os.makedirs(cwd)
    git("init", "-q", cwd)
    marker = os.path.join(workdir, "helper-ran")
    git("config", "credential.helper", f"!f(){{ touch {marker}; echo username=x; echo password=y; }}; f", cwd=cwd)
    git("config", f"url.{url}/nosuch.git.insteadOf", f"{url}/app.git", cwd=cwd)
    env.write("Dockerfile", f"FROM base:1\nADD {url}/app.git /src\n")
    r = run([tool("strata"), "--root", env.root, "build", "-t", "cwd:1", env.ctx], check=False, cwd=cwd)
    assert r.returncode == 0, r.stderr
    assert read(f"{env.mount('cwd:1')}/src/README") == "two\n"
    assert not os.path.exists(marker)


def test_add_git_tree_id_is_not_a_commit(env, served):
    repo, url = served
    tree = git("rev-parse", "HEAD^{tree}", cwd=repo.work)
    r = env.build(f"FROM base:1\nADD {url}/app.git#{tree} /x\n", "-t", "bad:1", ok=False)
    assert r.returncode == 1
    assert f"{tree} is not a commit" in r.stderr
    env.build(f"FROM base:1\nADD {url}/app.git#HEAD /head\n", "-t", "head:1")
    assert read(f"{env.mount('head:1')}/head/README") == "two\n"
