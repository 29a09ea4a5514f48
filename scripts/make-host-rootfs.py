#!/usr/bin/env python3
"""Makes a base image root file system offline from Debian packages installed
on this machine: the busybox base of make-base-rootfs.sh, plus the files of the
named packages and of every installed package they depend on (Depends and
Pre-Depends, recursively; the first installed alternative of each). Paths are
made canonical for a merged /usr (/lib/x86_64-linux-gnu/libc.so.6 is written
as usr/lib/x86_64-linux-gnu/libc.so.6, with lib -> usr/lib and lib64 ->
usr/lib64 links). Documentation, manual pages and translations are left out.
What maintainer scripts would have made (byte-compiled Python, certificate
bundles) is not there. The tarball is deterministic: the same packages give
the same bytes.

Usage: scripts/make-host-rootfs.py OUT.tar PACKAGE...
"""
import os
import shutil
import stat
import subprocess
import sys
import tempfile

LEFT_OUT = ("/usr/share/doc/", "/usr/share/man/", "/usr/share/info/", "/usr/share/locale/", "/usr/share/lintian/")


def installed_packages():
    """{name: (depends text, provides text)} of the installed packages."""
    out = subprocess.run(["dpkg-query", "-W", "-f", "${Package}\t${db:Status-Abbrev}\t${Depends}, ${Pre-Depends}\t${Provides}\n"],
                         capture_output=True, text=True, check=True).stdout
    pkgs = {}
    for line in out.splitlines():
        name, status, depends, provides = line.split("\t")
        if status.startswith("ii"):
            pkgs[name] = (depends, provides)
    return pkgs


def bare(name):
    return name.strip().split(" ")[0].split(":")[0]


def closure(wanted, pkgs):
    provided = {}
    for name, (_, provides) in pkgs.items():
        for p in provides.split(","):
            if p.strip():
                provided.setdefault(bare(p), name)
    todo, seen = list(wanted), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in pkgs:
            sys.exit(f"make-host-rootfs: package {name!r} is not installed")
        seen.add(name)
        for dep in pkgs[name][0].split(","):
            for alt in dep.split("|"):
                n = bare(alt)
                if not n:
                    continue
                real = n if n in pkgs else provided.get(n)
                if real:
                    todo.append(real)
                    break
    return sorted(seen)


def canonical(path):
    return os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: make-host-rootfs.py OUT.tar PACKAGE...")
    out, wanted = sys.argv[1], sys.argv[2:]
    pkgs = installed_packages()
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory(prefix="strata-host-rootfs.") as tmp:
        root = os.path.join(tmp, "root")
        os.mkdir(root, 0o755)
        base = os.path.join(tmp, "base.tar")
        subprocess.run(["bash", os.path.join(here, "make-base-rootfs.sh"), base], check=True)
        subprocess.run(["tar", "-C", root, "-xf", base], check=True)
        for link, target in (("lib", "usr/lib"), ("lib64", "usr/lib64")):
            os.makedirs(os.path.join(root, target), 0o755, exist_ok=True)
            if not os.path.lexists(os.path.join(root, link)):
                os.symlink(target, os.path.join(root, link))
        for name in closure(wanted, pkgs):
            listed = subprocess.run(["dpkg-query", "-L", name], capture_output=True, text=True, check=True).stdout
            for path in listed.splitlines():
                if not path.startswith("/") or path.startswith(LEFT_OUT):
                    continue
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue  # removed by the administrator, or a diversion
                if stat.S_ISDIR(st.st_mode):
                    continue
                dest = root + canonical(path)
                os.makedirs(os.path.dirname(dest), 0o755, exist_ok=True)
                if os.path.isdir(dest) and not os.path.islink(dest):
                    continue  # a directory of the base stays
                if os.path.lexists(dest):
                    os.unlink(dest)  # the package's file wins over a busybox applet link
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(path), dest)
                else:
                    shutil.copy2(path, dest)
        subprocess.run(["tar", "--sort=name", "--owner=0", "--group=0", "--numeric-owner",
                        "--mtime=2024-01-01 00:00:00Z", "--format=pax",
                        "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
                        "-C", root, "-cf", out + ".tmp", "."], check=True)
        os.replace(out + ".tmp", out)


if __name__ == "__main__":
    main()
