#!/usr/bin/env bash
# Prepare a Debian/Ubuntu machine to run facecap's tests and demo: system packages (when missing and we
# may install them) and a virtual environment with every extra. Safe to run again; it only adds.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
APT_PACKAGES=(mosquitto mosquitto-clients openssl iproute2)

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
  else return 1
  fi
}

missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
# `ip netns`: the uplink-cut and offline-install tests make network namespaces (as root).
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -c "import ensurepip" >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} with apt-get"
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
     || ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; then
    echo "setup: could not install ${missing[*]} (need root or passwordless sudo); install them yourself:" >&2
    echo "  sudo apt-get install -y ${APT_PACKAGES[*]} python3-venv" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "setup: installing facecap with its extras into $VENV"
"$VENV/bin/python" -m pip install -q -e ".[detector,processor,dev,cloudcheck,demo]"
# awsiotsdk (Greengrass IPC) pins an older awscrt than facecap needs; it is pure Python and works with ours,
# so it goes in without its dependencies (see pyproject.toml and docs/greengrass.md).
"$VENV/bin/python" -m pip install -q --no-deps "awsiotsdk==1.31.0"
# checkov pins boto3, packaging and networkx to versions that clash with ours, so it gets a venv of its own
# (the cloud tests find it at .venv-checkov/bin/checkov).
if [ ! -x .venv-checkov/bin/checkov ]; then
  echo "setup: installing checkov into .venv-checkov"
  "$PYTHON" -m venv .venv-checkov
  .venv-checkov/bin/python -m pip install -q "checkov>=3.2,<4"
fi
echo "setup: done"
