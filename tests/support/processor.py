"""A processor running in the test process, with the store its configuration names (as the command opens it)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from facecap.processor.config import ProcessorConfig
from facecap.processor.runner import ProcessorRunner
from facecap.storage import open_store


@contextmanager
def running(config: ProcessorConfig) -> Iterator[ProcessorRunner]:
    store = open_store(config.store, server_side_encryption=config.server_side_encryption,
                       max_connections=config.workers + 2)
    processor = ProcessorRunner(config, store)
    processor.start()
    try:
        assert processor.wait_ready(15), "processor did not subscribe"
        yield processor
    finally:
        processor.stop()
