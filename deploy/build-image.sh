#!/usr/bin/env bash
# Build the ringcache image (ringcache:latest) on a machine that may reach no image registry.
#
# Python packages come from a wheelhouse made here on the host (deploy/build/wheelhouse).
# The base is BASE_IMAGE when given; otherwise python:3.11-slim if it is present or can be
# pulled within PULL_TIMEOUT seconds, else a local Debian bookworm base made with
# debootstrap from the mirror apt on this host already uses, and `docker import`.
# Both the wheelhouse and the local base are kept and reused while their inputs are the same.
#
# Environment: IMAGE (ringcache:latest), BASE_IMAGE, PULL_TIMEOUT (20), PYTHON (python3),
# DEBIAN_MIRROR (default: read from /etc/apt/sources.list*).
set -euo pipefail

cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-ringcache:latest}
DEFAULT_BASE=python:3.11-slim
LOCAL_BASE=ringcache-base:bookworm
INSTALL_STAGE=ringcache-build:latest
BUILT_BY_LABEL=org.ringcache.built-by=deploy/build-image.sh   # also in the Dockerfile
SUITE=bookworm
PYTHON_VERSION=3.11            # what both bases run; the wheels are chosen for it
BASE_PACKAGES=python3,python3-venv
PULL_TIMEOUT=${PULL_TIMEOUT:-20}
PYTHON=${PYTHON:-python3}
BUILD=deploy/build
WHEELS=$BUILD/wheelhouse

say() { echo "build-image: $*" >&2; }
die() { say "$*"; exit 1; }
digest() { sha256sum | cut -c1-16; }

# -- a running Docker engine ---------------------------------------------------------------

start_dockerd() {
    say "starting dockerd (log: /var/log/dockerd.log)"
    # setsid: the daemon outlives this script and whatever process group ran it.
    setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "dockerd did not come up within 60s; see /var/log/dockerd.log"
}

ensure_docker() {
    command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ]; then
        die "no Docker engine answers. Install one (Debian: apt-get install docker.io), start it, and make sure this user may use it (group docker)."
    fi
    if ! command -v dockerd >/dev/null 2>&1; then
        say "installing docker.io from Debian's packages"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker.io >/dev/null
    fi
    pgrep -x dockerd >/dev/null || start_dockerd
    for _ in $(seq 30); do
        docker info >/dev/null 2>&1 && return 0
        sleep 1
    done
    die "dockerd runs but does not answer; see /var/log/dockerd.log"
}

# -- the wheelhouse ------------------------------------------------------------------------

stamp_matches() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

build_wheelhouse() {
    local arch deps package platforms=() n
    arch=$(docker info --format '{{.Architecture}}')   # the engine's: x86_64, aarch64
    "$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip; set PYTHON to a Python 3.11+ with pip"
    # Two parts, each remade only when its inputs change: the dependencies with
    # pyproject.toml, the ringcache wheel with any source file. (A wheel rebuilt from the
    # same sources differs in its timestamps and would defeat Docker's layer cache.)
    deps=$( { echo "$arch $PYTHON_VERSION $EXTRAS"; cat pyproject.toml; } | digest)
    package=$( { cat pyproject.toml setup.py README.md;
                 find router storage_node shared -type f \( -name '*.py' -o -name '*.proto' \
                     -o -name '*.c' -o -name '*.h' \) -print0 | sort -z | xargs -0 cat; } | digest)
    if ! stamp_matches "$WHEELS/ringcache/.inputs" "$package"; then
        say "building the ringcache wheel into $WHEELS/ringcache"
        rm -rf "$WHEELS/ringcache"
        "$PYTHON" -m pip wheel -qq --no-deps --wheel-dir "$WHEELS/ringcache" .
        echo "$package" > "$WHEELS/ringcache/.inputs"
    fi
    if ! stamp_matches "$WHEELS/deps/.inputs" "$deps"; then
        say "downloading the dependencies' wheels (extras: ${EXTRAS:-none}) into $WHEELS/deps"
        rm -rf "$WHEELS/deps"
        # Binary wheels for the image's Python and platform, whatever Python runs here: any
        # manylinux up to glibc 2.36 (bookworm's), each tag named, as older pips do not
        # widen a manylinux_2_N platform to the ones below it.
        for n in $(seq 36 -1 5); do platforms+=(--platform "manylinux_2_${n}_$arch"); done
        platforms+=(--platform "manylinux2014_$arch" --platform "manylinux2010_$arch" --platform "manylinux1_$arch")
        # ringcache's own wheel carries its compiled hot path (setup.py), built here for
        # this host's glibc, which the image's Debian shares: a plain linux_ wheel.
        platforms+=(--platform "linux_$arch")
        "$PYTHON" -m pip download -qq --dest "$WHEELS/deps" --only-binary=:all: \
            --python-version "$PYTHON_VERSION" --implementation cp "${platforms[@]}" \
            "$(echo "$WHEELS"/ringcache/ringcache-*.whl)[$EXTRAS]"
        rm "$WHEELS"/deps/ringcache-*.whl
        echo "$deps" > "$WHEELS/deps/.inputs"
    fi
}

# -- the base image ------------------------------------------------------------------------

# The first mirror that apt on this host uses for $SUITE: one-line .list or deb822 .sources.
host_debian_mirror() {
    local f
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" '$1 == "deb" {
            sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, "")
            if ($2 == suite) { print $1; exit }
        }' "$f"
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        awk -v suite="$SUITE" 'BEGIN { RS = ""; FS = "\n" } {
            types = uris = suites = ""
            for (i = 1; i <= NF; i++) {
                if ($i ~ /^Types:/) types = " " substr($i, 7) " "
                if ($i ~ /^URIs:/) uris = substr($i, 6)
                if ($i ~ /^Suites:/) suites = " " substr($i, 8) " "
            }
            gsub(/[ \t]+/, " ", types); gsub(/[ \t]+/, " ", suites)
            if (types ~ / deb / && suites ~ (" " suite " ")) { split(uris, u, " "); print u[1]; exit }
        }' "$f"
    done
}

build_local_base() {
    local mirror inputs rootfs
    mirror=${DEBIAN_MIRROR:-$(host_debian_mirror | head -n 1)}
    [ -n "$mirror" ] || die "no Debian $SUITE mirror in /etc/apt/sources.list*; set DEBIAN_MIRROR"
    inputs=$(echo "$SUITE $BASE_PACKAGES $(uname -m) $mirror" | digest)
    if [ "$(docker image inspect -f '{{index .Config.Labels "org.ringcache.base-inputs"}}' \
              "$LOCAL_BASE" 2>/dev/null)" = "$inputs" ]; then
        say "local base $LOCAL_BASE is current"
        return 0
    fi
    [ "$(id -u)" = 0 ] || die "making the local base needs root (debootstrap); or pass BASE_IMAGE=an image with Python $PYTHON_VERSION"
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap from Debian's packages"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >/dev/null
    fi
    rootfs=$(mktemp -d /var/tmp/ringcache-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    say "debootstrap $SUITE with $BASE_PACKAGES from $mirror (a few minutes)"
    debootstrap --variant=minbase --include="$BASE_PACKAGES" "$SUITE" "$rootfs" "$mirror" \
        > "$BUILD/debootstrap.log" 2>&1 || die "debootstrap failed; see $BUILD/debootstrap.log"
    # What a container never needs: package lists and archives, docs, man pages, locales.
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/log/* \
        "$rootfs"/usr/share/doc "$rootfs"/usr/share/man "$rootfs"/usr/share/locale
    tar -C "$rootfs" --numeric-owner -c . | docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'CMD ["python3"]' \
        --change "LABEL org.ringcache.base-inputs=$inputs" \
        - "$LOCAL_BASE" >/dev/null
    rm -rf "$rootfs"
    trap - EXIT
    say "made local base $LOCAL_BASE"
}

choose_base() {
    if [ -n "${BASE_IMAGE:-}" ]; then
        echo "$BASE_IMAGE"
    elif docker image inspect "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"
    elif timeout "$PULL_TIMEOUT" docker pull -q "$DEFAULT_BASE" >/dev/null 2>&1; then
        echo "$DEFAULT_BASE"
    else
        say "cannot pull $DEFAULT_BASE within ${PULL_TIMEOUT}s; using a local Debian $SUITE base"
        build_local_base
        echo "$LOCAL_BASE"
    fi
}

main() {
    mkdir -p "$BUILD"
    # The image can use every data source: all optional extras but the test tools.
    EXTRAS=$("$PYTHON" -c 'import tomllib
extras = tomllib.load(open("pyproject.toml", "rb"))["project"].get("optional-dependencies", {})
print(",".join(name for name in extras if name != "test"))')
    ensure_docker
    build_wheelhouse
    local base
    base=$(choose_base)
    say "building $IMAGE on $base"
    # The install stage is tagged too, so that Docker keeps it as the cache of the next
    # build while the replaced images of earlier builds can be pruned.
    local args=(--force-rm --build-arg "BASE_IMAGE=$base" --build-arg "EXTRAS=$EXTRAS" -f deploy/Dockerfile)
    { docker build "${args[@]}" --target install -t "$INSTALL_STAGE" deploy \
      && docker build "${args[@]}" -t "$IMAGE" deploy; } \
        > "$BUILD/docker-build.log" 2>&1 || { tail -n 20 "$BUILD/docker-build.log" >&2; die "docker build failed"; }
    docker image prune --force --filter "label=$BUILT_BY_LABEL" >/dev/null
    say "built $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'))"
}

main "$@"
