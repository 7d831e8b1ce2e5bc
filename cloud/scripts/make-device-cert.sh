#!/usr/bin/env bash
# Issue (or re-issue, to rotate) the TLS client certificate of one device. The certificate's CN is the
# device id, which the broker takes as its user name and client id. The current pair becomes
# client.{crt,key}.previous once the new one is signed; the CA keeps a copy of every certificate it issued
# in secrets/ca/issued/<id>/, so remove-device.sh can revoke them all.
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
# The new pair is made under these names and replaces the current one only once it is signed and recorded,
# so a failed re-issue leaves the device's working pair where it was.
new_key="${dir}/client.key.new"
new_crt="${dir}/client.crt.new"
ext="$(mktemp)"
csr="$(mktemp)"
trap 'rm -f "$ext" "$csr" "$new_key" "$new_crt"' EXIT
cat > "$ext" <<CONF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF

(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$new_key")
openssl req -new -key "$new_key" -subj "/CN=${id}" -out "$csr"
ca_sign "$csr" "$ext" "$days" "$new_crt" "a certificate for ${id} (${dir} is unchanged)"

# Record every certificate before its file can be lost: the new one, and the pair about to be moved aside
# when it was issued before the record existed (a second rotation overwrites client.crt.previous).
record_issued "$id" "$new_crt"
for cert in "${dir}/client.crt" "${dir}/client.crt.previous"; do
    if [[ -f "$cert" ]] && signed_by_ca "$cert"; then record_issued "$id" "$cert"; fi
done
for f in client.key client.crt; do
    if [[ -f "${dir}/$f" ]]; then mv -f "${dir}/$f" "${dir}/$f.previous"; fi
done
mv "$new_key" "${dir}/client.key"
mv "$new_crt" "${dir}/client.crt"
cp "${CA_DIR}/ca.crt" "${dir}/ca.crt"
echo "client certificate for ${id}: ${dir}/client.crt (valid ${days} days, serial $(cert_serial "${dir}/client.crt"))"
