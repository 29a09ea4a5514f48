"""strata build: RUN --mount (cache, tmpfs, bind, secret, ssh), --secret and --ssh, seen
as a user sees them: what the command sees, what the image keeps (nothing of
the mounts), what the cache does, and hostile specs.
"""
import json
import os
import re
import subprocess
import time

import pytest

from test_build import Env  # noqa: F401  (the same fixture as test_build.py)
from test_build import command_output, env  # noqa: F401


def tree_has(env, name, path):
    mnt = env.mount(name)
    return os.path.lexists(mnt + path)


def all_layer_bytes(env):
    data = b""
    for top, dirs, files in os.walk(os.path.join(env.root, "layers")):
        for f in files:
            p = os.path.join(top, f)
            if os.path.isfile(p) and not os.path.islink(p):
                with open(p, "rb") as fh:
                    data += fh.read()
    return data


def test_cache_persists_between_builds_and_is_not_in_the_image(env):
    env.build("FROM base:1\nRUN --mount=type=cache,target=/var/cache/app sh -c 'echo one >> /var/cache/app/log'\n",
              "-t", "c:1")
    r = env.build("FROM base:1\nRUN --mount=type=cache,target=/var/cache/app,sharing=locked "
                  "sh -c 'echo two >> /var/cache/app/log; cat /var/cache/app/log'\n", "-t", "c:2")
    assert "one\ntwo" in command_output(r.stdout)
    assert not tree_has(env, "c:2", "/var/cache/app/log")
    assert not tree_has(env, "c:2", "/var/cache/app")  # the mount point is not kept either
    # private: a fresh copy only when the cache is in use; here it is not.
    r = env.build("FROM base:1\nRUN --mount=type=cache,target=/var/cache/app,sharing=private cat /var/cache/app/log\n")
    assert "one\ntwo" in command_output(r.stdout)
    # Cache directories are named by a hash, never by the id.
    names = os.listdir(os.path.join(env.root, "build-cache-mounts"))
    assert names and all(re.fullmatch(r"[0-9a-f]{32}", n) for n in names)
    r = env.strata("builder", "prune", "-f")
    assert r.returncode == 0, r.stderr
    assert os.listdir(os.path.join(env.root, "build-cache-mounts")) == []
    r = env.build("FROM base:1\nRUN --mount=type=cache,target=/var/cache/app ls -A /var/cache/app && echo listed\n")
    assert "log" not in r.stdout and "listed" in r.stdout


def test_hostile_cache_id_and_target_stay_inside(env, workdir):
    escape = os.path.join(workdir, "escape")
    env.build("FROM base:1\n"
              f"RUN ln -s {escape} /link\n"
              "RUN --mount=type=cache,id=../../x,target=/../../etc/c --mount=type=tmpfs,target=/link "
              "sh -c 'echo hi > /link/f && echo x > /etc/c/f'\n", "-t", "h:1")
    assert not os.path.exists(escape)
    assert not os.path.exists(os.path.join(env.root, "x"))
    assert not os.path.exists(os.path.join(workdir, "x"))
    assert all(re.fullmatch(r"[0-9a-f]{32}", n) for n in os.listdir(os.path.join(env.root, "build-cache-mounts")))
    assert not tree_has(env, "h:1", "/etc/c")


def test_tmpfs_is_not_in_the_layer(env):
    env.build("FROM base:1\nRUN --mount=type=tmpfs,target=/scratch,size=1m "
              "sh -c 'echo x > /scratch/f && grep \" /scratch tmpfs\" /proc/mounts && touch /kept'\n", "-t", "t:1")
    assert tree_has(env, "t:1", "/kept")
    assert not tree_has(env, "t:1", "/scratch")


def test_bind_from_context_stage_and_rw_discarded(env):
    env.write("data/hello.txt", "hello from the context\n")
    env.build("FROM base:1 AS first\nRUN echo staged > /s.txt\n"
              "FROM base:1\n"
              "RUN --mount=target=/src,source=data cat /src/hello.txt > /copied\n"
              "RUN --mount=from=first,source=/s.txt,target=/s cat /s > /from-stage\n"
              "RUN --mount=target=/w,rw sh -c 'echo junk > /w/new && rm /w/data/hello.txt'\n"
              "RUN --mount=target=/up,source=../../ ls /up > /listing\n", "-t", "b:1")
    mnt = env.mount("b:1")
    assert open(mnt + "/copied").read() == "hello from the context\n"
    assert open(mnt + "/from-stage").read() == "staged\n"
    assert "Dockerfile" in open(mnt + "/listing").read()  # `..` stops at the context's root
    assert not os.path.lexists(mnt + "/src") and not os.path.lexists(mnt + "/w")
    assert not os.path.exists(os.path.join(env.ctx, "new"))
    assert os.path.exists(os.path.join(env.ctx, "data/hello.txt"))
    # Read-only by default.
    r = env.build("FROM base:1\nRUN --mount=target=/src touch /src/x\n", ok=False)
    assert r.returncode != 0
    assert not os.path.exists(os.path.join(env.ctx, "x"))
    # A symlink in the context cannot lead the source out of it.
    os.symlink("/etc", os.path.join(env.ctx, "esc"))
    r = env.build("FROM base:1\nRUN --mount=target=/p,source=esc/passwd cat /p\n", ok=False)
    assert r.returncode != 0
    assert "root:" not in r.stdout
    # Changing a bound file changes the key.
    env.write("data/hello.txt", "changed\n")
    r = env.build("FROM base:1\nRUN --mount=target=/src,source=data cat /src/hello.txt > /copied\n")
    assert "CACHED" not in r.stdout


def test_secret_from_file_and_env_is_nowhere_in_the_image(env, workdir, monkeypatch):
    monkeypatch.setenv("MY_TOKEN", "from-env")
    secret = os.path.join(workdir, "token")
    with open(secret, "w") as f:
        f.write("s3cret-value")
    dockerfile = ("FROM base:1\n"
                  "RUN --mount=type=secret,id=tok test \"$(cat /run/secrets/tok)\" = s3cret-\"value\" && "
                  "test \"$(stat -c %a /run/secrets/tok)\" = 400 && echo file-ok\n"
                  "RUN --mount=type=secret,id=envtok,env=TOK sh -c 'test \"$TOK\" = from-\"env\" && echo env-ok'\n")
    r = env.build(dockerfile, "--secret", f"id=tok,src={secret}", "--secret", "id=envtok,env=MY_TOKEN", "-t", "s:1")
    assert "file-ok" in r.stdout and "env-ok" in r.stdout
    assert not tree_has(env, "s:1", "/run/secrets")
    for args in (("history", "--no-trunc", "s:1"), ("inspect", "s:1")):
        out = env.strata(*args)
        assert out.returncode == 0, out.stderr
        # The Dockerfile writes the values split by quotes: only a leak shows them whole.
        assert "s3cret-value" not in out.stdout and "from-env" not in out.stdout
    assert "s3cret-value" not in str(env.config("s:1"))
    assert b"s3cret-value" not in all_layer_bytes(env) and b"from-env" not in all_layer_bytes(env)
    # A new value does not invalidate the cache; a new spec does.
    with open(secret, "w") as f:
        f.write("other")
    r = env.build(dockerfile.split("RUN --mount=type=secret,id=envtok")[0], "--secret", f"id=tok,src={secret}")
    assert "CACHED" in r.stdout
    r = env.build("FROM base:1\nRUN --mount=type=secret,id=tok,mode=0440 cat /run/secrets/tok\n",
                  "--secret", f"id=tok,src={secret}")
    assert "CACHED" not in r.stdout and "other" in r.stdout


def test_missing_secrets(env):
    r = env.build("FROM base:1\nRUN --mount=type=secret,id=nope sh -c 'test ! -e /run/secrets/nope && echo skipped'\n")
    assert "skipped" in r.stdout
    r = env.build("FROM base:1\nRUN --mount=type=secret,id=must,required=true true\n", ok=False)
    assert r.returncode != 0
    assert "secret 'must' is required" in r.stderr
    r = env.strata("build", "--secret", "id=x,src=/nonexistent/file", env.ctx)
    assert r.returncode != 0 and "--secret" in r.stderr


def test_planner_errors_name_the_line(env):
    r = env.build("FROM base:1\n\nRUN --mount=type=nfs,target=/x true\n", ok=False)
    assert r.returncode != 0
    assert "Dockerfile:3:" in r.stderr and "unsupported mount type 'nfs'" in r.stderr
    r = env.build("FROM base:1\nRUN --mount=type=cache,target=/x,colour=red true\n", ok=False)
    assert "Dockerfile:2:" in r.stderr and "unexpected key 'colour'" in r.stderr


@pytest.mark.parametrize("spec", ["type=cache,target=/c,id=a", "type=cache,target=/c,id=b"])
def test_mount_spec_is_in_the_cache_key(env, spec):
    env.build(f"FROM base:1\nRUN --mount={spec} true\n")
    r = env.build(f"FROM base:1\nRUN --mount={spec} true\n")
    assert "CACHED" in r.stdout
    r = env.build(f"FROM base:1\nRUN --mount={spec},sharing=locked true\n")
    assert "CACHED" not in r.stdout


# A static client of the ssh agent protocol for the busybox image: asks the
# agent at $SSH_AUTH_SOCK (or ARGV[2]) for its identities and prints their
# comments. "many" first holds 70 connections open (more than the relay
# takes at once), then asks on a fresh one; "change" first asks the agent to
# remove all keys and to lock itself, and prints the answers' types.
AGENT_CLIENT = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
static int dial(const char *path) {
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  strncpy(a.sun_path, path, sizeof a.sun_path - 1);
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) { perror("connect"); exit(1); }
  return fd;
}
static int full(int fd, unsigned char *b, size_t n) {
  while (n > 0) { ssize_t r = read(fd, b, n); if (r <= 0) return -1; b += r; n -= (size_t)r; }
  return 0;
}
static unsigned be32(const unsigned char *p) { return (unsigned)p[0] << 24 | p[1] << 16 | p[2] << 8 | p[3]; }
int main(int argc, char **argv) {
  const char *path = argc > 2 ? argv[2] : getenv("SSH_AUTH_SOCK");
  if (!path) { fprintf(stderr, "no SSH_AUTH_SOCK\n"); return 1; }
  printf("agent at %s\n", path);
  if (argc > 1 && strcmp(argv[1], "many") == 0) {
    int fds[70];
    for (int i = 0; i < 70; ++i) fds[i] = dial(path);
    for (int i = 0; i < 70; ++i) close(fds[i]);
  }
  int fd = dial(path);
  if (argc > 1 && strcmp(argv[1], "change") == 0) {
    /* SSH_AGENTC_REMOVE_ALL_IDENTITIES, then SSH_AGENTC_LOCK with the passphrase "pw", in one write */
    unsigned char msgs[] = {0, 0, 0, 1, 19, 0, 0, 0, 7, 22, 0, 0, 0, 2, 'p', 'w'};
    if (write(fd, msgs, sizeof msgs) != sizeof msgs) return 1;
    for (int i = 0; i < 2; ++i) {
      unsigned char answer[5];
      if (full(fd, answer, 5)) { fprintf(stderr, "no answer\n"); return 1; }
      printf("answer %u\n", answer[4]);
    }
  }
  for (int round = 0; round < 2; ++round) {
    unsigned char req[5] = {0, 0, 0, 1, 11};  /* SSH2_AGENTC_REQUEST_IDENTITIES */
    if (write(fd, req, 5) != 5) { perror("write"); return 1; }
    unsigned char head[4];
    if (full(fd, head, 4)) { fprintf(stderr, "no answer\n"); return 1; }
    unsigned len = be32(head);
    if (len < 5 || len > 1 << 20) return 1;
    unsigned char *msg = malloc(len);
    if (full(fd, msg, len) || msg[0] != 12) { fprintf(stderr, "bad answer\n"); return 1; }
    unsigned n = be32(msg + 1), at = 5;
    printf("identities %u\n", n);
    for (unsigned i = 0; i < n; ++i) {
      at += 4 + be32(msg + at);  /* the key */
      unsigned clen = be32(msg + at);
      printf("comment %.*s\n", (int)clen, (char *)msg + at + 4);
      at += 4 + clen;
    }
    free(msg);
  }
  return 0;
}
"""


@pytest.fixture
def ssh_agent(workdir):
    """A real ssh-agent holding one new key (comment strata-test-key): its socket's path."""
    sock = os.path.join(workdir, "agent.sock")
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", sock], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        key = os.path.join(workdir, "id_test")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "strata-test-key", "-f", key], check=True)
        subprocess.run(["ssh-add", "-q", key], check=True, env={**os.environ, "SSH_AUTH_SOCK": sock},
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield sock
    finally:
        agent.kill()
        agent.wait()


@pytest.fixture
def agent_client(env):
    src = env.write("agentcli.c", AGENT_CLIENT)
    subprocess.run(["gcc", "-static", "-O1", "-o", os.path.join(env.ctx, "agentcli"), src], check=True)
    return "--mount=type=bind,source=agentcli,target=/agentcli"


def test_ssh_mount_reaches_the_agent_and_leaves_nothing(env, ssh_agent, agent_client):
    r = env.build("FROM base:1\n"
                  f"RUN {agent_client} --mount=type=ssh /agentcli\n"
                  f"RUN {agent_client} --mount=type=ssh,id=work,target=/tmp/a.sock,uid=1000,gid=100,mode=0660 "
                  "sh -c 'stat -c \"%u %g %a %F\" /tmp/a.sock; /agentcli'\n"
                  f"RUN {agent_client} --mount=type=ssh,id=work /agentcli many\n"
                  f"RUN {agent_client} --mount=type=ssh /agentcli change\n",
                  "--ssh", f"default={ssh_agent}", "--ssh", f"work={ssh_agent}", "-t", "ssh:1")
    out = command_output(r.stdout)
    assert "agent at /run/buildkit/ssh_agent.0\nidentities 1\ncomment strata-test-key\nidentities 1" in out
    assert "1000 100 660 socket" in out
    assert "agent at /tmp/a.sock\nidentities 1" in out  # SSH_AUTH_SOCK names the first ssh mount
    # Only listing and signing reach the agent: the rest is refused (SSH_AGENT_FAILURE), the agent is unchanged.
    assert "answer 5\nanswer 5\nidentities 1\n" in out, out
    assert out.count("comment strata-test-key") == 8
    listed = subprocess.run(["ssh-add", "-l"], env={**os.environ, "SSH_AUTH_SOCK": ssh_agent},
                            capture_output=True, text=True)
    assert "strata-test-key" in listed.stdout, listed
    for path in ("/run/buildkit", "/tmp/a.sock", "/agentcli"):
        assert not tree_has(env, "ssh:1", path)
    config = json.dumps(env.config("ssh:1"))
    assert "SSH_AUTH_SOCK" not in config and ssh_agent not in config
    assert ssh_agent.encode() not in all_layer_bytes(env)


def test_ssh_mount_without_an_agent_and_bad_specs(env, ssh_agent, monkeypatch):
    r = env.build("FROM base:1\nRUN --mount=type=ssh sh -c 'test ! -e /run/buildkit/ssh_agent.0 && "
                  "echo \"skipped $SSH_AUTH_SOCK\"'\n")
    assert "skipped /run/buildkit/ssh_agent.0" in r.stdout  # as BuildKit: the variable is set all the same
    r = env.build("FROM base:1\nRUN --mount=type=ssh,id=deploy,required=true true\n", ok=False)
    assert r.returncode != 0
    assert "Dockerfile:2:" in r.stderr and "ssh agent 'deploy' is required" in r.stderr
    r = env.build("FROM base:1\nRUN --mount=type=ssh,env=X true\n", ok=False)
    assert "Dockerfile:2:" in r.stderr and "'env' does not apply to type=ssh" in r.stderr
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    for spec, message in [("default", "SSH_AUTH_SOCK is not set"), ("x=/etc/passwd", "key files are not supported"),
                          ("x=/tmp", "is not a socket"), ("x=/nonexistent/agent", "No such file"),
                          ("x=k1,k2", "key files are not supported"), ("=/tmp/s", "no id"),
                          (f"a,b={ssh_agent}", "an id has no ','")]:
        r = env.strata("build", "--ssh", spec, env.ctx)
        assert r.returncode == 2, (spec, r.stderr)
        assert "--ssh" in r.stderr and message in r.stderr, (spec, r.stderr)
    r = env.strata("build", "--ssh", f"x={ssh_agent}", "--ssh", f"x={ssh_agent}", env.ctx)
    assert r.returncode == 2 and "the id 'x' is given twice" in r.stderr, r.stderr
    # Without a path: the agent of SSH_AUTH_SOCK.
    monkeypatch.setenv("SSH_AUTH_SOCK", ssh_agent)
    r = env.build("FROM base:1\nRUN --mount=type=ssh,required test -S \"$SSH_AUTH_SOCK\" && echo agent-there\n",
                  "--ssh", "default")
    assert "agent-there" in r.stdout
