# Offline: every wheel comes from this version's wheelhouse artifact (unarchived by the nucleus), checked
# against the lock's sha256; pip ignores the device's pip configuration (--isolated). Each version has its
# own venv, so an upgrade never touches the running one.
wheelhouse="$WHEELHOUSES/wheelhouse-linux-$(uname -m)"
if [ ! -d "$wheelhouse" ]; then
  echo "no wheelhouse for $(uname -m) in $WHEELHOUSES: this component has no manifest for this machine" >&2
  exit 1
fi
if ! "$PYTHON_FOR_VENV" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))'; then
  echo "$PYTHON_FOR_VENV is not Python >= 3.10 with venv: install python3-venv, or set" \
    "the configuration key python to such an interpreter" >&2
  exit 1
fi
abi=$("$PYTHON_FOR_VENV" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
if [ ! -f "$wheelhouse/requirements-$abi.txt" ]; then
  echo "the wheelhouse has no wheels for $PYTHON_FOR_VENV ($abi), only for:" \
    "$(cd "$wheelhouse" && ls requirements-*.txt)" >&2
  exit 1
fi
set -- -r "$wheelhouse/requirements-$abi.txt"
inherit_system=false
@EXTRA_REQUIREMENT@
# Runs at every nucleus start: do nothing when this version is already installed the same way.
wanted="$* $inherit_system $PYTHON_FOR_VENV"
stamp="$VENV_DIR/facecap-install.txt"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "facecap is already installed in $VENV_DIR"
else
  rm -rf "$VENV_DIR"
  # Without pip (ensurepip is slow, and nothing runs pip later): the wheelhouse's pip, run from its wheel,
  # installs into the venv.
  if [ "$inherit_system" = true ]; then
    "$PYTHON_FOR_VENV" -m venv --without-pip --system-site-packages "$VENV_DIR"
  else
    "$PYTHON_FOR_VENV" -m venv --without-pip "$VENV_DIR"
  fi
  for installer in "$wheelhouse"/pip-*-py3-none-any.whl; do :; done
  # --no-deps: the locks list every dependency (awsiotsdk's own pin of awscrt is deliberately not used).
  "$VENV_DIR/bin/python" "$installer/pip" --isolated install --no-input --disable-pip-version-check \
    --no-cache-dir --no-index --find-links "$wheelhouse" --require-hashes --no-deps "$@"
  # The wheel is part of the artifact, whose digest the nucleus checked, so it needs no hash of its own.
  "$VENV_DIR/bin/python" "$installer/pip" --isolated install --no-input --disable-pip-version-check \
    --no-cache-dir --no-index --no-deps "$wheelhouse"/facecap-*-py3-none-any.whl
@EXTRA_CHECK@
  echo "$wanted" > "$stamp"
  echo "installed facecap into $VENV_DIR from $wheelhouse"
fi
@PRUNE@
