"""Every error facecap raises on purpose, in one place."""

from __future__ import annotations


class FacecapError(Exception):
    """Base of facecap's own errors."""


class ConfigError(FacecapError):
    """A configuration is invalid. `problems` lists (key, reason) pairs, one per bad key."""

    def __init__(self, component: str, problems: list[tuple[str, str]]) -> None:
        self.component = component
        self.problems = problems
        lines = "\n".join(f"  {key}: {reason}" for key, reason in problems)
        super().__init__(f"invalid {component} configuration:\n{lines}")


class ContractError(FacecapError):
    """A message breaks the face message contract. `reason` is a short, stable code for quarantine."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class MqttError(FacecapError):
    """Base of MQTT failures."""


class MqttConnectError(MqttError):
    """The client could not connect (broker unreachable, TLS failure, timeout)."""


class MqttAuthError(MqttConnectError):
    """The broker refused the credentials; retrying will not help."""


class PublishError(MqttError):
    """A publish failed or the broker answered it with a failure reason code."""


class GreengrassError(FacecapError):
    """Greengrass IPC failed: the nucleus refused the connection or an operation (e.g. accessControl)."""
