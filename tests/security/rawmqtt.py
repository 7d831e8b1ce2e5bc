"""A minimal MQTT 5 publisher over TLS, for topics that awscrt refuses to send (control characters) but a
hostile device could: it speaks the protocol byte by byte, so the broker judges what it gets."""

from __future__ import annotations

import socket
import ssl
from pathlib import Path


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _string(text: bytes) -> bytes:
    return len(text).to_bytes(2, "big") + text


def _packet(kind: int, body: bytes) -> bytes:
    return bytes([kind]) + _varint(len(body)) + body


def _read_packet(sock: ssl.SSLSocket) -> tuple[int, bytes]:
    header = sock.recv(1)
    if not header:
        raise ConnectionError("the broker closed the connection")
    length, shift = 0, 0
    while True:
        byte = sock.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the broker closed the connection")
        body += chunk
    return header[0], body


def publish_raw(host: str, port: int, folder: Path, topic: bytes, payload: bytes) -> int | None:
    """Connect with the device's certificate, publish once at QoS 1 and return the PUBACK reason code,
    or None when the broker disconnected instead (a DISCONNECT packet or a closed connection)."""
    context = ssl.create_default_context(cafile=str(folder / "ca.crt"))
    context.load_cert_chain(folder / "client.crt", folder / "client.key")
    with socket.create_connection((host, port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="localhost") as sock:
        connect = _string(b"MQTT") + bytes([5, 0x02]) + (60).to_bytes(2, "big") + _varint(0) + _string(b"raw")
        sock.sendall(_packet(0x10, connect))
        kind, body = _read_packet(sock)
        assert kind == 0x20 and body[1] == 0, f"CONNACK refused: {body!r}"
        sock.sendall(_packet(0x32, _string(topic) + (1).to_bytes(2, "big") + _varint(0) + payload))
        try:
            kind, body = _read_packet(sock)
        except (ConnectionError, ssl.SSLError, OSError):
            return None
        if kind == 0xE0:
            return None
        assert kind == 0x40, f"expected PUBACK, got {kind:#x}"
        return body[2] if len(body) > 2 else 0
