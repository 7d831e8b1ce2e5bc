#!/usr/bin/env bash
# Revoke one client certificate (for example a device's previous certificate after a rotation) and tell
# the broker to re-read its revocation list. Run it where the CA is; if the broker runs elsewhere, copy
# secrets/broker/crl.pem to it and send it SIGHUP.
#
# usage: revoke-cert.sh CERT_FILE
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 && -f "$1" ]] || die "usage: revoke-cert.sh CERT_FILE"
revoke_cert "$1"
reload_broker
