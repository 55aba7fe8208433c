"""Which of the agent's paho-mqtt fast paths are on, and why one is off.

Strategy: the speed-ups of the agent's MQTT client override or call private paho-mqtt
methods (``mqtt_socket.BufferingClient._create_socket``: buffered reads;
``mqtt_client.IngestClient._handle_publish`` and ``deliver_buffered``: PUBLISH decoding
without paho's per-message objects; ``IngestClient.ack_many``: a batch's PUBACKs queued
as one packet with ``_packet_queue``). Private methods change without notice, and a
mismatch would raise inside ``loop_read``: the session reconnects, the broker redelivers
the same PUBLISH, and nothing is ever acknowledged. So:

* pyproject caps paho-mqtt below the next minor nobody has checked (``CHECKED``);
* at import, ``check_paho`` compares the installed version with ``CHECKED`` and looks for
  every private attribute the overrides use (on the class and on a throwaway client,
  which opens no socket); a path whose check fails is off from the start;
* an exception inside an override turns its path off for the rest of the process
  (``disable``) and that call falls back to paho's own method (``super()``);
* every path off is logged once with its reason (``log_state``, called when an MQTT
  session starts, after logging is configured) and shown as ``edge_mqtt_fast_path{path}``
  0/1 and in ``GET /status`` (``mqtt_fast_paths``).

With every path off the agent runs on paho's public behaviour only: the same readings,
the same ack-after-durable, more CPU per reading (docs/benchmarks.md).
"""

from __future__ import annotations

import inspect
import logging
import threading
from typing import Any

import paho.mqtt
import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)

#: paho-mqtt minor versions the overrides were checked against (keep pyproject's cap in step)
CHECKED = ((2, 1), (2, 2))
#: read the socket through mqtt_socket.BufferedSocket
BUFFERED_READS = "buffered_reads"
#: decode plain PUBLISH packets in mqtt_client.IngestClient
PUBLISH_DECODE = "publish_decode"
#: queue the PUBACKs of a batch as one packet in mqtt_client.IngestClient.ack_many
ACK_BATCHES = "ack_batches"
PATHS = (BUFFERED_READS, PUBLISH_DECODE, ACK_BATCHES)


class FastPaths:
    """Process-wide switches, read on the hot path as plain attributes."""

    __slots__ = ("_lock", "_logged", "ack_batches", "buffered_reads", "publish_decode",
                 "reasons")

    def __init__(self) -> None:
        self.buffered_reads = True
        self.publish_decode = True
        self.ack_batches = True
        #: path -> why it is off
        self.reasons: dict[str, str] = {}
        self._logged: set[str] = set()
        self._lock = threading.Lock()

    def disable(self, path: str, reason: str, *, log_now: bool = True) -> None:
        """Turn ``path`` off for the rest of the process (the first reason is kept)."""
        with self._lock:
            setattr(self, path, False)
            self.reasons.setdefault(path, reason)
        if log_now:
            self.log_state()

    def log_state(self) -> None:
        """Log each path that is off, once per process."""
        with self._lock:
            new = [(p, r) for p, r in self.reasons.items() if p not in self._logged]
            self._logged.update(p for p, _ in new)
        for path, reason in new:
            log.warning("mqtt fast path %s is off, using paho-mqtt's own code: %s",
                        path, reason)

    def status(self) -> list[dict[str, Any]]:
        """[{path, on, reason}] for /status (``mqtt_fast_paths``) and /metrics."""
        return [{"path": p, "on": bool(getattr(self, p)), "reason": self.reasons.get(p, "")}
                for p in PATHS]

    def reset(self) -> None:
        """All paths on again (tests only: a real process never turns one back on)."""
        with self._lock:
            self.buffered_reads = self.publish_decode = self.ack_batches = True
            self.reasons.clear()
            self._logged.clear()


FAST_PATHS = FastPaths()


def _version(text: str) -> tuple[int, int] | None:
    try:
        major, minor = text.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def check_paho(version: str | None = None, client_class: Any = mqtt.Client) -> dict[str, str]:
    """{path: why it cannot be used} for this paho-mqtt; empty when every path fits."""
    version = paho.mqtt.__version__ if version is None else version
    if _version(version) not in CHECKED:
        checked = ", ".join(f"{a}.{b}" for a, b in CHECKED)
        why = f"paho-mqtt {version} is not a checked version ({checked})"
        return dict.fromkeys(PATHS, why)
    out: dict[str, str] = {}
    for path, names in ((BUFFERED_READS, ("_create_socket", "_sock_recv", "loop_read")),
                        (PUBLISH_DECODE, ("_handle_publish", "_packet_handle", "ack")),
                        (ACK_BATCHES, ("_packet_queue",))):
        missing = [n for n in names if not callable(getattr(client_class, n, None))]
        if missing:
            out[path] = f"paho-mqtt {version} has no Client.{', Client.'.join(missing)}"
    if PUBLISH_DECODE not in out:
        try:
            probe = client_class(mqtt.CallbackAPIVersion.VERSION2, manual_ack=True)
            packet = probe._in_packet
            ok = (isinstance(packet, dict) and isinstance(packet.get("command"), int)
                  and isinstance(packet.get("packet"), bytes | bytearray)
                  and probe._manual_ack is True and probe._protocol == mqtt.MQTTv311
                  and isinstance(mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS, int))
        except Exception as exc:  # any surprise in paho's shape: the path stays off
            ok, packet = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            out[PUBLISH_DECODE] = (f"paho-mqtt {version}: Client._in_packet / _manual_ack / "
                                   f"_protocol are not what the decoder reads ({packet!r:.80})")
    if ACK_BATCHES not in out:
        try:
            params = list(inspect.signature(client_class._packet_queue).parameters)[1:5]
        except (TypeError, ValueError) as exc:
            params = [f"{type(exc).__name__}: {exc}"]
        if params != ["command", "packet", "mid", "qos"]:
            out[ACK_BATCHES] = (f"paho-mqtt {version}: Client._packet_queue takes {params}, "
                                "not (command, packet, mid, qos)")
    return out


def apply_check(problems: dict[str, str]) -> None:
    """Turn off the paths ``check_paho`` found unusable (logged by ``log_state`` later)."""
    for path, reason in problems.items():
        FAST_PATHS.disable(path, reason, log_now=False)


apply_check(check_paho())

__all__ = ["ACK_BATCHES", "BUFFERED_READS", "CHECKED", "FAST_PATHS", "PATHS", "PUBLISH_DECODE",
           "FastPaths",
           "apply_check", "check_paho"]
