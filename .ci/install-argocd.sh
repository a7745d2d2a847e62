#!/usr/bin/env bash
# Build Argo CD for the GitOps tests (tests/argocd) from the Go module proxy:
#   the `argocd` multi-call binary of github.com/argoproj/argo-cd/v3 ${ARGOCD_VERSION} (run as
#   argocd-repo-server, argocd-application-controller, argocd-applicationset-controller, ... by the
#   name it is called with, exactly as the official image does with symlinks)
# into ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/argocd-${ARGOCD_VERSION}/bin/, with the
# symlinks and the two scripts the image puts next to it (hack/git-verify-wrapper.sh, which the
# repo-server runs on every revision it reads, and hack/gpg-wrapper.sh), and that release's install manifests (manifests/core-install.yaml, crds/) in
# .../argocd-${ARGOCD_VERSION}/manifests/: the tests install Argo CD from them.
#
# Argo CD 3.6 needs Go 1.27 (its go directive); the toolchain comes from the Go module proxy
# (GOTOOLCHAIN=${GO_TOOLCHAIN}). Its go.mod replaces the nested module
# github.com/argoproj/argo-cd/gitops-engine/v3 with the folder ./gitops-engine, which the module zip
# of argo-cd does not contain (a folder with its own go.mod is a module of its own). Argo CD tags
# that module at every release (gitops-engine/v3.6.1), so the build takes argo-cd's own go.mod and
# go.sum as the main module and points that one replace at the published module of the same version.
#
# Idempotent: when the binary and its stamp are already there it returns in well under a second.
# The Go module cache and build cache live in the same cache dir, so a rebuild after a version bump
# reuses them. Progress goes to stderr; the last line on stdout is the bin dir, so
#   BIN=$(bash .ci/install-argocd.sh)
# works. Honours GOFLAGS (for example GOFLAGS=-p=1 to leave a core free) and FACEPIPE_TOOLS_CACHE.
set -euo pipefail

ARGOCD_VERSION=v3.6.1
GO_TOOLCHAIN=go1.27.4 # >= the go directive (1.27.0) of argo-cd v3.6.1; the newest 1.27 patch release
# The names the multi-call binary answers to (cmd/main.go), linked next to it.
COMMANDS=(argocd-repo-server argocd-application-controller argocd-applicationset-controller argocd-server)
SCRIPTS=(git-verify-wrapper.sh gpg-wrapper.sh) # from hack/, in /usr/local/bin of the official image

CACHE=${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}
ROOT=$CACHE/argocd-$ARGOCD_VERSION
BIN=$ROOT/bin
MANIFESTS=$ROOT/manifests
STAMP_WANTED="argo-cd=$ARGOCD_VERSION gitops-engine=$ARGOCD_VERSION go=$GO_TOOLCHAIN links=${COMMANDS[*]} scripts=${SCRIPTS[*]} manifests=core-install,crds"

log() { printf '[install-argocd] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

t_start=$(date +%s.%N)
elapsed() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1fs", b - a }'; }

have_all() {
    local name
    [ -x "$BIN/argocd" ] && [ -f "$MANIFESTS/core-install.yaml" ] || return 1
    for name in "${COMMANDS[@]}" "${SCRIPTS[@]}"; do
        [ -x "$BIN/$name" ] || return 1
    done
    [ -f "$BIN/.stamp" ] && [ "$(cat "$BIN/.stamp")" = "$STAMP_WANTED" ]
}

if have_all; then
    log "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
    echo "$BIN"
    exit 0
fi

command -v go >/dev/null 2>&1 || die "go is not on PATH"
mkdir -p "$ROOT" 2>/dev/null || die "cannot create $ROOT (set FACEPIPE_TOOLS_CACHE to a writable dir)"

# One build at a time per cache dir; a second caller waits and then finds the binary.
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
# -modcacherw: the module cache stays deletable with rm -rf.
export GOFLAGS="${GOFLAGS:-} -modcacherw"
export GOWORK=off
export GOTOOLCHAIN=$GO_TOOLCHAIN
mkdir -p "$BIN"
rm -f "$BIN/.stamp"
log "go: $(go version) (toolchain from the module proxy); cache: $ROOT; GOFLAGS=$GOFLAGS"

t0=$(date +%s.%N)
mod_json=$(go mod download -json "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION")
src=$(printf '%s\n' "$mod_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$src/go.mod" ] || die "go mod download gave no source for github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
engine_json=$(go mod download -json "github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD_VERSION")
engine=$(printf '%s\n' "$engine_json" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
[ -f "$engine/go.mod" ] || die "go mod download gave no source for github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD_VERSION"
grep -q '^replace github.com/argoproj/argo-cd/gitops-engine/v3 => ./gitops-engine$' "$src/go.mod" ||
    die "argo-cd $ARGOCD_VERSION's go.mod no longer replaces gitops-engine with ./gitops-engine: review this script"
log "modules downloaded ($(elapsed "$t0"))"

# The module source is read-only in the module cache: build a copy, with the nested module in
# the folder its go.mod expects (a copy too: a replace to a folder must not point into the cache,
# which `go clean -modcache` may empty).
work=$ROOT/build
rm -rf "$work"
cp -r "$src" "$work"
chmod -R u+w "$work"
cp -r "$engine" "$work/gitops-engine"
chmod -R u+w "$work/gitops-engine"

# The same -X flags as argo-cd's Makefile, so `argocd version` and the components' logs say 3.6.1.
pkg=github.com/argoproj/argo-cd/v3/common
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w -X $pkg.version=${ARGOCD_VERSION#v} -X $pkg.buildDate=$build_date"
ldflags+=" -X $pkg.gitTag=$ARGOCD_VERSION -X $pkg.gitTreeState=clean"
t1=$(date +%s.%N)
log "building argocd $ARGOCD_VERSION (cold cache: about 10 min on 2 cores; warm: a minute or two)"
(cd "$work" && go build -trimpath -ldflags="$ldflags" -o "$work/out/argocd" ./cmd)
mv -f "$work/out/argocd" "$BIN/argocd"
for name in "${COMMANDS[@]}"; do
    ln -sfn argocd "$BIN/$name"
done
for name in "${SCRIPTS[@]}"; do
    install -m 0755 "$work/hack/$name" "$BIN/$name"
done
rm -rf "$MANIFESTS"
mkdir -p "$MANIFESTS"
cp -r "$work/manifests/core-install.yaml" "$work/manifests/crds" "$MANIFESTS/"
rm -rf "$work"
log "built argocd ($(elapsed "$t1")): $("$BIN/argocd" version --client --short 2>&1 | head -n1)"
echo "$STAMP_WANTED" >"$BIN/.stamp"
log "done in $(elapsed "$t_start")"
echo "$BIN"
