#!/usr/bin/env bash
# Add one device identity to the cloud broker: a client certificate whose CN is the device id. The broker
# takes the device's user name and client id from that CN, and its ACL then lets it publish only under
# faces/<id>/ and its health under facecap/<id>/. Prints what to copy to the Jetson. Run it where the CA is.
#
# usage: add-device.sh [--force] [--days N] DEVICE_ID
#   --force  issue an existing device a new certificate (a rotation; the old pair becomes *.previous once
#            the new one is signed, and stays valid until you revoke it with
#            revoke-cert.sh secrets/devices/<id>/client.crt.previous, or remove-device.sh revokes it with
#            every other certificate of the device)
#   --days N the certificate's lifetime (default 825)
# env: BROKER_HOST  the address devices use (default: the first name in the server certificate)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

force=false
days=825
id=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --force) force=true; shift ;;
        --days) days="$(option_value "$@")"; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [[ -z "$id" ]] || die "one device id at a time"; id="$1"; shift ;;
    esac
done
[[ -n "$id" ]] || die "usage: add-device.sh [--force] [--days N] DEVICE_ID"
check_id "$id"
check_days "$days"
check_not_reserved "$id"
need_ca
dir="${DEVICES_DIR}/${id}"
if [[ -f "${dir}/client.crt" && "$force" != true ]]; then
    die "device ${id} exists; use --force to issue it a new certificate"
fi

"${SCRIPTS_DIR}/make-device-cert.sh" --days "$days" "$id" >/dev/null
[[ -f "$CRL_FILE" ]] || make_crl

host="${BROKER_HOST:-}"
if [[ -z "$host" && -f "${BROKER_DIR}/server.crt" ]]; then
    host="$(openssl x509 -in "${BROKER_DIR}/server.crt" -noout -subject -nameopt multiline \
        | sed -n 's/^ *commonName *= *//p')"
fi

cat <<INFO

Device ${id} added. Copy these files to the Jetson (for example to /greengrass/v2/facecap/cloud/),
readable only by the user that runs Greengrass components (chmod 600 on the key):
  ${dir}/ca.crt        the CA that signed the cloud broker's certificate
  ${dir}/client.crt    this device's client certificate (CN=${id}): its identity on the broker
  ${dir}/client.key    its private key

Then set the EdgeBroker bridge in the device's Greengrass configuration:
  cloud host ${host:-THE-BROKER-ADDRESS}, port 8883, TLS on,
  CA file, certificate file and key file as copied above (no user name or password is needed).
The device id in the face topics (faces/${id}/<camera>) must be ${id}: the broker refuses anything else.
INFO
