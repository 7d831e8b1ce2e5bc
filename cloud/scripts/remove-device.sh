#!/usr/bin/env bash
# Remove a device identity: its certificates (the current one and a rotated-out previous one) are revoked
# into the broker's CRL and the broker is told to reload it (SIGHUP, which keeps every other connection).
# From then on the broker refuses the device's certificate at the TLS handshake. A device connected at
# that moment is refused when it reconnects; `docker compose restart broker` cuts it at once. Its files
# are kept under secrets/devices/<id>/ until you delete them. Run it where the CA is.
#
# usage: remove-device.sh DEVICE_ID
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 ]] || die "usage: remove-device.sh DEVICE_ID"
id="$1"
check_id "$id"
dir="${DEVICES_DIR}/${id}"
[[ -f "${dir}/client.crt" ]] || die "no certificate for device ${id} in ${dir}"
for cert in "${dir}/client.crt" "${dir}/client.crt.previous"; do
    if [[ -f "$cert" ]]; then revoke_cert "$cert"; fi
done
reload_broker
echo "device ${id} removed: its certificate is revoked (copy ${CRL_FILE} to the broker if it runs elsewhere)"
