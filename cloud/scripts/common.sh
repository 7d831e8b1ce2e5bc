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
# Identities that are not devices; a device may not take these names.
RESERVED_IDS=(processor)

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

need_ca() {
    [[ -f "${CA_DIR}/ca.key" && -f "${CA_DIR}/ca.crt" ]] || die "no CA in ${CA_DIR}: run make-ca.sh first"
}

# A fresh random password: 32 characters from the base64 alphabet without / + =.
new_password() {
    openssl rand -base64 48 | tr -d '/+=\n' | cut -c1-32
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

# Tell a running compose broker to re-read its password and ACL files (SIGHUP); quiet if none runs.
reload_broker() {
    if command -v docker >/dev/null 2>&1 \
        && docker compose -f "${SCRIPTS_DIR}/../compose.yaml" ps --status running broker 2>/dev/null | grep -q broker; then
        docker compose -f "${SCRIPTS_DIR}/../compose.yaml" kill -s HUP broker >/dev/null
        echo "broker reloaded its password and ACL files"
    else
        echo "no running broker found: the change takes effect when the broker starts (or send it SIGHUP)"
    fi
}
