#!/usr/bin/env bash
# Debian/Ubuntu packages the pipeline and its tests need: Mosquitto (brokers and clients),
# Ceph's RADOS Gateway (the real S3 server of the tests), openssl (test certificates), Redis (Argo
# CD's cache in the GitOps tests), git (the repository Argo CD reads there) and Chromium (the
# browser the gallery's page tests drive through Playwright; no browser is downloaded).
# Idempotent: installs only what is missing. Uses sudo when not root.
set -euo pipefail

PACKAGES=(mosquitto mosquitto-clients ceph-mon ceph-osd radosgw ceph-common uuid-runtime openssl python3-venv redis-server git chromium fonts-dejavu-core)
if [ "${1:-}" = "--demo" ]; then
  PACKAGES=(mosquitto mosquitto-clients python3-venv)
fi

missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null; then
  echo "install-system: missing ${missing[*]} and no apt-get here; install Mosquitto 2.x (and, for the tests, Ceph RGW) yourself" >&2
  exit 1
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
echo "install-system: apt-get install ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
