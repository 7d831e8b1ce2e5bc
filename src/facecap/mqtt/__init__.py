"""The MQTT 5 client every facecap component uses, over awscrt (the client inside awsiotsdk).

One module a concern: settings.py (MqttSettings, the TLS context), options.py (the awscrt options and
their measured quirks), inflight.py (the bounded in-flight window), acks.py (manual-ack accounting),
dispatch.py (the thread that runs the message handler), messages.py (ReceivedMessage, StatusTopic) and
client.py (MqttClient, which wires them to awscrt), local.py (the EdgeBroker's Unix socket and the
component's local identity).

A client starts once and stops once: stop() closes the in-flight window, so a publisher still waiting
for a slot, or publishing later, gets None (the "window full" answer) instead of waiting for ever, and a
second stop() only reports whether everything completed. The message handler is given to the
constructor or set before start(); components that receive an injected client set it that way.

The names below load on first use (PEP 562): a process that needs only the settings or the EdgeBroker's
paths (the EdgeBroker itself, `facecap validate-config`) does not load awscrt's MQTT client, ~9 MB of
resident memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazyexports import lazy_exports

if TYPE_CHECKING:
    from .acks import AckLedger
    from .client import ClientStats, MqttClient
    from .dispatch import MessageHandler
    from .inflight import InFlightWindow
    from .local import check_local_paths, local_settings, resolve_local
    from .messages import ReceivedMessage, StatusTopic
    from .settings import MqttSettings, tls_context

_HOMES = {
    "AckLedger": "acks",
    "ClientStats": "client",
    "MqttClient": "client",
    "MessageHandler": "dispatch",
    "InFlightWindow": "inflight",
    "check_local_paths": "local",
    "local_settings": "local",
    "resolve_local": "local",
    "ReceivedMessage": "messages",
    "StatusTopic": "messages",
    "MqttSettings": "settings",
    "tls_context": "settings",
}
__all__ = [
    "AckLedger",
    "ClientStats",
    "InFlightWindow",
    "MessageHandler",
    "MqttClient",
    "MqttSettings",
    "ReceivedMessage",
    "StatusTopic",
    "check_local_paths",
    "local_settings",
    "resolve_local",
    "tls_context",
]


__getattr__ = lazy_exports(__name__, _HOMES, globals())
