#!/usr/bin/env bash
# Add one device identity to the cloud broker: a client certificate (CN = device id) and a password
# entry (user name = device id). The broker's ACL then lets it publish only under faces/<id>/ and its
# status under facecap/<id>/. Prints what to copy to the Jetson.
#
# usage: add-device.sh [--force] [--days N] DEVICE_ID
#   --force  replace an existing device's certificate and password (a rotation of both)
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
        --days) days="$2"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [[ -z "$id" ]] || die "one device id at a time"; id="$1"; shift ;;
    esac
done
[[ -n "$id" ]] || die "usage: add-device.sh [--force] DEVICE_ID"
check_id "$id"
for reserved in "${RESERVED_IDS[@]}"; do
    [[ "$id" != "$reserved" ]] || die "'$id' is reserved for the broker's own identities"
done
need_ca
dir="${DEVICES_DIR}/${id}"
if [[ -f "${dir}/password" && "$force" != true ]]; then
    die "device ${id} exists; use --force to issue it a new certificate and password"
fi

"${SCRIPTS_DIR}/make-device-cert.sh" --days "$days" "$id" >/dev/null
password="$(new_password)"
(umask 077 && printf '%s\n' "$password" > "${dir}/password")
mkdir -p "$BROKER_DIR"
passwd_set "${BROKER_DIR}/passwd" "$id" "$password"

host="${BROKER_HOST:-}"
if [[ -z "$host" && -f "${BROKER_DIR}/server.crt" ]]; then
    host="$(openssl x509 -in "${BROKER_DIR}/server.crt" -noout -subject -nameopt multiline \
        | sed -n 's/^ *commonName *= *//p')"
fi
reload_broker

cat <<INFO

Device ${id} added. Copy these files to the Jetson (for example to /greengrass/v2/facecap/cloud/),
readable only by the user that runs Greengrass components (chmod 600 on the key and the password):
  ${dir}/ca.crt        the CA that signed the cloud broker's certificate
  ${dir}/client.crt    this device's client certificate (CN=${id})
  ${dir}/client.key    its private key
  ${dir}/password      its MQTT password (one line)

Then set the EdgeBroker bridge in the device's Greengrass configuration:
  cloud host ${host:-THE-BROKER-ADDRESS}, port 8883, TLS on,
  CA file, certificate file and key file as copied above,
  user name ${id}, password file as copied above.
The device id in the face topics (faces/${id}/<camera>) must be ${id}: the broker refuses anything else.
INFO
