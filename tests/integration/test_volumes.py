"""Named volumes: volume create/ls/inspect/rm/prune, -v NAME:/path and --mount type=volume on run and create."""
import json
import os

import pytest

from conftest import base_store, remove_all_containers


def host_mounts_under(path):
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(path)]


@pytest.fixture
def store(workdir, base_tar):
    """A store with base:1; every container is removed and nothing of it may stay mounted."""
    s = base_store(workdir, base_tar)
    try:
        yield s
    finally:
        remove_all_containers(s)
        assert host_mounts_under(s.root) == []


def ok(r):
    assert r.returncode == 0, r.stderr
    return r.stdout


def names(store):
    return ok(store("volume", "ls", "-q")).split()


def test_create_ls_inspect_rm(store):
    assert ok(store("volume", "create", "data")) == "data\n"
    # Creating it again is not an error and keeps it (docker).
    assert ok(store("volume", "create", "data")) == "data\n"
    anon = ok(store("volume", "create")).strip()
    assert len(anon) == 64 and all(c in "0123456789abcdef" for c in anon)
    ok(store("volume", "create", "--label", "team=db", "labelled"))
    assert names(store) == sorted(["data", anon, "labelled"])
    table = ok(store("volume", "ls")).splitlines()
    assert table[0].split() == ["DRIVER", "VOLUME", "NAME"]
    assert "local" in table[1]
    assert "data:local" in ok(store("volume", "ls", "--format", "{{.Name}}:{{.Driver}}")).splitlines()
    listed = json.loads(ok(store("volume", "ls", "--format", "json")))
    assert [v["Name"] for v in listed] == sorted(["data", anon, "labelled"])

    info = json.loads(ok(store("volume", "inspect", "data", "labelled")))
    assert [v["Name"] for v in info] == ["data", "labelled"]
    assert info[0]["Driver"] == "local" and info[0]["Scope"] == "local"
    assert info[0]["Mountpoint"] == os.path.join(os.path.realpath(store.root), "volumes", "data", "_data")
    assert os.path.isdir(info[0]["Mountpoint"])
    assert info[0]["CreatedAt"].startswith("20")
    assert info[1]["Labels"] == {"team": "db"}
    assert ok(store("volume", "inspect", "-f", "{{.Mountpoint}}", "data")).strip() == info[0]["Mountpoint"]

    assert ok(store("volume", "rm", "data", anon)) == f"data\n{anon}\n"
    assert names(store) == ["labelled"]
    assert not os.path.exists(info[0]["Mountpoint"])


def test_missing_and_hostile_names(store):
    r = store("volume", "rm", "nothere")
    assert r.returncode == 1 and "no such volume: 'nothere'" in r.stderr
    r = store("volume", "inspect", "nothere")
    assert r.returncode == 1 and "no such volume" in r.stderr
    for bad in ["a/b", "..", ".", "../x", "-x", "_x", "x" * 129, "a b", "a:b", "/etc"]:
        r = store("volume", "create", "--name=" + bad)
        assert r.returncode == 2, (bad, r.stderr)
        assert "invalid volume name" in r.stderr
    r = store("volume", "create", "--name", "")
    assert r.returncode == 2
    assert names(store) == []
    # Nothing was made beside the volumes directory.
    assert sorted(os.listdir(os.path.join(store.root, "volumes"))) == []
    assert store("volume", "rm", "..").returncode == 1
    assert store("volume", "rm").returncode == 2
    assert store("volume").returncode == 2
    assert store("volume", "frobnicate").returncode == 2
    assert ok(store("volume", "create", "x" * 128)).strip() == "x" * 128


def test_data_outlives_containers_and_is_shared(store):
    ok(store("run", "--rm", "-v", "shared:/data", "base:1", "sh", "-c", "echo one > /data/f"))
    # The volume was created on first use.
    assert names(store) == ["shared"]
    assert ok(store("run", "--rm", "--mount", "type=volume,src=shared,dst=/other", "base:1", "cat", "/other/f")) == "one\n"
    # Two containers on one volume see each other's writes.
    ok(store("create", "--name", "a", "-v", "shared:/data", "base:1", "sh", "-c", "echo from-a >> /data/f"))
    ok(store("run", "--name", "b", "-v", "shared:/data", "base:1", "sh", "-c", "echo from-b >> /data/f"))
    ok(store("start", "-a", "a"))
    assert ok(store("run", "--rm", "-v", "shared:/d:ro", "base:1", "cat", "/d/f")) == "one\nfrom-b\nfrom-a\n"

    info = json.loads(ok(store("inspect", "--type", "container", "a")))[0]
    mounts = [m for m in info["Mounts"] if m["Type"] == "volume"]
    assert len(mounts) == 1
    assert mounts[0]["Name"] == "shared" and mounts[0]["Destination"] == "/data" and mounts[0]["RW"] is True
    assert mounts[0]["Source"].endswith("/volumes/shared/_data")


def test_read_only_volume(store):
    ok(store("volume", "create", "ro"))
    r = store("run", "--rm", "-v", "ro:/data:ro", "base:1", "sh", "-c", "echo x > /data/f && echo wrote")
    assert r.returncode != 0 and "wrote" not in r.stdout
    assert "Read-only file system" in r.stderr
    r = store("run", "--rm", "--mount", "type=volume,source=ro,target=/data,readonly", "base:1",
              "sh", "-c", "mkdir /data/d || echo refused")
    assert r.stdout == "refused\n"
    assert os.listdir(os.path.join(store.root, "volumes", "ro", "_data")) == []


def test_image_content_is_copied_into_a_new_volume(store):
    ok(store("run", "--name", "prep", "base:1", "sh", "-c",
             "mkdir -p /srv/sub && echo seed > /srv/seed && chown 1000:1000 /srv/sub && chmod 0750 /srv/sub && "
             "chmod 0711 /srv && ln -s /etc/passwd /srv/link && ln -s ../../../../../../../etc /srv/up"))
    ok(store("commit", "prep", "seeded:1"))
    out = ok(store("run", "--rm", "-v", "vol:/srv", "seeded:1", "sh", "-c",
                   "cat /srv/seed; stat -c '%u:%g %a' /srv/sub /srv; readlink /srv/link; echo more > /srv/seed"))
    assert out == "seed\n1000:1000 750\n0:0 711\n/etc/passwd\n"
    data = os.path.join(store.root, "volumes", "vol", "_data")
    # Links are copied as links, never followed out of the container.
    assert os.readlink(os.path.join(data, "link")) == "/etc/passwd"
    assert os.readlink(os.path.join(data, "up")) == "../../../../../../../etc"
    # A volume with content is not filled again: the change stays.
    assert ok(store("run", "--rm", "-v", "vol:/srv", "seeded:1", "cat", "/srv/seed")) == "more\n"
    # A path the image does not have gives an empty volume.
    assert ok(store("run", "--rm", "-v", "fresh:/nothere", "seeded:1", "ls", "-A", "/nothere")) == ""


def test_image_symlink_target_resolves_inside_the_container(store, workdir):
    # The image's /trap links to a path that exists on the host too: the copy
    # takes what the container sees there, never the host's directory.
    outside = os.path.join(workdir, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("host secret\n")
    ok(store("run", "--name", "prep", "base:1", "sh", "-c",
             f"mkdir -p {outside} && echo inner > {outside}/inner && ln -s {outside} /trap"))
    ok(store("commit", "prep", "trap:1"))
    r = store("run", "--rm", "-v", "t:/trap", "trap:1", "ls", "-A", "/trap")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "inner\n"
    data = os.path.join(store.root, "volumes", "t", "_data")
    assert os.listdir(data) == ["inner"]
    assert sorted(os.listdir(outside)) == ["secret"]


def test_rm_refuses_a_volume_in_use(store):
    ok(store("create", "--name", "user1", "-v", "busy:/data", "base:1", "true"))
    r = store("volume", "rm", "busy")
    assert r.returncode == 1
    assert "volume 'busy' is in use by container 'user1'" in r.stderr
    assert names(store) == ["busy"]
    # A running user: refused even with -f.
    ok(store("run", "-d", "--name", "runner", "-v", "busy:/data", "base:1", "sleep", "30"))
    r = store("volume", "rm", "-f", "busy")
    assert r.returncode == 1 and "running container 'runner'" in r.stderr
    ok(store("rm", "-f", "runner"))
    # Only a stopped user left: -f removes it; the container gets an empty one back when it starts.
    ok(store("volume", "rm", "-f", "busy"))
    assert names(store) == []
    ok(store("start", "-a", "user1"))
    assert names(store) == ["busy"]


def test_prune_removes_only_unused_volumes(store):
    ok(store("volume", "create", "unused"))
    ok(store("run", "--rm", "-v", "unused:/d", "base:1", "sh", "-c", "head -c 100000 /dev/zero > /d/big"))
    ok(store("create", "--name", "keeper", "-v", "kept:/d", "base:1", "true"))
    out = ok(store("volume", "prune", "-f"))
    assert out.startswith("Deleted Volumes:\nunused\n\nTotal reclaimed space: ")
    assert out.splitlines()[-1] != "Total reclaimed space: 0B"
    assert names(store) == ["kept"]
    # Without -f and without a yes, nothing goes.
    ok(store("rm", "keeper"))
    r = store("volume", "prune", input="n\n")
    assert r.returncode == 1 and names(store) == ["kept"]
    assert ok(store("volume", "prune", "-f")).startswith("Deleted Volumes:\nkept\n")


def test_volume_option_mistakes(store, workdir):
    for spec in ["a/b:/x", "vol:rel", "vol", ":/x", "-x:/x", "vol:/x:rx", "v" * 129 + ":/x"]:
        r = store("run", "--rm", "-v", spec, "base:1", "true")
        assert r.returncode == 125, (spec, r.stderr)
    for m in ["type=volume,src=/abs,dst=/x", "type=volume,dst=/x", "type=volume,src=a/b,dst=/x",
              "type=volume,src=v,dst=rel", "type=volume,src=v,dst=/x,tmpfs-size=1m"]:
        r = store("run", "--rm", "--mount", m, "base:1", "true")
        assert r.returncode == 125, (m, r.stderr)
    assert names(store) == []
    r = store("run", "--rootfs", workdir, "-v", "v:/x", "true")
    assert r.returncode == 125 and "needs an IMAGE" in r.stderr
    # A relative host path starting with '.' is a host path, not a volume.
    host = os.path.join(workdir, "hostdir")
    os.mkdir(host)
    r = store("run", "--rm", "-v", "./hostdir:/h", "base:1", "sh", "-c", "echo hi > /h/f", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert open(os.path.join(host, "f")).read() == "hi\n"
    assert names(store) == []
