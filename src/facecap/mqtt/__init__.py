"""The MQTT 5 client every facecap component uses, over awscrt (the client inside awsiotsdk).

One module a concern: settings.py (MqttSettings, the TLS context), options.py (the awscrt options and
their measured quirks), inflight.py (the bounded in-flight window), acks.py (manual-ack accounting),
dispatch.py (the thread that runs the message handler), messages.py (ReceivedMessage, StatusTopic) and
client.py (MqttClient, which wires them to awscrt).
"""

from .acks import AckLedger
from .client import ClientStats, MqttClient
from .dispatch import MessageHandler
from .inflight import InFlightWindow
from .messages import ReceivedMessage, StatusTopic
from .settings import MqttSettings, tls_context

__all__ = [
    "AckLedger",
    "ClientStats",
    "InFlightWindow",
    "MessageHandler",
    "MqttClient",
    "MqttSettings",
    "ReceivedMessage",
    "StatusTopic",
    "tls_context",
]
