# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this file
# Shared by the cloud/scripts/*.sh tools; sourced, never run.
# Where certificates and passwords live. cloud/secrets/ is git-ignored; override with FACECAP_SECRETS.
SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SECRETS="${FACECAP_SECRETS:-${SCRIPTS_DIR}/../secrets}"
CA_DIR="${SECRETS}/ca"
BROKER_DIR="${SECRETS}/broker"
PROCESSOR_DIR="${SECRETS}/processor"
DEVICES_DIR="${SECRETS}/devices"
# The broker runs as this uid/gid inside the eclipse-mosquitto image.
MOSQUITTO_UID=1883
MOSQUITTO_IMAGE="${MOSQUITTO_IMAGE:-eclipse-mosquitto:2.0}"
# Names the system uses itself, which no device may take (the same list as facecap.contract.RESERVED_IDS):
# the processor's user name, the store's quarantine folder, the compose service name in the server
# certificate, and - as a prefix, compared without case - "facecap", which the processor's client ids
# (facecap-processor...), the bridges' client ids (facecap-edge-...) and the facecap/ topics use.
RESERVED_IDS=(processor quarantine broker)
RESERVED_PREFIX=facecap

die() {
    echo "error: $*" >&2
    exit 1
}

# Device ids follow the face message contract: [A-Za-z0-9._-]{1,64}. "." and ".." pass that pattern
# but would be confusing as directory names, so they are refused too.
check_id() {
    local id="$1"
    [[ "$id" =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "invalid id '$id': use 1-64 of A-Z a-z 0-9 . _ -"
    [[ "$id" != "." && "$id" != ".." ]] || die "invalid id '$id'"
}

# Refuse a device id the system uses itself.
check_not_reserved() {
    local id="$1" reserved
    for reserved in "${RESERVED_IDS[@]}"; do
        [[ "${id,,}" != "$reserved" ]] || die "'$id' is reserved for the broker's own identities"
    done
    [[ "${id,,}" != "${RESERVED_PREFIX}"* ]] || die "'$id' is reserved: ids starting with '${RESERVED_PREFIX}' are the system's own"
}

# The value of an option that takes one (`--days N`), for `days="$(option_value "$@")"; shift 2`. Without
# it, an option given last dies with bash's "$2: unbound variable" (set -u), which names no option.
option_value() {
    [[ $# -ge 2 && -n "$2" && "$2" != -* ]] || die "$1 needs a value"
    printf '%s\n' "$2"
}

# A certificate's lifetime, checked before anything is made or moved. OpenSSL cannot write an end date past
# the year 9999 and then fails without a message, so more than 99999 days (273 years) is refused here.
check_days() {
    [[ "$1" =~ ^[1-9][0-9]{0,4}$ ]] || die "--days must be a whole number of days from 1 to 99999, not '$1'"
}

need_ca() {
    [[ -f "${CA_DIR}/ca.key" && -f "${CA_DIR}/ca.crt" ]] || die "no CA in ${CA_DIR}: run make-ca.sh first"
}

# A fresh random password: 32 characters from the base64 alphabet without / + =.
new_password() {
    openssl rand -base64 48 | tr -d '/+=\n' | cut -c1-32
}

# The broker's certificate revocation list. remove-device.sh and revoke-cert.sh add to it; the broker reads
# it at start and on SIGHUP.
CRL_FILE="${BROKER_DIR}/crl.pem"
# The CRL is handed to our broker only, never fetched, so it need not be fresh; but OpenSSL refuses every
# certificate once the CRL's nextUpdate has passed, so it is valid as long as a CA (10 years).
CRL_DAYS=3650

# An `openssl ca` configuration over the CA's small database (index.txt, the list of revoked certificates).
# A CA made elsewhere without one gets an empty database on first use.
ca_config() {
    [[ -f "${CA_DIR}/index.txt" ]] || : > "${CA_DIR}/index.txt"
    [[ -f "${CA_DIR}/crlnumber" ]] || echo 1000 > "${CA_DIR}/crlnumber"
    local conf="${CA_DIR}/openssl-ca.cnf"
    cat > "$conf" <<CONF
[ca]
default_ca = facecap
[facecap]
database = ${CA_DIR}/index.txt
crlnumber = ${CA_DIR}/crlnumber
certificate = ${CA_DIR}/ca.crt
private_key = ${CA_DIR}/ca.key
default_md = sha256
default_crl_days = ${CRL_DAYS}
CONF
    echo "$conf"
}

# Write the CRL the broker reads (world-readable: it holds only serial numbers).
make_crl() {
    need_ca
    mkdir -p "$BROKER_DIR"
    openssl ca -config "$(ca_config)" -gencrl -out "${CRL_FILE}.new" 2>/dev/null
    chmod 0644 "${CRL_FILE}.new"
    mv "${CRL_FILE}.new" "$CRL_FILE"
}

# Record one certificate file as revoked in the CA's database; make_crl then writes the list. Revoking one
# already revoked is not an error.
revoke_in_db() {
    local cert="$1" out what
    what="$(openssl x509 -in "$cert" -noout -serial) ($(openssl x509 -in "$cert" -noout -subject))"
    if out="$(openssl ca -config "$(ca_config)" -revoke "$cert" 2>&1)"; then
        echo "revoked ${what}"
    elif [[ "$out" == *"lready revoked"* ]]; then
        echo "already revoked ${what}"
    else
        die "cannot revoke ${cert}: ${out}"
    fi
}

# Revoke one certificate file and rewrite the CRL.
revoke_cert() {
    need_ca
    revoke_in_db "$1"
    make_crl
}

# Sign a certificate request with the CA: ca_sign CSR EXTFILE DAYS OUT WHAT. openssl reports success on
# stderr too ("Certificate request self-signature ok", "subject=..."), so its output is kept and shown,
# without those lines, only when signing fails ("cannot sign WHAT: ..."). Some failures (an end date it
# cannot write) leave an empty file and no message, hence the check that OUT is a certificate.
ca_sign() {
    local csr="$1" ext="$2" days="$3" out="$4" what="$5" output reason
    if ! output="$(openssl x509 -req -in "$csr" -CA "${CA_DIR}/ca.crt" -CAkey "${CA_DIR}/ca.key" \
            -set_serial "0x$(openssl rand -hex 16)" -days "$days" -sha256 -extfile "$ext" -out "$out" 2>&1)" \
            || ! openssl x509 -in "$out" -noout 2>/dev/null; then
        reason="$(sed -e '/self-signature ok/d' -e '/^subject=/d' <<<"$output")"
        die "cannot sign ${what}: ${reason:-openssl gave no reason}"
    fi
}

# Every device certificate the CA signs is also kept here, as issued/<device id>/<serial>.crt, because
# revoking needs the certificate itself (`openssl ca -revoke FILE`) and the copy in the device's folder
# does not last: a rotation moves it to client.crt.previous and the next one overwrites that. A folder per
# id (rather than signing with `openssl ca`, whose index.txt would list them) makes "every certificate of
# this device" a directory listing instead of a match on subjects, and leaves the signing unchanged.
ISSUED_DIR="${CA_DIR}/issued"

# The serial number of a certificate file, as openssl prints it (hex).
cert_serial() {
    local serial
    serial="$(openssl x509 -in "$1" -noout -serial)"
    echo "${serial#serial=}"
}

# Whether this CA signed the certificate (expired or revoked ones included: those may still need revoking).
signed_by_ca() {
    openssl verify -no_check_time -CAfile "${CA_DIR}/ca.crt" "$1" >/dev/null 2>&1
}

# Keep a copy of a certificate this CA issued to device ID in the CA's record (see ISSUED_DIR).
record_issued() {
    local id="$1" cert="$2" folder="${ISSUED_DIR}/$1" serial
    serial="$(cert_serial "$cert")"
    mkdir -p "$folder"
    cp "$cert" "${folder}/${serial}.crt.new"
    mv "${folder}/${serial}.crt.new" "${folder}/${serial}.crt"
}

# Set USER's password in the mosquitto password FILE (hashed by mosquitto_passwd). The password goes
# through stdin, never the command line, so it does not show in the process list.
passwd_set() {
    local file="$1" user="$2" password="$3"
    touch "$file"
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        printf '%s\n%s\n' "$password" "$password" | mosquitto_passwd "$file" "$user" >/dev/null
    else
        local dir
        dir="$(cd "$(dirname "$file")" && pwd)"
        printf '%s\n%s\n' "$password" "$password" \
            | docker run --rm -i -v "${dir}:/p" "$MOSQUITTO_IMAGE" \
                mosquitto_passwd "/p/$(basename "$file")" "$user" >/dev/null
    fi
    broker_owns "$file"
}

passwd_delete() {
    local file="$1" user="$2"
    if command -v mosquitto_passwd >/dev/null 2>&1; then
        mosquitto_passwd -D "$file" "$user"
    else
        local dir
        dir="$(cd "$(dirname "$file")" && pwd)"
        docker run --rm -v "${dir}:/p" "$MOSQUITTO_IMAGE" mosquitto_passwd -D "/p/$(basename "$file")" "$user"
    fi
    broker_owns "$file"
}

# Secrets the broker reads are mode 0640. When run as root (as on the EC2 instance) they are also given
# to the container's mosquitto user, so the broker can read them after it drops privileges and on reload.
broker_owns() {
    chmod 0640 "$@"
    if [[ "$(id -u)" == 0 ]]; then
        chown "${MOSQUITTO_UID}:${MOSQUITTO_UID}" "$@"
    fi
}

# Tell a running compose broker to re-read its password file, ACLs and CRL (SIGHUP); quiet if none runs.
# A reload keeps every connection; a revoked device already connected is cut at its next reconnection.
reload_broker() {
    if command -v docker >/dev/null 2>&1 \
        && docker compose -f "${SCRIPTS_DIR}/../compose.yaml" ps --status running broker 2>/dev/null | grep -q broker; then
        docker compose -f "${SCRIPTS_DIR}/../compose.yaml" kill -s HUP broker >/dev/null
        echo "broker reloaded its password file, ACLs and CRL"
    else
        echo "no running broker found: the change takes effect when the broker starts (or send it SIGHUP)"
    fi
}
