"""Configuration of `facecap processor` (environment variables in Docker, or --config)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ..config import ConfigModel, LoggingSettings, Seconds, SecondsOrOff, TopicConfig
from ..contract import DEFAULT_MAX_PAYLOAD_BYTES, ID_PATTERN, RESERVED_ID_PREFIX, check_topic_prefix, status_topic
from ..mqtt import MqttSettings
from ..storage import parse_store_url
from .guard import DEFAULT_BURST_FACES

DEFAULT_CLIENT_ID = "facecap-processor"
_SHARE_GROUP = re.compile(r"^[A-Za-z0-9._-]{0,64}$")
_LEAST_SHARE_GROUP = 16


class RetrySettings(ConfigModel):
    initial_delay_seconds: Seconds = Field(0.5, description="First delay before retrying a failed store.")
    max_delay_seconds: Seconds = Field(30.0, description="Ceiling of the exponential backoff.")

    ordered_fields = (("initial_delay_seconds", "max_delay_seconds"),)


class ProcessorConfig(TopicConfig):
    mqtt: MqttSettings = Field(
        default_factory=MqttSettings,
        description=f"Cloud broker. clientId empty means {DEFAULT_CLIENT_ID!r}; give each replica its own, "
                    "starting with 'facecap' (reserved: no device can take it).",
    )
    secret_keys = ("shareGroup",)

    share_group: str = Field(
        "", description="Empty: a plain subscription. A name: $share/<name>/... so processors split the load. "
                        "It must be a secret of 16 or more characters (e.g. `openssl rand -hex 16`): the cloud "
                        "broker's ACL cannot stop a device from joining the group, and a face the broker "
                        "hands to such a member is dropped.")
    store: str = Field("file:///var/lib/facecap/faces", description="s3://bucket/prefix or file:///path.")
    quarantine_prefix: str = Field("quarantine", description="Where rejected messages go, inside the store.")
    workers: int = Field(16, ge=1, le=256, description="Faces stored in parallel.")
    max_payload_bytes: int = Field(DEFAULT_MAX_PAYLOAD_BYTES, ge=1, description="Larger payloads are quarantined.")
    max_faces_per_second_per_device: float = Field(
        50.0, ge=0, description="Each device's ceiling (with a burst of rateBurstFaces); faces above it are "
                                "quarantined with reason rate. 0 turns it off.")
    rate_burst_faces: int = Field(
        DEFAULT_BURST_FACES, ge=1,
        description="Faces a device may send at once above its ceiling. Keep it above the devices' "
                    "outbox.maxUnconfirmed (256): after an uplink outage or a processor restart that many "
                    "arrive at once from an honest device.")
    retry: RetrySettings = Field(default_factory=RetrySettings,
                                 description="Backoff of failed stores (the message stays unacknowledged).")
    drain_timeout_seconds: SecondsOrOff = Field(
        25.0, description="On SIGTERM, how long to finish in-flight faces (keep below Docker's stop timeout).")
    heartbeat_file: str = Field("/tmp/facecap-processor.heartbeat",  # noqa: S108 - container-local, no secrets
                                description="Written periodically; `facecap processor healthcheck` reads it.")
    heartbeat_interval_seconds: Seconds = Field(10.0, description="How often the heartbeat is written.")
    unhealthy_after_seconds: Seconds = Field(
        60.0, description="`facecap processor healthcheck` fails once the processor has been disconnected "
                                "from the broker (or never connected) this long, or its store has been failing "
                                "this long with faces pending.")
    receipt_window_seconds: SecondsOrOff = Field(
        0.2, le=10, description="Receipts (contract v1.1) batch the faces finished within this window, per "
                                      "device.")
    stats_interval_seconds: Seconds = Field(60.0, description="How often counts and latency are logged.")
    server_side_encryption: str = Field("AES256", description="S3 encryption: AES256, aws:kms, or empty for none.")
    kms_key_id: str = Field("", description="KMS key id or ARN with aws:kms (empty: the account's S3 key).")
    s3_client: Literal["crt", "boto3"] = Field(
        "crt", description="Client of an s3:// store: crt (awscrt's native S3 client, ~1 ms of CPU per 30 KB "
                           "face) or boto3 (~3.5 ms). Both send the same request.")
    logging: LoggingSettings = Field(default_factory=LoggingSettings)

    @field_validator("quarantine_prefix")
    @classmethod
    def _levels(cls, value: str) -> str:
        return check_topic_prefix(value)  # the same levels, since they become object key parts too

    @field_validator("share_group")
    @classmethod
    def _group(cls, value: str) -> str:
        if not _SHARE_GROUP.fullmatch(value):
            raise ValueError("must match [A-Za-z0-9._-]{0,64} (it becomes a topic level)")
        if 0 < len(value) < _LEAST_SHARE_GROUP:
            # Mosquitto's acl_file grants any subscription. A device that names the group becomes a member;
            # the faces the broker picks it for are then refused by the ACL and dropped, for every device.
            raise ValueError(f"must be a secret of at least {_LEAST_SHARE_GROUP} characters, e.g. from `openssl "
                             "rand -hex 16`: a device that guesses it takes a share of every device's faces, "
                             "which the broker then drops")
        return value

    @field_validator("store")
    @classmethod
    def _store(cls, value: str) -> str:
        parse_store_url(value)  # its ValueError names what is wrong
        return value

    @field_validator("server_side_encryption")
    @classmethod
    def _sse(cls, value: str) -> str:
        if value not in ("", "AES256", "aws:kms"):
            raise ValueError("must be AES256, aws:kms or empty")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProcessorConfig:
        if self.kms_key_id and self.server_side_encryption != "aws:kms":
            raise ValueError("kmsKeyId needs serverSideEncryption aws:kms")
        if not ID_PATTERN.fullmatch(self.client_id):
            raise ValueError(f"mqtt.clientId {self.client_id!r} must match [A-Za-z0-9._-]{{1,64}} "
                             "(it names the status topic)")
        if not self.client_id.lower().startswith(RESERVED_ID_PREFIX):
            # Devices share the cloud broker's client-id space (their id is their certificate's CN), and no
            # device id may start with "facecap": so no device can take over or kick this session.
            raise ValueError(f"mqtt.clientId {self.client_id!r} must start with {RESERVED_ID_PREFIX!r}, "
                             "which no device id may")
        return self

    @property
    def client_id(self) -> str:
        return self.mqtt.client_id or DEFAULT_CLIENT_ID

    @property
    def topic_filter(self) -> str:
        return self._filter(self.share_group)

    @property
    def shown_topic_filter(self) -> str:
        """topic_filter for a log line: the share group is a secret (a device that knows it can join it)."""
        return self._filter("***" if self.share_group else "")

    def _filter(self, group: str) -> str:
        plain = f"{self.topic_prefix}/#"
        return f"$share/{group}/{plain}" if group else plain

    @property
    def status_topic(self) -> str:
        return status_topic(self.client_id, "processor")

    @property
    def receive_maximum(self) -> int:
        # Enough unacknowledged messages that no worker waits for the broker, few enough that a crash
        # leaves little to redeliver.
        return min(65535, self.workers * 4)
