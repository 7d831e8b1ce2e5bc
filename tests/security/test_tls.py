"""The device listener speaks TLS 1.2 with ECDHE and AEAD suites only (or TLS 1.3): a client offering
nothing but a CBC/SHA-1 suite, or RSA key exchange, gets no session."""

from __future__ import annotations

import socket
import ssl

import pytest

from facecap.devkit.servers import LOOPBACK

from ..support.cloudbroker import CloudBroker

pytestmark = pytest.mark.integration


def handshake(cloud: CloudBroker, ciphers: str, version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2) -> str:
    """The suite the broker agreed to, with device-a's certificate; ssl.SSLError if it refused."""
    folder = cloud.device_files("device-a")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(folder / "ca.crt")
    context.load_cert_chain(folder / "client.crt", folder / "client.key")
    context.minimum_version = context.maximum_version = version
    if version == ssl.TLSVersion.TLSv1_2:
        # Level 0, so our side really offers the old suites and only the broker can say no.
        context.set_ciphers(f"{ciphers}:@SECLEVEL=0")
    with socket.create_connection((LOOPBACK, cloud.device_port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as tls:
        suite = tls.cipher()
        assert suite is not None
        return suite[0]


@pytest.mark.parametrize("weak", ["ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
                                  "AES128-GCM-SHA256", "AES128-SHA"])
def test_weak_suites_are_refused(cloud: CloudBroker, weak: str) -> None:
    with pytest.raises(ssl.SSLError):
        handshake(cloud, weak)


@pytest.mark.parametrize("strong", ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305"])
def test_ecdhe_aead_suites_and_tls13_are_accepted(cloud: CloudBroker, strong: str) -> None:
    assert handshake(cloud, strong) == strong
    assert handshake(cloud, "", ssl.TLSVersion.TLSv1_3).startswith("TLS_")

