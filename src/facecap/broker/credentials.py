"""The local identities of the EdgeBroker: passwords generated on the device, the Mosquitto password file
and the ACL, all in the run folder (0700) as files only the component user can read (0600).

Nothing here comes from the Greengrass configuration: a password is made on the device the first time the
broker starts and kept, so a component that stays connected across a broker restart can log in again. A
deleted password file is simply made anew (and the components pick it up when they restart).

Identities (the user name is the identity):
- detector: publishes faces under `<prefix>/<device>/`, its own status and stats; reads its receipts and the
  bridge state in `$SYS` (the outbox follows it).
- sender: the same rights, for `facecap send` run on the device (as the component user).
- logger: reads `<prefix>/#` and writes its own status and stats.
- monitor: reads everything, writes nothing (mosquitto_sub for an operator, see docs/operations.md).
The bridge's own local side is inside Mosquitto and needs no identity.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import os
import secrets
import stat
from pathlib import Path

from ..edgelocal import password_path

IDENTITIES = ("detector", "sender", "logger", "monitor")
PASSWD_NAME = "passwd"  # noqa: S105 - a file name
ACL_NAME = "acl"
# Mosquitto 2.0's own hash ($7$): PBKDF2-HMAC-SHA512, 101 rounds, 12 bytes of salt, 64 bytes of hash.
_PBKDF2_ROUNDS = 101
_SALT_BYTES = 12


def prepare_run_dir(run_dir: Path) -> None:
    """Create the run folder owner-only, and make it so again if someone widened it: the socket and the
    passwords inside rely on it for another user being unable to reach them."""
    run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = run_dir.stat()
    if info.st_uid != os.geteuid():
        raise PermissionError(f"{run_dir} belongs to uid {info.st_uid}, not to this user (uid {os.geteuid()})")
    if stat.S_IMODE(info.st_mode) != 0o700:
        run_dir.chmod(0o700)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing it atomically (a reader never sees half of it).

    A file that already holds `text` is left alone: each start renders these files again, and a start on a
    full disk (an eMMC filled by logs) must not fail for want of room to write what is already there. When
    the text did change and the disk is full, the file is rewritten in place, in the room its old text
    frees: not atomic, which matters little here, since every start writes these files before Mosquitto
    reads them. Errors name the file."""
    if _holds(path, text):
        return
    try:
        _replace(path, text)
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.is_file():
            raise OSError(exc.errno, exc.strerror, str(path)) from None
        try:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as again:
            raise OSError(again.errno, again.strerror, str(path)) from None
        path.chmod(0o600)


def _holds(path: Path, text: str) -> bool:
    try:
        return path.read_text(encoding="utf-8") == text and stat.S_IMODE(path.stat().st_mode) == 0o600
    except (OSError, UnicodeDecodeError):
        return False


def _replace(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older file of that name may have had a wider mode
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = -1
            handle.write(text)
        os.replace(temporary, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temporary.unlink(missing_ok=True)
        raise


def _existing_password(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return None
    password = lines[0] if lines else ""
    return password if len(password) >= 20 and password.isprintable() and " " not in password else None


def ensure_passwords(run_dir: Path) -> dict[str, str]:
    """identity -> password: kept from the run folder when there, generated (and written 0600) otherwise."""
    passwords: dict[str, str] = {}
    for identity in IDENTITIES:
        path = password_path(run_dir, identity)
        password = _existing_password(path)
        if password is None:
            password = secrets.token_urlsafe(24)
            write_private(path, password + "\n")
        elif stat.S_IMODE(path.stat().st_mode) != 0o600:
            path.chmod(0o600)
        passwords[identity] = password
    return passwords


def hash_password(password: str, salt: bytes | None = None) -> str:
    """A mosquitto_passwd entry's hash part, so that no password ever appears on a command line."""
    salt = salt if salt is not None else secrets.token_bytes(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _PBKDF2_ROUNDS)
    return f"$7${_PBKDF2_ROUNDS}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def password_file_text(passwords: dict[str, str], previous: str = "") -> str:
    """The Mosquitto password file. An entry of `previous` that still matches its password is kept as it is
    (a fresh salt at every start would rewrite the file each time for nothing)."""
    kept = {}
    for line in previous.splitlines():
        user, _, entry = line.partition(":")
        parts = entry.split("$")  # "", "7", rounds, salt, hash
        if user in passwords and len(parts) == 5 and parts[1] == "7":
            with contextlib.suppress(ValueError):
                if hash_password(passwords[user], base64.b64decode(parts[3], validate=True)) == entry:
                    kept[user] = entry
    return "".join(f"{user}:{kept.get(user) or hash_password(password)}\n" for user, password in passwords.items())


def acl_text(device_id: str, topic_prefix: str) -> str:
    """Who may do what on the local broker. Mosquitto refuses whatever no line allows."""
    status = f"facecap/{device_id}"
    return "\n".join([
        "# Rendered by `facecap broker` at every start: one block per local identity.",
        "user detector",
        f"topic write {topic_prefix}/{device_id}/#",
        f"topic readwrite {status}/detector/status",
        f"topic write {status}/detector/stats",  # device health, bridged to the cloud
        f"topic read {status}/receipts",
        "topic read $SYS/broker/connection/#",
        "",
        "user sender",
        f"topic write {topic_prefix}/{device_id}/#",
        f"topic read {status}/receipts",
        "topic read $SYS/broker/connection/#",
        "",
        "user logger",
        f"topic read {topic_prefix}/#",
        f"topic readwrite {status}/logger/status",
        f"topic write {status}/logger/stats",
        "",
        "user monitor",
        "topic read #",
        "topic read $SYS/#",
        "",
    ])


def write_credentials(run_dir: Path, device_id: str, topic_prefix: str) -> tuple[Path, Path]:
    """Everything the local listeners need, written into the run folder: (password file, ACL file)."""
    prepare_run_dir(run_dir)
    passwords = ensure_passwords(run_dir)
    passwd, acl = run_dir / PASSWD_NAME, run_dir / ACL_NAME
    try:
        previous = passwd.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        previous = ""
    write_private(passwd, password_file_text(passwords, previous))
    write_private(acl, acl_text(device_id, topic_prefix))
    return passwd, acl
