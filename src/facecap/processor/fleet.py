"""Device health as the cloud broker sees it, for `facecap fleet`.

Every edge component keeps a retained `online`/`offline` on facecap/<device>/<component>/status (its last will
says offline) and retained JSON stats on facecap/<device>/<component>/stats, with the time they were taken
(`at`); the edge bridge carries both out. The bridge itself keeps a retained "1"/"0" on
$SYS/broker/connection/facecap-edge-<device>/state on the cloud broker (its last will says 0). Reading those
retained topics once gives the state of the whole fleet: no database, nothing to keep running.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from ..contract import parse_time
from ..errors import ContractError
from ..mqtt import MqttClient, MqttSettings, ReceivedMessage

HEALTH_TOPICS = ("facecap/+/+/status", "facecap/+/+/stats", "$SYS/broker/connection/+/state")
BRIDGE_PREFIX = "facecap-edge-"
# The components of a device; facecap/<id>/processor/status is the processor's own (not a device).
NOT_DEVICE_COMPONENTS = ("processor",)
# What the table shows of each component's stats: the flow, then what was lost or is at risk (faces evicted
# from or refused by a full outbox, sent without it or lost to a full disk) and camera outages.
COUNTERS = ("fps", "frames", "faces", "published", "dropped", "failed", "pending", "rejected", "evicted", "refused",
            "unsaved", "lost", "camera_outages")


@dataclass
class DeviceHealth:
    device: str
    status: dict[str, str] = field(default_factory=dict)  # component -> online/offline
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # component -> its latest stats
    bridge: str = "unknown"  # connected, disconnected, or unknown (no state seen)

    @property
    def components(self) -> list[str]:
        """The components with a status or stats on the broker, in name order."""
        return sorted(set(self.status) | set(self.stats))

    @property
    def last_seen(self) -> datetime | None:
        """When the newest stats were taken; None when the device never sent any."""
        times = [seen for component in self.stats if (seen := self.component_seen(component)) is not None]
        return max(times, default=None)

    def component_seen(self, component: str) -> datetime | None:
        try:
            return parse_time(str(self.stats.get(component, {}).get("at", "")))
        except ContractError:
            return None

    def faults(self, now: datetime, stale_after: float) -> list[str]:
        """What is wrong with a device that is not stale as a whole: a component that is offline (its last will,
        or a clean stop), or whose own stats stopped while another's go on (a dead or crash-looping detector
        beside a logger that still reports)."""
        found = []
        for component in self.components:
            seen = self.component_seen(component)
            silent = None if seen is None else (now - seen).total_seconds()
            if self.status.get(component) == "offline":
                found.append(f"{component} offline")
            elif silent is not None and silent > self._allowed_silence(component, stale_after):
                found.append(f"{component} silent for {silent:.0f} s")
        return found

    def _allowed_silence(self, component: str, stale_after: float) -> float:
        """stale_after, or two of the component's own reporting intervals when it reports less often (a
        FaceLogger with a long summaryIntervalSeconds is not dead)."""
        interval = self.stats.get(component, {}).get("intervalSeconds")
        if isinstance(interval, (int, float)) and not isinstance(interval, bool) and 0 < interval < 10**7:
            return max(stale_after, 2 * float(interval))
        return stale_after

    def age(self, now: datetime) -> float | None:
        seen = self.last_seen
        return None if seen is None else (now - seen).total_seconds()

    def is_stale(self, now: datetime, stale_after: float) -> bool:
        # The time comes from the device's clock. One far ahead would keep a dead device "fresh" for as long
        # as it is ahead, so a time in the future beyond the limit counts as stale too.
        age = self.age(now)
        return age is None or not -stale_after <= age <= stale_after

    def healthy(self, now: datetime, stale_after: float) -> bool:
        return not self.is_stale(now, stale_after) and not self.faults(now, stale_after)

    def as_dict(self, now: datetime, stale_after: float) -> dict[str, Any]:
        seen = self.last_seen
        return {"device": self.device, "lastSeen": seen.isoformat() if seen else None, "ageSeconds": self.age(now),
                "stale": self.is_stale(now, stale_after), "faults": self.faults(now, stale_after),
                "bridge": self.bridge, "status": self.status, "stats": self.stats}


class FleetView:
    """The health of every device, from the retained messages on HEALTH_TOPICS."""

    def __init__(self) -> None:
        self.devices: dict[str, DeviceHealth] = {}
        self._lock = threading.Lock()
        self.last_message = time.monotonic()

    def handle(self, message: ReceivedMessage) -> None:
        parts = message.topic.split("/")
        with self._lock:
            self.last_message = time.monotonic()
            if parts[0] == "$SYS" and len(parts) == 5 and parts[3].startswith(BRIDGE_PREFIX):
                state = message.payload.strip()
                self._device(parts[3][len(BRIDGE_PREFIX):]).bridge = {b"1": "connected", b"0": "disconnected"}.get(
                    state, "unknown")
            elif parts[0] == "facecap" and len(parts) == 4 and parts[2] not in NOT_DEVICE_COMPONENTS:
                self._component(parts[1], parts[2], parts[3], message.payload)

    def _device(self, device: str) -> DeviceHealth:
        return self.devices.setdefault(device, DeviceHealth(device))

    def _component(self, device: str, component: str, kind: str, payload: bytes) -> None:
        if kind == "status":
            self._device(device).status[component] = payload.decode("utf-8", "replace").strip() or "?"
        elif kind == "stats":
            try:
                figures = json.loads(payload)
            except (ValueError, RecursionError):  # a device's own business, not worth a traceback here
                return
            if isinstance(figures, dict):
                self._device(device).stats[component] = figures

    def snapshot(self) -> list[DeviceHealth]:
        with self._lock:
            return [self.devices[name] for name in sorted(self.devices)]


def _throwaway_client(settings: MqttSettings, client_factory: Callable[..., MqttClient],
                      **options: object) -> MqttClient:
    # A throwaway session of its own: never the processor's client id, whose session holds the faces.
    transient = settings.model_copy(update={"client_id": "", "session_expiry_seconds": 0})
    return client_factory(transient, f"facecap-fleet-{int(time.time() * 1000) % 10**9}", **options)


def collect(settings: MqttSettings, *, settle: float = 1.0, timeout: float = 10.0,
            client_factory: Callable[..., MqttClient] = MqttClient) -> FleetView:
    """Subscribe to the health topics and gather the retained messages: until none came for `settle` seconds
    (the broker sends every retained message right after the SUBACK), at most `timeout` seconds."""
    view = FleetView()
    client = _throwaway_client(settings, client_factory, on_message=view.handle)
    client.start()
    try:
        for topic in HEALTH_TOPICS:
            client.subscribe(topic, qos=0)
        started = time.monotonic()
        view.last_message = started
        while time.monotonic() - started < timeout and time.monotonic() - view.last_message < settle:
            time.sleep(0.05)
    finally:
        client.stop(timeout=2)
    return view


def forget(settings: MqttSettings, device: DeviceHealth, component: str | None = None, *, timeout: float = 10.0,
           client_factory: Callable[..., MqttClient] = MqttClient) -> list[str]:
    """Clear the retained health of a removed device (status, stats, bridge state), or of one component taken
    out of its deployment, with empty retained messages, so it stops showing as stale or offline for ever.
    Returns the topics cleared. A device or component still running sets them again."""
    components = [component] if component else device.components
    topics = [f"facecap/{device.device}/{name}/{kind}" for name in components for kind in ("status", "stats")]
    if component is None and device.bridge != "unknown":
        topics.append(f"$SYS/broker/connection/{BRIDGE_PREFIX}{device.device}/state")
    client = _throwaway_client(settings, client_factory)
    client.start()
    try:
        for topic in topics:
            future = client.publish(topic, b"", retain=True, timeout=timeout)
            if future is not None:
                future.result(timeout)
    finally:
        client.stop(timeout=2)
    return topics


def render_table(devices: list[DeviceHealth], now: datetime, stale_after: float) -> str:
    """One block per device: last seen, bridge, each component's status, its latest counters."""
    lines = [f"{len(devices)} device(s); stale after {stale_after:g} s"]
    for device in devices:
        age = device.age(now)
        if age is None:
            seen = "never"
        elif age < -stale_after:
            seen = f"{-age:.0f} s in the future (the device's clock is ahead)"
        else:
            seen = f"{age:.0f} s ago"
        faults = device.faults(now, stale_after)
        flag = "STALE" if device.is_stale(now, stale_after) else f"FAULT ({shown(', '.join(faults), 80)})" if faults \
            else "ok"
        lines.append(f"{shown(device.device)}  {flag}  last seen {seen}  bridge {device.bridge}")
        for component in device.components:
            figures = device.stats.get(component, {})
            counters = " ".join(f"{key}={shown(figures[key])}" for key in COUNTERS if key in figures)
            status = shown(device.status.get(component, "?"))
            if device.bridge == "disconnected" and status == "online":
                status = "online?"  # as last known: a last will sent while the bridge is down stays on the device
            lines.append(f"  {shown(component):<10} {status:<8} {counters}".rstrip())
    return "\n".join(lines)


def shown(value: object, most: int = 40) -> str:
    """A device's own words, safe for the operator's terminal: a device writes its status and stats itself,
    and an escape sequence in them could clear the screen or hide the lines after it."""
    text = "".join(c if c.isprintable() else "?" for c in str(value))
    return text if len(text) <= most else text[:most - 1] + "…"


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
