"""Every error facecap raises on purpose, in one place."""

from __future__ import annotations


class FacecapError(Exception):
    """Base of facecap's own errors: a user mistake or an unavailable service, never a bug. The CLI prints
    one line for it, `facecap <command>: <what> — <hint>`, and exits with `exit_code`: 2 for bad input, 1 for
    a service that could not be reached."""

    exit_code = 2
    hint = ""


class ConfigError(FacecapError):
    """A configuration is invalid. `problems` lists (key, reason) pairs, one per bad key."""

    def __init__(self, component: str, problems: list[tuple[str, str]], hint: str = "") -> None:
        self.component = component
        self.problems = problems
        self.hint = hint or "fix that key in the configuration"
        lines = "\n".join(f"  {key}: {reason}" for key, reason in problems)
        super().__init__(f"invalid {component} configuration:\n{lines}")


class ContractError(FacecapError):
    """A message breaks the face message contract. `reason` is a short, stable code for quarantine."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


class MqttError(FacecapError):
    """Base of MQTT failures: a broker that could not be reached or answered with a failure (exit 1), unless a
    subclass says the input is at fault."""

    exit_code = 1


class MqttConnectError(MqttError):
    """The client could not connect (broker unreachable, TLS failure, timeout)."""

    hint = "check that the broker runs and that mqtt.host, mqtt.port and mqtt.tls point to it"


class MqttAuthError(MqttConnectError):
    """The broker refused the credentials; retrying will not help."""

    exit_code = 2
    hint = "check mqtt.username and mqtt.passwordFile (or the client certificate) against the broker's users"


class PublishError(MqttError):
    """A publish failed or the broker answered it with a failure reason code."""

    hint = "check the broker's log and the client's ACL"


class GreengrassError(FacecapError):
    """Greengrass IPC failed: the nucleus refused the connection or an operation (e.g. accessControl)."""

    exit_code = 1
    hint = "check the component's accessControl in its recipe and that it runs under Greengrass"


class UsageError(FacecapError):
    """A user mistake outside the configuration keys: a missing or unreadable file, an unusable folder."""

    def __init__(self, what: str, hint: str) -> None:
        self.hint = hint
        super().__init__(what)


class UnavailableError(FacecapError):
    """A service the command needs could not be reached (a store, a download)."""

    exit_code = 1

    def __init__(self, what: str, hint: str) -> None:
        self.hint = hint
        super().__init__(what)
