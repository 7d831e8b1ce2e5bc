"""Greengrass integration over IPC (awsiotsdk): configuration validation and live updates, state reports."""

from .ipc import ConfigurationCallback, GreengrassIpc, Validator, in_greengrass

__all__ = ["ConfigurationCallback", "GreengrassIpc", "Validator", "in_greengrass"]
