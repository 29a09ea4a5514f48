"""Volumes: volume create/ls/inspect/rm/prune, -v NAME:/path, -v /path and --mount type=volume on run and
create, the image's VOLUMEs, rm -v, run --rm, system prune --volumes and system df."""
import json
import os
import time

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
    # Without -a only anonymous volumes go (docker 23+): there are none.
    assert ok(store("volume", "prune", "-f")) == "Total reclaimed space: 0B\n"
    assert names(store) == ["kept", "unused"]
    out = ok(store("volume", "prune", "-f", "-a"))
    assert out.startswith("Deleted Volumes:\nunused\n\nTotal reclaimed space: ")
    assert out.splitlines()[-1] != "Total reclaimed space: 0B"
    assert names(store) == ["kept"]
    # Without -f and without a yes, nothing goes.
    ok(store("rm", "keeper"))
    r = store("volume", "prune", "-a", input="n\n")
    assert r.returncode == 1 and names(store) == ["kept"]
    assert ok(store("volume", "prune", "-af")).startswith("Deleted Volumes:\nkept\n")


def test_volume_option_mistakes(store, workdir):
    for spec in ["a/b:/x", "vol:rel", "vol", ":/x", "-x:/x", "vol:/x:rx", "v" * 129 + ":/x"]:
        r = store("run", "--rm", "-v", spec, "base:1", "true")
        assert r.returncode == 125, (spec, r.stderr)
    for m in ["type=volume,src=/abs,dst=/x", "type=volume,src=a/b,dst=/x",
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


ANON_LABEL = "com.docker.volume.anonymous"


def is_hex64(name):
    return len(name) == 64 and all(c in "0123456789abcdef" for c in name)


def volume_mounts(store, container):
    info = json.loads(ok(store("inspect", "--type", "container", container)))[0]
    return {m["Destination"]: m for m in info["Mounts"] if m["Type"] == "volume"}


def data_dir(store, name):
    return os.path.join(store.root, "volumes", name, "_data")


def test_anonymous_volume_from_dash_v(store):
    ok(store("create", "--name", "a", "-v", "/data", "base:1", "sh", "-c", "echo run >> /data/log; cat /data/log"))
    [anon] = names(store)
    assert is_hex64(anon)
    info = json.loads(ok(store("volume", "inspect", anon)))[0]
    assert info["Labels"] == {ANON_LABEL: ""}
    m = volume_mounts(store, "a")["/data"]
    assert m["Name"] == anon and m["RW"] is True and m["Source"].endswith(f"/volumes/{anon}/_data")
    # The same volume on every start.
    assert ok(store("start", "-a", "a")) == "run\n"
    assert ok(store("start", "-a", "a")) == "run\nrun\n"
    # ... and across a stop of a detached run.
    ok(store("run", "-d", "--name", "d", "--mount", "type=volume,dst=/w", "base:1", "sh", "-c",
             "echo up >> /w/log; exec sleep 30"))
    [d_anon] = [n for n in names(store) if n != anon]
    assert volume_mounts(store, "d")["/w"]["Name"] == d_anon
    ok(store("stop", "-t", "1", "d"))
    ok(store("start", "d"))
    ok(store("stop", "-t", "1", "d"))
    assert open(os.path.join(data_dir(store, d_anon), "log")).read() == "up\nup\n"
    # Plain rm keeps the anonymous volume (docker); rm -v removes it.
    ok(store("rm", "a"))
    assert anon in names(store)
    ok(store("rm", "-v", "d"))
    assert names(store) == [anon]
    # rm -v never removes a named volume, and keeps an anonymous one another container uses.
    ok(store("create", "--name", "both", "-v", "named:/n", "-v", "/anon", "base:1", "true"))
    both_anon = volume_mounts(store, "both")["/anon"]["Name"]
    ok(store("create", "--name", "sharer", "-v", f"{both_anon}:/s", "base:1", "true"))
    ok(store("rm", "--volumes", "both"))
    assert sorted(names(store)) == sorted([anon, both_anon, "named"])
    ok(store("create", "--name", "other", "-v", "/o", "base:1", "true"))
    other_anon = volume_mounts(store, "other")["/o"]["Name"]
    ok(store("rm", "-v", "other", "sharer"))
    # sharer named the volume: it is not its anonymous volume.
    assert sorted(names(store)) == sorted([anon, both_anon, "named"])
    assert other_anon not in names(store)


def test_run_rm_removes_anonymous_volumes(store):
    assert ok(store("run", "--rm", "-v", "/data", "-v", "keep:/k", "base:1", "sh", "-c",
                    "echo x > /data/f; echo y > /k/f; echo done")) == "done\n"
    assert names(store) == ["keep"]
    # A run that cannot start is removed with its anonymous volumes as well.
    r = store("run", "-v", "/data", "base:1", "/no/such/command")
    assert r.returncode == 127
    assert names(store) == ["keep"]
    ok(store("run", "-d", "--rm", "-v", "/data", "base:1", "true"))
    for _ in range(100):
        if names(store) == ["keep"] and ok(store("ps", "-a", "-q")) == "":
            break
        time.sleep(0.1)
    assert names(store) == ["keep"]


def make_volume_image(store, tag, volumes, setup="mkdir -p /srv && echo seed > /srv/seed"):
    prep = "prep-" + tag.replace(":", "-")
    ok(store("run", "--name", prep, "base:1", "sh", "-c", setup))
    ok(store("commit", "-c", "VOLUME " + json.dumps(volumes), prep, tag))
    ok(store("rm", prep))


def test_image_volumes_are_anonymous_volumes_filled_from_the_image(store):
    make_volume_image(store, "vol:1", ["/srv", "/empty/"])
    out = ok(store("run", "--name", "iv", "vol:1", "sh", "-c", "cat /srv/seed; ls -A /empty; echo more > /srv/more"))
    assert out == "seed\n"
    mounts = volume_mounts(store, "iv")
    assert sorted(mounts) == ["/empty", "/srv"]
    assert all(is_hex64(m["Name"]) for m in mounts.values())
    srv = mounts["/srv"]["Name"]
    assert sorted(os.listdir(data_dir(store, srv))) == ["more", "seed"]
    for n in names(store):
        assert json.loads(ok(store("volume", "inspect", n)))[0]["Labels"] == {ANON_LABEL: ""}
    # The user's own mounts on those paths win: no anonymous volume for them.
    ok(store("run", "--name", "over", "-v", "mine:/srv", "--tmpfs", "/empty", "vol:1", "true"))
    assert sorted(volume_mounts(store, "over")) == ["/srv"]
    assert volume_mounts(store, "over")["/srv"]["Name"] == "mine"
    assert os.listdir(data_dir(store, "mine")) == ["seed"]
    ok(store("rm", "-v", "iv", "over"))
    assert names(store) == ["mine"]


def test_volume_ls_filters(store):
    ok(store("volume", "create", "--label", "tier=db", "--label", "keep", "alpha"))
    ok(store("volume", "create", "--label", "tier=web", "beta"))
    ok(store("create", "--name", "user", "-v", "beta:/b", "-v", "/anon", "base:1", "true"))
    anon = volume_mounts(store, "user")["/anon"]["Name"]

    def ls(*filters):
        return ok(store("volume", "ls", "-q", *[a for f in filters for a in ("--filter", f)])).split()

    assert ls("dangling=true") == ["alpha"]
    assert ls("dangling=0") == sorted([anon, "beta"])
    assert ls("name=lph") == ["alpha"]
    assert ls("name=alpha", "name=beta") == ["alpha", "beta"]         # one key: any value
    assert ls("name=a", "dangling=false") == sorted([anon, "beta"])   # keys: all of them
    assert ls("label=tier") == ["alpha", "beta"]
    assert ls("label=tier=db") == ["alpha"]
    assert ls("label=tier", "label=keep") == ["alpha"]                 # labels: all of them
    assert ls("label=" + ANON_LABEL) == [anon]
    assert ls("driver=loc") == sorted([anon, "alpha", "beta"])
    assert ls("driver=nfs") == []
    assert ls("dangling=true", "dangling=false") == sorted([anon, "alpha", "beta"])
    table = ok(store("volume", "ls", "-f", "name=beta")).splitlines()
    assert len(table) == 2 and table[1].split() == ["local", "beta"]
    for bad, why in [("colour=red", "unknown --filter key 'colour'"), ("dangling=maybe", "true or false"),
                     ("name", "bad --filter 'name'")]:
        r = store("volume", "ls", "--filter", bad)
        assert r.returncode == 2, bad
        assert why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_prune_and_system_prune_remove_anonymous_volumes(store):
    ok(store("volume", "create", "named"))
    ok(store("run", "--name", "gone", "-v", "/a", "base:1", "sh", "-c", "head -c 50000 /dev/zero > /a/f"))
    gone_anon = volume_mounts(store, "gone")["/a"]["Name"]
    # container prune leaves volumes alone (docker).
    ok(store("container", "prune", "-f"))
    assert ok(store("ps", "-a", "-q")) == ""
    assert names(store) == sorted([gone_anon, "named"])
    # system prune without --volumes keeps them.
    ok(store("system", "prune", "-f"))
    assert names(store) == sorted([gone_anon, "named"])
    # With it, unused anonymous ones go; named ones and those a container uses never do.
    ok(store("run", "-d", "--name", "busy", "-v", "/k", "base:1", "sleep", "30"))
    busy_anon = volume_mounts(store, "busy")["/k"]["Name"]
    out = ok(store("system", "prune", "-f", "-a", "--volumes"))
    lines = out.splitlines()
    assert lines[lines.index("Deleted Volumes:") + 1] == gone_anon
    assert gone_anon not in lines[lines.index("Deleted Volumes:") + 2:]
    assert lines[-1] != "Total reclaimed space: 0B"
    assert names(store) == sorted([busy_anon, "named"])
    assert store("image", "prune", "--volumes").returncode == 2


def test_system_df_counts_volumes(store):
    def df():
        rows = {}
        for line in ok(store("system", "df", "--format", "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Size}}|"
                                                         "{{.Reclaimable}}")).splitlines():
            t, *rest = line.split("|")
            rows[t] = rest
        return rows

    assert df()["Local Volumes"] == ["0", "0", "0B", "0B"]
    ok(store("run", "--rm", "-v", "idle:/d", "base:1", "sh", "-c", "head -c 100000 /dev/zero > /d/f"))
    ok(store("run", "--name", "user", "-v", "/u", "base:1", "sh", "-c", "head -c 300000 /dev/zero > /u/f"))
    assert df()["Local Volumes"] == ["2", "1", "400kB", "100kB (25%)"]
    table = ok(store("system", "df")).splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert [line.split()[0] for line in table[1:]] == ["Images", "Containers", "Local", "Build"]
    assert table[3].split() == ["Local", "Volumes", "2", "1", "400kB", "100kB", "(25%)"]
    j = json.loads(ok(store("system", "df", "--format", "json")))
    assert j["Volumes"] == {"Total": 2, "Active": 1, "Size": 400000, "Reclaimable": 100000}


def test_hostile_anonymous_volume_paths(store):
    for spec in ["/", "//", "/a/..", "/./"]:
        r = store("run", "--rm", "-v", spec, "base:1", "true")
        assert r.returncode == 125 and "root" in r.stderr, (spec, r.stderr)
        r = store("run", "--rm", "--mount", "type=volume,dst=" + spec, "base:1", "true")
        assert r.returncode == 125 and "root" in r.stderr, (spec, r.stderr)
    for spec in ["host:/", "/tmp:/.."]:
        r = store("run", "--rm", "-v", spec, "base:1", "true")
        assert r.returncode == 125 and "root" in r.stderr, (spec, r.stderr)
    r = store("create", "-v", "/", "base:1", "true")
    assert r.returncode == 2 and "root" in r.stderr
    assert names(store) == []
    # `..` is cleaned: the volume is at /b.
    ok(store("create", "--name", "dots", "-v", "/a/../../b/", "base:1", "sh", "-c", "grep -c ' /b ' /proc/self/mountinfo"))
    assert sorted(volume_mounts(store, "dots")) == ["/b"]
    assert ok(store("start", "-a", "dots")) == "1\n"


def test_hostile_image_volumes(store, workdir):
    make_volume_image(store, "rel:1", ["relative/path"])
    r = store("run", "--rm", "rel:1", "true")
    assert r.returncode == 125
    assert "declares the volume 'relative/path', which is not an absolute path" in r.stderr
    make_volume_image(store, "root:1", ["/srv/.."])
    r = store("create", "root:1", "true")
    assert r.returncode == 1 and "declares the volume '/srv/..' over its root" in r.stderr
    many = [f"/v{i}" for i in range(129)]
    make_volume_image(store, "many:1", many)
    r = store("run", "--rm", "many:1", "true")
    assert r.returncode == 125 and "declares 129 volumes (at most 128)" in r.stderr
    assert names(store) == [] and ok(store("ps", "-a", "-q")) == ""
    # `..` cannot climb out of the container: /../../srv is /srv.
    make_volume_image(store, "dots:1", ["/../../srv"])
    assert ok(store("run", "--name", "dots", "dots:1", "cat", "/srv/seed")) == "seed\n"
    assert sorted(volume_mounts(store, "dots")) == ["/srv"]
    # A VOLUME on a symlink that points out of the tree: it resolves inside the container's root.
    outside = os.path.join(workdir, "outside")
    os.mkdir(outside)
    with open(os.path.join(outside, "secret"), "w") as f:
        f.write("host secret\n")
    make_volume_image(store, "trap:1", ["/trap"], f"mkdir -p {outside} && echo inner > {outside}/inner && ln -s {outside} /trap")
    assert ok(store("run", "--name", "trap", "trap:1", "ls", "-A", "/trap")) == "inner\n"
    trap_volume = volume_mounts(store, "trap")["/trap"]["Name"]
    assert os.listdir(data_dir(store, trap_volume)) == ["inner"]
    assert sorted(os.listdir(outside)) == ["secret"]
