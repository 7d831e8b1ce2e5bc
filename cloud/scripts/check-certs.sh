#!/usr/bin/env bash
# When each certificate the cloud side depends on expires, soonest first: the CA, the broker's certificate,
# the revocation list (OpenSSL refuses every certificate once it is past its next update) and each device's
# current certificate (revoked ones are left out: they are meant to fail). Devices enrolled in one week
# all expire in one week, and on that day each of their bridges is refused; this shows it coming. Exits 1
# when one has expired or expires within N days, so cron can alert on it. Run it where the CA is (GNU date).
#
# usage: check-certs.sh [--days N]
#   --days N  how far ahead to look (default 30)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

days=30
while [[ $# -gt 0 ]]; do
    case "$1" in
        --days) days="$(option_value "$@")"; shift 2 ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) die "unknown argument $1 (usage: check-certs.sh [--days N])" ;;
    esac
done
check_days "$days"
date -d "Jan 1 00:00:00 2030 GMT" +%s >/dev/null 2>&1 || die "this script needs GNU date (date -d)"
now="$(date +%s)"
rows=()  # "<end in epoch seconds, 0 when unreadable>|<what>"
parts="$(mktemp -d)"
trap 'rm -rf "$parts"' EXIT

# add END WHAT: END as openssl prints it ("Dec  9 09:15:33 2026 GMT"); an empty END (openssl could not read
# the file, and said why on stderr) is listed as unreadable, which fails the check too.
add() {
    if [[ -n "$1" ]]; then rows+=("$(date -d "$1" +%s)|$2"); else rows+=("0|$2"); fi
}

end_of() {
    local line
    line="$(openssl x509 -in "$1" -noout -enddate)" || return 0
    echo "${line#notAfter=}"
}

common_name() {
    openssl x509 -in "$1" -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= *//p'
}

# Every certificate of a file of several (a CA file during a rotation holds two), each with its name.
add_each() {
    local file="$1" what="$2" part
    rm -f "$parts"/*
    awk -v dir="$parts" '/-----BEGIN CERTIFICATE-----/ { n++ } n { print > (dir "/" n ".pem") }' "$file"
    for part in "$parts"/*.pem; do
        [[ -f "$part" ]] || { add "" "${what} (${file})"; return; }
        add "$(end_of "$part")" "${what} CN=$(common_name "$part") (${file})"
    done
}

# The CA file that says whether a device certificate is revoked: the CA's own, or where the CA is kept
# elsewhere, the CAs the broker trusts.
trust="${CA_DIR}/ca.crt"
[[ -f "$trust" ]] || trust="${BROKER_DIR}/ca.crt"

revoked() {
    local out
    [[ -f "$CRL_FILE" && -f "$trust" ]] || return 1
    # verify exits non-zero for a revoked certificate: its words, not its status, say why.
    out="$(openssl verify -no_check_time -crl_check -CAfile "$trust" -CRLfile "$CRL_FILE" "$1" 2>&1)" || true
    [[ "$out" == *"certificate revoked"* ]]
}

if [[ -f "${CA_DIR}/ca.crt" ]]; then
    add_each "${CA_DIR}/ca.crt" "the CA"
elif [[ -f "${BROKER_DIR}/ca.crt" ]]; then
    add_each "${BROKER_DIR}/ca.crt" "a CA the broker trusts"
fi
if [[ -f "${BROKER_DIR}/server.crt" ]]; then
    add "$(end_of "${BROKER_DIR}/server.crt")" "the broker's certificate (${BROKER_DIR}/server.crt)"
fi
if [[ -f "$CRL_FILE" ]]; then
    next="$(openssl crl -in "$CRL_FILE" -noout -nextupdate)" || next=""
    add "${next#nextUpdate=}" "the revocation list's next update (${CRL_FILE})"
fi
devices=0
skipped=0
for cert in "${DEVICES_DIR}"/*/client.crt; do
    [[ -f "$cert" ]] || continue
    devices=$((devices + 1))
    if revoked "$cert"; then skipped=$((skipped + 1)); continue; fi
    id="$(basename "$(dirname "$cert")")"
    add "$(end_of "$cert")" "device ${id} (${cert})"
done
[[ ${#rows[@]} -gt 0 ]] || die "no certificates in ${SECRETS} (set FACECAP_SECRETS to where the CA is)"

soon=0
printf '%-16s  %10s  %s\n' "expires (UTC)" "days left" "certificate"
while IFS='|' read -r end what; do
    when="$(date -u -d "@${end}" '+%Y-%m-%d %H:%M')"
    # Whole days, rounded up as the device's log rounds them: a certificate issued for 10 days shows 10.
    if (( end == 0 )); then when="-"; state="UNREADABLE"
    elif (( end <= now )); then state="EXPIRED"
    else state=$(( (end - now + 86399) / 86400 )); fi
    if (( end - now < days * 86400 )); then soon=$((soon + 1)); fi
    printf '%-16s  %10s  %s\n' "$when" "$state" "$what"
done < <(printf '%s\n' "${rows[@]}" | sort -t '|' -k1,1n)
if (( skipped > 0 )); then echo "(${skipped} revoked device certificate(s) not listed)"; fi
if (( devices == 0 )); then
    echo "(no device certificates in ${DEVICES_DIR}: run this where the CA and secrets/devices are to check them)"
fi
if (( soon > 0 )); then
    echo "${soon} expired, unreadable or expiring within ${days} days: renew them (cloud/README.md, \"Rotate a" \
         "certificate\")" >&2
    exit 1
fi
echo "nothing expires within ${days} days"
