#!/usr/bin/env bash
# Registry pull and push, side by side in one run: `strata pull` against
# `podman pull` (and `skopeo copy` to an OCI layout, which downloads without
# extracting), and `strata push` against `skopeo copy` and `podman push`, of
# a multi-layer image of about 200 MB (gzip layers) from and to two
# docker-registry instances on loopback ports. Every round starts from empty
# stores and fresh repositories, so nothing is skipped as already present.
#
# Usage: bench/registry.sh [--rounds N] [--out DIR]
# Environment: STRATA_BENCH_DIR (default /var/tmp/strata-bench): the image
# is generated once under it. Prints a table of medians and ratios and writes
# it to OUT/registry.md (default bench/results/DATE-registry/).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
rounds=3
out=
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=${2:?--rounds needs a number}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "registry.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" -eq 0 ] || { echo "registry.sh: run as root (podman's overlay storage)" >&2; exit 2; }
"$src/scripts/install-deps.sh" build bench
bench_dir=${STRATA_BENCH_DIR:-/var/tmp/strata-bench}
out=${out:-$src/bench/results/$(date +%Y%m%d-%H%M%S)-registry}
mkdir -p "$out" "$bench_dir/registry"
work=$(mktemp -d "$bench_dir/registry/run.XXXXXX")
log=$out/registry.log
: >"$log"

# A release strata (no sanitizers). Warnings do not stop a benchmark build.
build=$src/build-bench-registry
if [ ! -f "$build/build.ninja" ]; then
  meson setup "$build" "$src" --buildtype=release -Dwerror=false -Dtests=false >>"$log" 2>&1
fi
ninja -C "$build" -j2 tools/strata >>"$log" 2>&1
strata=$build/tools/strata

# podman refuses a runroot path longer than 50 characters.
podman_run=$(mktemp -d /tmp/sbp.XXXXXX)
podman_cmd() { podman --root "$work/podman/root" --runroot "$podman_run" --storage-driver overlay "$@"; }

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  podman_cmd rmi -a -f >/dev/null 2>&1 || true
  podman_cmd system reset -f >/dev/null 2>&1 || true
  rm -rf "$work" "$podman_run"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_registry() {  # NAME -> sets reg_host (a fresh, empty registry)
  local name=$1 port
  port=$(free_port)
  mkdir -p "$work/$name/data"
  cat >"$work/$name/config.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $work/$name/data
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$work/$name/config.yml" >>"$log" 2>&1 &
  pids+=($!)
  for _ in $(seq 100); do
    curl -fs "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
  done
  reg_host=127.0.0.1:$port
}

# The image: the busybox base plus four layers of about 64 MiB each (files
# of mixed random and repetitive bytes, so gzip has some work), as an OCI
# layout with gzip layers. Generated once.
image=$bench_dir/registry/image
if [ ! -f "$image/index.json" ]; then
  rm -rf "$image.tmp"
  mkdir -p "$image.tmp"
  "$src/scripts/make-base-rootfs.sh" "$image.tmp/base.tar" >>"$log" 2>&1
  python3 - "$image.tmp" <<'EOF'
import gzip, hashlib, io, json, os, random, sys, tarfile
d = sys.argv[1]
os.makedirs(f"{d}/blobs/sha256")
rng = random.Random(20261205)
def put(data):
    h = hashlib.sha256(data).hexdigest()
    with open(f"{d}/blobs/sha256/{h}", "wb") as f:
        f.write(data)
    return "sha256:" + h
layers, diff_ids = [], []
def add_layer(tar_bytes):
    gz = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
    layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(gz), "size": len(gz)})
    diff_ids.append("sha256:" + hashlib.sha256(tar_bytes).hexdigest())
with open(f"{d}/base.tar", "rb") as f:
    add_layer(f.read())
for n in range(4):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for i in range(64):
            data = rng.randbytes(786432) + (b"layer %d file %d\n" % (n, i)) * 16384
            ti = tarfile.TarInfo(f"data{n}/file{i:03d}")
            ti.size, ti.mode, ti.mtime = len(data), 0o644, 0
            t.addfile(ti, io.BytesIO(data))
    add_layer(buf.getvalue())
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
                     "rootfs": {"type": "layers", "diff_ids": diff_ids},
                     "history": [{"created_by": f"layer {i}"} for i in range(len(layers))]}).encode()
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config),
                                  "size": len(config)}, "layers": layers}).encode()
md = put(manifest)
with open(f"{d}/oci-layout", "w") as f:
    f.write('{"imageLayoutVersion":"1.0.0"}')
with open(f"{d}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
               "digest": md, "size": len(manifest),
               "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
os.remove(f"{d}/base.tar")
EOF
  mv "$image.tmp" "$image"
fi
size_mb=$(du -sm "$image/blobs" | cut -f1)

start_registry source
src_host=$reg_host
skopeo copy --dest-tls-verify=false "oci:$image:bench" "docker://$src_host/bench/image:1" >>"$log" 2>&1
ref=$src_host/bench/image:1

seconds() {  # COMMAND... : its wall time ("failed" when it fails); its output goes to the log
  local t0 t1
  t0=$(date +%s.%N)
  if ! "$@" >>"$log" 2>&1; then
    echo failed
    return 0
  fi
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }'
}

tsv=$out/registry.tsv
printf 'round\toperation\ttool\tseconds\n' >"$tsv"
for r in $(seq 1 "$rounds"); do
  rm -rf "$work/store" "$work/skopeo-layout"
  podman_cmd rmi -a -f >>"$log" 2>&1 || true
  sync
  printf '%s\tpull\tstrata\t%s\n' "$r" "$(seconds "$strata" --root "$work/store" pull -q --tls-verify=false "$ref")" >>"$tsv"
  sync
  printf '%s\tpull\tpodman\t%s\n' "$r" "$(seconds podman_cmd pull -q --tls-verify=false "$ref")" >>"$tsv"
  sync
  printf '%s\tpull\tskopeo (to an OCI layout, no extraction)\t%s\n' "$r" \
    "$(seconds skopeo copy --src-tls-verify=false "docker://$ref" "oci:$work/skopeo-layout:bench")" >>"$tsv"
  sync
  # Each push goes to a registry of its own, so that no tool finds (or
  # mounts from) blobs another one pushed.
  start_registry "strata$r"
  printf '%s\tpush\tstrata\t%s\n' "$r" \
    "$(seconds "$strata" --root "$work/store" push -q --tls-verify=false "$ref" "$reg_host/bench/image:1")" >>"$tsv"
  sync
  start_registry "skopeo$r"
  printf '%s\tpush\tskopeo (from the strata store)\t%s\n' "$r" \
    "$(seconds skopeo copy --dest-tls-verify=false "oci:$work/store:$ref" "docker://$reg_host/bench/image:1")" >>"$tsv"
  sync
  start_registry "podman$r"
  printf '%s\tpush\tpodman\t%s\n' "$r" \
    "$(seconds podman_cmd push -q --tls-verify=false "$ref" "docker://$reg_host/bench/image:1")" >>"$tsv"
done

python3 - "$tsv" "$out/registry.md" "$size_mb" "$rounds" <<'EOF'
import statistics, sys
tsv, md, size, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
rows = [l.rstrip("\n").split("\t") for l in open(tsv)][1:]
med = {}
failed = set()
for _, op, tool, s in rows:
    if s == "failed":
        failed.add((op, tool))
        continue
    med.setdefault((op, tool), []).append(float(s))
med = {k: statistics.median(v) for k, v in med.items()}
lines = [f"Image: 5 gzip layers, {size} MB of blobs; median of {rounds} rounds; loopback docker-registry.", "",
         "| operation | tool | seconds | strata / tool |", "|---|---|---|---|"]
for (op, tool), s in med.items():
    ratio = med[(op, "strata")] / s if s > 0 else float("nan")
    lines.append(f"| {op} | {tool} | {s:.2f} | {ratio:.2f}x |")
for op, tool in sorted(failed):
    lines.append(f"| {op} | {tool} | failed at least once (see registry.log) | |")
goal_pull = med[("pull", "strata")] / med[("pull", "podman")]
goal_push = med[("push", "strata")] / med[("push", "skopeo (from the strata store)")]
lines += ["", f"Goals: pull <= 0.7x podman: {goal_pull:.2f}x ({'met' if goal_pull <= 0.7 else 'not met'}); "
          f"push <= 1.0x skopeo: {goal_push:.2f}x ({'met' if goal_push <= 1.0 else 'not met'})."]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
