set -eu
@MOSQUITTO_AS_ROOT@
$as_owner sh -eu <<'VENV'
@VENV@
VENV
