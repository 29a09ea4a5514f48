#!/usr/bin/env bash
# The main job on a built-in default, offline: build a small busybox base
# image, mount it read-only and look inside, make a container and change it
# through the writable union mount, commit the change as a new image, run
# it, build a Dockerfile on top of it and run the result. Everything happens
# in a throwaway store under $STRATA_DEMO_DIR (default: a temporary
# directory, removed at the end).
# Usage: scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh build test
if [ ! -f build/build.ninja ]; then
  meson setup build -Db_sanitize=address,undefined -Dtests=true >/dev/null
fi
ninja -C build -j2 >/dev/null

export ASAN_OPTIONS=detect_leaks=0
strata=$PWD/build/tools/strata
demo=${STRATA_DEMO_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/strata-demo.XXXXXX")}
mnt=$demo/mnt
export STRATA_ROOT=$demo/store
mkdir -p "$mnt"

cleanup() {
  # Unmount whatever the demo mounted, whether it got to the end or not.
  if mountpoint -q "$mnt"; then "$strata" umount "$mnt" 2>/dev/null || fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; fi
  [ -n "${STRATA_DEMO_DIR:-}" ] || rm -rf "$demo"
}
trap cleanup EXIT
# A kept demo directory starts over, so the demo can run again.
if mountpoint -q "$mnt"; then "$strata" umount "$mnt"; fi
rm -rf "$STRATA_ROOT"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Build a busybox base image offline and import it"
scripts/make-base-rootfs.sh "$demo/base.tar"
"$strata" import "$demo/base.tar" demo/base:1
"$strata" images

step "Mount the image read-only and look inside"
"$strata" mount demo/base:1 "$mnt"
ls "$mnt"
cat "$mnt/etc/os-release"
if touch "$mnt/should-fail" 2>/dev/null; then echo "demo: the image mount was writable" >&2; exit 1; fi
echo "(writing into the image mount fails: images are immutable)"
"$strata" umount "$mnt"

step "Create a container, mount it writable and change it"
"$strata" create --name demo-ctr demo/base:1
"$strata" mount demo-ctr "$mnt"
mkdir -p "$mnt/app"
printf '#!/bin/sh\necho "hello from the committed app, $(cat /app/VERSION)"\n' > "$mnt/app/hello.sh"
chmod 755 "$mnt/app/hello.sh"
echo 1.0 > "$mnt/app/VERSION"
rm "$mnt/etc/os-release"
"$strata" umount "$mnt"
"$strata" diff demo-ctr

step "Commit the container as a new image"
"$strata" commit -m "Add hello app" -c 'CMD ["/app/hello.sh"]' demo-ctr demo/app-base:1
"$strata" history demo/app-base:1

step "Run the committed image as a rootless container"
"$strata" run --rm demo/app-base:1

step "Build a Dockerfile on the committed image"
mkdir -p "$demo/context"
cat > "$demo/context/Dockerfile" <<'DOCKERFILE'
FROM demo/app-base:1
ENV GREETING=hello
WORKDIR /app
COPY VERSION /app/VERSION
RUN echo "built on $(uname -s)" > /app/BUILD && chmod 644 /app/BUILD
CMD ["/app/hello.sh"]
DOCKERFILE
echo 2.0 > "$demo/context/VERSION"
"$strata" build -t demo/app:2 "$demo/context"
"$strata" history demo/app:2
"$strata" images

step "Mount the built image and check the result"
"$strata" mount demo/app:2 "$mnt"
echo "VERSION: $(cat "$mnt/app/VERSION")   BUILD: $(cat "$mnt/app/BUILD")"
[ -e "$mnt/etc/os-release" ] && { echo "demo: the deleted file came back" >&2; exit 1; }
"$strata" umount "$mnt"

step "Run the built image"
"$strata" run --rm demo/app:2 sh -c 'echo "$GREETING from $(pwd): $(cat BUILD)"; /app/hello.sh'

if [ -n "${STRATA_DEMO_DIR:-}" ]; then
  step "Done: the base image, the committed image and the built image are in $STRATA_ROOT"
else
  step "Done (STRATA_DEMO_DIR=DIR keeps the store and its images)"
fi
