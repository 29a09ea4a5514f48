"""Random operation sequences on a writable upper: the union under test
answers every call the way kernel overlayfs does and ends with the same tree.

Both get identical stacks (three random lower layers, the FUSE side with
markers in mixed formats, the kernel's converted to overlayfs's own) and an
empty upper. One seeded sequence of operations (create, write, append,
truncate, read, rename incl. directories and RENAME_NOREPLACE/EXCHANGE, link,
unlink, rmdir, rm -rf, mkdir, chmod, chown, setxattr, removexattr, symlink,
mkfifo, stat, readdir, and writes through a file kept open across a rename or
an unlink or reached through a new hardlink) on names from every layer is
applied to both; each call's
result (value or errno) must agree, then the final trees. Then both are
unmounted and each upper is mounted under the other implementation: the
trees must still agree, so what one writes the other reads.

What is compared is what a user sees. Not compared, on purpose: st_dev and
raw inode numbers (a FUSE mount has one st_dev of its own; the kernel mixes
the layers' devices, so only which names share an inode is compared);
timestamps (the two sequences run at different moments); a directory's size
and link count (the kernel reports nlink 1 for merged dirs).

The lower layers hold no hardlinks here: kernel overlayfs with index=off
breaks a lower hardlink on copy-up (a write through one name is not seen
through the other), a documented limitation the read-only test covers.

CI uses fixed seeds; STRATA_TEST_SEED=N (or =random) picks another,
STRATA_TEST_ROUNDS=N runs N sequences.
"""
import errno
import hashlib
import os
import random
import stat

import pytest

from fsdiff import (rounds, Entry, RENAME_EXCHANGE, RENAME_NOREPLACE, HangGuard, MODES, DIR_MODES, OWNERS, assert_same_tree,
                    build_stack, chosen_seed, fs_label, lchmod, mount_fuse, mount_kernel, random_stack,
                    renameat2, snapshot, umount_now)

OPS_PER_SEQUENCE = 250
SEEDS = [101, 202, 303, 404, 505, 606]

WEIGHTS = {
    "create": 9, "write": 9, "append": 5, "truncate": 6, "read": 6, "rename": 14, "link": 5,
    "unlink": 8, "rmdir": 6, "mkdir": 8, "chmod": 5, "chown": 3, "setxattr": 5, "removexattr": 3,
    "symlink": 3, "mkfifo": 1, "stat": 4, "readdir": 4, "rmtree": 2,
    "open_rename_write": 2, "open_unlink_write": 2, "link_write_read": 2,
}


def merged_view(layers):
    """What the stack shows, as {path: kind} (kind "d" for directories, else
    "f"): the generator aims its operations at names that exist. The kernel,
    not this sketch, decides every result."""
    by_layer = [{e.path: e for e in entries} for entries in layers]
    children = [{} for _ in layers]
    for i, entries in enumerate(layers):
        for e in entries:
            children[i].setdefault(e.path.rpartition("/")[0], []).append(e)
    view = {"": "d"}

    def visit(dirpath, contributors):
        seen = {}
        for li in contributors:
            for e in children[li].get(dirpath, []):
                seen.setdefault(e.path, (li, e))
        for path, (li, e) in seen.items():
            if e.kind == "whiteout":
                continue
            view[path] = "d" if e.kind == "dir" else "f"
            if e.kind == "dir":
                sub = []
                for lj in range(li, len(layers)):
                    if lj not in contributors:
                        continue
                    other = by_layer[lj].get(path)
                    if other is None:
                        continue
                    if other.kind != "dir":
                        break
                    sub.append(lj)
                    if other.opaque:
                        break
                visit(path, sub)

    visit("", list(range(len(layers))))
    return view


def generate_ops(rng, layers, count):
    """A sequence of operations on relative paths. It depends only on the
    seed and the stack, never on results, so both sides get the same one.
    Names come mostly from a sketch of what exists, the rest from every name
    any layer or earlier operation used, so errors are exercised too."""
    view = merged_view(layers)
    history = sorted({e.path for entries in layers for e in entries})
    fresh = 0
    kinds = list(WEIGHTS)
    weights = [WEIGHTS[k] for k in kinds]

    def existing(kind=None):
        if rng.random() < 0.8:
            pick = [p for p in view if p and (kind is None or view[p] == kind)]
            if pick:
                return rng.choice(sorted(pick))
        return rng.choice(history)

    def new_name():
        nonlocal fresh
        fresh += 1
        d = rng.choice(sorted(p for p in view if view[p] == "d"))
        p = f"{d}/n{fresh}" if d else f"n{fresh}"
        history.append(p)
        return p

    removed = []

    def any_path(kind=None):
        if removed and rng.random() < 0.15:
            return rng.choice(removed)  # rm -rf dir, then mkdir dir: a fresh opaque dir
        return existing(kind) if rng.random() < 0.5 else new_name()

    def parent_ok(p):
        return view.get(p.rpartition("/")[0]) == "d"

    def subtree(p):
        return [q for q in view if q == p or q.startswith(p + "/")]

    def move(src, dst):
        moved = {dst + q[len(src):]: view.pop(q) for q in subtree(src)}
        view.update(moved)

    ops = []
    for _ in range(count):
        k = rng.choices(kinds, weights)[0]
        if k == "create":
            p = any_path("f")
            op = (k, p, rng.choice(MODES), rng.choice(["", "excl", "trunc"]))
            if p not in view and parent_ok(p):
                view[p] = "f"
        elif k in ("write", "append"):
            data = rng.randbytes(rng.choice([1, 100, 4096, 70000]))
            op = (k, existing("f"), rng.randrange(0, 100_000), data)
        elif k == "truncate":
            op = (k, existing("f"), rng.choice([0, 1, 4095, 4096, 10_000, 200_000]))
        elif k in ("read", "stat"):
            op = (k, existing())
        elif k == "readdir":
            op = (k, existing("d"))
        elif k == "unlink":
            p = existing("f")
            op = (k, p)
            if view.get(p) == "f":
                del view[p]
        elif k == "rmdir":
            p = existing("d")
            op = (k, p)
            if view.get(p) == "d" and subtree(p) == [p]:
                del view[p]
        elif k == "open_rename_write":
            src, dst = existing("f"), any_path("f")
            op = (k, src, dst, rng.randbytes(rng.choice([1, 5000])))
            if view.get(src) == "f" and dst not in view and parent_ok(dst):
                move(src, dst)
        elif k == "open_unlink_write":
            p = existing("f")
            op = (k, p, rng.randbytes(rng.choice([1, 5000])))
            if view.get(p) == "f":
                del view[p]
        elif k == "link_write_read":
            src, dst = existing("f"), any_path()
            op = (k, src, dst, rng.randbytes(rng.choice([1, 5000])))
            if view.get(src) == "f" and dst not in view and parent_ok(dst):
                view[dst] = "f"
        elif k == "rmtree":
            p = existing("d")
            op = (k, p)
            if view.get(p) == "d":
                for q in subtree(p):
                    del view[q]
                removed.append(p)
        elif k == "rename":
            flags = rng.choices([0, RENAME_NOREPLACE, RENAME_EXCHANGE], [70, 15, 15])[0]
            src = existing()
            dst = existing() if flags == RENAME_EXCHANGE or rng.random() < 0.3 else new_name()
            op = (k, src, dst, flags)
            inside = dst == src or dst.startswith(src + "/") or src.startswith(dst + "/")
            if src in view and parent_ok(dst) and not inside:
                if flags == RENAME_EXCHANGE:
                    if dst in view:
                        tmp = "\0swap"
                        move(src, tmp)
                        move(dst, src)
                        move(tmp, dst)
                elif dst not in view:
                    move(src, dst)
                elif flags == 0 and view[dst] == view[src] and subtree(dst) == [dst]:
                    del view[dst]
                    move(src, dst)
        elif k == "link":
            src, dst = existing("f"), any_path()
            op = (k, src, dst)
            if view.get(src) == "f" and dst not in view and parent_ok(dst):
                view[dst] = "f"
        elif k == "mkdir":
            p = any_path("d")
            op = (k, p, rng.choice(DIR_MODES))
            if p not in view and parent_ok(p):
                view[p] = "d"
        elif k == "chmod":
            op = (k, existing(), rng.choice(MODES))
        elif k == "chown":
            op = (k, existing(), *rng.choice(OWNERS))
        elif k == "setxattr":
            op = (k, existing(), f"user.x{rng.randrange(3)}", rng.randbytes(rng.randint(0, 20)))
        elif k == "removexattr":
            op = (k, existing(), f"user.x{rng.randrange(3)}")
        elif k in ("symlink", "mkfifo"):
            p = any_path()
            op = (k, rng.choice(["a", "b", "/nonexistent-strata-target"]), p) if k == "symlink" else (k, p)
            if p not in view and parent_ok(p):
                view[p] = "f"
        ops.append(op)
    return ops


OPEN_FLAGS = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def apply(root, op, kernel):
    """Runs OP under ROOT; returns ("ok", value) or ("err", errno name)."""
    try:
        return ("ok", _apply(root, op, kernel))
    except OSError as e:
        return ("err", errno.errorcode.get(e.errno, str(e.errno)))


def _apply(root, op, kernel):
    k, p = op[0], os.path.join(root, op[1])
    if k == "create":
        extra = {"": 0, "excl": os.O_EXCL, "trunc": os.O_TRUNC}[op[3]]
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | extra | OPEN_FLAGS, op[2]))
        return None
    if k in ("write", "append"):
        fd = os.open(p, os.O_WRONLY | (os.O_APPEND if k == "append" else 0) | OPEN_FLAGS)
        try:
            return os.write(fd, op[3]) if k == "append" else os.pwrite(fd, op[3], op[2])
        finally:
            os.close(fd)
    if k == "truncate":
        fd = os.open(p, os.O_WRONLY | OPEN_FLAGS)
        try:
            os.ftruncate(fd, op[2])
        finally:
            os.close(fd)
        return None
    if k == "read":
        fd = os.open(p, os.O_RDONLY | OPEN_FLAGS)
        try:
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
            return h.hexdigest()
        finally:
            os.close(fd)
    if k == "rename":
        dst = os.path.join(root, op[2])
        if op[3]:
            renameat2(p, dst, op[3])
        else:
            os.rename(p, dst)
        return None
    if k == "link":
        os.link(p, os.path.join(root, op[2]), follow_symlinks=False)
        return None
    if k == "unlink":
        return os.unlink(p)
    if k == "rmdir":
        return os.rmdir(p)
    if k == "rmtree":
        return remove_tree(p, kernel)
    if k == "open_rename_write":
        # An open file follows its inode through a rename.
        fd = os.open(p, os.O_RDWR | OPEN_FLAGS)
        try:
            os.rename(p, os.path.join(root, op[2]))
            os.pwrite(fd, op[3], 10)
            return hashlib.sha256(os.pread(fd, 1 << 20, 0)).hexdigest()
        finally:
            os.close(fd)
    if k == "open_unlink_write":
        # An unlinked file stays usable through the fd that holds it.
        fd = os.open(p, os.O_RDWR | OPEN_FLAGS)
        try:
            os.unlink(p)
            os.pwrite(fd, op[2], 3)
            return hashlib.sha256(os.pread(fd, 1 << 20, 0)).hexdigest(), os.fstat(fd).st_nlink
        finally:
            os.close(fd)
    if k == "link_write_read":
        # Two names, one file: a write through the new name is read through the old one.
        os.link(p, os.path.join(root, op[2]), follow_symlinks=False)
        fd = os.open(os.path.join(root, op[2]), os.O_WRONLY | OPEN_FLAGS)
        try:
            os.pwrite(fd, op[3], 0)
        finally:
            os.close(fd)
        fd = os.open(p, os.O_RDONLY | OPEN_FLAGS)
        try:
            return hashlib.sha256(os.read(fd, 1 << 20)).hexdigest()
        finally:
            os.close(fd)
    if k == "mkdir":
        return os.mkdir(p, op[2])
    if k == "chmod":
        return lchmod(p, op[2])
    if k == "chown":
        return os.chown(p, op[2], op[3], follow_symlinks=False)
    if k == "setxattr":
        return os.setxattr(p, op[2], op[3], follow_symlinks=False)
    if k == "removexattr":
        return os.removexattr(p, op[2], follow_symlinks=False)
    if k == "symlink":
        return os.symlink(op[1], os.path.join(root, op[2]))
    if k == "mkfifo":
        return os.mkfifo(p, 0o644)
    if k == "stat":
        st = os.lstat(p)
        fmt = stat.S_IFMT(st.st_mode)
        out = (fmt, oct(stat.S_IMODE(st.st_mode)), st.st_uid, st.st_gid)
        return out if fmt == stat.S_IFDIR else out + (st.st_size, st.st_nlink)
    if k == "readdir":
        names = sorted(os.listdir(p))
        if kernel:
            # The kernel's readdir quirk (see fsdiff.snapshot): whiteouts of
            # a lower-only directory are listed though lookup hides them.
            names = [n for n in names if os.path.lexists(os.path.join(p, n))]
        return names
    raise ValueError(op)


def remove_tree(path, kernel):
    """rm -rf PATH: children first, never following symlinks."""
    if stat.S_ISDIR(os.lstat(path).st_mode):
        for name in sorted(os.listdir(path)):
            child = os.path.join(path, name)
            if kernel and not os.path.lexists(child):
                continue  # the kernel's readdir quirk (see fsdiff.snapshot)
            remove_tree(child, kernel)
        return os.rmdir(path)
    return os.unlink(path)


def describe(op):
    shown = [repr(x[:16]) + f"...({len(x)} bytes)" if isinstance(x, bytes) and len(x) > 16 else repr(x) for x in op[1:]]
    return f"{op[0]}({', '.join(shown)})"


@pytest.mark.parametrize("seed_index", range(rounds(len(SEEDS))))
def test_random_operations_match_kernel(workdir, mounts, seed_index):
    seed = chosen_seed(SEEDS[seed_index] if seed_index < len(SEEDS) else 1000 * seed_index)
    if os.environ.get("STRATA_TEST_SEED"):
        seed += seed_index
    print(f"operation sequence seed {seed}")
    rng = random.Random(seed)
    layers = random_stack(rng, 3, ops_safe=True, max_depth=2)
    ops = generate_ops(rng, layers, OPS_PER_SEQUENCE)

    run_differential(workdir, mounts, layers, ops, f"seed {seed}")


def run_differential(workdir, mounts, layers, ops, what):
    """Applies OPS to the kernel and to the implementation under test over
    LAYERS, compares every result, the final trees, and then each upper
    mounted under the other implementation."""
    fuse_lowers = build_stack(layers, os.path.join(workdir, "fuse-layers"), for_kernel=False)
    kernel_lowers = build_stack(layers, os.path.join(workdir, "kernel-layers"), for_kernel=True)
    dirs = {n: os.path.join(workdir, n) for n in ("fu", "fw", "ku", "kw", "fu-w2", "ku-w2")}
    for d in dirs.values():
        os.makedirs(d)
    kmnt = mount_kernel(mounts, os.path.join(workdir, "kernel"), kernel_lowers, dirs["ku"], dirs["kw"])
    fmnt = mount_fuse(mounts, os.path.join(workdir, "fuse"), fuse_lowers, dirs["fu"], dirs["fw"])

    with HangGuard([fmnt], 180):
        for i, op in enumerate(ops):
            expected = apply(kmnt, op, kernel=True)
            actual = apply(fmnt, op, kernel=False)
            assert expected == actual, (
                f"{what}, operation {i}: {describe(op)}: kernel overlayfs gave {expected}, "
                f"{fs_label()} gave {actual}\nthe operations before it (last 60):\n"
                + "\n".join(f"  {j}: {describe(o)}" for j, o in enumerate(ops[:i]) if j >= i - 60))
        kernel_tree = snapshot(kmnt, times=False, kernel=True)
        fuse_tree = snapshot(fmnt, times=False)
    assert_same_tree(kernel_tree, fuse_tree)
    assert not fuse_tree.dino_mismatch, f"readdir d_ino != stat st_ino: {fuse_tree.dino_mismatch[:10]}"

    # Each upper under the other implementation shows the same tree.
    umount_now(fmnt)
    umount_now(kmnt)
    kmnt2 = mount_kernel(mounts, os.path.join(workdir, "kernel-on-fuse-upper"), kernel_lowers,
                         dirs["fu"], dirs["fu-w2"])
    assert_same_tree(kernel_tree, snapshot(kmnt2, times=False, kernel=True),
                     "kernel overlayfs", f"kernel overlayfs on the upper {fs_label()} wrote")
    fmnt2 = mount_fuse(mounts, os.path.join(workdir, "fuse-on-kernel-upper"), fuse_lowers,
                       dirs["ku"], dirs["ku-w2"])
    with HangGuard([fmnt2], 120):
        assert_same_tree(kernel_tree, snapshot(fmnt2, times=False),
                         "kernel overlayfs", f"{fs_label()} on the upper kernel overlayfs wrote")


def lower_tree():
    """Two lower layers for the named scenarios (topmost first)."""
    top = [
        Entry("f", "file", 0o644, 1000, 1000, data=b"lower file f", xattrs={"user.f": b"1"}),
        Entry("g", "file", 0o600, data=b"lower file g"),
        Entry("d", "dir", 0o755),
        Entry("d/top", "file", data=b"top child"),
        Entry("d/gone", "whiteout", marker="oci"),
        Entry("opq", "dir", 0o755, opaque="oci"),
        Entry("opq/new", "file", data=b"new"),
        Entry("sym", "symlink", target="f"),
    ]
    bottom = [
        Entry("d", "dir", 0o750, 7, 7),
        Entry("d/bottom", "file", data=b"bottom child"),
        Entry("d/gone", "file", data=b"whited out"),
        Entry("d/sub", "dir", 0o755),
        Entry("d/sub/deep", "file", data=b"deep"),
        Entry("opq", "dir", 0o755),
        Entry("opq/old", "file", data=b"hidden by the opaque dir"),
        Entry("e", "dir", 0o755),
        Entry("e/x", "file", data=b"x"),
        Entry("fifo", "fifo", 0o644),
    ]
    return [top, bottom]


DATA = b"written through the mount"

# Named operation sequences, each the shortest form of a rule (or of a bug once found).
SCENARIOS = {
    "create_keeps_setuid_and_setgid_bits": [
        ("create", "suid", 0o4755, ""), ("create", "d/sgid", 0o2750, "excl"),
        ("stat", "suid"), ("stat", "d/sgid")],
    "link_both_names_show_one_inode": [
        ("create", "new", 0o644, ""), ("link", "new", "new2"), ("stat", "new"), ("stat", "new2"),
        ("chmod", "new2", 0o600), ("stat", "new"), ("write", "new", 0, DATA), ("stat", "new2")],
    "link_to_lower_file_write_through_new_name": [
        ("link_write_read", "f", "f2", DATA), ("stat", "f"), ("stat", "f2")],
    "rename_onto_own_hardlink_changes_nothing": [
        ("create", "a", 0o644, ""), ("link", "a", "b"), ("rename", "a", "b", 0), ("stat", "a"), ("stat", "b"),
        ("write", "g", 0, DATA), ("link", "g", "g2"), ("rename", "g", "g2", 0), ("stat", "g"), ("stat", "g2")],
    "hardlink_survives_unlink_of_first_name": [
        ("create", "p", 0o644, ""), ("write", "p", 0, DATA), ("link", "p", "q"), ("unlink", "p"), ("stat", "q"),
        ("read", "q"), ("rename", "q", "z", 0), ("stat", "z"), ("link", "g", "g2"), ("unlink", "g"), ("stat", "g2")],
    "fstat_and_write_after_unlink_of_lower_file": [("open_unlink_write", "g", DATA), ("stat", "g")],
    "fstat_and_write_after_unlink_of_new_file": [
        ("create", "n", 0o644, ""), ("open_unlink_write", "n", DATA), ("stat", "n")],
    "rename_of_merged_dir_keeps_its_lower_children": [
        ("rename", "d", "moved", 0), ("readdir", "moved"), ("read", "moved/bottom"), ("readdir", "moved/sub"),
        ("stat", "d")],
    "exchange_of_lower_file_and_merged_dir": [
        ("rename", "f", "d", RENAME_EXCHANGE), ("readdir", "f"), ("read", "d"), ("stat", "d")],
    "rm_rf_then_mkdir_gives_an_empty_dir": [
        ("rmtree", "d"), ("stat", "d"), ("mkdir", "d", 0o755), ("readdir", "d"), ("create", "d/c", 0o644, ""),
        ("readdir", "d")],
    "unlink_of_lower_file_then_create": [
        ("unlink", "f"), ("stat", "f"), ("create", "f", 0o600, "excl"), ("read", "f"), ("stat", "f")],
    "rename_over_a_whiteout": [("unlink", "f"), ("rename", "g", "f", 0), ("read", "f"), ("stat", "g")],
    "copy_up_of_dir_without_children": [
        ("chmod", "d", 0o700), ("chown", "d", 1, 2), ("setxattr", "d", "user.x0", b"v"), ("readdir", "d"),
        ("read", "d/sub/deep")],
    "rmdir_of_dir_with_only_whited_out_children": [
        ("unlink", "e/x"), ("rmdir", "e"), ("stat", "e"), ("mkdir", "e", 0o700), ("readdir", "e")],
    "rename_into_opaque_dir_and_back": [
        ("rename", "g", "opq/g", 0), ("readdir", "opq"), ("rename", "opq/new", "new", 0), ("readdir", "opq")],
    "truncate_and_append_copy_up": [
        ("truncate", "g", 3), ("append", "g", 0, DATA), ("read", "g"), ("truncate", "f", 100_000), ("read", "f")],
    "xattrs_on_lower_file": [
        ("setxattr", "f", "user.x1", b"one"), ("removexattr", "f", "user.f"), ("removexattr", "f", "user.f"),
        ("setxattr", "sym", "user.x1", b"on a symlink")],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_named_operation_sequences_match_kernel(workdir, mounts, name):
    run_differential(workdir, mounts, lower_tree(), SCENARIOS[name], name)
