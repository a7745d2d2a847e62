#!/usr/bin/env bash
# Install a pinned checkov (the security scan of the charts' rendered manifests) into its own
# virtual environment: ${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}/helm/checkov-venv
# (it pins an old boto3, so it must not share the project's venv).
#
# Idempotent: when the pinned version is already installed it returns at once. Progress goes to
# stderr; the last line on stdout is the checkov executable, so  CHECKOV=$(bash .ci/install-checkov.sh)
# works. Run it offline with --skip-download (or BC_SKIP_MAPPING=TRUE), as tests/charts does.
set -euo pipefail

CHECKOV_VERSION=3.3.30
CACHE=${FACEPIPE_TOOLS_CACHE:-/var/cache/facepipe-tools}
DIR=$CACHE/helm
VENV=$DIR/checkov-venv
STAMP_WANTED="checkov==$CHECKOV_VERSION"
PYTHON=${PYTHON:-python3}

log() { printf '[install-checkov] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

have() { [ -x "$VENV/bin/checkov" ] && [ -f "$VENV/.stamp" ] && [ "$(cat "$VENV/.stamp")" = "$STAMP_WANTED" ]; }

if have; then
    log "cached: $STAMP_WANTED in $VENV"
    echo "$VENV/bin/checkov"
    exit 0
fi

mkdir -p "$DIR" 2>/dev/null || die "cannot create $DIR (set FACEPIPE_TOOLS_CACHE to a writable dir)"
exec 9>"$DIR/.checkov.lock"
flock 9
if have; then
    log "installed meanwhile by another run: $STAMP_WANTED"
    echo "$VENV/bin/checkov"
    exit 0
fi

t0=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (apt-get install python3-venv?)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
log "installing $STAMP_WANTED (first time: a minute or two)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$STAMP_WANTED" >&2
got=$(BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" --version 2>/dev/null | tail -n1)
[ "$got" = "$CHECKOV_VERSION" ] || die "checkov reports '$got', wanted $CHECKOV_VERSION"
echo "$STAMP_WANTED" >"$VENV/.stamp"
log "installed $STAMP_WANTED in $VENV ($(($(date +%s) - t0))s)"
echo "$VENV/bin/checkov"
