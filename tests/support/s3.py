"""The test S3 server as an application sees it."""

from __future__ import annotations

from typing import Any

import pytest

from facecap.devkit.servers import S3Server


def use_s3_server(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The S3 server, reachable through the standard AWS variables only; its client."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    return s3_server.client()


def s3_with_bucket(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, bucket: str) -> Any:
    """The S3 server, reachable through the standard AWS variables only, with `bucket` made; its client."""
    client = use_s3_server(s3_server, monkeypatch)
    client.create_bucket(Bucket=bucket)
    return client
