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

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$CACHE/kwok-$KWOK_VERSION
BIN=$ROOT/bin
STAGES=$ROOT/stages
STAMP=$BIN/.stamp
STAMP_WANTED="kwok=$KWOK_VERSION stages=kustomize/stage"
ANSWER=$BIN

have_all() { executables_in "$BIN" kwok && [ -d "$STAGES/pod/fast" ] && stamp_matches; }

exit_if_installed "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
go_build_begin local ""

log "building kwok $KWOK_VERSION (cold cache: about 3 min on 2 cores)"
GOBIN=$ROOT/out go install -trimpath -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
mv -f "$ROOT/out/kwok" "$BIN/kwok"
src=$(go_mod_field Dir "sigs.k8s.io/kwok@$KWOK_VERSION")
[ -d "$src/kustomize/stage" ] || die "no kustomize/stage in sigs.k8s.io/kwok@$KWOK_VERSION"
rm -rf "$STAGES"
cp -r "$src/kustomize/stage" "$STAGES"
chmod -R u+w "$STAGES"
log "kwok: $("$BIN/kwok" --version 2>&1 | head -n1)"
finish_install "done in $(elapsed "$t_start")"
