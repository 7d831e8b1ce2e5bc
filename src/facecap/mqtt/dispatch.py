"""The dispatcher: the threads that run the message handler.

awscrt calls back on its event-loop threads, which must never block; a received message is only put in
an inbox there. With one thread (the default) the handler gets each message in arrival order. With
several, each thread takes the next message from the inbox and runs the handler on it, so messages are
handled concurrently and may finish out of order: the processor's workers are these threads, one hand-off
fewer per message than a dispatcher feeding a separate pool. With none, the handler runs on the
event-loop thread itself, for a handler that only starts work and never blocks (the processor with a store
that puts asynchronously).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable

from .messages import ReceivedMessage

log = logging.getLogger(__name__)

MessageHandler = Callable[[ReceivedMessage], None]


class Dispatcher:
    def __init__(self, name: str, handler: MessageHandler | None = None, threads: int = 1) -> None:
        if threads < 0:
            raise ValueError(f"a dispatcher runs the handler on 0 (inline) or more threads, not {threads}")
        self.name = name
        self.handler = handler
        self.threads = threads
        self._inbox: queue.SimpleQueue[ReceivedMessage | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []

    @property
    def running(self) -> bool:
        return bool(self._threads)

    @property
    def waiting(self) -> int:
        """Messages queued for the handler and not yet taken (approximate while threads take them)."""
        return self._inbox.qsize()

    def put(self, message: ReceivedMessage) -> None:
        """Queue a message for the handler; never blocks (safe on an event-loop thread). Inline, run the
        handler now."""
        if self.threads == 0:
            self._handle(message)
        else:
            self._inbox.put(message)

    def start(self) -> None:
        """Start the threads, once, and only when there is a handler to run."""
        if self.handler is None or self._threads:
            return
        for index in range(self.threads):
            name = self.name if self.threads == 1 else f"{self.name}-{index}"
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float) -> None:
        """Let the handler finish what is queued, then end the threads (waiting up to timeout in all)."""
        for _ in self._threads:
            self._inbox.put(None)  # after what is queued: each thread takes one and ends
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while (message := self._inbox.get()) is not None:
            self._handle(message)

    def _handle(self, message: ReceivedMessage) -> None:
        handler = self.handler
        if handler is None:
            return
        try:
            handler(message)
        except Exception:
            log.exception("message handler failed on %s; message left unacknowledged", message.topic)
