#!/usr/bin/env bash
# Remove a device identity: every certificate the CA ever issued to it (its record in secrets/ca/issued/<id>/,
# plus client.crt and client.crt.previous in the device's folder, for certificates issued before that
# record was kept) is revoked into the broker's CRL, and the broker is told to reload it (SIGHUP, which
# keeps every other connection). From then on the broker refuses the device's certificates at the TLS
# handshake. A device connected at that moment is refused when it reconnects; `docker compose restart
# broker` cuts it at once. Its files are kept under secrets/devices/<id>/ until you delete them. Run it
# where the CA is.
#
# usage: remove-device.sh DEVICE_ID
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -eq 1 ]] || die "usage: remove-device.sh DEVICE_ID"
id="$1"
check_id "$id"
need_ca
dir="${DEVICES_DIR}/${id}"

candidates=()
if [[ -d "${ISSUED_DIR}/${id}" ]]; then
    for cert in "${ISSUED_DIR}/${id}"/*.crt; do
        if [[ -f "$cert" ]]; then candidates+=("$cert"); fi
    done
fi
for cert in "${dir}/client.crt" "${dir}/client.crt.previous"; do
    if [[ -f "$cert" ]]; then candidates+=("$cert"); fi
done
[[ ${#candidates[@]} -gt 0 ]] || die "no certificate for device ${id} in ${ISSUED_DIR}/${id}/ or ${dir}/"

# The folder's files are usually copies of recorded ones: each serial is revoked once.
declare -A seen=()
count=0
for cert in "${candidates[@]}"; do
    serial="$(cert_serial "$cert")"
    [[ -z "${seen[$serial]:-}" ]] || continue
    seen[$serial]=1
    if ! signed_by_ca "$cert"; then
        # A CRL lists the serials of one CA: another CA's certificate must be revoked where that CA is.
        echo "skipped ${cert}: not issued by the CA in ${CA_DIR} (revoke it where its CA is)" >&2
        continue
    fi
    revoke_in_db "$cert"
    count=$((count + 1))
done
[[ $count -gt 0 ]] || die "none of the certificates of device ${id} was issued by the CA in ${CA_DIR}"
make_crl
reload_broker
echo "device ${id} removed: its ${count} certificate(s) are revoked (copy ${CRL_FILE} to the broker if it runs elsewhere)"
echo "its health stays retained on the broker; clear it with: docker compose exec processor facecap fleet --forget ${id}"
