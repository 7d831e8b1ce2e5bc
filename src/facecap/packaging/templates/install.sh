set -eu
@VENV@
