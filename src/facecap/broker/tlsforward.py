"""The bridge's TLS, done by facecap: Mosquitto bridges in plain TCP to a loopback port, and this forwarder
carries each of those connections to the cloud broker inside TLS.

Why: Mosquitto 2.0.11 (Debian 12, Ubuntu 22.04 / JetPack 6), bridging with TLS itself, can spin at 100%
CPU after some failed reconnects while the uplink is down: its own listener stops answering, nothing more
is logged, SIGTERM is ignored, and only SIGKILL ends it, losing the queue held in memory. Mosquitto 2.0.16
fixed it ("high CPU use on slow TLS connect", eclipse/mosquitto#2794). A plain TCP bridge never reaches
that code. Doing TLS here also sets TCP_NODELAY on the outgoing socket, which 2.0.11 leaves off for a
bridge, so a face is not held back waiting for the previous one's ACK.

Why one asyncio loop on one thread rather than a thread per direction: an OpenSSL connection must not be
read and written by two threads at once; asyncio drives each TLS connection from its one thread, and its
flow control (drain) bounds the bytes held per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .certlife import PeerCertificateReminder
from .config import BridgeSettings
from .uplink import DEAD_LINK_SECONDS, connect_uplink, unacknowledged_for

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
CONNECT_TIMEOUT_SECONDS = 15.0
# A bridge makes one connection at a time; a few more cover a reconnect that overlaps the old connection's
# teardown. Anything beyond is refused so a stuck peer cannot make the forwarder pile up connections.
MAX_CONNECTIONS = 4
CHUNK_BYTES = 65536
# Mosquitto retries every few seconds for as long as the uplink is down: the same failure is logged at
# most this often, with a count of the attempts in between.
REPORT_INTERVAL_SECONDS = 60.0
# How often the forwarder looks at a connection's TCP state for a dead link.
WATCH_SECONDS = 1.0
# Linux only. Delayed ACK mode comes back after a while, so it is set again before every read.
_TCP_QUICKACK: int | None = getattr(socket, "TCP_QUICKACK", None)


class DeadLinkError(ConnectionError):
    """The uplink acknowledged nothing for bridge.deadLinkSeconds while data waited: it is cut."""


class _MosquittoSideError(Exception):
    """Mosquitto's side of a forwarded connection failed (it reset or closed it): the forwarder logged this
    as the cloud link breaking ("Broken pipe"), which sent operators looking at a healthy uplink."""


def bridge_tls_context(bridge: BridgeSettings) -> ssl.SSLContext:
    """The client TLS context of the bridge: the cloud's certificate checked against caFile (or the CA folder
    caPath when caFile is empty), the host name checked, TLS 1.2 or later, and the client certificate for
    mutual TLS. A file that exists but does not load is reported with its key."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=bridge.ca_file or None,
            capath=None if bridge.ca_file else bridge.ca_path or None)
    except (ssl.SSLError, OSError) as exc:
        key = "bridge.caFile" if bridge.ca_file else "bridge.caPath"
        raise ConfigError("broker", [(key, f"cannot load the CA: {failure_reason(exc)}")]) from exc
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if bridge.cert_file:
        try:
            context.load_cert_chain(bridge.cert_file, bridge.key_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError("broker", [("bridge.certFile", f"cannot load {bridge.cert_file} with "
                                                             f"{bridge.key_file}: {failure_reason(exc)}")]) from exc
    return context


_ERRNO_OF: dict[type[OSError], int] = {
    ConnectionResetError: errno.ECONNRESET,
    ConnectionRefusedError: errno.ECONNREFUSED,
    ConnectionAbortedError: errno.ECONNABORTED,
    BrokenPipeError: errno.EPIPE,
}


def failure_reason(exc: BaseException, timeout: float = CONNECT_TIMEOUT_SECONDS) -> str:
    """A short reason an operator can act on, e.g. 'certificate verify failed: unable to get local issuer
    certificate', 'Connection refused', 'tlsv13 alert certificate required'."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return (exc.reason or str(exc)).lower().replace("_", " ")
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)) and not getattr(exc, "errno", None):
        return f"no answer within {timeout:g} s"  # a wait of ours ran out (an ETIMEDOUT is the kernel's)
    if isinstance(exc, socket.gaierror):
        return exc.strerror or str(exc)  # its errno is a resolver code, which os.strerror does not know
    if isinstance(exc, OSError):
        # asyncio's own text for a refused connection ("Connect call failed (...)") hides the cause, and
        # it raises some without an errno: the same cause must read the same to be counted as a repeat.
        code = exc.errno or next((c for kind, c in _ERRNO_OF.items() if isinstance(exc, kind)), None)
        return os.strerror(code) if code else str(exc) or type(exc).__name__
    return str(exc) or type(exc).__name__


# An IPv6 socket may reach an IPv4 loopback listener at ::ffff:127.0.0.1; the kernel lists it in tcp6, with
# its addresses as four 32-bit words in host byte order: this prefix, then the IPv4 address as tcp writes it.
_V4_MAPPED = "0000000000000000" + f"{int.from_bytes(bytes.fromhex('0000FFFF'), sys.byteorder):08X}"


def _loopback_socket_uids(path: str = "/proc/net") -> dict[tuple[str, str], int] | None:
    """(local, remote) address -> owner uid of every TCP socket that can be an end of an IPv4 connection, from
    the kernel's tables: the IPv4 ones and the IPv6 ones with IPv4-mapped addresses, written the IPv4 way.
    None when the tables cannot be read (not Linux)."""
    try:
        rows = Path(path, "tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    with contextlib.suppress(OSError):  # a kernel without IPv6 has no such sockets either
        rows += Path(path, "tcp6").read_text().splitlines()[1:]
    table = {}
    for row in rows:
        fields = row.split()
        if len(fields) > 7:
            table[(_as_ipv4(fields[1]), _as_ipv4(fields[2]))] = int(fields[7])
    return table


def _as_ipv4(address: str) -> str:
    """An IPv4-mapped IPv6 address of tcp6 written as tcp writes IPv4 ones; any other address unchanged."""
    host, _, port = address.partition(":")
    return f"{host[24:]}:{port}" if len(host) == 32 and host.startswith(_V4_MAPPED) else address


def _kernel_address(address: tuple[str, int]) -> str:
    """('127.0.0.1', 8883) -> '0100007F:22B3', as /proc/net/tcp writes it (the IPv4 address in host byte
    order)."""
    host = socket.inet_aton(address[0])
    return f"{int.from_bytes(host, sys.byteorder):08X}:{address[1]:04X}"


def peer_uid(connection: socket.socket) -> int | None:
    """The uid owning the other end of an accepted loopback connection, or None when it cannot be told (not
    Linux, or no such socket: it is gone)."""
    table = _loopback_socket_uids()
    if table is None:
        return None
    peer, own = connection.getpeername(), connection.getsockname()
    return table.get((_kernel_address(peer), _kernel_address(own)))


class _Reporter:
    """Logs the state of the uplink: a new failure at once, the same failure again at most once per
    REPORT_INTERVAL_SECONDS with the count of attempts in between, and the first success after failures."""

    def __init__(self, target: str, interval: float = REPORT_INTERVAL_SECONDS) -> None:
        self.target = target
        self.interval = interval
        self._reason: str | None = None
        self._reported_at = 0.0
        self._repeats = 0  # failures like the last reported one, not yet reported
        self._failures = 0  # since the last success
        self._ever_connected = False

    def failed(self, what: str, reason: str) -> None:
        now = time.monotonic()
        self._failures += 1
        if reason == self._reason and now - self._reported_at < self.interval:
            self._repeats += 1
            return
        log.warning("bridge TLS to %s: %s: %s%s", self.target, what, reason,
                    f" ({_attempts(self._repeats)} more failed the same way)" if self._repeats else "")
        self._reason, self._reported_at, self._repeats = reason, now, 0

    def connected(self, version: str | None) -> None:
        if self._failures or not self._ever_connected:
            log.info("bridge TLS to %s established (%s)%s", self.target, version,
                     f" after {_attempts(self._failures)} failed" if self._failures else "")
        else:
            log.debug("bridge TLS to %s established (%s)", self.target, version)
        self._reason, self._repeats, self._failures, self._ever_connected = None, 0, 0, True

    def ended_by_cloud(self) -> None:
        log.info("bridge TLS to %s: the cloud side closed the connection", self.target)


def _peer_certificate(tls: ssl.SSLObject) -> dict[str, Any] | None:
    """The cloud's certificate as `getpeercert()` gives it; None when the connection has ended meanwhile.
    With TLS 1.3 the client's handshake is done before the server has checked the client's certificate: an
    alert refusing it can come first and leave the object saying "handshake not done yet"."""
    try:
        return tls.getpeercert()
    except (ValueError, ssl.SSLError):
        return None


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"


class TlsForwarder:
    """Accepts plain TCP on a loopback port and forwards each connection to host:port inside TLS.

    When the upstream connection or handshake fails the local connection is closed at once, so Mosquitto
    sees an ordinary failed connection and backs off; closing either side closes the other. Only processes
    of `allowed_uid` (this process's user, which Mosquitto runs as) may connect: anyone else could
    otherwise reach the cloud with this device's client certificate.
    """

    def __init__(
        self,
        host: str,
        port: int,
        context: ssl.SSLContext | Callable[[], ssl.SSLContext],
        *,
        listen_port: int = 0,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
        max_connections: int = MAX_CONNECTIONS,
        allowed_uid: int | None = None,
        dead_link_seconds: float = DEAD_LINK_SECONDS,
        certificate_warning_days: int = 0,
    ) -> None:
        self.host = host
        self.dead_link_seconds = dead_link_seconds
        self.upstream_port = port
        # A callable is asked for the context at each new connection (tlsfiles.BridgeTlsFiles: files that
        # changed are loaded again).
        self._context = context if callable(context) else lambda: context
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self.allowed_uid = os.geteuid() if allowed_uid is None else allowed_uid
        self._report = _Reporter(f"{host}:{port}")
        self._peer_certificate = PeerCertificateReminder(f"{host}:{port}", certificate_warning_days)
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((LOOPBACK, listen_port))
        self.port: int = self._server.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"tls-forward-{self.port}",
                                        daemon=True)
        self._connections: set[asyncio.Task[None]] = set()
        self._acceptor: asyncio.Task[None] | None = None

    def start(self) -> TlsForwarder:
        """Listen (before returning, so Mosquitto can connect at once) and serve on a background thread."""
        self._server.listen(MAX_CONNECTIONS)
        self._server.setblocking(False)
        self._thread.start()
        self._call(self._begin(), timeout=5)
        log.info("TLS forwarder on %s:%d for the bridge to %s:%d", LOOPBACK, self.port, self.host,
                 self.upstream_port)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every forwarded connection; wait for the thread to end."""
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._shutdown(), timeout)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
        if not self._thread.is_alive():
            self._loop.close()
        self._server.close()

    @property
    def active_connections(self) -> int:
        return len(self._connections)

    def _call(self, coroutine: Coroutine[Any, Any, None], timeout: float) -> None:
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _begin(self) -> None:
        self._acceptor = asyncio.get_running_loop().create_task(self._accept())

    async def _shutdown(self) -> None:
        tasks = [t for t in (self._acceptor, *self._connections) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _on_loop_error(self, _loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # asyncio reports a TLS connection the peer broke as an ERROR with a traceback; the forwarder
        # already logs why a connection ended, so these are only for debugging.
        log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                connection, _ = await loop.sock_accept(self._server)
            except OSError as exc:
                # Out of file descriptors or the like: keep serving rather than end the bridge for good.
                log.warning("TLS forwarder: accept failed: %s", failure_reason(exc))
                await asyncio.sleep(1)
                continue
            if not self._admit(connection):
                connection.close()
                continue
            task = loop.create_task(self._forward(connection))
            self._connections.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        # Expected failures are reported inside the task; anything else is a bug, and must not vanish into
        # asyncio's "exception was never retrieved".
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("TLS forwarder: a connection failed unexpectedly", exc_info=exc)

    def _admit(self, connection: socket.socket) -> bool:
        if len(self._connections) >= self.max_connections:
            log.warning("TLS forwarder: refused a connection, %d already open", len(self._connections))
            return False
        try:
            uid = peer_uid(connection)
        except (OSError, ValueError):
            return False  # the other end is already gone, or the kernel's table was unreadable
        # A peer whose owner cannot be found is refused too (fail closed): only where the kernel's tables
        # cannot be read at all (not Linux) does the check give way.
        if uid != self.allowed_uid and (uid is not None or _loopback_socket_uids() is not None):
            log.warning("TLS forwarder: refused a connection from uid %s (only uid %d may use the bridge)",
                        "unknown" if uid is None else uid, self.allowed_uid)
            return False
        return True

    async def _forward(self, local: socket.socket) -> None:
        try:
            upstream = await self._open_upstream()
            if upstream is not None:
                await self._pump(local, *upstream)
        finally:
            local.close()

    async def _open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        deadline = time.monotonic() + self.connect_timeout
        context = self._context()  # before any socket, so nothing it may raise leaves one open
        raw: socket.socket | None = None
        try:
            raw = await connect_uplink(self.host, self.upstream_port, deadline, self.dead_link_seconds)
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(sock=raw, ssl=context, server_hostname=self.host,
                                        ssl_handshake_timeout=max(0.1, deadline - time.monotonic())),
                max(0.1, deadline - time.monotonic()))
        except (OSError, asyncio.TimeoutError, UnicodeError) as exc:  # ssl.SSLError is an OSError; a name the
            # resolver cannot encode raises UnicodeError: one more failed attempt, not a traceback each time
            if raw is not None:
                raw.close()
            self._report.failed("connection failed", failure_reason(exc, self.connect_timeout))
            return None
        tls = writer.get_extra_info("ssl_object")
        self._report.connected(tls.version() if isinstance(tls, ssl.SSLObject) else None)
        if isinstance(tls, ssl.SSLObject):
            self._peer_certificate.seen(_peer_certificate(tls))
        return reader, writer

    async def _pump(self, local: socket.socket, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        local.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        outgoing = asyncio.ensure_future(self._local_to_upstream(local, writer))
        incoming = asyncio.ensure_future(self._upstream_to_local(reader, local))
        tasks = [incoming, outgoing]
        upstream = writer.get_extra_info("socket")
        if upstream is not None and unacknowledged_for(upstream) is not None:
            tasks.append(asyncio.ensure_future(self._watch_link(upstream)))
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close_upstream(writer)
        # The cloud's side first: its TLS alert says more than the reset Mosquitto's side may see after it.
        errors = [task.exception() for task in tasks if task in done and not task.cancelled()]
        error = next((exc for exc in errors if exc is not None), None)
        if isinstance(error, _MosquittoSideError) or (error is None and incoming not in done):
            # Mosquitto's side went first (its keep-alive, a restart): not the uplink's doing.
            log.debug("bridge TLS to %s:%d: Mosquitto closed the connection", self.host, self.upstream_port)
        elif error is not None:
            self._report.failed("connection broken", failure_reason(error))
        else:
            self._report.ended_by_cloud()

    async def _watch_link(self, upstream: socket.socket) -> None:
        """Ends the connection (by raising DeadLinkError) once data has waited dead_link_seconds with no ACK
        at all from the cloud: the link is cut. A slow or lossy link still acknowledges and is left alone."""
        waiting_since: float | None = None  # when this watch first saw data waiting, after none did
        while True:
            await asyncio.sleep(WATCH_SECONDS)
            silent = unacknowledged_for(upstream)
            if not silent:
                waiting_since = None
                continue
            now = time.monotonic()
            waiting_since = now if waiting_since is None else waiting_since
            # Since the last ACK, but no longer than data has been waiting: a link that was idle is not
            # silent before it has been sent something.
            if min(silent, now - waiting_since + WATCH_SECONDS) >= self.dead_link_seconds:
                raise DeadLinkError(f"no acknowledgement from the cloud for {silent:.0f} s")

    @staticmethod
    async def _local_to_upstream(local: socket.socket, writer: asyncio.StreamWriter) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if _TCP_QUICKACK is not None:
                # Mosquitto 2.0.11 leaves Nagle on for its bridge socket: its next write waits until this
                # side ACKs, and a delayed ACK costs ~40 ms per face. Acknowledging at once avoids that.
                local.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
            try:
                data = await loop.sock_recv(local, CHUNK_BYTES)
            except OSError as exc:
                raise _MosquittoSideError from exc
            if not data:
                return
            writer.write(data)
            await writer.drain()

    @staticmethod
    async def _upstream_to_local(reader: asyncio.StreamReader, local: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while data := await reader.read(CHUNK_BYTES):
            try:
                await loop.sock_sendall(local, data)
            except OSError as exc:
                raise _MosquittoSideError from exc

    @staticmethod
    async def _close_upstream(writer: asyncio.StreamWriter) -> None:
        writer.close()
        try:
            # A TLS close waits for the peer's answer; a peer that vanished must not keep the task alive.
            await asyncio.wait_for(writer.wait_closed(), 2.0)
        except (OSError, asyncio.TimeoutError):
            writer.transport.abort()
