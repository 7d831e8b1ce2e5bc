#!/usr/bin/env bash
# Prepare everything the compose stack needs, once: the broker's server certificate, the certificate
# revocation list and the processor's broker identity. Safe to run again: it keeps the processor password
# and re-issues the server certificate only where the CA is.
#
# usage: init-broker.sh [--make-ca] [NAME...]
#   NAME       the names/addresses devices use to reach the broker (needed where the CA key is)
#   --make-ca  create the CA here when there is none. Without it the CA is expected from elsewhere:
#              - its key in secrets/ca/ (this machine signs): the server certificate is issued here; or
#              - no key here (the CA stays offline): secrets/broker/ must already hold server.crt,
#                server.key, ca.crt and crl.pem, made on the CA's machine by this script.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

make_ca=false
names=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --make-ca) make_ca=true; shift ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) names+=("$1"); shift ;;
    esac
done
# The processor container runs as this uid (see cloud/Dockerfile) and must read its password file.
PROCESSOR_UID=10001

if [[ "$make_ca" == true && ! -f "${CA_DIR}/ca.key" ]]; then
    "${SCRIPTS_DIR}/make-ca.sh"
fi
if [[ -f "${CA_DIR}/ca.key" ]]; then
    [[ ${#names[@]} -gt 0 ]] || die "usage: init-broker.sh [--make-ca] NAME [NAME...]"
    "${SCRIPTS_DIR}/make-server-cert.sh" "${names[@]}"
    [[ -f "$CRL_FILE" ]] || make_crl
else
    for f in server.crt server.key ca.crt crl.pem; do
        [[ -f "${BROKER_DIR}/$f" ]] || die "no CA key in ${CA_DIR} and no ${BROKER_DIR}/$f: run init-broker.sh \
where the CA is and copy secrets/broker/ here, or pass --make-ca to create the CA on this machine"
    done
    echo "using the server certificate and CRL in ${BROKER_DIR} (the CA is elsewhere)"
fi
broker_owns "${BROKER_DIR}/server.key"
mkdir -p "$PROCESSOR_DIR"
cp "${BROKER_DIR}/ca.crt" "${PROCESSOR_DIR}/ca.crt"
chmod 0644 "${PROCESSOR_DIR}/ca.crt"

# The processor's password is the only entry of the processor listener's password file; devices log in
# with their certificates on the other listener and have no password at all.
if [[ ! -f "${PROCESSOR_DIR}/password" || ! -f "${BROKER_DIR}/processor.passwd" ]]; then
    password="$(new_password)"
    (umask 077 && printf '%s\n' "$password" > "${PROCESSOR_DIR}/password")
    rm -f "${BROKER_DIR}/processor.passwd"
    passwd_set "${BROKER_DIR}/processor.passwd" processor "$password"
    echo "processor identity created"
fi
if [[ "$(id -u)" == 0 ]]; then
    chown "${PROCESSOR_UID}:${PROCESSOR_UID}" "${PROCESSOR_DIR}/password"
    chmod 0400 "${PROCESSOR_DIR}/password"
fi
echo "broker secrets ready in ${SECRETS}"
