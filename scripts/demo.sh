#!/usr/bin/env bash
# `make demo`: run the whole pipeline once on a sample with real faces, into a local directory, then
# serve the gallery over what was stored (when run from a terminal) on the loopback URL it prints.
# The sample is the project's test video when ../shared is there, else public-domain portraits
# that matplotlib and scikit-image ship (installed with the package's `demo` extra).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${DEMO_OUT:-$PWD/demo-output}
VIDEO=../shared/data/video/short_hamilton_clip.mp4
rm -rf "$OUT/faces"
mkdir -p "$OUT"
if [ -z "${DEMO_SOURCE:-}" ] && [ -f "$VIDEO" ]; then
  DEMO_SOURCE=$VIDEO
elif [ -z "${DEMO_SOURCE:-}" ]; then
  DEMO_SOURCE=$OUT/sample
  .venv/bin/python - "$DEMO_SOURCE" <<'PY'
import shutil, sys
from pathlib import Path
from matplotlib import cbook
dest = Path(sys.argv[1]); dest.mkdir(parents=True, exist_ok=True)
shutil.copyfile(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), dest / "grace_hopper.jpg")
PY
fi
echo "demo: source $DEMO_SOURCE -> file://$OUT/faces" >&2
.venv/bin/facepipe run --source "$DEMO_SOURCE" --store "file://$OUT/faces" --log-format text --run-dir "$OUT/run" | tee "$OUT/summary.json"
count=$(find "$OUT/faces" -name '*.png' | wc -l)
echo
echo "demo: $count face PNGs under $OUT/faces (metadata beside each as .png.json); logs in $OUT/run"
find "$OUT/faces" -name '*.png' | sort | head -5
# The page to open: the gallery run served, again over the stored faces, at the address and with
# the password run printed (in a terminal; elsewhere the command that serves it).
read -r URL USER PASSWORD USERS PORT < <(.venv/bin/python -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["url"], d["user"], d["password"], d["users_file"], d["port"])' "$OUT/run/gallery-login.json")
GALLERY=(.venv/bin/facepipe gallery --store "file://$OUT/faces" --users-file "$USERS" --host 127.0.0.1 --port "$PORT"
  --http-port 0 --secure-cookies false --live false --log-format text)
echo
if [ -t 0 ]; then
  echo "demo: open $URL and log in as $USER with password $PASSWORD (Ctrl-C stops the gallery)"
  exec "${GALLERY[@]}"
fi
echo "demo: to see the faces in a browser, run: ${GALLERY[*]}"
echo "demo: then open $URL and log in as $USER with password $PASSWORD"
