"""The dispatcher: the one thread that runs the message handler.

awscrt calls back on its event-loop threads, which must never block; a received message is only put in
an inbox there, and this thread hands each to the handler in arrival order.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from .messages import ReceivedMessage

log = logging.getLogger(__name__)

MessageHandler = Callable[[ReceivedMessage], None]


class Dispatcher:
    def __init__(self, name: str, handler: MessageHandler | None = None) -> None:
        self.name = name
        self.handler = handler
        self._inbox: queue.SimpleQueue[ReceivedMessage | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def put(self, message: ReceivedMessage) -> None:
        """Queue a message for the handler; never blocks (safe on an event-loop thread)."""
        self._inbox.put(message)

    def start(self) -> None:
        """Start the thread, once, and only when there is a handler to run."""
        if self.handler is not None and self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()

    def stop(self, timeout: float) -> None:
        """Let the handler finish what is queued, then end the thread (waiting up to timeout)."""
        if self._thread is not None:
            self._inbox.put(None)
            self._thread.join(timeout)

    def _run(self) -> None:
        handler = self.handler
        assert handler is not None
        while (message := self._inbox.get()) is not None:
            try:
                handler(message)
            except Exception:
                log.exception("message handler failed on %s; message left unacknowledged", message.topic)
