"""The bridge's TLS forwarder on its own: plain TCP in on loopback, real TLS out to a real TLS server (Python's
ssl with certificates made by openssl in the test), with every way the upstream can fail."""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from facecap.broker.config import BridgeSettings
from facecap.broker.tlsfiles import BridgeTlsFiles
from facecap.broker.tlsforward import (
    TlsForwarder,
    _peer_certificate,
    bridge_tls_context,
    failure_reason,
    peer_uid,
)
from facecap.devkit.servers import Certificate, CertificateAuthority, free_port
from facecap.errors import ConfigError
from facecap.polling import wait_until

LOG_NAME = "facecap.broker.tlsforward"


class TlsEcho:
    """A TLS server on loopback that echoes what it receives and remembers who connected."""

    def __init__(self, cert: Certificate, *, client_ca: Path | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert.cert, cert.key)
        if client_ca is not None:
            self.context.verify_mode = ssl.CERT_REQUIRED
            self.context.load_verify_locations(client_ca)
        self.host = host
        self.server = socket.create_server((host, port))
        self.port: int = self.server.getsockname()[1]
        self.peers: list[dict[str, Any]] = []
        self.versions: list[str | None] = []
        self.handshake_failures: list[str] = []
        self.ended = threading.Semaphore(0)  # released when a connection ends on the server side
        self._open: list[ssl.SSLSocket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        try:
            tls = self.context.wrap_socket(connection, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            self.handshake_failures.append(str(exc))
            connection.close()
            return
        self.peers.append(tls.getpeercert() or {})
        self.versions.append(tls.version())
        self._open.append(tls)
        try:
            while data := tls.recv(65536):
                tls.sendall(data)
        except OSError:
            pass
        finally:
            tls.close()
            self.ended.release()

    def drop_all(self) -> None:
        """The cloud side goes away: every connection is shut down from the server."""
        for tls in self._open:
            with contextlib.suppress(OSError):
                tls.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self.server.close()

    def __enter__(self) -> TlsEcho:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
        self.drop_all()


@pytest.fixture
def server_cert(ca: CertificateAuthority) -> Certificate:
    return ca.issue("cloud-broker", server=True)


@pytest.fixture
def echo(server_cert: Certificate) -> Iterator[TlsEcho]:
    server = TlsEcho(server_cert)
    yield server
    server.close()


@pytest.fixture
def forwarders() -> Iterator[list[TlsForwarder]]:
    started: list[TlsForwarder] = []
    yield started
    for forwarder in started:
        forwarder.stop()


def start(forwarders: list[TlsForwarder], port: int, bridge: BridgeSettings, host: str = "127.0.0.1",
          **options: object) -> TlsForwarder:
    forwarder = TlsForwarder(host, port, bridge_tls_context(bridge), **options)  # type: ignore[arg-type]
    forwarders.append(forwarder.start())
    return forwarder


def connect(forwarder: TlsForwarder) -> socket.socket:
    return socket.create_connection(("127.0.0.1", forwarder.port), timeout=10)


def closed_by_peer(sock: socket.socket, timeout: float = 10.0) -> bool:
    """True when the other end closes the connection within timeout (a read gives end of file)."""
    sock.settimeout(timeout)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def receive(sock: socket.socket, count: int) -> bytes:
    got = bytearray()
    while len(got) < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return bytes(got)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOG_NAME and r.levelno == logging.WARNING]


def closed_with_warnings(forwarder: TlsForwarder, caplog: pytest.LogCaptureFixture, send: bytes = b"") -> list[str]:
    """Connect through the forwarder (sending `send`), see it close the connection, and return the warnings
    it logged about why."""
    with connect(forwarder) as local:
        if send:
            local.sendall(send)
        assert closed_by_peer(local)
    assert wait_until(lambda: warnings(caplog), 10, 0.05)
    return warnings(caplog)


# --- the TLS context ---------------------------------------------------------------------------------------

@pytest.mark.unit
def test_context_checks_the_server_and_refuses_old_tls(ca: CertificateAuthority) -> None:
    context = bridge_tls_context(BridgeSettings(host="h", ca_file=str(ca.cert)))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.unit
def test_files_that_do_not_load_are_named(ca: CertificateAuthority, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigError) as caught:
        bridge_tls_context(BridgeSettings(host="h", ca_file=str(garbage)))
    assert list(dict(caught.value.problems)) == ["bridge.caFile"]
    assert "cannot load the CA" in dict(caught.value.problems)["bridge.caFile"]
    device, other = ca.issue("jetson-1"), ca.issue("jetson-2")
    with pytest.raises(ConfigError) as caught:
        bridge_tls_context(BridgeSettings(host="h", ca_file=str(ca.cert), cert_file=str(device.cert),
                                          key_file=str(other.key)))
    reason = dict(caught.value.problems)["bridge.certFile"]
    assert f"cannot load {device.cert} with {other.key}" in reason
    assert "key values mismatch" in reason


@pytest.mark.unit
def test_failure_reasons_are_short_and_actionable() -> None:
    assert failure_reason(ConnectionRefusedError(111, "Connection refused")) == "Connection refused"
    assert failure_reason(TimeoutError(), timeout=3) == "no answer within 3 s"
    # The kernel's ETIMEDOUT is also a TimeoutError, but no wait of ours ran out.
    assert failure_reason(TimeoutError(errno.ETIMEDOUT, "Connection timed out")) == "Connection timed out"
    # asyncio raises some without an errno; they must read as the same cause to be counted as repeats.
    assert failure_reason(ConnectionResetError()) == "Connection reset by peer"
    assert failure_reason(ConnectionResetError(104, "Connection reset by peer")) == "Connection reset by peer"
    assert failure_reason(socket.gaierror(-2, "Name or service not known")) == "Name or service not known"
    alert = ssl.SSLError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    alert.reason = "TLSV13_ALERT_CERTIFICATE_REQUIRED"
    assert failure_reason(alert) == "tlsv13 alert certificate required"


# --- forwarding -----------------------------------------------------------------------------------------

@pytest.mark.integration
def test_bytes_cross_both_ways_inside_verified_tls(ca: CertificateAuthority, echo: TlsEcho,
                                                    forwarders: list[TlsForwarder],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, LOG_NAME)
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
    payload = os.urandom(3 * 1024 * 1024)  # more than any socket buffer: flow control has to work
    with connect(forwarder) as local:
        sender = threading.Thread(target=local.sendall, args=(payload,))
        sender.start()
        assert receive(local, len(payload)) == payload
        sender.join()
        assert forwarder.active_connections == 1
    assert echo.versions and echo.versions[0] in ("TLSv1.2", "TLSv1.3")
    assert echo.peers == [{}]  # no client certificate was configured, none was sent
    assert any(f"bridge TLS to 127.0.0.1:{echo.port} established (TLSv1." in r.getMessage()
               for r in caplog.records)


@pytest.mark.integration
def test_mosquitto_resetting_its_side_is_not_called_a_broken_uplink(
        ca: CertificateAuthority, echo: TlsEcho, forwarders: list[TlsForwarder],
        caplog: pytest.LogCaptureFixture) -> None:
    # Mosquitto ends a bridge connection itself (its keep-alive, a restart) while the cloud is sending:
    # the forwarder's write to Mosquitto's side fails. That is no reason to warn about the uplink.
    caplog.set_level(logging.DEBUG, LOG_NAME)
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
    local = connect(forwarder)
    local.sendall(os.urandom(4 * 1024 * 1024))  # echoed back, and never read
    assert wait_until(lambda: forwarder.active_connections == 1, 10, 0.05)
    local.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    local.close()  # a reset, with echoed data still on its way
    assert wait_until(lambda: forwarder.active_connections == 0, 10, 0.05)
    assert any("Mosquitto closed the connection" in r.getMessage() for r in caplog.records)
    assert warnings(caplog) == []


@pytest.mark.integration
def test_client_certificate_is_presented(ca: CertificateAuthority, server_cert: Certificate,
                                         forwarders: list[TlsForwarder]) -> None:
    device = ca.issue("jetson-test")
    with TlsEcho(server_cert, client_ca=ca.cert) as server:
        forwarder = start(forwarders, server.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert),
                                                                  cert_file=str(device.cert),
                                                                  key_file=str(device.key)))
        with connect(forwarder) as local:
            local.sendall(b"hello")
            assert receive(local, 5) == b"hello"
        subject = dict(pair[0] for pair in server.peers[0]["subject"])
        assert subject["commonName"] == "jetson-test"


@pytest.mark.integration
def test_missing_client_certificate_closes_and_logs_the_servers_alert(
        ca: CertificateAuthority, server_cert: Certificate, forwarders: list[TlsForwarder],
        caplog: pytest.LogCaptureFixture) -> None:
    with TlsEcho(server_cert, client_ca=ca.cert) as server:
        forwarder = start(forwarders, server.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
        # Nothing is sent: data arriving after the server's alert would make it answer with a reset, which
        # can overtake the alert ("Connection reset by peer" is then all there is to log).
        assert closed_with_warnings(forwarder, caplog) == [
            f"bridge TLS to 127.0.0.1:{server.port}: connection broken: tlsv13 alert certificate required"]


@pytest.mark.integration
def test_wrong_ca_closes_the_local_connection_and_logs_why(echo: TlsEcho, forwarders: list[TlsForwarder],
                                                           tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    stranger = CertificateAuthority(tmp_path / "stranger", name="not-the-cloud-ca")
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(stranger.cert)))
    assert closed_with_warnings(forwarder, caplog, b"CONNECT") == [
        f"bridge TLS to 127.0.0.1:{echo.port}: connection failed: certificate verify failed: unable to get local "
        "issuer certificate"]
    assert echo.peers == []


@pytest.mark.integration
def test_host_name_is_checked(ca: CertificateAuthority, server_cert: Certificate, forwarders: list[TlsForwarder],
                              caplog: pytest.LogCaptureFixture) -> None:
    """The server certificate is for localhost and 127.0.0.1: reached as 127.0.0.2 it must be refused."""
    with TlsEcho(server_cert, host="127.0.0.2") as server:
        forwarder = start(forwarders, server.port, BridgeSettings(host="127.0.0.2", ca_file=str(ca.cert)),
                          host="127.0.0.2")
        assert "certificate verify failed: IP address mismatch" in closed_with_warnings(forwarder, caplog)[0]


@pytest.mark.integration
def test_refused_upstream_is_reported_once_however_often_it_is_tried(
        ca: CertificateAuthority, server_cert: Certificate, forwarders: list[TlsForwarder],
        caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens there
    forwarder = start(forwarders, port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
    started = time.monotonic()
    for _ in range(5):
        with connect(forwarder) as local:
            assert closed_by_peer(local, timeout=5)
    assert time.monotonic() - started < 5  # each attempt fails at once, as a refused connection does
    assert warnings(caplog) == [f"bridge TLS to 127.0.0.1:{port}: connection failed: Connection refused"]
    # The cloud comes back: the first success says how many attempts failed before it.
    caplog.set_level(logging.INFO, LOG_NAME)
    with TlsEcho(server_cert, port=port):
        with connect(forwarder) as local:
            local.sendall(b"back")
            assert receive(local, 4) == b"back"
        assert (f"bridge TLS to 127.0.0.1:{port} established (TLSv1.3) after 5 attempts failed"
                in [r.getMessage() for r in caplog.records])


@pytest.mark.integration
def test_silent_upstream_times_out(ca: CertificateAuthority, forwarders: list[TlsForwarder],
                                   caplog: pytest.LogCaptureFixture) -> None:
    """A peer that takes the TCP connection but never answers the TLS handshake (a black-holed route or a
    stuck server) must not hold the bridge for ever."""
    with socket.create_server(("127.0.0.1", 0)) as silent:  # listens, never accepts nor answers
        forwarder = start(forwarders, silent.getsockname()[1],
                          BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)), connect_timeout=1.0)
        started = time.monotonic()
        with connect(forwarder) as local:
            assert closed_by_peer(local, timeout=10)
        assert 0.9 < time.monotonic() - started < 5
    assert wait_until(lambda: warnings(caplog), 10, 0.05)
    assert warnings(caplog)[0].endswith("connection failed: no answer within 1 s")


@pytest.mark.integration
def test_closing_either_side_closes_the_other(ca: CertificateAuthority, echo: TlsEcho,
                                              forwarders: list[TlsForwarder],
                                              caplog: pytest.LogCaptureFixture) -> None:
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
    # Mosquitto drops the bridge connection: the cloud side ends too.
    local = connect(forwarder)
    local.sendall(b"ping")
    assert receive(local, 4) == b"ping"
    local.close()
    assert echo.ended.acquire(timeout=10)
    assert wait_until(lambda: forwarder.active_connections == 0, 10, 0.05)
    # The cloud drops it: Mosquitto's side ends too, and the log says who ended it.
    caplog.set_level(logging.INFO, LOG_NAME)
    with connect(forwarder) as local:
        local.sendall(b"ping")
        assert receive(local, 4) == b"ping"
        echo.drop_all()
        assert closed_by_peer(local)
    assert wait_until(lambda: forwarder.active_connections == 0, 10, 0.05)
    assert (f"bridge TLS to 127.0.0.1:{echo.port}: the cloud side closed the connection"
            in [r.getMessage() for r in caplog.records])


@pytest.mark.integration
def test_connections_beyond_the_limit_are_refused(ca: CertificateAuthority, echo: TlsEcho,
                                                  forwarders: list[TlsForwarder],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)),
                      max_connections=2)
    kept = [connect(forwarder) for _ in range(2)]
    for sock in kept:
        sock.sendall(b"x")
        assert receive(sock, 1) == b"x"
    with connect(forwarder) as extra:
        assert closed_by_peer(extra)
    assert "refused a connection, 2 already open" in warnings(caplog)[-1]
    for sock in kept:
        sock.close()
    assert wait_until(lambda: forwarder.active_connections == 0, 10, 0.05)
    with connect(forwarder) as again:  # room again once they are gone
        again.sendall(b"y")
        assert receive(again, 1) == b"y"


@pytest.mark.integration
def test_only_the_brokers_user_may_connect(ca: CertificateAuthority, echo: TlsEcho, forwarders: list[TlsForwarder],
                                           caplog: pytest.LogCaptureFixture) -> None:
    """Anyone who could connect would reach the cloud as this device (its client certificate); the forwarder
    admits only the uid Mosquitto runs as. Here the test process plays a stranger."""
    with socket.create_server(("127.0.0.1", 0)) as server, \
            socket.create_connection(server.getsockname()) as client:
        accepted, _ = server.accept()
        with accepted:
            assert peer_uid(accepted) == os.geteuid()
            assert peer_uid(client) == os.geteuid()
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)),
                      allowed_uid=os.geteuid() + 1)
    with connect(forwarder) as local:
        assert closed_by_peer(local)
    assert warnings(caplog) == [f"TLS forwarder: refused a connection from uid {os.geteuid()} (only uid "
                                f"{os.geteuid() + 1} may use the bridge)"]
    assert echo.peers == []


@pytest.mark.integration
def test_a_stranger_cannot_slip_in_over_ipv6_or_unseen(ca: CertificateAuthority, echo: TlsEcho,
                                                        forwarders: list[TlsForwarder],
                                                        caplog: pytest.LogCaptureFixture,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An IPv6 socket reaches the IPv4 loopback listener at ::ffff:127.0.0.1, and the kernel lists it in tcp6,
    not tcp: the forwarder found no owner and let it through, to the cloud as this device. Now it finds the
    owner there, and refuses a peer whose owner it cannot find at all."""
    forwarder = start(forwarders, echo.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)),
                      allowed_uid=os.geteuid() + 1)
    with socket.socket(socket.AF_INET6) as local:
        local.settimeout(5)
        local.connect(("::ffff:127.0.0.1", forwarder.port))
        assert closed_by_peer(local)
    assert warnings(caplog)[-1].startswith(f"TLS forwarder: refused a connection from uid {os.geteuid()} ")
    monkeypatch.setattr("facecap.broker.tlsforward.peer_uid", lambda connection: None)
    with connect(forwarder) as local:
        assert closed_by_peer(local)
    assert warnings(caplog)[-1].startswith("TLS forwarder: refused a connection from uid unknown ")
    assert echo.peers == []


@pytest.mark.integration
def test_stop_closes_the_listener_and_every_connection(ca: CertificateAuthority, echo: TlsEcho) -> None:
    forwarder = TlsForwarder("127.0.0.1", echo.port,
                             bridge_tls_context(BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))).start()
    local = connect(forwarder)
    local.sendall(b"z")
    assert receive(local, 1) == b"z"
    forwarder.stop()
    assert closed_by_peer(local)
    assert echo.ended.acquire(timeout=10)
    local.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", forwarder.port), timeout=2).close()


# --- certificate lifetimes --------------------------------------------------------------------------------

@pytest.mark.integration
def test_a_cloud_certificate_near_its_end_is_noticed_at_the_handshake_once(
        ca: CertificateAuthority, forwarders: list[TlsForwarder], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, "facecap.broker.certlife")
    with TlsEcho(ca.issue("ending-broker", server=True, days=5)) as server:
        bridge = BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert))
        forwarder = start(forwarders, server.port, bridge, certificate_warning_days=30)
        for _ in range(2):  # a second handshake within the day repeats nothing
            with connect(forwarder) as local:
                local.sendall(b"hello")
                assert receive(local, 5) == b"hello"
    notices = [r.getMessage() for r in caplog.records if r.name == "facecap.broker.certlife"]
    assert len(notices) == 1
    assert notices[0].startswith(f"bridge TLS to 127.0.0.1:{server.port}: the cloud broker's certificate "
                                 "(CN=ending-broker, expires on ")
    assert "in 5 days): the bridge no longer trusts the cloud broker from then" in notices[0]


@pytest.mark.unit
def test_reading_the_cloud_certificate_of_an_ended_handshake_is_no_error(ca: CertificateAuthority) -> None:
    """A TLS 1.3 server's alert refusing the client's certificate can come right after the client's handshake
    is done, and leave the object saying "handshake not done yet": that must stay a failed connection (the
    alert is logged by the pump), not a forwarder bug with a traceback."""
    tls = bridge_tls_context(BridgeSettings(host="h", ca_file=str(ca.cert))).wrap_bio(
        ssl.MemoryBIO(), ssl.MemoryBIO(), server_hostname="h")
    with pytest.raises(ValueError, match="handshake not done yet"):
        tls.getpeercert()
    assert _peer_certificate(tls) is None


@pytest.mark.integration
def test_expired_certificates_on_either_side_are_named_as_the_reason(
        ca: CertificateAuthority, server_cert: Certificate, forwarders: list[TlsForwarder],
        caplog: pytest.LogCaptureFixture) -> None:
    # (A name of its own: issuing "cloud-broker" again would overwrite server_cert's files.)
    with TlsEcho(ca.issue("expired-broker", server=True, days=-1)) as server:
        forwarder = start(forwarders, server.port, BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert)))
        assert closed_with_warnings(forwarder, caplog) == [
            f"bridge TLS to 127.0.0.1:{server.port}: connection failed: certificate verify failed: certificate "
            "has expired"]
    caplog.clear()
    device = ca.issue("jetson-test", days=-1)
    with TlsEcho(server_cert, client_ca=ca.cert) as server:
        forwarder = start(forwarders, server.port, BridgeSettings(
            host="127.0.0.1", ca_file=str(ca.cert), cert_file=str(device.cert), key_file=str(device.key)),
                          certificate_warning_days=30)
        assert closed_with_warnings(forwarder, caplog) == [
            f"bridge TLS to 127.0.0.1:{server.port}: connection broken: sslv3 alert certificate expired"]


# --- certificate files replaced while the forwarder runs -------------------------------------------------

@pytest.mark.integration
def test_files_copied_over_are_used_from_the_next_connection_and_a_half_copy_is_waited_out(
        ca: CertificateAuthority, server_cert: Certificate, forwarders: list[TlsForwarder], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "facecap.broker.tlsfiles")
    first, second, third = (ca.issue(name) for name in ("device-first", "device-second", "device-third"))
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    shutil.copyfile(first.cert, cert)
    shutil.copyfile(first.key, key)
    files = BridgeTlsFiles(BridgeSettings(host="127.0.0.1", ca_file=str(ca.cert), cert_file=str(cert),
                                          key_file=str(key)))

    def said(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "facecap.broker.tlsfiles" and r.levelno == level]

    with TlsEcho(server_cert, client_ca=ca.cert) as server:
        forwarder = TlsForwarder("127.0.0.1", server.port, files.context).start()
        forwarders.append(forwarder)

        def common_name_of_a_new_connection() -> str:
            with connect(forwarder) as local:
                local.sendall(b"ping")
                assert receive(local, 4) == b"ping"
            return str(dict(pair[0] for pair in server.peers[-1]["subject"])["commonName"])

        with connect(forwarder) as open_before:
            open_before.sendall(b"one")
            assert receive(open_before, 3) == b"one"
            shutil.copyfile(second.cert, cert)
            shutil.copyfile(second.key, key)
            assert common_name_of_a_new_connection() == "device-second"
            open_before.sendall(b"two")  # the connection made before goes on, with the certificate it had
            assert receive(open_before, 3) == b"two"
        assert dict(pair[0] for pair in server.peers[0]["subject"])["commonName"] == "device-first"
        loaded = said(logging.INFO)
        assert len(loaded) == 1
        assert loaded[0].startswith(f"the bridge's TLS files changed ({cert}, {key}): loaded again; connections "
                                    "to the cloud from now on use them (this device's certificate: "
                                    "CN=device-second, expires on ")

        shutil.copyfile(third.cert, cert)  # caught half copied: the new certificate beside the old key
        assert [common_name_of_a_new_connection() for _ in range(2)] == ["device-second", "device-second"]
        refused = said(logging.WARNING)
        assert len(refused) == 1  # once for this content, not at every connection
        assert refused[0].startswith(f"the bridge's TLS files changed but do not load (bridge.certFile: cannot load "
                                     f"{cert} with {key}: key values mismatch)")
        shutil.copyfile(third.key, key)
        assert common_name_of_a_new_connection() == "device-third"
        assert len(said(logging.INFO)) == 2
