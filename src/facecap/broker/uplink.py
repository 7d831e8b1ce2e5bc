"""The bridge's TCP connection to the cloud: found again quickly after an uplink cut, and noticed dead when
the link goes away silently.

A cut uplink (a modem losing its carrier, a route withdrawn) sends no RST: without help a connection that
was open stays "established" while the kernel retransmits with a doubling timeout, and after a minute of
cut its next retransmission can be a minute away. So:

- the forwarder watches each connection's TCP state (`unacknowledged_for`): data waiting while the cloud
  has sent no ACK at all for `dead_link_seconds` ends the connection;
- the cloud socket sends TCP keepalive probes when idle, so a dead link is noticed without traffic too;

and a new connection is tried afresh every ATTEMPT_SECONDS while the cloud does not answer: the kernel
retries a lost SYN only after 1, 3, 7 and 15 s, so a link that comes back during one attempt would
otherwise wait up to 8 s for the next SYN. A refused connection (the cloud host answered) fails at once:
retrying it is Mosquitto's backoff, which leaves a broker that is down in peace.

Not TCP_USER_TIMEOUT, which this module set before: Linux measures it from the first retransmission of a
loss episode that has not fully recovered, so a slow link that loses a packet every few seconds (a shallow
modem queue under BBR) never ends its episode, and the timeout cut a link that was carrying 16 KB/s every
20 – 40 s (measured on a 128 kbit/s token bucket, 2026-11-27). A link that still acknowledges is alive.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
import time

# How long the cloud may leave the link silent (no ACK for data we sent, or no answer to keepalive probes)
# before the connection counts as dead (bridge.deadLinkSeconds).
DEAD_LINK_SECONDS = 20.0
ATTEMPT_SECONDS = 2.0
# Errors that mean nothing reached the cloud: worth another SYN soon rather than a backoff.
_NO_ROUTE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN, errno.ETIMEDOUT}
# struct tcp_info (linux/tcp.h, a stable ABI): tcpi_unacked is the 32-bit field at byte 24 (segments sent
# and not yet acknowledged), tcpi_last_ack_recv the one at byte 56 (milliseconds since the last ACK came).
_TCP_INFO: int | None = getattr(socket, "TCP_INFO", None)
_UNACKED_AT, _LAST_ACK_AT = 24, 56
_U32 = struct.Struct("=I")


def tune_uplink_socket(sock: socket.socket, dead_link_seconds: float) -> None:
    """TCP_NODELAY (a face must not wait for the previous one's ACK), and keepalive probes that give up on
    an idle link within about dead_link_seconds. Linux names; elsewhere only what the platform has is set."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    idle = max(1, int(dead_link_seconds / 2))
    interval = max(1, int(dead_link_seconds / 6))
    for name, value in (("TCP_KEEPIDLE", idle), ("TCP_KEEPINTVL", interval), ("TCP_KEEPCNT", 3)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)


def unacknowledged_for(sock: socket.socket) -> float | None:
    """Seconds since the cloud last acknowledged anything, while data of ours waits for an ACK; 0.0 when
    nothing waits. None where the kernel does not say (not Linux, or the socket is gone)."""
    if _TCP_INFO is None:
        return None
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, _TCP_INFO, _LAST_ACK_AT + _U32.size)
    except OSError:
        return None
    if len(info) < _LAST_ACK_AT + _U32.size:
        return None
    if _U32.unpack_from(info, _UNACKED_AT)[0] == 0:
        return 0.0
    return float(_U32.unpack_from(info, _LAST_ACK_AT)[0]) / 1000


async def connect_uplink(host: str, port: int, deadline: float, dead_link_seconds: float = DEAD_LINK_SECONDS,
                         attempt_seconds: float = ATTEMPT_SECONDS) -> socket.socket:
    """A connected, tuned TCP socket to host:port, trying again every attempt_seconds while the cloud does
    not answer, until `deadline` (time.monotonic()). Raises the last failure: OSError or TimeoutError."""
    loop = asyncio.get_running_loop()
    addresses = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    while True:
        started = time.monotonic()
        for family, kind, protocol, _, address in addresses:
            sock = socket.socket(family, kind, protocol)
            sock.setblocking(False)
            tune_uplink_socket(sock, dead_link_seconds)
            budget = min(attempt_seconds, deadline - time.monotonic())
            try:
                await asyncio.wait_for(loop.sock_connect(sock, address), max(0.01, budget))
                return sock
            except asyncio.TimeoutError as exc:
                sock.close()
                failure: Exception = TimeoutError(f"no answer from {host}:{port}")
                failure.__cause__ = exc
            except OSError as exc:
                sock.close()
                if exc.errno not in _NO_ROUTE:
                    raise  # refused, or anything else the cloud side answered: Mosquitto backs off
                failure = exc
        if time.monotonic() >= deadline:
            raise failure
        # An unreachable network fails at once: look again at the attempt pace, not in a busy loop.
        await asyncio.sleep(max(0.0, min(started + attempt_seconds, deadline) - time.monotonic()))
