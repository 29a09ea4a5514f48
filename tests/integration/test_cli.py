"""The command line's conventions as a docker or podman user relies on them:
--format templates, --filter, -q and --no-trunc, pipes into load, import and
out of save, tag's refusals, prune verbs, version and info, man pages."""
import json
import os
import pty
import subprocess

import pytest

from conftest import SOURCE_DIR, run, tool
from test_store import Strata


@pytest.fixture
def strata(workdir):
    return Strata(os.path.join(workdir, "store"))


@pytest.fixture
def images(strata, base_tar):
    """Three images: base:1 (labelled, with a CMD) also named other/x:2, then a dangling one, then web:latest."""
    strata("import", "-c", "LABEL tier=base", "-c", 'CMD ["/bin/sh", "-c", "echo a rather long command"]',
           base_tar, "base:1")
    strata("tag", "base:1", "other/x:2")
    strata("import", "-m", "second", base_tar)
    strata("import", "-c", "LABEL tier=web", "-c", "ENV A=1", base_tar, "web:latest")
    return strata


def lines(r):
    return r.stdout.splitlines()


def names(r):
    return sorted(lines(r))


def usage_error(r, *words):
    """R failed as a usage error with one line on stderr that holds WORDS."""
    assert r.returncode == 2, r
    assert r.stdout == ""
    assert len(r.stderr.splitlines()) == 1, r.stderr
    for w in words:
        assert w in r.stderr, r.stderr


# ------------------------------------------------------------------ --format

def test_images_format_fields_json_and_table(images):
    s = images
    assert sorted(lines(s("images", "--format", "{{.Repository}}:{{.Tag}}"))) == [
        "<none>:<none>", "base:1", "other/x:2", "web:latest"]
    ids = {i["Repository"]: i["ID"] for i in s.json("images", "--format", "json")}
    row = json.loads(s("images", "--format", "{{json .}}", "web").stdout)
    assert sorted(row) == ["CreatedAt", "CreatedSince", "Digest", "ID", "Repository", "Size", "Tag"]
    assert ids["web"].startswith("sha256:") and ids["web"][7:19] == row["ID"]
    assert s("images", "--no-trunc", "--format", "{{.ID}}", "web").stdout == ids["web"] + "\n"
    # \t typed in the shell becomes a tab, as docker's CLI does it.
    assert s("images", "--format", r"{{.Repository}}\t{{.Tag}}", "web").stdout == "web\tlatest\n"
    table = lines(s("images", "--format", r"table {{.ID}}\t{{.Repository}}:{{.Tag}}"))
    assert table[0].split() == ["IMAGE", "ID", "REPOSITORY:TAG"]
    assert len(table) == 5
    # The columns line up: each row's second column starts where the heading's does.
    col = table[0].index("REPOSITORY")
    assert all(line[col - 1] == " " and line[col] != " " for line in table)
    # The default table and `--format table` are the same.
    # (headings only: column widths follow CREATED, which changes with the clock)
    assert lines(s("images"))[0].split() == lines(s("images", "--format", "table"))[0].split()
    assert lines(s("images"))[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]


def test_inspect_format_nested_fields_and_json(images):
    s = images
    assert s("inspect", "-f", "{{.Config.Cmd}}", "base:1").stdout == "[/bin/sh -c echo a rather long command]\n"
    assert json.loads(s("inspect", "--format", "{{json .Config.Labels}}", "web").stdout) == {"tier": "web"}
    assert s("inspect", "-f", "{{range .Config.Env}}{{.}};{{end}}", "web").stdout.endswith("A=1;\n")
    assert s("inspect", "-f", '{{index .Config.Labels "tier"}}', "base:1", "web").stdout == "base\nweb\n"
    assert s("inspect", "-f", "{{if .Config.Cmd}}cmd{{else}}none{{end}}", "base:1", "web").stdout == "cmd\nnone\n"
    ctr = s("create", "--name", "box", "web").stdout.strip()
    assert s("inspect", "-f", "{{.Id}} {{.Name}}", "box").stdout == f"{ctr} box\n"
    assert json.loads(s("inspect", "box").stdout)[0]["Id"] == ctr  # the JSON default stays


def test_ps_and_history_format(images):
    s = images
    s("create", "--name", "one", "base:1")
    s("create", "--name", "two", "web")
    assert names(s("ps", "--format", "{{.Names}} {{.Image}} {{.Status}}")) == ["one base:1 Created", "two web Created"]
    assert lines(s("ps"))[0].split()[:4] == ["CONTAINER", "ID", "IMAGE", "COMMAND"]
    # COMMAND is cut to 20 characters, unless --no-trunc.
    assert s("ps", "--format", "{{.Command}}", "-f", "name=one").stdout == '"/bin/sh -c echo a r…"\n'
    assert s("ps", "--no-trunc", "--format", "{{.Command}}", "-f", "name=one").stdout == \
        '"/bin/sh -c echo a rather long command"\n'
    full = [c["ID"] for c in s.json("ps", "--format", "json")]
    assert lines(s("ps", "-q")) == [c[:12] for c in full]
    assert s("inspect", "-f", "[{{.Config.User}}] {{json .Config.Entrypoint}}", "web").stdout == "[] null\n"
    assert lines(s("ps", "-q", "--no-trunc")) == full
    hist = lines(s("history", "--format", "{{.CreatedBy}}|{{.Comment}}", "base:1"))
    assert hist[0].startswith("strata import") and hist[0].endswith("|")
    assert lines(s("history", "--format", "table {{.ID}}\t{{.Size}}", "web"))[0].split() == ["IMAGE", "SIZE"]
    assert lines(s("history", "-q", "web")) == [s("images", "-q", "web").stdout.strip()]


@pytest.mark.parametrize("verb", [["images"], ["ps"], ["history", "web"], ["inspect", "web"], ["diff", "box"]])
def test_format_mistakes_are_one_line_usage_errors(images, verb):
    s = images
    s("create", "--name", "box", "web")
    for template, words in [("{{.Nope}}", ["no field 'Nope'"]),
                            ("{{.ID", ["unclosed action"]),
                            ("{{.ID}", ["unclosed action"]),
                            ("{{if .ID}}x", ["no {{end}}"]),
                            ("{{end}}", ["without a matching"]),
                            ("{{nosuch .ID}}", ["unknown function 'nosuch'"]),
                            ("{{{.ID}}}", ["unexpected"]),
                            ("x" * 70000, ["at most"])]:
        usage_error(s(*verb[:1], "--format", template, *verb[1:], check=False), "--format", *words)


def test_unknown_field_is_refused_even_with_nothing_to_list(strata):
    usage_error(strata("images", "--format", "{{.Repo}}", check=False), "no field 'Repo'", "Repository")
    usage_error(strata("ps", "--format", "table {{.Name}}", check=False), "no field 'Name'", "Names")


def test_template_that_explodes_is_stopped(images):
    t = "{{range $}}" * 30 + "x" + "{{end}}" * 30
    usage_error(images("images", "--format", t, check=False), "too many steps")


# ------------------------------------------------------------------ --filter

def test_images_filters(images):
    s = images
    fmt = ["--format", "{{.Repository}}:{{.Tag}}"]
    assert names(s("images", *fmt, "-f", "dangling=true")) == ["<none>:<none>"]
    assert names(s("images", *fmt, "--filter", "dangling=false")) == ["base:1", "other/x:2", "web:latest"]
    assert names(s("images", *fmt, "-f", "reference=other/*")) == ["other/x:2"]
    assert names(s("images", *fmt, "-f", "reference=*:1", "-f", "reference=web")) == ["base:1", "web:latest"]
    assert names(s("images", *fmt, "-f", "reference=*")) == ["base:1", "web:latest"]  # '*' stops at '/'
    assert names(s("images", *fmt, "-f", "label=tier")) == ["base:1", "other/x:2", "web:latest"]
    assert names(s("images", *fmt, "-f", "label=tier=web")) == ["web:latest"]
    assert names(s("images", *fmt, "-f", "label=nope")) == []
    # before/since compare creation times; imports a second apart are ordered.
    created = {i["Repository"]: i["Created"] for i in s.json("images", "--format", "json")}
    if created["base"] < created["web"]:
        assert "base:1" not in names(s("images", *fmt, "-f", "since=base:1"))
        assert "web:latest" in names(s("images", *fmt, "-f", "since=base:1"))
        assert "web:latest" not in names(s("images", *fmt, "-f", "before=web"))
        assert "base:1" in names(s("images", *fmt, "-f", "before=web"))
    assert lines(s("images", "-q", "-f", "dangling=true")) == \
        [s("images", "--format", "{{.ID}}", "-f", "dangling=true").stdout.strip()]


def test_ps_filters(images):
    s = images
    one = s("create", "--name", "one", "base:1").stdout.strip()
    two = s("create", "--name", "two", "web").stdout.strip()
    fmt = ["--format", "{{.Names}}"]
    assert names(s("ps", *fmt, "-f", "name=on")) == ["one"]
    assert names(s("ps", *fmt, "-f", f"id={two[:8]}")) == ["two"]
    assert names(s("ps", *fmt, "-f", "ancestor=other/x:2")) == ["one"]
    assert names(s("ps", *fmt, "-f", "status=created")) == ["one", "two"]
    assert names(s("ps", *fmt, "-f", "status=running")) == []
    assert names(s("ps", *fmt, "-f", "name=one", "-f", "name=two")) == ["one", "two"]
    assert names(s("ps", *fmt, "-f", "name=one", "-f", f"id={two}")) == []
    assert lines(s("ps", "-q", "--no-trunc", "-f", "name=one")) == [one]


@pytest.mark.parametrize("verb,flt,words", [
    ("images", "nokey", ["bad --filter 'nokey'", "KEY=VALUE"]),
    ("images", "=x", ["bad --filter"]),
    ("images", "color=red", ["unknown --filter key 'color'", "dangling, reference"]),
    ("images", "dangling=maybe", ["true or false"]),
    ("ps", "status=sleeping", ["created, running"]),
    ("ps", "label=a", ["unknown --filter key 'label'", "status, name, id, ancestor"]),
])
def test_bad_filters_are_usage_errors(images, verb, flt, words):
    usage_error(images(verb, "--filter", flt, check=False), *words)


def test_filter_naming_a_missing_image_says_so(images):
    r = images("images", "-f", "since=nosuch:1", check=False)
    assert r.returncode == 1 and "no such image: 'nosuch:1'" in r.stderr


# ------------------------------------------------------------------ tag

def test_tag_refuses_a_digest_as_a_new_name(images):
    s = images
    before = s.index()
    digest = "sha256:" + "a" * 64
    for target in [f"x@{digest}", f"x:1@{digest}"]:
        usage_error(s("tag", "base:1", target, check=False), "holds a digest", "NAME[:TAG]")
    assert s.index() == before
    s("tag", "base:1", "x:1")  # a plain name still works
    assert "x:1" in names(s("images", "--format", "{{.Repository}}:{{.Tag}}"))


# ------------------------------------------------------------------ pipes

def on_a_terminal(cmd, stdin=None):
    """Runs CMD with standard output (and input, unless STDIN) on a pseudo-terminal; returns (rc, stderr)."""
    leader, follower = pty.openpty()
    try:
        r = subprocess.run(cmd, stdin=stdin if stdin is not None else follower, stdout=follower,
                           stderr=subprocess.PIPE, text=True)
    finally:
        os.close(follower)
        os.close(leader)
    return r.returncode, r.stderr


def test_save_to_a_pipe_and_load_from_one(images, workdir):
    s = images
    s2 = Strata(os.path.join(workdir, "store2"))
    saved = subprocess.run([tool("strata"), "--root", s.root, "save", "web", "base:1"], stdout=subprocess.PIPE,
                           check=True).stdout
    r = s2("load", input=saved.decode("latin-1"), encoding="latin-1")
    assert sorted(lines(r)) == ["Loaded image: base:1", "Loaded image: web:latest"]
    assert s2("images", "-q", "--no-trunc", "web").stdout == s("images", "-q", "--no-trunc", "web").stdout
    # A pipe through both, as people write it.
    r = run(["bash", "-o", "pipefail", "-c",
             f"'{tool('strata')}' --root '{s.root}' save --format oci other/x:2 | "
             f"'{tool('strata')}' --root '{s2.root}' load -q"])
    assert r.stdout == ""
    assert "other/x:2" in names(s2("images", "--format", "{{.Repository}}:{{.Tag}}"))


def test_save_refuses_a_terminal_and_load_refuses_a_terminal_or_nothing(images):
    s = images
    rc, err = on_a_terminal([tool("strata"), "--root", s.root, "save", "web"])
    assert rc == 2 and "refusing to write an archive to a terminal" in err and "-o FILE" in err
    rc, err = on_a_terminal([tool("strata"), "--root", s.root, "load"])
    assert rc == 2 and "standard input is a terminal" in err and "-i FILE" in err
    r = s("load", input="", check=False)
    assert r.returncode == 1 and "standard input is empty" in r.stderr
    r = s("load", input="not an archive at all\n", check=False)
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert not [n for n in os.listdir(os.path.join(s.root, "tmp")) if n.startswith("load-")]


def test_import_dash_reads_standard_input(strata, base_tar):
    with open(base_tar, "rb") as f:
        r = subprocess.run([tool("strata"), "--root", strata.root, "import", "-", "piped:1"], stdin=f,
                           capture_output=True, check=True)
    piped = r.stdout.decode().strip()
    assert strata("import", base_tar, "file:1").stdout.strip() != ""
    assert strata.json("inspect", "piped:1")[0]["RootFS"] == strata.json("inspect", "file:1")[0]["RootFS"]
    assert strata("history", "--format", "{{.CreatedBy}}", "piped:1").stdout == "strata import -\n"
    assert strata("images", "-q", "--no-trunc", "piped:1").stdout.strip() == piped
    r = strata("import", "-", input="", check=False)
    assert r.returncode == 1 and "standard input is empty" in r.stderr


# ------------------------------------------------------------------ prune, df, version, info

def image_names(s):
    return names(s("images", "--format", "{{.Repository}}:{{.Tag}}"))


def test_image_prune_removes_dangling_images_and_with_a_all_unused_ones(images):
    s = images
    s("create", "--name", "keep", "web")
    # Without -f it asks; no answer removes nothing and says so.
    r = s("image", "prune", input="", check=False)
    assert r.returncode == 1 and "not confirmed; nothing removed" in r.stderr and "-f" in r.stderr
    assert "<none>:<none>" in image_names(s)
    r = s("image", "prune", input="y\n")
    assert r.stdout.splitlines()[0].startswith("Deleted: sha256:")
    assert r.stdout.splitlines()[-1].startswith("Total reclaimed space: ")
    assert image_names(s) == ["base:1", "other/x:2", "web:latest"]
    s("image", "prune", "-a", "-f")
    assert image_names(s) == ["web:latest"]  # the container's image stays
    assert s.json("inspect", "keep")[0]["Name"] == "keep"


def test_container_and_system_prune(images, workdir, mounts):
    s = images
    s("create", "--name", "stopped", "base:1")
    s("create", "--name", "mounted", "web")
    mnt = os.path.join(workdir, "mnt")
    os.makedirs(mnt)
    mounts.add(mnt)
    s("mount", "mounted", mnt)
    r = s("container", "prune", "-f")
    assert r.stdout.splitlines()[0] == "Deleted Containers:"
    assert "container 'mounted' is mounted; kept" in r.stderr
    assert names(s("ps", "--format", "{{.Names}}")) == ["mounted"]
    s("umount", mnt)
    r = s("system", "prune", "-f", "-a")
    assert "Deleted Containers:" in r.stdout and "Deleted Images:" in r.stdout
    assert image_names(s) == [] and s("ps", "-q").stdout == ""
    assert os.listdir(os.path.join(s.root, "layers")) == []


def test_system_df_counts_images_containers_and_what_is_reclaimable(images):
    s = images
    s("create", "--name", "c", "web")
    table = lines(s("system", "df"))
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    assert table[1].split()[:3] == ["Images", "3", "1"]
    assert table[2].split()[:3] == ["Containers", "1", "0"]
    df = s.json("system", "df", "--format", "json")
    assert df["Images"]["Total"] == 3 and df["Images"]["Size"] > 0 and df["Containers"]["Total"] == 1
    assert lines(s("system", "df", "--format", "{{.Type}}={{.TotalCount}}"))[:2] == ["Images=3", "Containers=1"]


def test_version_and_info(images):
    s = images
    v = s.json("version", "--format", "json")
    assert v["Version"] and v["FuseVersion"].startswith("3.")
    assert s("version", "-f", "{{.Version}}").stdout.strip() == v["Version"]
    info = s.json("info", "--format", "json")
    assert info["StoreRoot"] == s.root and info["Images"] == 3 and info["Containers"] == 0
    assert info["Rootless"] == (os.geteuid() != 0) and info["FreeBytes"] > 0
    text = s("info").stdout
    assert f"Store root:    {s.root}" in text and "Free space:" in text and "libfuse:" in text
    usage_error(s("info", "-f", "{{.Nope}}", check=False), "no field 'Nope'")


def test_group_verbs_name_their_commands(strata):
    usage_error(strata("system", "nope", check=False), "unknown command 'nope'", "df, prune")
    assert strata("image", "--help").stdout.startswith("Usage: strata image COMMAND")
    assert strata("image", "prune", "--help").stdout.startswith("Usage: strata image prune")


def test_help_names_positional_arguments_only_in_the_synopsis(strata):
    # "--source arg" would advertise a spelling of an argument nobody types.
    tag = strata("tag", "--help").stdout
    assert tag.startswith("Usage: strata tag SOURCE_IMAGE TARGET_IMAGE[:TAG]")
    assert "--source" not in tag and "--target" not in tag and "--help" in tag
    cp = strata("cp", "--help").stdout
    assert "--src" not in cp and "--dest" not in cp and "--archive" in cp
    build = strata("build", "--help").stdout
    assert "--context" not in build and "--file" in build


# ------------------------------------------------------------------ man pages

def test_every_verb_has_a_man_page_that_matches_its_help(strata):
    import re
    listing = strata("--help").stdout.split("Commands:")[1]
    verbs = [m.group(1) for m in re.finditer(r"^  (\S+)\s", listing, re.M)]
    assert "images" in verbs and "system" in verbs
    man = os.path.join(SOURCE_DIR, "man")
    with open(os.path.join(man, "meson.build")) as f:
        installed = f.read()
    with open(os.path.join(man, "strata.1")) as f:
        index = f.read()
    for verb in verbs:
        page = os.path.join(man, f"strata-{verb}.1")
        assert os.path.exists(page), verb
        assert f"'strata-{verb}.1'" in installed, verb
        assert f".BR strata-{verb} (1)" in index, verb
        with open(page) as f:
            text = f.read()
        if text.startswith(".so "):
            continue
        # Each long option of --help is on the page.
        if verb in ("image", "container", "system"):
            continue
        for opt in re.findall(r"\[ (--[a-z-]+) \]|^  (--[a-z-]+)", strata(verb, "--help").stdout, re.M):
            name = opt[0] or opt[1]
            if name == "--help":
                continue
            assert name.replace("-", "\\-") in text, (verb, name)


# ------------------------------------------------------------------ shell completion

def bash_complete(script, root, *words):
    """COMPREPLY of the generated bash completion for `strata --root ROOT WORDS...` (the last word is completed)."""
    line = ["strata", "--root", root, *words]
    program = (f"source {script}\n"
               f"COMP_WORDS=({' '.join(repr(w) for w in line)})\n"
               f"COMP_CWORD={len(line) - 1}\n"
               "_strata\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=os.path.dirname(tool("strata")) + ":" + os.environ["PATH"])
    r = run(["bash", "-c", program], env=env)
    return r.stdout.split()


def test_completion_scripts_follow_the_option_tables(strata, base_tar, workdir):
    script = os.path.join(workdir, "strata.bash")
    r = strata("completion", "bash")
    with open(script, "w") as f:
        f.write(r.stdout)
    strata("import", base_tar, "base:1")
    strata("create", "--name", "box", "base:1")
    assert bash_complete(script, strata.root, "ru") == ["run"]
    assert "--read-only" in bash_complete(script, strata.root, "run", "--re")
    assert bash_complete(script, strata.root, "run", "--cap-d") == ["--cap-drop"]
    # Positional arguments are not offered as options.
    assert "--containers" not in bash_complete(script, strata.root, "rm", "--")
    assert "--target" not in bash_complete(script, strata.root, "mount", "--")
    assert "--target" in bash_complete(script, strata.root, "build", "--")
    assert bash_complete(script, strata.root, "rm", "b") == ["box"]
    assert bash_complete(script, strata.root, "rmi", "ba") == ["base:1"]
    # The zsh and fish scripts parse in their shells and name every verb.
    for shell, check in (("zsh", ["zsh", "-n"]), ("fish", ["fish", "--no-execute"])):
        path = os.path.join(workdir, "completion." + shell)
        text = strata("completion", shell).stdout
        with open(path, "w") as f:
            f.write(text)
        run(check + [path])
        assert "cap-drop" in text and "read-only" in text
    r = strata("completion", "tcsh", check=False)
    assert r.returncode == 2 and "unknown shell 'tcsh'" in r.stderr
