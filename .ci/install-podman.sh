#!/usr/bin/env bash
# Podman for the container test tier (tests/container), set up the way these machines need it:
#   1. apt-get install podman runc debootstrap (skipped when all three are there);
#   2. a private containers.conf (runtime runc: crun cannot set rlimits here; lower default
#      ulimits) at ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/podman/containers.conf;
#      use it as CONTAINERS_CONF=<that file> podman ...  (apps/facepipe_dev/podman.py does);
#   3. the local base image localhost/facepipe-base:bookworm (no registry is reachable: Debian
#      bookworm made with debootstrap --variant=minbase from the apt mirror this host uses, then
#      `podman import`). It stands in for debian:bookworm-slim, apps/Dockerfile's default base.
#      The root filesystem tarball is kept in the tools cache, so a wiped podman storage costs
#      an import (~10 s), not a debootstrap (~40 s).
#
# Idempotent: every step is skipped when its result is there. Progress and timings go to stderr;
# the last line on stdout is the containers.conf path, so  CONF=$(bash .ci/install-podman.sh)  works.
# Options: --no-base (steps 1-2 only).  Env: FACEPIPE_TOOLS_CACHE, FACEPIPE_BASE_IMAGE,
# FACEPIPE_DEBIAN_MIRROR (default: the first Debian mirror in /etc/apt/sources.list*).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BASE_IMAGE=${FACEPIPE_BASE_IMAGE:-localhost/facepipe-base:bookworm}
SUITE=bookworm
# Nothing beyond minbase: like debian:bookworm-slim, the base has no python3, so apps/Dockerfile's
# apt-get steps do the same work here as on a user's machine (and the image size is comparable).
INCLUDE=${FACEPIPE_BASE_INCLUDE:-}
DIR=$CACHE/podman
CONF=$DIR/containers.conf
ROOTFS_TAR=$DIR/facepipe-base-$SUITE.tar
STAMP_WANTED="suite=$SUITE variant=minbase include=$INCLUDE slim=1"
WANT_BASE=1
[ "${1:-}" = "--no-base" ] && WANT_BASE=0

# --- 1. packages ---------------------------------------------------------------------------------
missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || missing+=("$tool")
done
# debootstrap verifies bookworm with Debian's archive keys (not installed on Ubuntu by default).
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || missing+=(debian-archive-keyring)
if [ ${#missing[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || die "missing ${missing[*]}: run this script as root (it uses apt-get)"
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    t=$(date +%s.%N)
    log "apt-get install podman runc debootstrap debian-archive-keyring (missing: ${missing[*]})"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends \
        podman runc debootstrap debian-archive-keyring uidmap slirp4netns fuse-overlayfs containernetworking-plugins \
        iptables ca-certificates >&2
    log "packages installed ($(elapsed "$t"))"
else
    log "packages present: podman $(podman --version 2>/dev/null | awk '{print $3}'), runc, debootstrap"
fi

# --- 2. containers.conf -------------------------------------------------------------------------
make_cache_dir "$DIR"
conf_text='# Written by .ci/install-podman.sh: use as CONTAINERS_CONF=<this file> podman ...
# crun cannot raise rlimits here (no CAP_SYS_RESOURCE, cgroups v1 hybrid): use runc and
# default ulimits that fit under the sandbox'"'"'s limits.
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]

[engine]
runtime = "runc"
'
if [ ! -f "$CONF" ] || [ "$(cat "$CONF")" != "$(printf '%s' "$conf_text")" ]; then
    printf '%s' "$conf_text" >"$CONF.part" && mv "$CONF.part" "$CONF"
    log "wrote $CONF"
fi
export CONTAINERS_CONF=$CONF

if [ "$WANT_BASE" = 0 ]; then
    log "done, base image skipped (--no-base) ($(elapsed "$t_start"))"
    echo "$CONF"
    exit 0
fi

# --- 3. the local base image --------------------------------------------------------------------
exec 9>"$DIR/.lock"
flock 9

label_stamp() { podman image inspect --format '{{ index .Labels "org.facepipe.base.stamp" }}' "$BASE_IMAGE" 2>/dev/null || true; }
if podman image exists "$BASE_IMAGE" && [ "$(label_stamp)" = "$STAMP_WANTED" ]; then
    log "cached: $BASE_IMAGE ($(elapsed "$t_start"))"
    echo "$CONF"
    exit 0
fi

# The Debian mirror apt uses here (deb822 .sources or one-line .list); debootstrap needs the
# main archive, not -security.
mirror=${FACEPIPE_DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
        grep -v '^\s*#' |
        grep -oE '(https?|file)://[^ ]+' |
        grep -E '/debian/?$' | head -n1 || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}

if [ ! -s "$ROOTFS_TAR" ] || [ "$(cat "$ROOTFS_TAR.stamp" 2>/dev/null)" != "$STAMP_WANTED" ]; then
    t=$(date +%s.%N)
    work=$(mktemp -d "$DIR/.rootfs.XXXXXX")
    trap 'rm -rf "$work"' EXIT
    log "debootstrap --variant=minbase ${INCLUDE:+--include=$INCLUDE }$SUITE from $mirror (first time: ~40 s)"
    debootstrap --variant=minbase ${INCLUDE:+--include="$INCLUDE"} "$SUITE" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 30 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    # The apt sources a debian:bookworm-slim image has (main, updates, security), on this mirror.
    security=${mirror%/debian}/debian-security
    rm -f "$work/rootfs/etc/apt/sources.list"
    cat >"$work/rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # Slim like the official debian:*-slim images: apt keeps no caches or translations, dpkg
    # skips docs, man pages and locales (also for packages installed later), and none are left.
    r=$work/rootfs
    cat >"$r/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
    echo 'Acquire::GzipIndexes "true";' >"$r/etc/apt/apt.conf.d/docker-gzip-indexes"
    mkdir -p "$r/etc/dpkg/dpkg.cfg.d"
    cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/overrides/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
    rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb "$r/var/log/"*.log \
        "$r/usr/share/groff/"* "$r/usr/share/info/"* "$r/usr/share/linda/"* "$r/usr/share/lintian/overrides/"* "$r/usr/share/man/"*
    find "$r/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
    find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
    tar --numeric-owner -C "$work/rootfs" -cf "$ROOTFS_TAR.part" .
    mv "$ROOTFS_TAR.part" "$ROOTFS_TAR"
    echo "$STAMP_WANTED" >"$ROOTFS_TAR.stamp"
    rm -rf "$work"
    trap - EXIT
    log "root filesystem made: $ROOTFS_TAR ($(du -sh "$ROOTFS_TAR" | cut -f1), $(elapsed "$t"))"
fi

t=$(date +%s.%N)
podman import \
    --change 'CMD ["/bin/bash"]' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "LABEL org.facepipe.base.stamp=\"$STAMP_WANTED\"" \
    --change "LABEL org.opencontainers.image.description=\"Debian $SUITE minbase (debootstrap from $mirror), stand-in for debian:$SUITE-slim\"" \
    "$ROOTFS_TAR" "$BASE_IMAGE" >/dev/null
log "imported $BASE_IMAGE ($(elapsed "$t")); total $(elapsed "$t_start")"
echo "$CONF"
