# Sourced by bench/run.sh: the image-level comparisons.
#   commit: `strata commit` of a container holding a 1 GiB change, against
#           `umoci repack` of a bundle holding the same change; then a 1 KiB
#           change on top of that (commit-small), by each tool.
#   build:  `strata build` of a 10-step Dockerfile, cold and fully cached,
#           against `buildah build` (chroot isolation, vfs storage, --layers).
#   build-CASE: the realistic multi-stage contexts of tests/contexts (a C
#           program, a pip-installed Python package; toolchain bases made by
#           scripts/make-host-rootfs.py), cold, cached and after a one-line
#           edit of a source file, against `buildah build` and `podman
#           build` (both with overlay storage, --layers, chroot isolation).
# A strata verb that this build does not have yet is recorded as skipped with
# the reason; the peer tool is still measured so the reference number exists.
# Uses from run.sh: benchtool, strata, src, bench_dir, runs, mode, scratch,
# mounted, log, extras_tsv, unmount_path.

extra_record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$extras_tsv"; }

# Seconds taken by a command; its output goes to LOG.
time_cmd() {  # LOG COMMAND...
  local log_file=$1 t0 t1
  shift
  t0=$(date +%s.%N)
  "$@" >>"$log_file" 2>&1 || return 1
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

strata_has_verb() { [ -x "$strata" ] && "$strata" "$1" --help >/dev/null 2>&1; }

extras_inputs() {
  local dir=$bench_dir/extras
  mkdir -p "$dir"
  [ -f "$dir/base.tar" ] || "$src/scripts/make-base-rootfs.sh" "$dir/base.tar"
  change_mib=1024
  [ "$mode" = quick ] && change_mib=256
  change_dir=$dir/change-${change_mib}m
  # About CHANGE_MIB MiB of incompressible data in 1 MiB-average files.
  [ -d "$change_dir" ] || "$benchtool" tree "$change_dir" "$change_mib" 16 1048576
  ctx=$dir/context
  if [ ! -f "$ctx/Dockerfile" ]; then
    rm -rf "$ctx"
    mkdir -p "$ctx/src"
    cp "$dir/base.tar" "$ctx/rootfs.tar"
    for i in $(seq -w 1 100); do printf 'module %s\n' "$i" >"$ctx/src/mod$i.txt"; done
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV APP_HOME=/app LANG=C.UTF-8
WORKDIR /app
COPY src/ /app/src/
RUN mkdir -p /app/data && echo built > /app/data/stamp
RUN for i in $(seq 1 200); do echo "line $i" >> /app/data/log; done
ARG VERSION=1
LABEL org.example.version=$VERSION
CMD ["sh", "-c", "cat /app/data/stamp"]
EOF
  fi
}

extra_commit_umoci() {
  local tmp t
  tmp=$(mktemp -d "$runs/umoci.XXXXXX")
  scratch+=("$tmp")
  if umoci init --layout "$tmp/img" >>"$tmp/log" 2>&1 &&
     umoci new --image "$tmp/img:empty" >>"$tmp/log" 2>&1 &&
     umoci unpack --image "$tmp/img:empty" "$tmp/b0" >>"$tmp/log" 2>&1 &&
     tar -xf "$bench_dir/extras/base.tar" -C "$tmp/b0/rootfs" &&
     umoci repack --image "$tmp/img:base" "$tmp/b0" >>"$tmp/log" 2>&1 &&
     umoci unpack --image "$tmp/img:base" "$tmp/b1" >>"$tmp/log" 2>&1 &&
     cp -a "$change_dir" "$tmp/b1/rootfs/change" && sync &&
     t=$(time_cmd "$tmp/log" umoci repack --image "$tmp/img:changed" "$tmp/b1"); then
    extra_record commit "umoci repack" ok "$t" "${change_mib} MiB change; umoci 0.4 always gzips the layer"
    # A 1 KiB change on top of the bundle that now holds the whole change.
    if head -c 1024 /dev/urandom >"$tmp/b1/rootfs/small" &&
       t=$(time_cmd "$tmp/log" umoci repack --image "$tmp/img:small" "$tmp/b1"); then
      extra_record commit-small "umoci repack" ok "$t" "1 KiB change to a ${change_mib} MiB image"
    else
      extra_record commit-small "umoci repack" error - "$(tail -1 "$tmp/log")"
    fi
  else
    extra_record commit "umoci repack" error - "$(tail -1 "$tmp/log")"
  fi
  rm -rf "$tmp"
}

extra_commit_strata() {
  local tmp t
  if ! strata_has_verb commit; then
    extra_record commit "strata commit" skipped - "strata commit is not in this build yet"
    return
  fi
  tmp=$(mktemp -d "$runs/strata-commit.XXXXXX")
  scratch+=("$tmp")
  mkdir "$tmp/mnt"
  export STRATA_ROOT=$tmp/store
  if "$strata" import "$bench_dir/extras/base.tar" bench-base >>"$tmp/log" 2>&1 &&
     "$strata" create --name bench-ctr bench-base >>"$tmp/log" 2>&1 &&
     "$strata" mount bench-ctr "$tmp/mnt" >>"$tmp/log" 2>&1 && mounted+=("$tmp/mnt") &&
     cp -a "$change_dir" "$tmp/mnt/change" &&
     "$strata" umount "$tmp/mnt" >>"$tmp/log" 2>&1 && sync &&
     t=$(time_cmd "$tmp/log" "$strata" commit -m "bench change" bench-ctr bench-changed); then
    extra_record commit "strata commit" ok "$t" "${change_mib} MiB change"
  else
    extra_record commit "strata commit" error - "$(tail -1 "$tmp/log")"
  fi
  unmount_path "$tmp/mnt"
  # A 1 KiB change to the image just committed (the base and the whole change).
  if "$strata" create --name bench-small bench-changed >>"$tmp/log" 2>&1 &&
     "$strata" mount bench-small "$tmp/mnt" >>"$tmp/log" 2>&1 && mounted+=("$tmp/mnt") &&
     head -c 1024 /dev/urandom >"$tmp/mnt/small" &&
     "$strata" umount "$tmp/mnt" >>"$tmp/log" 2>&1 && sync &&
     t=$(time_cmd "$tmp/log" "$strata" commit -m "small change" bench-small bench-small); then
    extra_record commit-small "strata commit" ok "$t" "1 KiB change to a ${change_mib} MiB image"
  else
    extra_record commit-small "strata commit" error - "$(tail -1 "$tmp/log")"
  fi
  unmount_path "$tmp/mnt"
  unset STRATA_ROOT
  rm -rf "$tmp"
}

extra_build_buildah() {
  local tmp t
  tmp=$(mktemp -d "$runs/buildah.XXXXXX")
  scratch+=("$tmp")
  local -a bh=(buildah --root "$tmp/storage" --runroot "$tmp/run" --storage-driver vfs)
  for pass in cold cached; do
    if t=$(time_cmd "$tmp/log" "${bh[@]}" build --isolation chroot --layers -t bench:1 -f "$ctx/Dockerfile" "$ctx"); then
      extra_record "build-$pass" "buildah build" ok "$t" "10 steps, vfs storage, chroot isolation"
    else
      extra_record "build-$pass" "buildah build" error - "$(tail -1 "$tmp/log")"
    fi
  done
  "${bh[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$tmp"
}

extra_build_strata() {
  local tmp t
  if ! strata_has_verb build; then
    extra_record build-cold "strata build" skipped - "strata build is not in this build yet"
    extra_record build-cached "strata build" skipped - "strata build is not in this build yet"
    return
  fi
  tmp=$(mktemp -d "$runs/strata-build.XXXXXX")
  scratch+=("$tmp")
  export STRATA_ROOT=$tmp/store
  for pass in cold cached; do
    if t=$(time_cmd "$tmp/log" "$strata" build -t bench:1 -f "$ctx/Dockerfile" "$ctx"); then
      extra_record "build-$pass" "strata build" ok "$t" "10 steps"
    else
      extra_record "build-$pass" "strata build" error - "$(tail -1 "$tmp/log")"
    fi
  done
  unset STRATA_ROOT
  rm -rf "$tmp"
}

# The realistic contexts, each copied once with its toolchain base and the
# busybox base beside it: realistic_dirs gets their paths.
realistic_inputs() {
  realistic_dirs=()
  local case dir
  for case in $(cd "$src/tests/contexts" && ls -d -- */ | tr -d /); do
    dir=$bench_dir/extras/realistic-$case
    if [ ! -f "$dir/toolchain.tar" ]; then
      rm -rf "$dir"
      cp -r "$src/tests/contexts/$case" "$dir"
      cp "$bench_dir/extras/base.tar" "$dir/base.tar"
      # shellcheck disable=SC2046  # PACKAGES is a list of words
      if ! python3 "$src/scripts/make-host-rootfs.py" "$dir/toolchain.tar.tmp" $(cat "$dir/PACKAGES") >>"$dir.log" 2>&1; then
        log "extras: no toolchain base for $case ($(tail -1 "$dir.log"))"
        rm -rf "$dir"
        continue
      fi
      mv "$dir/toolchain.tar.tmp" "$dir/toolchain.tar"
    fi
    realistic_dirs+=("$dir")
  done
}

# Times cold, cached and edited builds of every realistic context with TOOL
# (strata, buildah or podman); the edit appends one line to the file EDIT
# names, and is taken back afterwards.
extra_realistic() {  # TOOL
  local tool=$1 tmp t dir case edit pass
  local -a cmd
  tmp=$(mktemp -d /tmp/sbx.XXXXXX)  # podman refuses a long runroot path
  scratch+=("$tmp")
  case $tool in
    strata) cmd=("$strata" --root "$tmp/store" build) ;;
    buildah) cmd=(buildah --root "$tmp/root" --runroot "$tmp/run" --storage-driver overlay build --layers --isolation chroot) ;;
    # chroot isolation as buildah's: podman's runtime (crun) refuses a host
    # with hybrid cgroups.
    podman) cmd=(podman --root "$tmp/root" --runroot "$tmp/run" --storage-driver overlay build --layers --isolation chroot) ;;
  esac
  for dir in "${realistic_dirs[@]}"; do
    case=${dir##*/realistic-}
    edit=$dir/$(cat "$dir/EDIT")
    cp "$edit" "$tmp/edit.orig"
    for pass in cold cached edit; do
      [ "$pass" = edit ] && printf '\n' >>"$edit"
      if t=$(time_cmd "$tmp/log" "${cmd[@]}" -t "bench-$case:1" "$dir"); then
        extra_record "build-$case-$pass" "$tool build" ok "$t" "$case context"
      else
        extra_record "build-$case-$pass" "$tool build" error - "$(tail -1 "$tmp/log")"
      fi
    done
    cp "$tmp/edit.orig" "$edit"
  done
  case $tool in
    buildah) "${cmd[@]:0:7}" rmi --all --force >/dev/null 2>&1 || true ;;
    podman) "${cmd[@]:0:7}" system reset --force >/dev/null 2>&1 || true ;;
  esac
  # The overlay storage's own mount (and any a peer left) goes before the files.
  { findmnt -rn -o TARGET | grep "^$tmp/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  rm -rf "$tmp"
}

run_extras() {
  log "extras: commit and build comparisons"
  extras_inputs
  extra_commit_umoci
  extra_commit_strata
  extra_build_buildah
  extra_build_strata
  realistic_inputs
  local tool
  for tool in buildah podman strata; do extra_realistic "$tool"; done
}
