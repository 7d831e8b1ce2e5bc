"""A stand-in for the container credentials endpoint: the HTTP protocol that ECS, EKS Pod Identity and
Greengrass's token exchange service speak, and that the AWS default credential chains (awscrt's and
boto3's) read when AWS_CONTAINER_CREDENTIALS_FULL_URI is set. It hands out whichever keys the test sets,
with an expiry, and records every key it handed out, so a test can rotate a role's keys the way AWS does."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from facecap.devkit.servers import LOOPBACK

PATH = "/v2/credentials/facecap-test"


class CredentialsEndpoint:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: dict[str, str] = {}
        self.served: list[str] = []  # the access key id of each answer, in order
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the protocol's only request
                body = endpoint._answer(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: object) -> None:
                pass

        self._server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.uri = f"http://{LOOPBACK}:{self._server.server_address[1]}{PATH}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> CredentialsEndpoint:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def serve(self, access_key: str, secret_key: str, expires_in: timedelta) -> None:
        """From now on, answer with these keys, expiring `expires_in` from now (as an AWS role's do)."""
        expiration = (datetime.now(timezone.utc) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
        with self._lock:
            # No session token: SeaweedFS takes a request that carries one for its own STS's and refuses
            # it. AWS always sends one; awscrt reads the answer without it, boto3 does not.
            self._current = {"AccessKeyId": access_key, "SecretAccessKey": secret_key, "Expiration": expiration}

    def _answer(self, path: str) -> bytes:
        with self._lock:
            if path != PATH or not self._current:
                return b""
            self.served.append(self._current["AccessKeyId"])
            return json.dumps(self._current).encode()
