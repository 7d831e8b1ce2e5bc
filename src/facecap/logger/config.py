"""The FaceLogger configuration."""

from __future__ import annotations

from pydantic import Field

from ..config import ComponentConfig, LoggingSettings
from ..contract import DEFAULT_MAX_PAYLOAD_BYTES
from ..mqtt import MqttSettings


class LoggerConfig(ComponentConfig):
    """Configuration of `facecap logger`, the FaceLogger component."""

    live_keys = ("logging", "summaryIntervalSeconds")

    mqtt: MqttSettings = Field(default_factory=MqttSettings,
                               description="The local broker (the EdgeBroker listener).")
    summary_interval_seconds: float = Field(60.0, ge=1, description="Seconds between summary lines (and between "
                                                                    "the stats `facecap fleet` reads).")
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1,
                                   description="A larger payload is logged as breaking the contract.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
