"""Greengrass IPC for one facecap component, through awsiotsdk's clientv2; nothing at all outside Greengrass.

Inside Greengrass the nucleus gives every component process the IPC socket path
(AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT) and its token (SVCUID). When both are set, `start()`
connects and, as configured,

* answers every configuration validation the nucleus asks for during a deployment, ACCEPTED or REJECTED
  with a message naming each bad key, so a bad merge fails (and rolls back) the deployment,
* hands each new configuration to a callback after a deployment changed it,

and the component reports its state (`report_running`, `report_errored`) and may publish to AWS IoT Core.
Without those variables (Docker, the demo, the tests) every method does nothing, so the same code runs
everywhere.

awsiotsdk is imported only when Greengrass is there: it is installed on devices only (without its pinned
awscrt, see docs/greengrass.md). Its stream callbacks run on one worker thread of ours, in order, never on
awscrt's event loop: the validator and the configuration callback may block briefly, and they run on that
thread, not the component's.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import GreengrassError

logger = logging.getLogger(__name__)

SOCKET_ENV = "AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT"
TOKEN_ENV = "SVCUID"  # noqa: S105 - the name of the variable, not a token
# Keys the nucleus keeps in every component's configuration for itself: the IPC authorization policies.
NUCLEUS_KEYS = ("accessControl",)

Validator = Callable[[dict[str, Any]], list[str]]
"""Returns one problem per bad key ("detection.scoreThreshold: must be <= 1"); empty when valid."""
ConfigurationCallback = Callable[[dict[str, Any]], None]


def in_greengrass(env: Mapping[str, str] | None = None) -> bool:
    """True when the nucleus started this process (it sets both IPC variables)."""
    env = os.environ if env is None else env
    return bool(env.get(SOCKET_ENV)) and bool(env.get(TOKEN_ENV))


class GreengrassIpc:
    """One component's IPC connection; a no-op outside Greengrass (`enabled` is then False)."""

    def __init__(
        self,
        *,
        validator: Validator | None = None,
        on_configuration: ConfigurationCallback | None = None,
        ignore_keys: Collection[str] = NUCLEUS_KEYS,
        env: Mapping[str, str] | None = None,
        connect_timeout: float = 10.0,
    ) -> None:
        self._env = dict(os.environ if env is None else env)
        self.enabled = in_greengrass(self._env)
        self._validator = validator
        self._on_configuration = on_configuration
        self._ignore_keys = frozenset(ignore_keys)
        self._connect_timeout = connect_timeout
        self._client: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._delivered: dict[str, Any] | None = None
        self._closing = False
        self._disconnected = threading.Event()

    def __enter__(self) -> GreengrassIpc:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        """Connect and subscribe; raises GreengrassError when the nucleus is there but refuses us."""
        if not self.enabled or self._client is not None:
            return
        self._client = self._connect()
        try:
            if self._validator is not None:
                self._client.subscribe_to_validate_configuration_updates(
                    on_stream_event=self._on_validate_event, on_stream_error=self._on_stream_error,
                    on_stream_closed=lambda: self._on_stream_closed("configuration validation"))
            if self._on_configuration is not None:
                self._delivered = self.configuration()
                self._client.subscribe_to_configuration_update(
                    key_path=[], on_stream_event=self._on_update_event, on_stream_error=self._on_stream_error,
                    on_stream_closed=lambda: self._on_stream_closed("configuration update"))
        except Exception as error:
            self.close()
            raise GreengrassError(f"Greengrass IPC subscription failed: {_describe(error)}") from error
        logger.info("Greengrass IPC connected (validation %s, live configuration %s)",
                    "on" if self._validator else "off", "on" if self._on_configuration else "off")

    def _connect(self) -> Any:
        try:
            from awsiot.eventstreamrpc import LifecycleHandler
            from awsiot.greengrasscoreipc import connect
            from awsiot.greengrasscoreipc.clientv2 import GreengrassCoreIPCClientV2
        except ImportError as error:
            raise GreengrassError("Greengrass IPC needs awsiotsdk, which is not installed: "
                                  "pip install --no-deps awsiotsdk==1.31.0") from error
        socket_path = self._env[SOCKET_ENV]
        self._closing = False
        self._disconnected.clear()
        on_disconnect = self._on_disconnect

        class Lifecycle(LifecycleHandler):  # type: ignore[misc]
            def on_disconnect(self, reason: Exception | None) -> None:
                on_disconnect(reason)

        try:
            connection = connect(ipc_socket=socket_path, authtoken=self._env[TOKEN_ENV],
                                 lifecycle_handler=Lifecycle(), timeout=self._connect_timeout)
        except Exception as error:
            raise GreengrassError(f"cannot connect to Greengrass IPC at {socket_path}: {_describe(error)}") from error
        # One worker: events are handled in order, and off awscrt's event loop.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="greengrass-ipc")
        return GreengrassCoreIPCClientV2(client=connection, executor=self._executor)

    def close(self, timeout: float = 2.0) -> None:
        """Close the connection and wait (up to `timeout`) until it is down, then stop our worker thread."""
        client, self._client = self._client, None
        if client is None:
            return
        self._closing = True
        try:
            # The connection first, the worker after: closing the connection closes each subscription, and
            # the SDK hands its on_stream_closed to our worker. With the worker gone already, awsiotsdk
            # 1.31.0 logs a traceback ("cannot schedule new futures after shutdown") at every stop.
            client.client.close()
            if not self._disconnected.wait(timeout):
                logger.warning("Greengrass IPC did not close within %.0f s", timeout)
            client.close(executor_wait=False)
        except Exception as error:  # noqa: BLE001 - closing must not hide why we close
            logger.debug("closing Greengrass IPC: %s", _describe(error))

    def _on_disconnect(self, reason: Exception | None) -> None:
        # The last callback of a connection (awscrt's event loop). Not ours to close: the nucleus went away,
        # and it restarts its components when it comes back.
        if reason is not None and not self._closing:
            logger.warning("Greengrass IPC disconnected: %s", _describe(reason))
        self._disconnected.set()

    def _on_stream_closed(self, subscription: str) -> None:
        if not self._closing:
            logger.warning("%s subscription closed", subscription)

    # the component's configuration
    def configuration(self) -> dict[str, Any]:
        """The component's current configuration (nucleus keys removed); {} outside Greengrass."""
        if self._client is None:
            return {}
        response = self._client.get_configuration(key_path=[])
        return self._strip(response.value or {})

    def _strip(self, configuration: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in configuration.items() if k not in self._ignore_keys}

    def _on_validate_event(self, event: Any) -> None:
        from awsiot.greengrasscoreipc.model import ConfigurationValidityReport, ConfigurationValidityStatus

        proposed = event.validate_configuration_update_event
        if proposed is None or self._validator is None or self._client is None:
            return
        try:
            problems = self._validator(self._strip(proposed.configuration or {}))
        except Exception as error:  # the nucleus must get an answer, not a timeout
            logger.exception("the configuration validator failed")
            problems = [f"the validator failed: {_describe(error)}"]
        status = ConfigurationValidityStatus.REJECTED if problems else ConfigurationValidityStatus.ACCEPTED
        message = "; ".join(problems) if problems else "configuration is valid"
        log = logger.warning if problems else logger.info
        log("deployment %s: configuration %s (%s)", proposed.deployment_id, status, message)
        report = ConfigurationValidityReport(status=status, deployment_id=proposed.deployment_id, message=message)
        try:
            self._client.send_configuration_validity_report(configuration_validity_report=report)
        except Exception as error:  # noqa: BLE001 - a late report (the nucleus gave up) is only worth a log line
            logger.error("could not report configuration validity: %s", _describe(error))

    def _on_update_event(self, event: Any) -> None:
        # One event per changed key: fetch the whole configuration and deliver it once per actual change.
        if self._on_configuration is None or self._client is None:
            return
        try:
            configuration = self.configuration()
        except Exception as error:  # noqa: BLE001 - keep the subscription alive; the next event retries
            logger.error("could not read the updated configuration: %s", _describe(error))
            return
        if configuration == self._delivered:
            return
        self._delivered = configuration
        try:
            self._on_configuration(configuration)
        except Exception:
            logger.exception("applying the updated configuration failed")

    @staticmethod
    def _on_stream_error(error: Exception) -> bool:
        logger.error("Greengrass IPC stream error: %s", _describe(error))
        return False  # keep the subscription

    # state and messages
    def report_running(self) -> None:
        """Tell the nucleus the component is ready (it is RUNNING only from then on when it has a Startup step)."""
        self._update_state("RUNNING")

    def report_errored(self) -> None:
        """Tell the nucleus the component hit a fatal fault; it restarts it, and after 3 errors marks it BROKEN."""
        self._update_state("ERRORED")

    def _update_state(self, state: str) -> None:
        if self._client is None:
            return
        try:
            self._client.update_state(state=state)
        except Exception as error:
            raise GreengrassError(f"UpdateState {state} failed: {_describe(error)}") from error

    def publish_to_iot_core(self, topic: str, payload: bytes, *, qos: int = 1) -> bool:
        """Publish to AWS IoT Core through the nucleus; False outside Greengrass. The recipe's accessControl
        must allow aws.greengrass#PublishToIoTCore on the topic, or this raises GreengrassError."""
        if self._client is None:
            return False
        try:
            self._client.publish_to_iot_core(topic_name=topic, qos=str(qos), payload=payload)
        except Exception as error:
            raise GreengrassError(f"PublishToIoTCore {topic} failed: {_describe(error)}") from error
        return True


def _describe(error: BaseException) -> str:
    # awsiotsdk's modelled errors keep their text in `message`, not in args.
    message = getattr(error, "message", None) or str(error) or ""
    return f"{type(error).__name__}: {message}" if message else type(error).__name__
