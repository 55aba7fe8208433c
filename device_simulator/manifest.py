"""The run manifest: what every device sent, so a verifier can check what arrived.

Strategy: the manifest states facts the simulator knows, never inferences.
Per device: the seq range it consumed, and the seqs that must *not* be expected
downstream, each list with its reason (corrupt on purpose, dropped by the
device's full offline buffer) plus the seqs whose fate the device cannot know
(QoS 1 messages never acknowledged when the run ended).  ``expected_seqs`` and
``excluded_seqs`` turn those facts into the sets the verifier compares against.

All seqs here are reading numbers, which only grow. A device that rebooted (the
``reboot`` fault) restarted the ``seq`` of its payloads at ``run.seq_start`` and sent
``boot`` = 1, 2, ...; ``boot_starts[b-1]`` is the reading number where boot ``b``
began, and ``reading_number`` maps a payload's (boot, seq) back. Manifests without
``boot_starts`` (no reboots, or written before the field existed) read as one boot.

File layout (JSON, written atomically)::

    {"version": 1,
     "run": {... metadata: broker, devices, rate, qos, format, seed, faults ...},
     "totals": {"sent": ..., "duplicates": ..., ...},
     "devices": {"dev-00001": {"index": 1, "kind": "env", "clock_skew_ms": 0,
                               "first_seq": 1, "last_seq": 250, "sent": 250,
                               "duplicates": 2, "disconnects": 0,
                               "alarm_seqs": [...], "malformed_seqs": [...],
                               "oversized_seqs": [...], "dropped_seqs": [...],
                               "unconfirmed_seqs": [...], "boot_starts": [...]}, ...}}

See docs/simulator.md for the meaning of each field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared_log import atomic_write

MANIFEST_VERSION = 1
SEQ_LISTS = ("alarm_seqs", "malformed_seqs", "oversized_seqs", "dropped_seqs",
             "unconfirmed_seqs", "boot_starts")
COUNTERS = ("sent", "duplicates", "disconnects")
KINDS = ("all", "telemetry", "alarm")


class ManifestError(ValueError):
    """A manifest file that cannot be read or does not have the expected shape."""


@dataclass(slots=True)
class DeviceRecord:
    """What one device did during a run (mutated by the runner while it sends)."""

    device: str
    index: int
    kind: str = ""
    clock_skew_ms: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    sent: int = 0  # readings published (corrupt ones included, duplicate resends not)
    duplicates: int = 0  # extra sends of an already sent seq (the duplicate fault)
    disconnects: int = 0  # connection drops injected
    alarm_seqs: list[int] = field(default_factory=list)
    malformed_seqs: list[int] = field(default_factory=list)
    oversized_seqs: list[int] = field(default_factory=list)
    dropped_seqs: list[int] = field(default_factory=list)  # offline buffer full
    unconfirmed_seqs: list[int] = field(default_factory=list)  # never acked at the end
    boot_starts: list[int] = field(default_factory=list)  # first reading of boot 1, 2, ...

    def note_seq(self, seq: int) -> None:
        if self.first_seq is None:
            self.first_seq = seq
        self.last_seq = seq

    def to_dict(self) -> dict[str, Any]:
        d = {name: getattr(self, name) for name in self.__slots__ if name != "device"}
        for name in SEQ_LISTS:
            d[name] = sorted(d[name])
        return d

    @classmethod
    def from_dict(cls, device: str, data: Any) -> DeviceRecord:
        if not isinstance(data, dict):
            raise ManifestError(f"device {device!r}: expected an object")
        try:
            rec = cls(device=device, index=int(data["index"]), kind=str(data.get("kind", "")),
                      clock_skew_ms=int(data.get("clock_skew_ms", 0)),
                      first_seq=_opt_int(data.get("first_seq")),
                      last_seq=_opt_int(data.get("last_seq")))
            for name in COUNTERS:
                setattr(rec, name, int(data.get(name, 0)))
            for name in SEQ_LISTS:
                setattr(rec, name, [int(s) for s in data.get(name, [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"device {device!r}: {exc}") from exc
        return rec

    def reading_number(self, boot: int, seq: int) -> int | None:
        """The reading number of payload (boot, seq); None when no such reading can exist."""
        first = self.first_seq if self.first_seq is not None else 0
        if boot == 0:
            n = seq
        elif 0 < boot <= len(self.boot_starts):
            n = self.boot_starts[boot - 1] + seq - first
        else:
            return None
        if boot < len(self.boot_starts) and n >= self.boot_starts[boot]:
            return None  # past the start of the next boot: not a reading of this boot
        if boot > 0 and n < self.boot_starts[boot - 1]:
            return None
        return n

    def excluded_seqs(self) -> set[int]:
        """Seqs that must not be expected downstream: corrupt on purpose or dropped."""
        return {*self.malformed_seqs, *self.oversized_seqs, *self.dropped_seqs}

    def expected_seqs(self, kind: str = "all") -> set[int]:
        """Seqs that must arrive exactly once (``kind``: all, telemetry or alarm)."""
        if self.first_seq is None or self.last_seq is None:
            return set()
        if kind == "alarm":
            seqs = set(self.alarm_seqs)
        else:
            seqs = set(range(self.first_seq, self.last_seq + 1))
            if kind == "telemetry":
                seqs.difference_update(self.alarm_seqs)
        seqs.difference_update(self.excluded_seqs())
        seqs.difference_update(self.unconfirmed_seqs)
        return seqs


def _total_name(seq_list: str) -> str:
    """``malformed_seqs`` -> ``malformed``; ``boot_starts`` -> ``reboots``."""
    return "reboots" if seq_list == "boot_starts" else seq_list.removesuffix("_seqs")


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


@dataclass(slots=True)
class Manifest:
    run: dict[str, Any]
    devices: dict[str, DeviceRecord]
    totals: dict[str, int] = field(default_factory=dict)
    version: int = MANIFEST_VERSION

    def compute_totals(self) -> dict[str, int]:
        totals = {name: 0 for name in COUNTERS}
        for name in SEQ_LISTS:
            totals[_total_name(name)] = 0
        for rec in self.devices.values():
            for name in COUNTERS:
                totals[name] += getattr(rec, name)
            for name in SEQ_LISTS:
                totals[_total_name(name)] += len(getattr(rec, name))
        self.totals = totals
        return totals

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "run": self.run,
            "totals": self.totals or self.compute_totals(),
            "devices": {name: rec.to_dict() for name, rec in sorted(self.devices.items())},
        }

    def write(self, path: str | Path) -> None:
        """Write atomically (temp file, fsync, rename)."""
        atomic_write(path, json.dumps(self.to_dict(), indent=1).encode())

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
            raise ManifestError("not a device-sim manifest (no 'devices' object)")
        if data.get("version") != MANIFEST_VERSION:
            raise ManifestError(f"manifest version {data.get('version')!r} is not supported")
        devices = {name: DeviceRecord.from_dict(name, d) for name, d in data["devices"].items()}
        return cls(run=dict(data.get("run") or {}), devices=devices,
                   totals=dict(data.get("totals") or {}))

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        try:
            data = json.loads(Path(path).read_bytes())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"cannot read manifest {path}: {exc}") from exc
        return cls.from_dict(data)
