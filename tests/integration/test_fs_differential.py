"""Read-only stacks: the union under test shows exactly what kernel overlayfs shows.

Each stack is built twice from one description: for the implementation under
test with whiteouts and opaque dirs in the format each entry names (OCI
`.wh.` files, 0/0 devices, trusted. or user.overlay.opaque), and for the
kernel with every marker converted to overlayfs's own. Both are mounted and
their trees compared entry by entry (names, types, modes, owners, sizes,
nanosecond mtimes, content hashes, link targets, device numbers, xattrs,
st_blocks, hardlink groups). On the FUSE side readdir's d_ino must equal
stat's st_ino, and inode numbers must survive a remount.

CI uses fixed seeds; STRATA_TEST_SEED=N (or =random) runs the random stacks
from that seed instead, STRATA_TEST_ROUNDS=N runs N of them. STRATA_FS_UNDER_TEST=/usr/bin/fuse-overlayfs tests
another implementation with the same command line.
"""
import errno
import os
import random
import shutil
import subprocess
import tempfile

import pytest

from fsdiff import (rounds, Entry, HangGuard, all_paths, assert_same_tree, build_stack, chosen_seed, fs_label,
                    mount_fuse, mount_kernel, oci_marker_paths, random_stack, snapshot, umount_now,
                    PRIVATE_XATTR_PREFIXES)

GiB = 1 << 30
T = 1_700_000_000_000_000_000  # base of the nanosecond mtimes below


def deep_dirs():
    """Directory path of 15 components of 250 bytes (3,765 bytes)."""
    return "/".join(f"{i:02d}" + "d" * 248 for i in range(15))


def handwritten_layers():
    """One stack for every rule of the merged view, topmost layer first."""
    odd = ["new\nline", os.fsdecode(b"non-utf8-\xff\xfe\x80"), "n" * 255, " lead space", "-dash",
           ".hidden", "\u00fcn\u00ef\u00e7\u00f8d\u00e9", "tab\there", "back\\slash", ".wh", ".whiteout-lookalike"]
    bottom = [
        Entry("file_over_dir", "dir", 0o755, mtime_ns=T + 1),
        Entry("file_over_dir/inner", "file", data=b"hidden by a file above"),
        Entry("dir_over_file", "file", data=b"bottom file"),
        Entry("sym_over_file", "file", data=b"bottom"),
        Entry("fifo_over_dir", "dir", 0o755),
        Entry("fifo_over_dir/child", "file", data=b"hidden"),
        Entry("wh_oci_file", "file", data=b"whited out by an OCI marker"),
        Entry("wh_chr_dir", "dir", 0o755),
        Entry("wh_chr_dir/x", "file", data=b"gone with its dir"),
        Entry("opq_oci", "dir", 0o755),
        Entry("opq_oci/old1", "file", data=b"old"),
        Entry("opq_oci/old2", "dir", 0o755),
        Entry("opq_trusted", "dir", 0o755),
        Entry("opq_trusted/old1", "file", data=b"old"),
        Entry("opq_user", "dir", 0o755),
        Entry("opq_user/old1", "file", data=b"old"),
        Entry("opq_user/sub", "dir", 0o755),
        Entry("opq_user/sub/deep", "file", data=b"old"),
        Entry("opq_over_file", "file", data=b"a file below an opaque dir"),
        Entry("merged", "dir", 0o700, uid=7, gid=8, mtime_ns=T + 2),
        Entry("merged/bottom_only", "file", data=b"bottom only"),
        Entry("merged/gone", "file", data=b"whited out above"),
        Entry("merged/shadow", "file", data=b"bottom version"),
        Entry("merged/nested", "dir", 0o755),
        Entry("merged/nested/b", "file", data=b"nested bottom"),
        Entry("re", "dir", 0o755),
        Entry("re/x", "file", data=b"bottom x"),
        Entry("hl", "dir", 0o755),
        Entry("hl/a", "file", 0o640, 1000, 1000, data=b"linked in the bottom layer", xattrs={"user.hl": b"1"}),
        Entry("hl/b", "hardlink", target="hl/a"),
        Entry("hl/c", "hardlink", target="hl/a"),
        Entry("ghost_below", "whiteout", marker="chr"),  # a marker in the lowest layer hides nothing
        Entry("lower_oci_marker_only", "whiteout", marker="oci"),
    ]
    mid = [
        Entry("merged", "dir", 0o755, mtime_ns=T + 3),
        Entry("merged/mid_only", "file", data=b"mid only"),
        Entry("merged/shadow", "file", data=b"mid version"),
        Entry("merged/nested", "dir", 0o711, opaque="user"),
        Entry("merged/nested/m", "file", data=b"nested mid"),
        Entry("re", "dir", 0o755),
        Entry("re/x", "whiteout", marker="chr"),
        Entry("links", "dir", 0o755),
        Entry("links/a", "file", 0o644, 12345, 54321, data=b"one inode, three names", mtime_ns=T + 4),
        Entry("links/b", "hardlink", target="links/a"),
        Entry("links/c", "file", data=b"one inode, three names"),  # same bytes, another file
        Entry("other", "dir", 0o755),
        Entry("other/d", "hardlink", target="links/a"),
        Entry("xattr_file", "file", xattrs={"user.a": b"1", "trusted.b": b"\x00\xff binary", "user.empty": b""},
              data=b"has xattrs"),
        Entry("xattr_dir", "dir", 0o755, xattrs={"user.d": b"on a dir", "trusted.overlayish": b"not private"}),
        Entry("sym_rel", "symlink", target="links/a"),
        Entry("sym_abs", "symlink", target="/etc/passwd", uid=1000, gid=1000),
        Entry("sym_dangling", "symlink", target="nowhere/at/all"),
        Entry("sym_long", "symlink", target="L" * 1000),
        Entry("sym_odd", "symlink", target=os.fsdecode(b"odd\n\xff\xfe target")),
        Entry("many_xattrs", "file", data=b"x",
              xattrs={f"user.{i:02d}." + "k" * 50: bytes([i]) * 150 for i in range(12)} | {"user.big": b"v" * 1000}),
        Entry("fifo", "fifo", 0o620, 33, 33),
        Entry("sock", "sock", 0o755),
        Entry("chr_null", "chr", 0o666, rdev=(1, 3)),
        Entry("blk_dev", "blk", 0o660, 0, 6, rdev=(8, 1)),
        Entry("sparse", "file", data=b"middle of a hole", size=64 << 20, offset=32 << 20),
        Entry("over_4g", "file", data=b"past the 4 GiB line", size=5 * GiB, offset=4 * GiB + 12345),
        Entry("setuid", "file", 0o4755, data=b"#!/bin/sh\n"),
        Entry("setgid_dir", "dir", 0o2755, 0, 50),
        Entry("sticky_dir", "dir", 0o1777),
        Entry("no_perms", "file", 0o000, 65534, 65534, data=b"mode 0"),
        Entry("ns_time", "file", data=b"t", mtime_ns=1_234_567_890_123_456_789),
        Entry("fifo_over_dir", "fifo", 0o644),
        Entry("odd", "dir", 0o755),
    ] + [Entry("odd/" + n, "file", data=n.encode("utf-8", "surrogateescape")) for n in odd] + [
        Entry("odd/dir\nwith newline", "dir", 0o755),
        Entry("odd/dir\nwith newline/" + "m" * 255, "symlink", target="x\ny"),
    ]
    deep = deep_dirs().split("/")
    for i in range(len(deep)):
        mid.append(Entry("/".join(deep[: i + 1]), "dir", 0o755))
    mid.append(Entry(deep_dirs() + "/" + "f" * 200, "file", data=b"at the end of a ~4,000-byte path"))
    top = [
        Entry("file_over_dir", "file", data=b"a file above a dir"),
        Entry("dir_over_file", "dir", 0o750, mtime_ns=T + 5),
        Entry("dir_over_file/child", "file", data=b"child"),
        Entry("sym_over_file", "symlink", target="merged/shadow"),
        Entry("wh_oci_file", "whiteout", marker="oci"),
        Entry("wh_chr_dir", "whiteout", marker="chr"),
        Entry("opq_oci", "dir", 0o755, opaque="oci"),
        Entry("opq_oci/new", "file", data=b"new"),
        Entry("opq_trusted", "dir", 0o755, opaque="trusted"),
        Entry("opq_trusted/new", "file", data=b"new"),
        Entry("opq_user", "dir", 0o755, opaque="user"),
        Entry("opq_user/new", "file", data=b"new"),
        Entry("opq_user/sub", "dir", 0o755),  # below an opaque dir: only this layer's sub
        Entry("opq_over_file", "dir", 0o755, opaque="oci"),
        Entry("merged", "dir", 0o751, 3, 4, mtime_ns=T + 6, xattrs={"user.top": b"merged dir attrs come from here"}),
        Entry("merged/top_only", "file", data=b"top only"),
        Entry("merged/gone", "whiteout", marker="oci"),
        Entry("re", "dir", 0o755),
        Entry("re/x", "file", data=b"re-created above a whiteout"),
        Entry("hl", "dir", 0o755),
        Entry("hl/b", "whiteout", marker="oci"),
        Entry("ghost_oci", "whiteout", marker="oci"),  # whites out a name no layer has
        Entry("ghost_chr", "whiteout", marker="chr"),
        Entry("odd", "dir", 0o755),
        Entry("odd/-dash", "whiteout", marker="oci"),
        Entry("odd/tab\there", "whiteout", marker="chr"),
    ]
    return [top, mid, bottom]


@pytest.fixture(scope="module")
def handwritten():
    """The hand-written stack, built once: (layers, lowers for the FUSE side, lowers for the kernel)."""
    base = tempfile.mkdtemp(prefix="strata-test.", dir=os.environ.get("STRATA_TEST_TMP", "/tmp"))
    try:
        layers = handwritten_layers()
        fuse_lowers = build_stack(layers, os.path.join(base, "fuse"), for_kernel=False)
        kernel_lowers = build_stack(layers, os.path.join(base, "kernel"), for_kernel=True)
        yield layers, fuse_lowers, kernel_lowers
    finally:
        shutil.rmtree(base, ignore_errors=True)


def compare_stack(workdir, mounts, layers, fuse_lowers, kernel_lowers, blocks=True):
    kmnt = mount_kernel(mounts, os.path.join(workdir, "kernel"), kernel_lowers)
    fmnt = mount_fuse(mounts, os.path.join(workdir, "fuse"), fuse_lowers)
    with HangGuard([fmnt], 120):
        expected = snapshot(kmnt, blocks=blocks, kernel=True)
        actual = snapshot(fmnt, blocks=blocks)
    assert_same_tree(expected, actual)
    assert not actual.dino_mismatch, f"readdir d_ino != stat st_ino: {actual.dino_mismatch[:10]}"
    return fmnt, actual


def assert_inodes_stable(mounts, fmnt, fuse_lowers, before):
    umount_now(fmnt)
    mount_fuse(mounts, fmnt, fuse_lowers)
    with HangGuard([fmnt], 120):
        after = snapshot(fmnt, times=False, xattrs=False)
    moved = [(p, before.inodes[p][1], after.inodes.get(p, (0, None))[1])
             for p in sorted(before.inodes) if before.inodes[p][1] != after.inodes.get(p, (0, None))[1]]
    assert not moved, f"inode numbers changed across a remount (path, before, after): {moved[:10]}"


def test_handwritten_stack_matches_kernel(workdir, mounts, handwritten):
    layers, fuse_lowers, kernel_lowers = handwritten
    fmnt, actual = compare_stack(workdir, mounts, layers, fuse_lowers, kernel_lowers)

    # The stack really exercises what it claims (guards against a stack that tests nothing).
    assert actual.entries["file_over_dir"]["type"] == "f"
    assert actual.entries["dir_over_file/child"]["content"]
    assert "opq_oci/old1" not in actual.entries and "opq_oci/new" in actual.entries
    assert "merged/mid_only" in actual.entries and "merged/bottom_only" in actual.entries
    assert actual.entries["hl/a"]["nlink"] == 3
    assert os.path.join(deep_dirs(), "f" * 200) in actual.entries

    # Markers are never visible: not by lookup, not in listxattr.
    for marker in oci_marker_paths(layers):
        with pytest.raises(FileNotFoundError):
            os.lstat(os.path.join(fmnt, marker))
    for d in ("opq_oci", "opq_trusted", "opq_user", "merged/nested", "opq_over_file"):
        names = os.listxattr(os.path.join(fmnt, d), follow_symlinks=False)
        leaked = [n for n in names if n.startswith(PRIVATE_XATTR_PREFIXES)]
        assert not leaked, f"{d}: overlay-private xattrs visible through {fs_label()}: {leaked}"
    for wh in ("wh_oci_file", "wh_chr_dir", "ghost_oci", "ghost_chr", "merged/gone", "hl/b"):
        with pytest.raises(FileNotFoundError):
            os.lstat(os.path.join(fmnt, wh))


def test_handwritten_inodes_stable_across_remount(workdir, mounts, handwritten):
    layers, fuse_lowers, _ = handwritten
    fmnt = mount_fuse(mounts, os.path.join(workdir, "fuse"), fuse_lowers)
    with HangGuard([fmnt], 120):
        before = snapshot(fmnt, times=False, xattrs=False)
    assert not before.dino_mismatch, f"readdir d_ino != stat st_ino: {before.dino_mismatch[:10]}"
    assert_inodes_stable(mounts, fmnt, fuse_lowers, before)


RANDOM_SEEDS = [11, 22, 33, 44, 55, 66, 77, 88]


@pytest.mark.parametrize("seed_index", range(rounds(len(RANDOM_SEEDS))))
def test_random_stack_matches_kernel(workdir, mounts, seed_index):
    seed = chosen_seed(RANDOM_SEEDS[seed_index] if seed_index < len(RANDOM_SEEDS) else 1000 * seed_index)
    if os.environ.get("STRATA_TEST_SEED"):
        seed += seed_index
    print(f"random stack seed {seed}")
    rng = random.Random(seed)
    layers = random_stack(rng, rng.randint(2, 6))
    fuse_lowers = build_stack(layers, os.path.join(workdir, "fuse-layers"), for_kernel=False)
    kernel_lowers = build_stack(layers, os.path.join(workdir, "kernel-layers"), for_kernel=True)
    fmnt, actual = compare_stack(workdir, mounts, layers, fuse_lowers, kernel_lowers)
    for marker in oci_marker_paths(layers):
        assert not os.path.lexists(os.path.join(fmnt, marker)), f"marker {marker!r} visible"
    assert_inodes_stable(mounts, fmnt, fuse_lowers, actual)


def test_layers_on_different_filesystems_keep_distinct_inodes(workdir, mounts):
    """Inode numbers of files from layers on different filesystems (ext4 and a
    tmpfs) may collide on disk; through the union two files never share one."""
    rng = random.Random(chosen_seed(5150))
    layers = random_stack(rng, 3)
    # Plenty of plain files in every layer, so colliding numbers are likely.
    for i, entries in enumerate(layers):
        entries.extend(Entry(f"many{i}_{j}", "file", data=bytes([j])) for j in range(40))
    tmpfs = os.path.join(workdir, "tmpfs")
    os.makedirs(tmpfs)
    mounts.add(tmpfs)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "strata-test", tmpfs], check=True)
    fuse_lowers = build_stack(layers, os.path.join(workdir, "fuse-layers"), for_kernel=False)
    kernel_lowers = build_stack(layers, os.path.join(workdir, "kernel-layers"), for_kernel=True)
    # The middle layer of each stack lives on the tmpfs.
    for lowers, side in ((fuse_lowers, "fuse"), (kernel_lowers, "kernel")):
        moved = os.path.join(tmpfs, side)
        subprocess.run(["cp", "-a", lowers[1], moved], check=True)
        lowers[1] = moved
    fmnt, actual = compare_stack(workdir, mounts, layers, fuse_lowers, kernel_lowers, blocks=False)
    inos = {}
    for p, (_, ino) in actual.inodes.items():
        inos.setdefault(ino, set()).add(p)
    shared = {ino: ps for ino, ps in inos.items() if len(ps) > 1
              and len({actual.entries[p]["content"] if actual.entries[p]["type"] == "f" else p for p in ps}) > 1}
    assert not shared, f"different files share an inode number: {list(shared.items())[:5]}"


def test_many_layers_match_kernel(workdir, mounts):
    """130 small layers (issue: at least 128) merge like the kernel merges them."""
    rng = random.Random(chosen_seed(128))
    layers = random_stack(rng, 130, max_depth=1)
    fuse_lowers = build_stack(layers, os.path.join(workdir, "f"), for_kernel=False)
    kbase = os.path.join(workdir, "k")
    build_stack(layers, kbase, for_kernel=True)
    # The kernel's option string is one page: relative layer paths keep it short.
    kmnt = os.path.join(workdir, "kernel")
    os.makedirs(kmnt)
    mounts.add(kmnt)
    rel = ":".join(f"l{len(layers) - 1 - i}" for i in range(len(layers)))
    r = subprocess.run(["mount", "-t", "overlay", "overlay", "-o", "lowerdir=" + rel, kmnt],
                       cwd=kbase, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    fmnt = mount_fuse(mounts, os.path.join(workdir, "fuse"), fuse_lowers)
    with HangGuard([fmnt], 120):
        assert_same_tree(snapshot(kmnt, kernel=True), snapshot(fmnt))


def test_large_merged_directory_matches_kernel(workdir, mounts):
    """A directory of thousands of entries merged from three layers, with
    whiteouts of both formats among them: readdir must page through it
    without losing, repeating or showing hidden names."""
    bottom = [Entry("big", "dir", 0o755)] + [
        Entry(f"big/{i:05d}-" + "b" * (i % 200), "file", data=str(i).encode()) for i in range(3000)]
    mid = [Entry("big", "dir", 0o755)] + [
        Entry(f"big/{i:05d}-" + "b" * (i % 200), "whiteout", marker="oci" if i % 4 else "chr")
        for i in range(0, 3000, 2)] + [Entry(f"big/mid{i}", "symlink", target=str(i)) for i in range(500)]
    top = [Entry("big", "dir", 0o755)] + [
        Entry(f"big/{i:05d}-" + "b" * (i % 200), "file", data=b"top") for i in range(0, 3000, 7)] + [
        Entry(f"big/mid{i}", "whiteout", marker="oci") for i in range(0, 500, 3)]
    layers = [top, mid, bottom]
    fuse_lowers = build_stack(layers, os.path.join(workdir, "fuse-layers"), for_kernel=False)
    kernel_lowers = build_stack(layers, os.path.join(workdir, "kernel-layers"), for_kernel=True)
    fmnt, actual = compare_stack(workdir, mounts, layers, fuse_lowers, kernel_lowers, blocks=False)
    names = os.listdir(os.path.join(fmnt, "big"))
    assert len(names) == len(set(names)), "readdir returned a name twice"
    assert not [n for n in names if n.startswith(".wh.")], "whiteout markers listed"
