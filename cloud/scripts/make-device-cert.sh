#!/usr/bin/env bash
# Issue (or re-issue, to rotate) the TLS client certificate of one device. The certificate's CN is the
# device id, which the broker takes as its user name and client id. remove-device.sh revokes it.
#
# usage: make-device-cert.sh [--days N] DEVICE_ID
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

days=825
id=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --days) days="$(option_value "$@")"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) [[ -z "$id" ]] || die "one device id at a time"; id="$1"; shift ;;
    esac
done
[[ -n "$id" ]] || die "usage: make-device-cert.sh [--days N] DEVICE_ID"
check_id "$id"
check_days "$days"
need_ca

dir="${DEVICES_DIR}/${id}"
mkdir -p "$dir"
chmod 0700 "$dir"
ext="$(mktemp)"
csr="$(mktemp)"
trap 'rm -f "$ext" "$csr"' EXIT
cat > "$ext" <<CONF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF

for f in client.key client.crt; do
    if [[ -f "${dir}/$f" ]]; then mv "${dir}/$f" "${dir}/$f.previous"; fi
done
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${dir}/client.key")
openssl req -new -key "${dir}/client.key" -subj "/CN=${id}" -out "$csr"
openssl x509 -req -in "$csr" -CA "${CA_DIR}/ca.crt" -CAkey "${CA_DIR}/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 -extfile "$ext" \
    -out "${dir}/client.crt" 2>/dev/null
cp "${CA_DIR}/ca.crt" "${dir}/ca.crt"
echo "client certificate for ${id}: ${dir}/client.crt (valid ${days} days)"
