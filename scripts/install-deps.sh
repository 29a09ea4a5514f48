#!/usr/bin/env bash
# Installs the Debian packages strata needs to build, test and benchmark.
# Idempotent: installs only what is missing; runs apt-get update only then.
# Usage: scripts/install-deps.sh [build|run|test|bench|fuzz]...   (default: build test)
set -euo pipefail

build_pkgs=(meson ninja-build g++ pkg-config libfuse3-dev fuse3 libarchive-dev libxxhash-dev
  libboost-program-options-dev doctest-dev nlohmann-json3-dev libssl-dev libcurl4-openssl-dev
  libtomlplusplus-dev libseccomp-dev zlib1g-dev)
# What `strata run` uses at run time: FUSE for stratafs, the id mapping tools
# of an unprivileged user, slirp4netns for private networking (the default),
# git for a build's ADD of a git repository.
run_pkgs=(fuse3 uidmap slirp4netns git)
# What the integration tests drive: real FUSE, kernel overlayfs's reference
# tools, archive tools, interop peers (skopeo, umoci, buildah, a registry), an
# unprivileged user's id mapping tools, the offline base image's busybox,
# and the shells whose completion scripts strata generates.
test_pkgs=("${run_pkgs[@]}" python3 python3-pytest attr busybox-static fuse-overlayfs zstd xz-utils kmod
  skopeo umoci buildah docker-registry util-linux procps psmisc zsh fish)
# The registry tests: htpasswd for Basic auth, openssl for TLS certificates,
# PyJWT and cryptography for the Bearer token server.
test_pkgs+=(apache2-utils openssl python3-jwt python3-cryptography)
# scripts/lint.sh, which scripts/test.sh runs as one test: clang-tidy.
test_pkgs+=(clang-tidy)
# strata run's opt-in Debian test (STRATA_SLOW_TESTS=1) builds its base with debootstrap.
test_pkgs+=(debootstrap)
# stratafs -o volatile's test counts the daemon's syncs with strace; the ssh
# mount's test runs a real ssh-agent and builds its static client with gcc.
test_pkgs+=(strace openssh-client gcc libc6-dev)
# The realistic oracle builds (test_build_oracle.py) make their toolchain
# bases from installed packages: gcc and libc6-dev (above), and pip.
test_pkgs+=(python3-pip)
# The fuzz targets (scripts/fuzz.sh), on top of the build's: clang and its
# runtime libraries (libFuzzer and the sanitizers; only a recommendation of
# clang, so named here).
fuzz_pkgs=("${build_pkgs[@]}" clang libclang-rt-14-dev)
bench_pkgs=(fuse-overlayfs hyperfine umoci buildah time g++ python3 util-linux linux-perf strace busybox-static
  skopeo podman docker-registry)

groups=("$@")
[ ${#groups[@]} -gt 0 ] || groups=(build test)
wanted=()
for g in "${groups[@]}"; do
  case "$g" in
    build) wanted+=("${build_pkgs[@]}") ;;
    run) wanted+=("${run_pkgs[@]}") ;;
    test) wanted+=("${test_pkgs[@]}") ;;
    bench) wanted+=("${bench_pkgs[@]}") ;;
    fuzz) wanted+=("${fuzz_pkgs[@]}") ;;
    *) echo "install-deps: unknown group '$g' (build, run, test, bench, fuzz)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  sudo=sudo
else
  sudo=
fi
echo "install-deps: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
