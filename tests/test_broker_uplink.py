"""The bridge's cloud socket (broker/uplink.py): dead-link timeouts set, refused fails at once, a silent
peer is tried afresh until it answers."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from facecap.broker.uplink import connect_uplink, unacknowledged_for

pytestmark = pytest.mark.integration


def connect(port: int, timeout: float, attempt: float = 2.0) -> socket.socket:
    return asyncio.run(connect_uplink("127.0.0.1", port, time.monotonic() + timeout, dead_link_seconds=20,
                                      attempt_seconds=attempt))


@pytest.mark.skipif(not hasattr(socket, "TCP_KEEPIDLE"), reason="Linux socket options")
def test_the_cloud_socket_probes_an_idle_link_and_has_no_user_timeout() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = connect(server.getsockname()[1], 5)
        with sock:
            assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 10
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            # Linux counts a user timeout from the first retransmission of a loss episode, so it cut slow
            # lossy links that were still acknowledging; the forwarder watches for silence instead.
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT) == 0


@pytest.mark.skipif(not hasattr(socket, "TCP_INFO"), reason="Linux socket options")
def test_unacknowledged_for_says_how_long_waiting_data_has_had_no_ack() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        sock = connect(server.getsockname()[1], 5)
        peer, _ = server.accept()
        with sock, peer:
            assert unacknowledged_for(sock) == 0.0  # nothing sent: nothing waits
            sock.sendall(b"x" * 1000)
            time.sleep(0.3)  # loopback acknowledges at once, so nothing waits after it
            assert unacknowledged_for(sock) == 0.0
    with socket.socket() as unconnected:
        assert unacknowledged_for(unconnected) == 0.0


def test_a_refused_connection_fails_at_once() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        connect(port, 10)
    assert time.monotonic() - started < 1


def test_a_silent_peer_is_tried_afresh_and_found_soon_after_it_answers() -> None:
    """A full accept queue drops SYNs without a word, as a cut link does. Once it has room again, a fresh
    attempt gets through within an attempt's time, not after the kernel's next SYN retry (3 or 7 s)."""
    server = socket.create_server(("127.0.0.1", 0), backlog=0)
    port = server.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    try:
        time.sleep(0.3)
        with pytest.raises(TimeoutError):
            connect(port, 1.5, attempt=0.5)  # the queue is full: nothing answers
        loop_result: list[socket.socket] = []

        async def connect_while_freeing() -> None:
            task = asyncio.ensure_future(connect_uplink("127.0.0.1", port, time.monotonic() + 10,
                                                        attempt_seconds=0.5))
            await asyncio.sleep(3.3)  # past the kernel's SYN retry at 3 s: its next is at 7 s
            freed_at = time.monotonic()
            for filler in fillers:
                filler.close()
            server.setblocking(False)
            while True:  # drain the accept queue
                try:
                    server.accept()[0].close()
                except BlockingIOError:
                    break
            loop_result.append(await task)
            assert time.monotonic() - freed_at < 2.5

        asyncio.run(connect_while_freeing())
        loop_result[0].close()
    finally:
        for filler in fillers:
            filler.close()
        server.close()
