"""The IPC operations each component uses that the nucleus authorizes, from which the recipes' accessControl is
generated (packaging), so a recipe allows exactly what the code does.

The configuration operations (GetConfiguration, SubscribeToConfigurationUpdate,
SubscribeToValidateConfigurationUpdates, SendConfigurationValidityReport) and UpdateState act on the calling
component only and need no policy; everything here does.
"""

from __future__ import annotations

from dataclasses import dataclass

MQTT_PROXY = "aws.greengrass.ipc.mqttproxy"
PUBLISH_TO_IOT_CORE = "aws.greengrass#PublishToIoTCore"
# Every IPC operation facecap calls, and the first nucleus that serves them all: the configuration, lifecycle
# and MQTT proxy operations are in the IPC service model the nucleus shipped with from 2.0.0 on.
OPERATIONS_USED = ("GetConfiguration", "SubscribeToConfigurationUpdate", "SubscribeToValidateConfigurationUpdates",
                   "SendConfigurationValidityReport", "UpdateState", "PublishToIoTCore")
MINIMUM_NUCLEUS = "2.0.0"


@dataclass(frozen=True)
class Allowed:
    service: str
    operation: str
    resource: str
    why: str


# By `facecap <command>`. `*` rather than the thing name: `{iot:thingName}` in a policy needs the nucleus's
# interpolateComponentConfiguration; the core device's AWS IoT policy limits the topics to its own anyway.
AUTHORIZED: dict[str, tuple[Allowed, ...]] = {
    "detector": (Allowed(MQTT_PROXY, PUBLISH_TO_IOT_CORE, "facecap/*/detector/stats",
                         "the periodic stats to AWS IoT Core when iotCoreStats is true"),),
    "logger": (),
    "broker": (),
}
