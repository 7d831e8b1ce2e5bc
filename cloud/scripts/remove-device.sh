#!/usr/bin/env bash
# Remove a device identity: its password entry goes, so the broker refuses it at the next connection
# even though its certificate has not expired (the broker requires both). Its files are kept under
# secrets/devices/<id>/ until you delete them.
#
# usage: remove-device.sh DEVICE_ID
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 ]] || die "usage: remove-device.sh DEVICE_ID"
id="$1"
check_id "$id"
[[ -f "${BROKER_DIR}/passwd" ]] || die "no password file in ${BROKER_DIR}"
passwd_delete "${BROKER_DIR}/passwd" "$id"
rm -f "${DEVICES_DIR}/${id}/password"
reload_broker
echo "device ${id} removed; a connected device is refused when it reconnects (restart the broker to cut it now)"
