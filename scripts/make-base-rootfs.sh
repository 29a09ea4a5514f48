#!/usr/bin/env bash
# Makes a small base image root filesystem offline, from Debian's
# busybox-static: /bin/busybox with a link per applet, /bin/sh, a minimal /etc
# (passwd, group, hosts, os-release) and the usual empty directories.
# The tarball is deterministic: the same busybox gives the same bytes.
# Usage: scripts/make-base-rootfs.sh OUT.tar
set -euo pipefail
out=${1:?usage: make-base-rootfs.sh OUT.tar}
busybox=/bin/busybox
if [ ! -x "$busybox" ] || ! "$busybox" --list >/dev/null 2>&1; then
  echo "make-base-rootfs: $busybox is missing; install busybox-static" >&2
  exit 1
fi
if ! file_info=$(LC_ALL=C readelf -l "$busybox" 2>/dev/null) || echo "$file_info" | grep -q "Requesting program interpreter"; then
  echo "make-base-rootfs: $busybox is not statically linked; install busybox-static" >&2
  exit 1
fi

root=$(mktemp -d "${TMPDIR:-/tmp}/strata-base.XXXXXX")
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,etc,root,home,tmp,var/tmp,dev,proc,sys,run}
chmod 1777 "$root/tmp" "$root/var/tmp"
chmod 700 "$root/root"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list-full); do
  [ "$applet" = bin/busybox ] && continue
  mkdir -p "$root/$(dirname "$applet")"
  # Relative links, so the tree is the same wherever it is extracted.
  rel=$(realpath -m --relative-to="$root/$(dirname "$applet")" "$root/bin/busybox")
  ln -sf "$rel" "$root/$applet"
done
ln -sf busybox "$root/bin/sh"
cat > "$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
app:x:1000:1000:app:/home/app:/bin/sh
PASSWD
cat > "$root/etc/group" <<'GROUP'
root:x:0:
daemon:x:1:
nogroup:x:65534:
app:x:1000:
GROUP
mkdir -p "$root/home/app"
printf '127.0.0.1\tlocalhost\n::1\tlocalhost\n' > "$root/etc/hosts"
printf 'NAME="strata base"\nID=strata-base\nPRETTY_NAME="strata busybox base"\n' > "$root/etc/os-release"

tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='2024-01-01 00:00:00Z' \
    --format=pax --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$out.tmp" .
mv "$out.tmp" "$out"
