#!/usr/bin/env bash
# Make the private certificate authority that signs the broker's server certificate and every device's
# client certificate. Its key never leaves this machine: keep a copy of secrets/ca/ offline.
#
# usage: make-ca.sh [--days N] [--force]
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

days=3650
force=false
while [[ $# -gt 0 ]]; do
    case "$1" in
        --days) days="$(option_value "$@")"; shift 2 ;;
        --force) force=true; shift ;;
        -h|--help) sed -n '2,5p' "$0"; exit 0 ;;
        *) die "unknown argument $1" ;;
    esac
done
check_days "$days"

if [[ -f "${CA_DIR}/ca.key" && "$force" != true ]]; then
    die "a CA already exists in ${CA_DIR}; --force replaces it (then every certificate must be re-issued)"
fi
mkdir -p "$CA_DIR"
chmod 0700 "$CA_DIR"

# Each CA gets a name of its own (the UTC date and 6 random hex digits). During a CA rotation the broker
# trusts two CAs and reads both their CRLs, and OpenSSL picks the CRL for a certificate by its issuer's
# name: two CAs of one name would have one CA's certificates checked against the other's CRL and refused.
name="facecap broker CA $(date -u +%Y-%m-%d) $(openssl rand -hex 3)"
ext="$(mktemp)"
trap 'rm -f "$ext"' EXIT
cat > "$ext" <<CONF
[req]
distinguished_name = dn
x509_extensions = ca
prompt = no
[dn]
CN = ${name}
[ca]
basicConstraints = critical, CA:TRUE, pathlen:0
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
CONF

# P-256 keys: small, fast handshakes on the Jetson, supported by Mosquitto's OpenSSL and awscrt's s2n.
(umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "${CA_DIR}/ca.key")
openssl req -x509 -new -config "$ext" -key "${CA_DIR}/ca.key" -sha256 -days "$days" \
    -set_serial "0x$(openssl rand -hex 16)" -out "${CA_DIR}/ca.crt"
chmod 0644 "${CA_DIR}/ca.crt"
echo "CA certificate: ${CA_DIR}/ca.crt (CN=${name}, valid ${days} days)"
echo "CA key:         ${CA_DIR}/ca.key (keep it secret; back it up offline)"
