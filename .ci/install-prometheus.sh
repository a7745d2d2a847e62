#!/usr/bin/env bash
# Build Prometheus and promtool for the monitoring tests from the Go module proxy:
#   github.com/prometheus/prometheus ${PROMETHEUS_MODULE_VERSION} (Prometheus ${PROMETHEUS_VERSION})
# into ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/prometheus-${PROMETHEUS_VERSION}/bin/.
#
# Built with the module's own go.mod (go install pkg@version), with the build tags
# remove_all_sd (only the static, file and http service discoveries: the tests scrape loopback
# targets; this drops the cloud SDKs from the build) and netgo. Without builtinassets the web UI's
# static files are not embedded; the HTTP API, which is all the tests use, is complete.
#
# Idempotent: when the binaries and their stamp are already there it returns in well under a second.
# The Go module cache and build cache live in the same cache dir, so a rebuild after a version bump
# reuses them. Progress goes to stderr; the last line on stdout is the bin dir, so
#   BIN=$(bash .ci/install-prometheus.sh)
# works. Needs Go (>= the go directive of the module) and the Go module proxy.
# Honours GOFLAGS (for example GOFLAGS=-p=1 to leave a core free) and FACEPIPE_TOOLS_CACHE.
set -euo pipefail

PROMETHEUS_VERSION=3.16.0
PROMETHEUS_MODULE_VERSION=v0.316.0 # Prometheus 3.x is published as module versions v0.3XX.Y
BUILD_TAGS=remove_all_sd,netgo
COMMANDS=(prometheus promtool)

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ROOT=$CACHE/prometheus-$PROMETHEUS_VERSION
BIN=$ROOT/bin
STAMP=$BIN/.stamp
STAMP_WANTED="prometheus=$PROMETHEUS_MODULE_VERSION tags=$BUILD_TAGS commands=${COMMANDS[*]}"
ANSWER=$BIN

have_all() { executables_in "$BIN" "${COMMANDS[@]}" && stamp_matches; }

exit_if_installed "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
# go install pkg@version needs a toolchain at least as new as the module's go directive; never
# let it download another one (GOTOOLCHAIN=local).
go_build_begin local ""

# The same -X flags as the module's .promu.yml, so --version and prometheus_build_info say 3.16.0.
build_date=$(date -u +%Y%m%d-%H:%M:%S)
ldflags="-s -w"
for kv in "Version=$PROMETHEUS_VERSION" "Revision=$PROMETHEUS_MODULE_VERSION" "Branch=HEAD" \
    "BuildUser=facepipe" "BuildDate=$build_date"; do
    ldflags+=" -X github.com/prometheus/common/version.$kv"
done

pkgs=()
for name in "${COMMANDS[@]}"; do
    pkgs+=("github.com/prometheus/prometheus/cmd/$name@$PROMETHEUS_MODULE_VERSION")
done
log "building ${COMMANDS[*]} with -tags $BUILD_TAGS (cold cache: about 3.5 min on 2 cores; warm: under a minute)"
t0=$(date +%s.%N)
GOBIN=$ROOT/out go install -trimpath -tags "$BUILD_TAGS" -ldflags="$ldflags" "${pkgs[@]}"
for name in "${COMMANDS[@]}"; do
    mv -f "$ROOT/out/$name" "$BIN/$name"
    log "$name: $("$BIN/$name" --version 2>&1 | head -n1)"
done
log "built ${COMMANDS[*]} ($(elapsed "$t0"))"
finish_install "done in $(elapsed "$t_start")"
