"""The FaceLogger configuration."""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from ..config import ConfigModel, LoggingSettings
from ..contract import DEFAULT_MAX_PAYLOAD_BYTES, DEFAULT_TOPIC_PREFIX
from ..mqtt import MqttSettings

_TOPIC_LEVELS = re.compile(r"^[^#+/\x00-\x1f\x7f]+(/[^#+/\x00-\x1f\x7f]+)*$")


class LoggerConfig(ConfigModel):
    """Configuration of `facecap logger`, the FaceLogger component."""

    device_id: str = Field("", description="Device id; empty: the Greengrass thing name, else the hostname.")
    mqtt: MqttSettings = Field(default_factory=MqttSettings,
                               description="The local broker (the EdgeBroker listener).")
    topic_prefix: str = Field(DEFAULT_TOPIC_PREFIX, description="Faces are read from <topicPrefix>/#.")
    summary_interval_seconds: float = Field(60.0, ge=1, description="Seconds between summary lines.")
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1,
                                   description="A larger payload is logged as breaking the contract.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _TOPIC_LEVELS.fullmatch(value):
            raise ValueError("must be one or more topic levels without wildcards or empty levels, e.g. faces")
        return value
