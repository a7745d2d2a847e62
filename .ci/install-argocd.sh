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

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$CACHE/argocd-$ARGOCD_VERSION
BIN=$ROOT/bin
MANIFESTS=$ROOT/manifests
STAMP=$BIN/.stamp
STAMP_WANTED="argo-cd=$ARGOCD_VERSION gitops-engine=$ARGOCD_VERSION go=$GO_TOOLCHAIN links=${COMMANDS[*]} scripts=${SCRIPTS[*]} manifests=core-install,crds"
ANSWER=$BIN

have_all() {
    executables_in "$BIN" argocd "${COMMANDS[@]}" "${SCRIPTS[@]}" && [ -f "$MANIFESTS/core-install.yaml" ] && stamp_matches
}

exit_if_installed "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
go_build_begin "$GO_TOOLCHAIN" " (toolchain from the module proxy)"

t0=$(date +%s.%N)
src=$(go_mod_field Dir "github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION")
[ -f "$src/go.mod" ] || die "go mod download gave no source for github.com/argoproj/argo-cd/v3@$ARGOCD_VERSION"
engine=$(go_mod_field Dir "github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD_VERSION")
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
finish_install "done in $(elapsed "$t_start")"
