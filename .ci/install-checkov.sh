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
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
DIR=$CACHE/helm
VENV=$DIR/checkov-venv
STAMP=$VENV/.stamp
STAMP_WANTED="checkov==$CHECKOV_VERSION"
ANSWER=$VENV/bin/checkov
PYTHON=${PYTHON:-python3}

have_all() { executables_in "$VENV/bin" checkov && stamp_matches; }

exit_if_installed "cached: $STAMP_WANTED in $VENV"
lock_install "$DIR" "$DIR/.checkov.lock" installed

t0=$(date +%s.%N)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv failed (apt-get install python3-venv?)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
log "installing $STAMP_WANTED (first time: a minute or two)"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$STAMP_WANTED" >&2
got=$(BC_SKIP_MAPPING=TRUE "$VENV/bin/checkov" --version 2>/dev/null | tail -n1)
[ "$got" = "$CHECKOV_VERSION" ] || die "checkov reports '$got', wanted $CHECKOV_VERSION"
finish_install "installed $STAMP_WANTED in $VENV ($(elapsed "$t0"))"
