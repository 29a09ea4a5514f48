#!/usr/bin/env bash
# The strata benchmark suite: stratafs against a native directory, kernel
# overlayfs and fuse-overlayfs on one cached, image-sized fixture, in one
# interleaved run. See bench/README.md for what each workload does.
#
# Usage: bench/run.sh [--quick] [--rounds N] [--out DIR] [--only W1,W2] [--fs F1,F2]
#                     [--no-extras] [--poll-idle]
# Needs root (kernel overlayfs mounts, drop_caches, whiteout device nodes).
set -euo pipefail

usage() {
  cat <<'EOF'
usage: bench/run.sh [OPTIONS]
  --quick          1 round with smaller workloads (about 3 minutes once the fixture exists)
  --rounds N       rounds of every workload on every filesystem (default: 5; quick: 1)
  --out DIR        where results go (default: bench/results/DATE)
  --only LIST      comma-separated workloads to run, "extras" for the commit and build
                   comparisons (default: all; see bench/README.md)
  --fs LIST        comma-separated filesystems: native,overlay,fuse-overlayfs,stratafs
  --no-extras      skip the commit and build comparisons
  --poll-idle      keep idle CPUs polling instead of halting during the run (cpu_dma_latency=0):
                   takes the wake-up latency of idle (virtual) CPUs out of every round trip
  -h, --help       this text
Environment: STRATA_BENCH_DIR (fixture and scratch, default /var/tmp/strata-bench),
STRATAFS (a stratafs binary to use instead of building one),
STRATAFS_OPTS / FUSE_OVERLAYFS_OPTS (extra -o options), STRATA_BENCH_PROFILE=perf|strace|stats
(profile every stratafs daemon, or count its requests with -o stats, into the run directory).
EOF
}

here=$(cd "$(dirname "$0")" && pwd)
src=$(dirname "$here")
mode=full
rounds=
out=
only=
fs_list=native,overlay,fuse-overlayfs,stratafs
extras=1
poll_idle=0
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) mode=quick ;;
    --rounds) rounds=${2:?--rounds needs a number}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --only) only=${2:?--only needs a list}; shift ;;
    --fs) fs_list=${2:?--fs needs a list}; shift ;;
    --no-extras) extras=0 ;;
    --poll-idle) poll_idle=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown option '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -z "$rounds" || "$rounds" =~ ^[1-9][0-9]*$ ]] || { echo "bench: --rounds must be a positive number, not '$rounds'" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "bench: must run as root (kernel overlayfs mounts, drop_caches, whiteout devices)" >&2; exit 2; }

if [ "$mode" = quick ]; then
  : "${rounds:=1}"
  n_create=5000 n_missing=50000 n_missing_deep=10000 n_random=5000 n_packages=100 untar_tar=untar-50m.tar
else
  : "${rounds:=5}"
  n_create=20000 n_missing=200000 n_missing_deep=40000 n_random=20000 n_packages=400 untar_tar=untar-200m.tar
fi

bench_dir=${STRATA_BENCH_DIR:-/var/tmp/strata-bench}
build=$src/build-bench
: "${out:=$src/bench/results/$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$bench_dir" "$out"
out=$(cd "$out" && pwd)
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# One run at a time: runs drop caches and time each other otherwise.
exec 9>"$bench_dir/lock"
flock -n 9 || { echo "bench: another benchmark run holds $bench_dir/lock" >&2; exit 1; }

# ---------------------------------------------------------------- cleanup
# Every mount, daemon and scratch directory is registered as it is made and
# released on every exit path.
mounted=()     # mount points, in order of mounting
daemons=()     # FUSE daemon pids
scratch=()     # directories to remove
is_mounted() { awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo; }
unmount_path() {
  local p=$1
  is_mounted "$p" || return 0
  umount "$p" 2>/dev/null || fusermount3 -u "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true
}
remove_scratch() { local d; for d in "${scratch[@]}"; do [ -e "$d" ] && rm -rf "$d"; done; scratch=(); }
cleanup() {
  local i pid
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do
    # Scratch directories live on the benchmark filesystem: remove them
    # (with every union mount above them already gone) before it goes.
    [ "${mounted[i]}" = "${fsroot:-}" ] && remove_scratch
    unmount_path "${mounted[i]}"
  done
  for pid in "${daemons[@]}"; do kill "$pid" 2>/dev/null || true; done
  remove_scratch
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- tools
log "installing what the suite needs (scripts/install-deps.sh build bench)"
"$src/scripts/install-deps.sh" build bench

benchtool=$build/benchtool
mkdir -p "$build"
if [ ! -x "$benchtool" ] || [ "$here/benchtool.cpp" -nt "$benchtool" ]; then
  log "compiling benchtool"
  g++ -std=c++20 -O2 -Wall -Wextra -Wpedantic -Wshadow -Werror -o "$benchtool" "$here/benchtool.cpp"
fi

# A release build of its own (-O2, NDEBUG, no sanitizers), beside the
# developers' sanitizer build.
stratafs_state="not built"
strata=$build/tools/strata
if [ -n "${STRATAFS:-}" ]; then
  # A stratafs built elsewhere (e.g. a developer's own release build).
  stratafs=$STRATAFS
  [ -x "$stratafs" ] && stratafs_state=built || stratafs_state="not built ($stratafs is not executable)"
else
  stratafs=$build/tools/stratafs
  log "building stratafs (release) in $build"
  # The release build is held to the project's rule: warnings are errors.
  if [ ! -f "$build/build.ninja" ]; then
    meson setup "$build" "$src" --buildtype=release -Dwerror=true -Dtests=false >"$out/build.log" 2>&1 || true
  else
    meson configure "$build" -Dbuildtype=release -Dwerror=true -Dtests=false >"$out/build.log" 2>&1 || true
  fi
  if [ -f "$build/build.ninja" ] && ninja -C "$build" -j2 >>"$out/build.log" 2>&1 && [ -x "$stratafs" ]; then
    stratafs_state=built
  else
    stratafs_state="not built (no tools/stratafs in this tree, or the build failed: see build.log)"
  fi
fi
log "stratafs: $stratafs_state ($stratafs)"

# ---------------------------------------------------------------- fixture
# Fixture and scratch live on an ext4 filesystem of their own: a file image
# attached through a loop device with direct I/O (no double caching, so
# dropping caches makes reads really cold). The host's filesystem is shared
# with other work and its inode allocator slows creates after mass deletes;
# a dedicated journaled ext4 gives every filesystem under test the same,
# repeatable ground.
img=$bench_dir/fs.img
fsroot=$bench_dir/fs
img_size=16G
recipe=$("$benchtool" recipe)
attach_image() {
  local dev
  mkdir -p "$fsroot"
  unmount_path "$fsroot"  # left by a killed run (we hold the lock)
  dev=$(losetup --direct-io=on -f --show "$img")
  if ! mount -o noatime "$dev" "$fsroot"; then losetup -d "$dev"; return 1; fi
  mounted+=("$fsroot")
  losetup -d "$dev"  # busy: the kernel detaches it when $fsroot is unmounted
}
if [ ! -f "$img" ] || [ "$(cat "$bench_dir/recipe" 2>/dev/null)" != "$recipe" ]; then
  log "creating the benchmark filesystem $img ($img_size, ext4)"
  rm -f "$img" "$bench_dir/recipe"
  truncate -s "$img_size" "$img"
  mkfs.ext4 -q -F -E lazy_itable_init=0,lazy_journal_init=0 -L strata-bench "$img"
fi
attach_image
fixture=$fsroot/fixture
l1=$fixture/l1 l2=$fixture/l2 l3=$fixture/l3
lowerdir=$l3:$l2:$l1
build_fixture() {
  local tmp t0
  t0=$(date +%s)
  log "building the fixture ($recipe) in $fixture (once; reused while the recipe is unchanged)"
  rm -rf "$fixture" "$fsroot"/fixture.new.*
  tmp=$(mktemp -d "$fsroot/fixture.new.XXXXXX")
  scratch+=("$tmp")
  "$benchtool" fixture "$tmp" >"$tmp/entries.txt"
  # The native directory is the merged view itself, copied out of a
  # read-only kernel overlay mount: the kernel defines what "merged" means.
  mkdir "$tmp/merge-mnt" "$tmp/native"
  mount -t overlay overlay -o "ro,lowerdir=$tmp/l3:$tmp/l2:$tmp/l1" "$tmp/merge-mnt"
  mounted+=("$tmp/merge-mnt")
  cp -a "$tmp/merge-mnt/." "$tmp/native/"
  umount "$tmp/merge-mnt"
  rmdir "$tmp/merge-mnt"
  "$benchtool" tree "$tmp/untar-200m" 25000 250 8192
  tar -C "$tmp/untar-200m" -cf "$tmp/untar-200m.tar" .
  "$benchtool" tree "$tmp/untar-50m" 6250 60 8192
  tar -C "$tmp/untar-50m" -cf "$tmp/untar-50m.tar" .
  rm -rf "$tmp/untar-200m" "$tmp/untar-50m"
  sync
  echo "$recipe" >"$tmp/recipe"
  mv "$tmp" "$fixture"
  echo "$recipe" >"$bench_dir/recipe"
  log "fixture built in $(($(date +%s) - t0)) s: $(cat "$fixture/entries.txt")"
}
if [ "$(cat "$fixture/recipe" 2>/dev/null)" != "$recipe" ]; then
  build_fixture
else
  log "reusing the fixture in $fixture ($recipe)"
fi

# The many-layer fixture (missing-100, walk-cold-100): 100 layers that all
# hold the same 40 directories, and their merged view copied out of a kernel
# overlay mount. Built on first use, beside the main fixture.
deep=$fsroot/deep
deep_layers=100
deep_recipe=$("$benchtool" deep-recipe)
deep_lowerdir=$(for ((i = deep_layers - 1; i >= 0; i--)); do printf '%s/%03d' "$deep" "$i"; [ "$i" = 0 ] || printf ':'; done)
build_deep_fixture() {
  local tmp lowers
  log "building the $deep_layers-layer fixture ($deep_recipe) in $deep (once)"
  rm -rf "$deep" "$fsroot"/deep.new.*
  tmp=$(mktemp -d "$fsroot/deep.new.XXXXXX")
  scratch+=("$tmp")
  "$benchtool" deep "$tmp/layers" "$deep_layers" >"$tmp/entries.txt"
  # Relative layer names: 100 absolute paths would not fit in the one page
  # the kernel takes mount options from.
  lowers=$(for ((i = deep_layers - 1; i >= 0; i--)); do printf '%03d' "$i"; [ "$i" = 0 ] || printf ':'; done)
  mkdir "$tmp/merge-mnt" "$tmp/native"
  (cd "$tmp/layers" && mount -t overlay overlay -o "ro,lowerdir=$lowers" "$tmp/merge-mnt")
  mounted+=("$tmp/merge-mnt")
  cp -a "$tmp/merge-mnt/." "$tmp/native/"
  umount "$tmp/merge-mnt"
  rmdir "$tmp/merge-mnt"
  mv "$tmp/layers"/* "$tmp/"
  rmdir "$tmp/layers"
  sync
  echo "$deep_recipe" >"$tmp/recipe"
  mv "$tmp" "$deep"
}

# ---------------------------------------------------------------- machine
{
  printf 'cpu\t%s\n' "$(LC_ALL=C lscpu | sed -n 's/^Model name: *//p' | head -1)"
  printf 'cores\t%s\n' "$(nproc)"
  printf 'memory\t%s GiB\n' "$(awk '/MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)"
  printf 'kernel\t%s\n' "$(uname -r)"
  printf 'os\t%s\n' "$(. /etc/os-release && echo "$PRETTY_NAME")"
  printf 'filesystem\t%s\n' "$(findmnt -n -o FSTYPE,OPTIONS -T "$fsroot" | head -1) on a $img_size loop image (direct I/O) on $(findmnt -n -o FSTYPE,SOURCE -T "$bench_dir" | head -1 | tr -s ' ')"
  printf 'fuse-overlayfs\t%s\n' "$(dpkg-query -W -f='${Version}' fuse-overlayfs 2>/dev/null)"
  printf 'libfuse\t%s\n' "$(dpkg-query -W -f='${Version}' libfuse3-3 2>/dev/null)"
  printf 'stratafs\t%s %s\n' "$(git -C "$src" rev-parse --short HEAD 2>/dev/null)" "$stratafs_state"
  printf 'load at start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
  printf 'fixture\t%s: %s\n' "$recipe" "$(cat "$fixture/entries.txt")"
  printf 'mode\t%s, %s round(s)\n' "$mode" "$rounds"
  printf 'date\t%s\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
  [ "$poll_idle" = 0 ] || printf 'cpu idle\t%s\n' "polling (--poll-idle: cpu_dma_latency=0)"
} >"$out/machine.tsv"

# ---------------------------------------------------------------- mounts
runs=$fsroot/runs
rm -rf "$runs"  # leftovers of a killed run
mkdir -p "$runs"
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

wait_fuse_mounted() {  # MNT PID LOG
  local i
  for ((i = 0; i < 1500; i++)); do
    is_mounted "$1" && return 0
    kill -0 "$2" 2>/dev/null || { echo "daemon exited before mounting: $(tail -3 "$3")" >&2; return 1; }
    sleep 0.02
  done
  echo "not mounted after 30 s" >&2
  return 1
}

# mount_fs FS RUNDIR: sets view (the merged tree) and daemon_pid. The layers
# are $lowers (the main fixture's, or the many-layer one's) and the native
# view is $native.
mount_fs() {
  local fs=$1 run=$2 bin opts
  daemon_pid=
  case "$fs" in
    native) view=$native; return 0 ;;
  esac
  mkdir "$run/upper" "$run/work" "$run/mnt"
  view=$run/mnt
  case "$fs" in
    overlay)
      mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$run/upper,workdir=$run/work" "$view"
      mounted+=("$view") ;;
    fuse-overlayfs|stratafs)
      if [ "$fs" = stratafs ]; then bin=$stratafs opts=${STRATAFS_OPTS:-}; else bin=fuse-overlayfs opts=${FUSE_OVERLAYFS_OPTS:-}; fi
      # -f: the harness keeps the daemon's pid for its peak RSS and CPU time.
      if [ "${STRATA_BENCH_PROFILE:-}:$fs" = stats:stratafs ]; then opts+=${opts:+,}stats=$run/stats.txt; fi
      "$bin" -f -o "lowerdir=$lowers,upperdir=$run/upper,workdir=$run/work${opts:+,$opts}" "$view" \
        >"$run/daemon.log" 2>&1 &
      daemon_pid=$!
      daemons+=("$daemon_pid")
      mounted+=("$view")
      wait_fuse_mounted "$view" "$daemon_pid" "$run/daemon.log" || return 1
      case "${STRATA_BENCH_PROFILE:-}:$fs" in
        perf:stratafs)
          perf record -q -g -p "$daemon_pid" -o "$run/perf.data" >/dev/null 2>&1 &
          profiler_pid=$!; sleep 0.3 ;;
        strace:stratafs)
          strace -c -f -p "$daemon_pid" -o "$run/strace.txt" >/dev/null 2>&1 &
          profiler_pid=$!; sleep 0.3 ;;
      esac ;;
    *) echo "unknown filesystem $fs" >&2; return 1 ;;
  esac
}

daemon_cpu() {  # utime+stime of the daemon in seconds
  [ -n "$daemon_pid" ] && [ -r "/proc/$daemon_pid/stat" ] || { echo -; return; }
  awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.3f", ($12 + $13) / hz }' "/proc/$daemon_pid/stat"
}

unmount_fs() {
  local fs=$1 i
  [ "$fs" = native ] && return 0
  if [ -n "${profiler_pid:-}" ]; then
    kill -INT "$profiler_pid" 2>/dev/null || true
    wait "$profiler_pid" 2>/dev/null || true
    profiler_pid=
  fi
  unmount_path "$view"
  if [ -n "$daemon_pid" ]; then
    for ((i = 0; i < 500; i++)); do kill -0 "$daemon_pid" 2>/dev/null || break; sleep 0.02; done
    kill "$daemon_pid" 2>/dev/null || true
    wait "$daemon_pid" 2>/dev/null || true
    daemons=()  # one daemon at a time: never signal a pid that may be reused
  fi
  is_mounted "$view" || { [ "${mounted[-1]}" = "$view" ] && unset 'mounted[-1]'; }
}

# ---------------------------------------------------------------- workloads
# Each workload: "prepare FS" (untimed, before mounting: host cache state),
# then "run FS" on the fresh mount, printing benchtool's "SECONDS details" line.
all_workloads=(walk-cold walk-warm readdir seqread-cold seqread-cached randread parread-large parread-small
  create copyup untar rmrf missing missing-100 walk-cold-100)

warm_tree() {  # host page/dentry cache of what FS reads from
  if [ "$1" = native ]; then
    "$benchtool" walk "$fixture/native" >/dev/null
  else
    for l in "$l1" "$l2" "$l3"; do "$benchtool" walk "$l" >/dev/null; done
  fi
}
big_dir() { if [ "$1" = native ]; then echo "$fixture/native/big"; else echo "$l1/big"; fi; }
warm_big() { cat "$(big_dir "$1")/file-1g.bin" "$(big_dir "$1")/file-500m.bin" >/dev/null; }

prepare() {  # WORKLOAD FS
  case "$1" in
    walk-cold|seqread-cold|walk-cold-100) ;;  # caches are dropped after mounting
    missing-100)
      if [ "$2" = native ]; then "$benchtool" walk "$deep/native" >/dev/null
      else for ((i = 0; i < deep_layers; i++)); do "$benchtool" walk "$deep/$(printf %03d "$i")" >/dev/null; done; fi ;;
    walk-warm|readdir|missing|create|rmrf) warm_tree "$2" ;;
    seqread-cached|randread|parread-large) warm_big "$2" ;;
    parread-small) "$benchtool" parread-small "$(if [ "$2" = native ]; then echo "$fixture/native"; else echo "$l1"; fi)" "$n_packages" >/dev/null
      [ "$2" = native ] || "$benchtool" walk "$l2" >/dev/null ;;
    copyup) cat "$(big_dir "$2")/file-500m.bin" >/dev/null ;;
    untar) cat "$fixture/$untar_tar" >/dev/null ;;
  esac
}

# Writes go to the run's scratch directory for the native column (the
# fixture's native copy stays pristine), and into the mount for the unions.
run_workload() {  # WORKLOAD FS RUNDIR
  local w=$1 fs=$2 run=$3 target
  case "$w" in
    walk-cold) drop_caches; "$benchtool" walk "$view" ;;
    walk-warm) "$benchtool" walk "$view" >/dev/null; "$benchtool" walk "$view" ;;
    readdir) "$benchtool" readdir "$view" ;;
    seqread-cold) drop_caches; "$benchtool" seqread "$view/big/file-1g.bin" ;;
    seqread-cached) "$benchtool" seqread "$view/big/file-1g.bin" >/dev/null; "$benchtool" seqread "$view/big/file-1g.bin" ;;
    randread) "$benchtool" randread "$view/big/file-1g.bin" "$n_random" ;;
    parread-large) "$benchtool" parread-large "$view/big/file-1g.bin" "$view/big/file-500m.bin" ;;
    parread-small) "$benchtool" parread-small "$view" "$n_packages" ;;
    create)
      if [ "$fs" = native ]; then target=$run/create; else target=$view/bench-create; fi
      mkdir "$target"
      "$benchtool" create "$target" "$n_create" ;;
    copyup)
      if [ "$fs" = native ]; then
        # No copy-up natively: the append itself, then the file is restored.
        "$benchtool" append "$view/big/file-500m.bin"
        truncate -s $((500 << 20)) "$view/big/file-500m.bin"
      else
        "$benchtool" append "$view/big/file-500m.bin"
      fi ;;
    untar)
      if [ "$fs" = native ]; then target=$run/untar; else target=$view/bench-untar; fi
      mkdir "$target"
      "$benchtool" run tar -xf "$fixture/$untar_tar" -C "$target" ;;
    rmrf)
      if [ "$fs" = native ]; then
        cp -a "$view/rmtarget" "$run/rmtarget"
        "$benchtool" run rm -rf "$run/rmtarget"
      else
        "$benchtool" run rm -rf "$view/rmtarget"
      fi ;;
    missing) "$benchtool" missing "$view" "$n_missing" ;;
    missing-100) "$benchtool" missing "$view" "$n_missing_deep" 40 ;;
    walk-cold-100) drop_caches; "$benchtool" walk "$view" ;;
    *) echo "unknown workload $w" >&2; return 1 ;;
  esac
}

results=$out/results.tsv
printf 'round\tworkload\tfs\tstatus\tvalue\tdetail\n' >"$results"
record() { printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$results"; }

IFS=, read -r -a fss <<<"$fs_list"
for fs in "${fss[@]}"; do
  case "$fs" in native|overlay|fuse-overlayfs|stratafs) ;; *) echo "bench: unknown filesystem '$fs'" >&2; exit 2 ;; esac
done
if [ "$stratafs_state" != built ]; then
  kept=()
  for fs in "${fss[@]}"; do [ "$fs" = stratafs ] || kept+=("$fs"); done
  fss=("${kept[@]}")
fi
# --only may name "extras" beside the workloads: the commit and build comparisons.
only_extras=0
if [ -n "$only" ]; then
  IFS=, read -r -a requested <<<"$only"
  workloads=()
  for w in "${requested[@]}"; do
    if [ "$w" = extras ]; then only_extras=1; else workloads+=("$w"); fi
  done
else
  workloads=("${all_workloads[@]}")
fi
for w in "${workloads[@]}"; do
  [[ " ${all_workloads[*]} " == *" $w "* ]] || { echo "bench: unknown workload '$w'" >&2; exit 2; }
done
if [[ " ${workloads[*]} " == *"-100 "* ]] && [ "$(cat "$deep/recipe" 2>/dev/null)" != "$deep_recipe" ]; then
  build_deep_fixture
fi

# One run: fresh scratch dir, fresh upper, fresh mount; nothing survives it.
run_one() {  # ROUND WORKLOAD FS
  local r=$1 w=$2 fs=$3 run line status=ok cpu0 cpu1 rss
  case "$w" in
    *-100) lowers=$deep_lowerdir native=$deep/native ;;
    *) lowers=$lowerdir native=$fixture/native ;;
  esac
  prepare "$w" "$fs"
  run=$(mktemp -d "$runs/$w.$fs.XXXXXX")
  scratch+=("$run")
  if ! mount_fs "$fs" "$run" 2>"$run/err"; then
    record "$r" "$w" "$fs" error - "mount failed: $(tr '\n\t' '  ' <"$run/err")"
    mkdir -p "$out/failures"
    cat "$run/err" "$run/daemon.log" >"$out/failures/$w.$fs.r$r.log" 2>/dev/null || true
    unmount_fs "$fs"; rm -rf "$run"; return
  fi
  cpu0=$(daemon_cpu)
  if line=$(run_workload "$w" "$fs" "$run" 2>"$run/err"); then
    cpu1=$(daemon_cpu)
    [ "$cpu0" = - ] || line="$line daemon_cpu=$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN { printf "%.3f", b - a }')"
    record "$r" "$w" "$fs" ok "${line%% *}" "${line#* }"
    if [ "$w" = walk-cold ] && [ -n "$daemon_pid" ]; then
      rss=$(awk '/VmHWM/ { printf "%.1f", $2 / 1024 }' "/proc/$daemon_pid/status")
      record "$r" rss-walk "$fs" ok "$rss" "VmHWM MiB of the daemon after the cold walk"
    fi
  else
    status=error
    record "$r" "$w" "$fs" error - "$(tail -2 "$run/err" | tr '\n\t' '  ')"
    # Keep what explains the failure: the driver's own messages.
    mkdir -p "$out/failures"
    cat "$run/err" "$run/daemon.log" >"$out/failures/$w.$fs.r$r.log" 2>/dev/null || true
  fi
  unmount_fs "$fs"
  if [ "${STRATA_BENCH_PROFILE:-}" ] && [ "$fs" = stratafs ]; then
    mkdir -p "$out/profiles"
    for f in perf.data strace.txt stats.txt daemon.log; do [ -f "$run/$f" ] && mv "$run/$f" "$out/profiles/$w.r$r.$f"; done
  fi
  rm -rf "$run"
  log "round $r $w $fs: $status ${line:-}"
}

# --poll-idle: a PM QoS request of 0 µs latency holds while the file stays
# open, so idle CPUs poll instead of halting until the run ends. On a virtual
# machine waking a halted vCPU costs tens of µs, twice per FUSE round trip.
if [ "$poll_idle" = 1 ]; then
  exec 8>/dev/cpu_dma_latency || { echo "bench: cannot open /dev/cpu_dma_latency for --poll-idle" >&2; exit 1; }
  printf '\x00\x00\x00\x00' >&8
  log "idle CPUs poll for the rest of the run (cpu_dma_latency=0)"
fi
t_start=$(date +%s)
log "running ${#workloads[@]} workloads x ${#fss[@]} filesystems x $rounds round(s) ($mode)"
for ((r = 1; r <= rounds; r++)); do
  for wi in "${!workloads[@]}"; do
    # Rotate the order per round and workload, so no filesystem always runs
    # first (cold-ish) or last (after the others warmed something up).
    n=${#fss[@]}
    for ((k = 0; k < n; k++)); do
      run_one "$r" "${workloads[wi]}" "${fss[(k + r + wi) % n]}"
    done
  done
done

# ---------------------------------------------------------------- extras
# strata commit vs umoci repack; strata build vs buildah build. Each side is
# measured when its tool can do it; a missing strata verb is noted, not faked.
extras_tsv=$out/extras.tsv
printf 'workload\ttool\tstatus\tvalue\tdetail\n' >"$extras_tsv"
if [ "$extras" = 1 ] && { [ -z "$only" ] || [ "$only_extras" = 1 ]; }; then
  . "$here/extras.sh"
  run_extras
fi

log "suite took $(($(date +%s) - t_start)) s"
printf 'load at end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >>"$out/machine.tsv"
if [ "$stratafs_state" != built ]; then stratafs_note=$stratafs_state; else stratafs_note=; fi
python3 "$here/report.py" --results "$results" --extras "$extras_tsv" --machine "$out/machine.tsv" \
  --stratafs-note "$stratafs_note" --out "$out"
log "results: $out/results.md and $out/results.json"
cat "$out/results.md"
