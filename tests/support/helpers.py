"""Small helpers the tests share: sample crops and a collecting subscriber."""

from __future__ import annotations

import atexit
import contextlib
import functools
import http.server
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from facecap.contract import FaceMetadata, OutgoingFace, build_message
from facecap.devkit.servers import MosquittoServer
from facecap.mqtt import MqttClient, MqttSettings, ReceivedMessage


def fake_jpeg(size: int = 30_000, seed: int | None = None) -> bytes:
    """Bytes that start like a JPEG (the contract sniffs magic bytes), unique per call."""
    body = os.urandom(max(0, size - 4)) if seed is None else (seed.to_bytes(8, "big") * (size // 8 + 1))[: size - 4]
    return b"\xff\xd8\xff\xe0" + body


def sample_face(device: str = "jetson-1", camera: str = "cam0", size: int = 30_000, prefix: str = "faces",
                frame: int = 1) -> OutgoingFace:
    meta = FaceMetadata(device_id=device, camera_id=camera, captured_at=datetime.now(timezone.utc),
                        bbox=(10, 20, 64, 80), score=0.93, frame=frame, track_id="t1", detector="yunet")
    return build_message(fake_jpeg(size), meta, topic_prefix=prefix)


def publish_all(client: MqttClient, faces: list[OutgoingFace], timeout: float = 30.0) -> None:
    """Publish every face at once (many in flight) and wait until the broker has acknowledged each."""
    futures = [client.publish(f.topic, f.payload, content_type=f.content_type, user_properties=f.user_properties)
               for f in faces]
    for future in futures:
        assert future is not None
        future.result(timeout=timeout)


def settings_for(server: MosquittoServer, **overrides: object) -> MqttSettings:
    values: dict[str, object] = {"host": server.host, "port": server.port, "connect_timeout_seconds": 5,
                                 "min_reconnect_delay_seconds": 0.2, "max_reconnect_delay_seconds": 1}
    values.update(overrides)
    if "password" in values:  # configurations take secrets only as files
        values["password_file"] = password_file(str(values.pop("password")))
    return MqttSettings(**values)


def password_file(password: str) -> str:
    """A private temporary file holding `password`, as a component would be given it; removed when the
    test process exits (a client may read it again at any reconnect until then)."""
    fd, path = tempfile.mkstemp(prefix="facecap-test-pw-")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(password + "\n")
    atexit.register(Path(path).unlink, missing_ok=True)
    return path


class Collector:
    """Subscriber callback that keeps every message and lets a test wait for a count."""

    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self._cond = threading.Condition()

    def __call__(self, message: ReceivedMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def wait_for(self, count: int, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True


def subscriber(server: MosquittoServer, topic_filter: str, collector: Collector, **kwargs: object) -> MqttClient:
    """A started client subscribed to topic_filter; `with subscriber(...):` stops it however the block ends."""
    client = MqttClient(settings_for(server), f"sub-{time.monotonic_ns()}", on_message=collector, **kwargs)  # type: ignore[arg-type]
    client.start()
    client.subscribe(topic_filter)
    return client


@contextlib.contextmanager
def model_mirror(model: Path, folder: Path) -> Iterator[str]:
    """A loopback HTTP server (base URL) with the real model as yunet.onnx and a wrong file as other.onnx,
    standing in for the model's pinned URL, which needs the internet."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model, folder / "yunet.onnx")
    (folder / "other.onnx").write_bytes(b"a different file")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
