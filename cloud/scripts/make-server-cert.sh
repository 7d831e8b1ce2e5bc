#!/usr/bin/env bash
# Issue the broker's TLS server certificate, signed by the CA from make-ca.sh.
# Each NAME becomes a subjectAltName: an IP address as IP:, anything else as DNS:. Give every name the
# devices use to reach the broker (the Elastic IP, a DNS name). "broker" (the compose service name the
# processor connects to) is always added.
#
# usage: make-server-cert.sh [--days N] NAME [NAME...]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

days=825
names=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --days) days="$(option_value "$@")"; shift 2 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) names+=("$1"); shift ;;
    esac
done
[[ ${#names[@]} -gt 0 ]] || die "give at least one name or address the devices use to reach the broker"
check_days "$days"
need_ca

sans=()
for name in "${names[@]}" broker; do
    if [[ "$name" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || "$name" == *:* ]]; then
        sans+=("IP:${name}")
    elif [[ "$name" =~ ^[A-Za-z0-9*]([A-Za-z0-9.*-]{0,252})$ ]]; then
        sans+=("DNS:${name}")
    else
        die "'$name' is neither an IP address nor a DNS name"
    fi
done
san_line="$(IFS=,; echo "${sans[*]}")"

mkdir -p "$BROKER_DIR" "$PROCESSOR_DIR"
# The new pair is made under these names and replaces the running one only once it is signed, so a failed
# re-issue leaves the broker a pair it can start with.
new_key="${BROKER_DIR}/server.key.new"
new_crt="${BROKER_DIR}/server.crt.new"
ext="$(mktemp)"
csr="$(mktemp)"
trap 'rm -f "$ext" "$csr" "$new_key" "$new_crt"' EXIT
cat > "$ext" <<CONF
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = ${san_line}
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CONF

(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$new_key")
openssl req -new -key "$new_key" -subj "/CN=${names[0]}" -out "$csr"
ca_sign "$csr" "$ext" "$days" "$new_crt" "the server certificate (${BROKER_DIR} is unchanged)"
# Keep the previous pair for a rollback, then put the new one in place, readable by the broker already.
for f in server.key server.crt; do
    if [[ -f "${BROKER_DIR}/$f" ]]; then cp -p "${BROKER_DIR}/$f" "${BROKER_DIR}/$f.previous"; fi
done
broker_owns "$new_key"
chmod 0644 "$new_crt"
mv "$new_key" "${BROKER_DIR}/server.key"
mv "$new_crt" "${BROKER_DIR}/server.crt"
cp "${CA_DIR}/ca.crt" "${BROKER_DIR}/ca.crt"
cp "${CA_DIR}/ca.crt" "${PROCESSOR_DIR}/ca.crt"
chmod 0644 "${BROKER_DIR}/ca.crt" "${PROCESSOR_DIR}/ca.crt"
echo "server certificate: ${BROKER_DIR}/server.crt for ${san_line} (valid ${days} days)"
echo "restart the broker to load it: docker compose restart broker"
