#!/usr/bin/env bash
# Prepare everything the compose stack needs, once: the CA (unless one exists), the broker's server
# certificate for the given names, and the processor's broker identity. Safe to run again: it keeps the
# CA and the processor password and only re-issues the server certificate.
#
# usage: init-broker.sh NAME [NAME...]     (the names/addresses devices use to reach the broker)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

[[ $# -gt 0 ]] || die "usage: init-broker.sh NAME [NAME...]"
# The processor container runs as this uid (see cloud/Dockerfile) and must read its password file.
PROCESSOR_UID=10001

if [[ ! -f "${CA_DIR}/ca.key" ]]; then
    "${SCRIPTS_DIR}/make-ca.sh"
fi
"${SCRIPTS_DIR}/make-server-cert.sh" "$@"

mkdir -p "$PROCESSOR_DIR"
if [[ ! -f "${PROCESSOR_DIR}/password" ]]; then
    password="$(new_password)"
    (umask 077 && printf '%s\n' "$password" > "${PROCESSOR_DIR}/password")
    passwd_set "${BROKER_DIR}/passwd" processor "$password"
    echo "processor identity created"
fi
if [[ "$(id -u)" == 0 ]]; then
    chown "${PROCESSOR_UID}:${PROCESSOR_UID}" "${PROCESSOR_DIR}/password"
    chmod 0400 "${PROCESSOR_DIR}/password"
fi
echo "broker secrets ready in ${SECRETS}"
