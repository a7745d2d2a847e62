#!/usr/bin/env bash
# Build a real control plane for the tests from the Go module proxy:
#   kube-apiserver and kube-controller-manager (k8s.io/kubernetes ${KUBE_VERSION}) and
#   etcd (go.etcd.io/etcd/server/v3 ${ETCD_VERSION}, the version that Kubernetes release pins).
# into ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/kube-${KUBE_VERSION}/bin/.
#
# With arguments it builds only those commands of the same release into the same bin dir, each set
# with a stamp of its own, so a tier that needs one more (`bash .ci/install-kube.sh kube-scheduler`
# for the Argo CD tier) does not change the control plane's stamp, which would make every checkout
# rebuild it. They share the module and build caches: a warm extra build takes about a minute.
#
# Idempotent: when the binaries and their stamp are already there it returns in well under a second.
# The Go module cache and build cache live in the same cache dir, so a rebuild after a version bump
# reuses them. Progress goes to stderr; the last line on stdout is the bin dir, so
#   BIN=$(bash .ci/install-kube.sh)
# works. Needs Go (>= the go directive of k8s.io/kubernetes) and the Go module proxy.
# Honours GOFLAGS (for example GOFLAGS=-p=1 to leave a core free) and FACEPIPE_TOOLS_CACHE.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_VERSION=v1.36.3
ETCD_VERSION=v3.6.8 # build/dependencies.yaml of k8s.io/kubernetes v1.36.3: etcd 3.6.8
if [ $# -gt 0 ]; then
    KUBE_COMMANDS=("$@") # extra commands only (no etcd), stamped on their own
    SET_NAME=$(IFS=-; echo "$*")
else
    KUBE_COMMANDS=(kube-apiserver kube-controller-manager)
    SET_NAME=""
fi
for name in "${KUBE_COMMANDS[@]}"; do
    [[ $name =~ ^kube-[a-z-]+$ ]] || { log "error: not a command of k8s.io/kubernetes/cmd: $name"; exit 2; }
done

ROOT=$CACHE/kube-$KUBE_VERSION
BIN=$ROOT/bin
if [ -z "$SET_NAME" ]; then
    STAMP=$BIN/.stamp
    STAMP_WANTED="kubernetes=$KUBE_VERSION etcd=$ETCD_VERSION commands=${KUBE_COMMANDS[*]}"
    EXECUTABLES=("${KUBE_COMMANDS[@]}" etcd)
else
    STAMP=$BIN/.stamp-$SET_NAME
    STAMP_WANTED="kubernetes=$KUBE_VERSION commands=${KUBE_COMMANDS[*]}"
    EXECUTABLES=("${KUBE_COMMANDS[@]}")
fi
ANSWER=$BIN

# openssl makes the test certificates (apps/facepipe_dev/kube.py).
if ! command -v openssl >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        log "installing openssl with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl >&2
    else
        log "warning: openssl is missing and cannot be installed here; the kube tests will skip"
    fi
fi

have_all() { executables_in "$BIN" "${EXECUTABLES[@]}" && stamp_matches; }

exit_if_installed "cached: $STAMP_WANTED ($(elapsed "$t_start"))"
go_build_begin "" ""

# --- Kubernetes -----------------------------------------------------------------------------
t0=$(date +%s.%N)
staging_version="v0.${KUBE_VERSION#v1.}"
kube_gomod=$(go_mod_field GoMod "k8s.io/kubernetes@$KUBE_VERSION")
[ -f "$kube_gomod" ] || die "go mod download gave no go.mod for k8s.io/kubernetes@$KUBE_VERSION"
go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$kube_gomod")
# Its go.mod replaces every staging module with ./staging/src/k8s.io/<name>; those directories are
# not in the module zip, so point each at its published tag instead (v1.X.Y -> v0.X.Y).
mapfile -t staging < <(sed -n 's|^[[:space:]]*\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/src/.*$|\1|p' "$kube_gomod")
[ "${#staging[@]}" -gt 10 ] || die "found only ${#staging[@]} staging replace lines in $kube_gomod"
log "k8s.io/kubernetes $KUBE_VERSION: go $go_directive, ${#staging[@]} staging modules -> $staging_version"

kmod=$ROOT/build-kubernetes${SET_NAME:+-$SET_NAME}
rm -rf "$kmod"
mkdir -p "$kmod"
{
    echo "module facepipe.invalid/kube-tools"
    echo
    echo "go $go_directive"
    echo
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do
        echo "	$m => $m $staging_version"
    done
    echo ")"
} >"$kmod/go.mod"

kube_pkgs=()
for name in "${KUBE_COMMANDS[@]}"; do
    kube_pkgs+=("k8s.io/kubernetes/cmd/$name")
done
(cd "$kmod" && go get "${kube_pkgs[@]/%/@$KUBE_VERSION}" >&2)
log "kubernetes modules resolved ($(elapsed "$t0"))"

# The same -X flags as hack/lib/version.sh, so /version says v1.36.3 (helm's kubeVersion checks
# and client version-skew warnings read it) rather than v0.0.0-master.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$build_date"
done
t1=$(date +%s.%N)
if [ -z "$SET_NAME" ]; then
    log "building ${KUBE_COMMANDS[*]} (cold cache: about 8 min on 2 cores; warm: under a minute)"
else
    log "building ${KUBE_COMMANDS[*]} (with the control plane's build cache: about a minute)"
fi
(cd "$kmod" && go build -trimpath -ldflags="$ldflags" -o "$kmod/out/" "${kube_pkgs[@]}")
for name in "${KUBE_COMMANDS[@]}"; do
    mv -f "$kmod/out/$name" "$BIN/$name"
done
log "built ${KUBE_COMMANDS[*]} ($(elapsed "$t1"))"

finish() {
    for name in "${KUBE_COMMANDS[@]}"; do
        log "$name: $("$BIN/$name" --version 2>&1 | head -n1)"
    done
    finish_install "done in $(elapsed "$t_start")"
}
if [ -n "$SET_NAME" ]; then
    finish
    exit 0
fi

# --- etcd -------------------------------------------------------------------------------------
# Since 3.5 the etcd main package is the root of the go.etcd.io/etcd/server/v3 module; it gets its
# own throwaway module so its dependency versions don't mix with Kubernetes'.
t2=$(date +%s.%N)
emod=$ROOT/build-etcd
rm -rf "$emod"
mkdir -p "$emod"
printf 'module facepipe.invalid/etcd-tools\n\ngo %s\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
    "$go_directive" "$ETCD_VERSION" >"$emod/go.mod"
(cd "$emod" && go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION" >&2)
(cd "$emod" && go build -trimpath -ldflags="-s -w" -o "$emod/out/etcd" go.etcd.io/etcd/server/v3)
mv -f "$emod/out/etcd" "$BIN/etcd"
log "built etcd $ETCD_VERSION ($(elapsed "$t2"))"

log "etcd: $("$BIN/etcd" --version 2>&1 | head -n1)"
finish
