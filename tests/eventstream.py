"""AWS event-stream binary framing, written from its public specification, for the Greengrass IPC stand-in.

A message on the wire (all integers big-endian):

    total length (u32) | headers length (u32) | prelude CRC32 (u32) | headers | payload | message CRC32 (u32)

The prelude CRC covers the first 8 bytes; the message CRC covers everything before it, prelude CRC included.
A header is a name (u8 length + UTF-8), a type byte and a value whose layout the type decides: booleans have
no value bytes, byte/short/int/long are 1/2/4/8-byte signed integers, byte arrays and strings have a u16 length
prefix, a timestamp is an i64 of milliseconds since the epoch and a UUID is 16 raw bytes.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import IntEnum

PRELUDE_LENGTH = 12
CRC_LENGTH = 4
MAX_MESSAGE_LENGTH = 16 * 1024 * 1024  # aws-c-event-stream refuses larger messages
MAX_HEADERS_LENGTH = 128 * 1024

HeaderValue = bool | int | bytes | str | uuid.UUID


class FramingError(ValueError):
    """Bytes that are not a valid event-stream message: a peer must drop the connection."""


class HeaderType(IntEnum):
    BOOL_TRUE = 0
    BOOL_FALSE = 1
    BYTE = 2
    INT16 = 3
    INT32 = 4
    INT64 = 5
    BYTE_BUF = 6
    STRING = 7
    TIMESTAMP = 8
    UUID = 9


_INTEGERS = {HeaderType.BYTE: ">b", HeaderType.INT16: ">h", HeaderType.INT32: ">i", HeaderType.INT64: ">q",
             HeaderType.TIMESTAMP: ">q"}


@dataclass(frozen=True)
class Header:
    """One typed header. The type is explicit because an int alone does not say how many bytes it takes."""

    name: str
    type: HeaderType
    value: HeaderValue

    @classmethod
    def string(cls, name: str, value: str) -> Header:
        return cls(name, HeaderType.STRING, value)

    @classmethod
    def int32(cls, name: str, value: int) -> Header:
        return cls(name, HeaderType.INT32, value)

    @classmethod
    def boolean(cls, name: str, value: bool) -> Header:
        return cls(name, HeaderType.BOOL_TRUE if value else HeaderType.BOOL_FALSE, value)


@dataclass(frozen=True)
class Message:
    headers: tuple[Header, ...]
    payload: bytes

    def header(self, name: str) -> HeaderValue | None:
        """The value of the header with this name (names compare case-insensitively, as the SDK does)."""
        lowered = name.lower()
        return next((h.value for h in self.headers if h.name.lower() == lowered), None)


def _encode_value(header: Header) -> bytes:
    kind, value = header.type, header.value
    if kind in (HeaderType.BOOL_TRUE, HeaderType.BOOL_FALSE):
        return b""
    if kind in _INTEGERS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise FramingError(f"header {header.name!r}: {kind.name} needs an int, not {value!r}")
        return struct.pack(_INTEGERS[kind], value)
    if kind in (HeaderType.BYTE_BUF, HeaderType.STRING):
        data = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(data, bytes) or len(data) > 0xFFFF:
            raise FramingError(f"header {header.name!r}: {kind.name} value too long or of the wrong type")
        return struct.pack(">H", len(data)) + data
    if kind == HeaderType.UUID and isinstance(value, uuid.UUID):
        return value.bytes
    raise FramingError(f"header {header.name!r}: cannot encode {kind.name} from {value!r}")


def encode_headers(headers: Sequence[Header]) -> bytes:
    out = bytearray()
    for header in headers:
        name = header.name.encode("utf-8")
        if not 1 <= len(name) <= 127:
            raise FramingError(f"header name {header.name!r} must be 1 to 127 bytes")
        out += struct.pack(">B", len(name)) + name + struct.pack(">B", header.type) + _encode_value(header)
    return bytes(out)


def encode_message(headers: Sequence[Header], payload: bytes = b"") -> bytes:
    encoded_headers = encode_headers(headers)
    total = PRELUDE_LENGTH + len(encoded_headers) + len(payload) + CRC_LENGTH
    lengths = struct.pack(">II", total, len(encoded_headers))
    prelude = lengths + struct.pack(">I", zlib.crc32(lengths))
    body = prelude + encoded_headers + payload
    return body + struct.pack(">I", zlib.crc32(body))


def _decode_value(kind: HeaderType, data: bytes, offset: int, name: str) -> tuple[HeaderValue, int]:
    if kind == HeaderType.BOOL_TRUE:
        return True, offset
    if kind == HeaderType.BOOL_FALSE:
        return False, offset
    if kind in _INTEGERS:
        fmt = _INTEGERS[kind]
        end = offset + struct.calcsize(fmt)
        _need(data, end, name)
        return int(struct.unpack_from(fmt, data, offset)[0]), end
    if kind in (HeaderType.BYTE_BUF, HeaderType.STRING):
        _need(data, offset + 2, name)
        (length,) = struct.unpack_from(">H", data, offset)
        end = offset + 2 + length
        _need(data, end, name)
        raw = data[offset + 2:end]
        try:
            return (raw.decode("utf-8") if kind == HeaderType.STRING else raw), end
        except UnicodeDecodeError as error:
            raise FramingError(f"header {name!r}: string value is not UTF-8") from error
    _need(data, offset + 16, name)
    return uuid.UUID(bytes=data[offset:offset + 16]), offset + 16


def _need(data: bytes, end: int, name: str) -> None:
    if end > len(data):
        raise FramingError(f"header {name!r} runs past the end of the headers")


def decode_headers(data: bytes) -> tuple[Header, ...]:
    headers: list[Header] = []
    offset = 0
    while offset < len(data):
        name_length = data[offset]
        _need(data, offset + 1 + name_length + 1, "?")
        name = data[offset + 1:offset + 1 + name_length].decode("utf-8", errors="replace")
        type_byte = data[offset + 1 + name_length]
        try:
            kind = HeaderType(type_byte)
        except ValueError as error:
            raise FramingError(f"header {name!r}: unknown header type {type_byte}") from error
        value, offset = _decode_value(kind, data, offset + 2 + name_length, name)
        headers.append(Header(name, kind, value))
    return tuple(headers)


def decode_message(frame: bytes) -> Message:
    """One complete message; checks both CRCs and the lengths."""
    if len(frame) < PRELUDE_LENGTH + CRC_LENGTH:
        raise FramingError(f"a message has at least 16 bytes, got {len(frame)}")
    total, headers_length, prelude_crc = struct.unpack_from(">III", frame)
    if zlib.crc32(frame[:8]) != prelude_crc:
        raise FramingError("prelude CRC mismatch")
    if total != len(frame):
        raise FramingError(f"total length {total} but the frame has {len(frame)} bytes")
    if headers_length > total - PRELUDE_LENGTH - CRC_LENGTH or headers_length > MAX_HEADERS_LENGTH:
        raise FramingError(f"headers length {headers_length} does not fit the message")
    (message_crc,) = struct.unpack_from(">I", frame, total - CRC_LENGTH)
    if zlib.crc32(frame[:total - CRC_LENGTH]) != message_crc:
        raise FramingError("message CRC mismatch")
    headers = decode_headers(frame[PRELUDE_LENGTH:PRELUDE_LENGTH + headers_length])
    return Message(headers, frame[PRELUDE_LENGTH + headers_length:total - CRC_LENGTH])


class FrameReader:
    """Splits a byte stream into messages: feed it what the socket gives, iterate over what is complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterator[Message]:
        self._buffer += data
        while len(self._buffer) >= PRELUDE_LENGTH:
            total, _, prelude_crc = struct.unpack_from(">III", self._buffer)
            if zlib.crc32(bytes(self._buffer[:8])) != prelude_crc:
                raise FramingError("prelude CRC mismatch")
            if total < PRELUDE_LENGTH + CRC_LENGTH or total > MAX_MESSAGE_LENGTH:
                raise FramingError(f"message length {total} out of range")
            if len(self._buffer) < total:
                return
            frame = bytes(self._buffer[:total])
            del self._buffer[:total]
            yield decode_message(frame)
