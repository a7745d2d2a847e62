#!/usr/bin/env bash
# Build KWOK (sigs.k8s.io/kwok ${KWOK_VERSION}, the Kubernetes project's node and pod simulator) for
# the Argo CD tier (tests/argocd) from the Go module proxy, into
# ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/kwok-${KWOK_VERSION}/bin/kwok, and KWOK's own
# stage definitions of that release (kustomize/stage/: node heartbeats, pod and volume life cycles)
# into .../kwok-${KWOK_VERSION}/stages/, which the tests configure kwok with (kwokctl does the same).
#
# KWOK keeps fake nodes alive (leases, conditions) and takes every pod bound to them through its
# life cycle (Running, Ready, deleted), so that Deployments become available without a kubelet or
# containers. The scheduler that binds the pods is the real kube-scheduler (install-kube.sh
# kube-scheduler). KWOK v0.8.0 is built against Kubernetes 1.36 (k8s.io/client-go v0.36.1), the
# API server's release.
#
# Idempotent: when the binary and its stamp are already there it returns in well under a second.
# Progress goes to stderr; the last line on stdout is the bin dir, so  BIN=$(bash .ci/install-kwok.sh)
# works. Needs Go (>= the go directive of the module) and the Go module proxy.
# Honours GOFLAGS and FACEPIPE_TOOLS_CACHE.
set -euo pipefail

KWOK_VERSION=v0.8.0

CACHE=${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}
ROOT=$CACHE/kwok-$KWOK_VERSION
BIN=$ROOT/bin
STAGES=$ROOT/stages
STAMP_WANTED="kwok=$KWOK_VERSION stages=kustomize/stage"

log() { printf '[install-kwok] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

have_all() {
    [ -x "$BIN/kwok" ] && [ -d "$STAGES/pod/fast" ] && [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$STAMP_WANTED" ]
}

if have_all; then
    log "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH"
mkdir -p "$ROOT" 2>/dev/null || die "cannot create $ROOT (set FACEPIPE_TOOLS_CACHE to a writable dir)"

exec 9>"$ROOT/.lock"
flock 9
if have_all; then
    log "built meanwhile by another run: $STAMP_WANTED"
    echo "$BIN"
    exit 0
fi

export GOPATH=$ROOT/gopath
export GOMODCACHE=$ROOT/gomodcache
export GOCACHE=$ROOT/gocache
export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-} -modcacherw"
export GOWORK=off
export GOTOOLCHAIN=local
mkdir -p "$BIN"
rm -f "$BIN/.stamp"
log "go: $(go version); cache: $ROOT; GOFLAGS=$GOFLAGS"

log "building kwok $KWOK_VERSION (cold cache: about 3 min on 2 cores)"
GOBIN=$ROOT/out go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
mv -f "$ROOT/out/kwok" "$BIN/kwok"
src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -d "$src/kustomize/stage" ] || die "no kustomize/stage in sigs.k8s.io/kwok@$KWOK_VERSION"
rm -rf "$STAGES"
cp -r "$src/kustomize/stage" "$STAGES"
chmod -R u+w "$STAGES"
log "kwok: $("$BIN/kwok" --version 2>&1 | head -n1)"
echo "$STAMP_WANTED" >"$BIN/.stamp"
log "done in $(elapsed "$t_start")"
echo "$BIN"
