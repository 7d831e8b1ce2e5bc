# Runs at every nucleus start: do nothing when this wheel is already installed the same way.
requirement="$WHEEL_FILE"
venv_options=""
@EXTRA_REQUIREMENT@
wanted="$requirement $venv_options $PYTHON_FOR_VENV"
stamp="$VENV_DIR/facecap-install.txt"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$wanted" ]; then
  echo "facecap is already installed in $VENV_DIR"
  exit 0
fi
if ! "$PYTHON_FOR_VENV" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))'; then
  echo "$PYTHON_FOR_VENV is not Python >= 3.10 with venv and ensurepip: install python3-venv, or set" \
    "the configuration key python to such an interpreter" >&2
  exit 1
fi
rm -rf "$VENV_DIR"
"$PYTHON_FOR_VENV" -m venv ${venv_options:+"$venv_options"} "$VENV_DIR"
"$VENV_DIR/bin/python" -m pip install --no-input --disable-pip-version-check "$requirement"
@EXTRA_CHECK@
echo "$wanted" > "$stamp"
echo "installed $requirement into $VENV_DIR"
