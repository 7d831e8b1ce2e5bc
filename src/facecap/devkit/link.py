"""A loopback TCP link that can be cut, as a lost uplink would be: the demo pipeline routes the EdgeBroker's
bridge through it when asked, and the outage tests cut and restore it. Development kit only."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from .servers import LOOPBACK, free_port


class TcpProxy:
    """Forwards a loopback port to another, and can cut the link: `cut()` drops every connection and
    refuses new ones (as a lost uplink does), `restore()` lets connections through again. With
    `upstream_bytes_per_second`, what goes to the target is paced to that rate (a slow uplink); the answers
    pass at once."""

    def __init__(self, target_port: int, target_host: str = LOOPBACK,
                 upstream_bytes_per_second: float | None = None) -> None:
        self.target = (target_host, target_port)
        self.upstream_bytes_per_second = upstream_bytes_per_second
        self.port = free_port()
        self._open = threading.Event()
        self._open.set()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._closed = False
        self._server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind((LOOPBACK, self.port))
        self._server.listen(64)
        self._thread = threading.Thread(target=self._accept, name=f"proxy-{self.port}", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()  # the link is down: the connection attempt fails at once
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            # The timeout was for the connect only: left on, an idle link (a quiet bridge between keep-alives)
            # was cut after 5 s and the tests behind it ran against a flapping bridge.
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink, rate in ((client, upstream, self.upstream_bytes_per_second), (upstream, client, None)):
                threading.Thread(target=self._pump, args=(source, sink, rate), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate: float | None) -> None:
        # Paced, the link carries small steps, as a slow one does, not a burst of 64 KB and then a long pause.
        size = 4096 if rate else 65536
        try:
            while data := source.recv(size):
                sink.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            self._close_pair(source, sink)

    def _close_pair(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with self._lock:
                self._sockets.discard(sock)
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets = list(self._sockets)
        self._close_pair(*sockets)

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._server.close()
