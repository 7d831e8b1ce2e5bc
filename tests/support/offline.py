"""A network namespace with nothing but loopback: a step run in it (`ip netns exec NAME ...`) has no network,
which is how the tests show that the components install offline. Needs root and iproute2's `ip`
(`netns_problem` says what is missing)."""

from __future__ import annotations

import os
import secrets
import subprocess

from .netns import netns_problem


class NamespaceUnavailable(Exception):  # noqa: N818 - a reason, not a failure of the code under test
    """This machine or user cannot make network namespaces; the message says why."""


def create_offline_namespace(prefix: str = "facecap-offline") -> str:
    """A new namespace with loopback up and no other interface; delete it with `delete_namespace`."""
    problem = netns_problem()
    if problem is not None:
        raise NamespaceUnavailable(problem)
    name = f"{prefix}-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], capture_output=True, check=True, timeout=30)
    try:
        subprocess.run([*exec_prefix(name), "ip", "link", "set", "lo", "up"], capture_output=True, check=True,
                       timeout=30)
    except (subprocess.SubprocessError, OSError):
        delete_namespace(name)
        raise
    return name


def delete_namespace(name: str) -> None:
    subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False, timeout=30)


def interfaces(name: str) -> list[str]:
    """The names of the namespace's network interfaces."""
    listing = subprocess.run([*exec_prefix(name), "ip", "-o", "link", "show"], capture_output=True, text=True,
                             check=True, timeout=30).stdout
    return [line.split(":")[1].strip().split("@")[0] for line in listing.splitlines() if line.strip()]


def exec_prefix(name: str) -> list[str]:
    return ["ip", "netns", "exec", name]
