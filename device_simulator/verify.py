"""The verifier's analysis: what arrived downstream versus what the manifest says was sent.

Strategy: pure.  ``analyze`` takes the manifest and an iterable of records (in
partition order, from any source) and returns a ``Report``; reading the records
is ``verify_source``'s job.  Per device it tracks the seqs seen, and judges each
record exactly once:

- *duplicate*: a seq already seen for that device (G5 says the pipeline removes
  device resends and MQTT redeliveries);
- *out of order*: a seq below the highest seen before it for that device, in its
  partition (G4);
- *split*: a device found in more than one partition (G4: one key, one partition);
- *missing*: an expected seq never seen.  Expected = the device's seq range minus
  the seqs it corrupted on purpose (malformed, oversized), dropped (offline
  buffer full; one that arrives anyway is *unexpected*) or could not confirm
  (QoS 1, unacknowledged at the end), filtered by kind (telemetry/alarm) when
  those go to different topics.

Devices that rebooted (the ``reboot`` fault) restarted their payload ``seq`` and
send a ``boot`` epoch; each record's (boot, seq) is mapped back to the device's
reading number (``DeviceRecord.reading_number``) before it is judged, so loss,
duplicates and order are checked per (device, boot) and across boots alike. A
(boot, seq) that no boot of the device can have sent is *unexpected*.

Corrupt-on-purpose messages are reported separately (sent and, if any reached
the topic, received), as are records of unknown devices, records of the other
kind, seqs outside the range and undecodable values: they are never counted as
missing or duplicate.  The report is ``ok`` only when nothing is missing,
duplicated, reordered or split.

Latency is ``reference - (ts - clock_skew)``: ``ts`` is the device timestamp in
the payload, corrected by the skew the manifest recorded for that device, and
the reference is the named header (milliseconds as ASCII digits) when given and
present, else the record timestamp.  Only the first copy of each seq is measured.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .manifest import Manifest
from .payloads import BOOT_FIELD, DEVICE_FIELD, SEQ_FIELD, TS_FIELD, decode

MAX_LISTED = 50  # missing ranges listed per device in the report


class Observed(NamedTuple):
    """One record read downstream."""

    partition: int
    offset: int
    timestamp: int
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def percentiles(samples: Sequence[float]) -> dict[str, float] | None:
    """Nearest-rank p50/p90/p99 plus min/max/count; None without samples."""
    if not samples:
        return None
    s = sorted(samples)
    n = len(s)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, -(-n * p // 100) - 1))]  # ceil(n*p/100) - 1

    return {"count": n, "min": s[0], "p50": rank(50), "p90": rank(90), "p99": rank(99),
            "max": s[-1]}


def ranges(seqs: Iterable[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive integers."""
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


@dataclass
class DeviceResult:
    expected: int = 0
    delivered: int = 0
    missing: list[int] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0
    partitions: set[int] = field(default_factory=set)
    unexpected: int = 0
    other_kind: int = 0
    malformed_received: int = 0
    oversized_received: int = 0
    latencies: list[float] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicates or self.out_of_order
                    or len(self.partitions) > 1)

    def to_dict(self) -> dict[str, Any]:
        lat = percentiles(self.latencies)
        return {
            "ok": self.ok,
            "expected": self.expected,
            "delivered": self.delivered,
            "missing": len(self.missing),
            "missing_ranges": ranges(self.missing)[:MAX_LISTED],
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "partitions": sorted(self.partitions),
            "unexpected": self.unexpected,
            "other_kind": self.other_kind,
            "malformed_received": self.malformed_received,
            "oversized_received": self.oversized_received,
            "latency_ms": {k: lat[k] for k in ("p50", "p99", "max")} if lat else None,
        }


@dataclass
class Report:
    kind: str
    latency_source: str
    records: int = 0
    devices: dict[str, DeviceResult] = field(default_factory=dict)
    unknown_devices: set[str] = field(default_factory=set)
    unknown_records: int = 0
    undecodable: int = 0
    totals_sent: dict[str, int] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def total(self, name: str) -> int:
        if name == "missing":
            return sum(len(d.missing) for d in self.devices.values())
        if name == "split":
            return sum(len(d.partitions) > 1 for d in self.devices.values())
        return sum(getattr(d, name) for d in self.devices.values())

    @property
    def ok(self) -> bool:
        return all(d.ok for d in self.devices.values())

    def latency(self) -> dict[str, float] | None:
        return percentiles([x for d in self.devices.values() for x in d.latencies])

    def to_dict(self, per_device: bool = True) -> dict[str, Any]:
        totals = {name: self.total(name) for name in (
            "expected", "delivered", "missing", "duplicates", "out_of_order", "split",
            "unexpected", "other_kind", "malformed_received", "oversized_received")}
        totals.update(unknown_device_records=self.unknown_records,
                      undecodable=self.undecodable)
        out: dict[str, Any] = {
            "ok": self.ok,
            "kind": self.kind,
            **self.meta,
            "records": self.records,
            "devices": len(self.devices),
            "devices_with_problems": sum(not d.ok for d in self.devices.values()),
            "totals": totals,
            "sent_on_purpose": self.totals_sent,
            "latency_ms": self.latency(),
            "latency_source": self.latency_source,
            "unknown_devices": sorted(self.unknown_devices)[:MAX_LISTED],
        }
        if per_device:
            out["per_device"] = {name: d.to_dict() for name, d in sorted(self.devices.items())}
        return out


class _Expect:
    """What the manifest says about one device, as sets for O(1) judging."""

    __slots__ = ("dropped", "expected", "first", "kind_seqs", "last", "malformed", "oversized",
                 "rebooted", "record", "skew")

    def __init__(self, manifest: Manifest, name: str, kind: str) -> None:
        rec = manifest.devices[name]
        self.record = rec
        self.rebooted = bool(rec.boot_starts)
        self.first = rec.first_seq if rec.first_seq is not None else 0
        self.last = rec.last_seq if rec.last_seq is not None else -1
        self.expected = rec.expected_seqs(kind)
        self.malformed = set(rec.malformed_seqs)
        self.oversized = set(rec.oversized_seqs)
        self.dropped = set(rec.dropped_seqs)
        self.skew = rec.clock_skew_ms
        alarms = set(rec.alarm_seqs)
        # Seqs that belong to the other kind (counted apart, never as errors).
        self.kind_seqs = (None if kind == "all" else alarms if kind == "telemetry"
                          else set(range(self.first, self.last + 1)) - alarms)


def _latency_ref(rec: Any, header: str | None) -> int:
    if header is not None:
        for name, value in rec.headers:
            if name == header:
                try:
                    return int(value)
                except ValueError:
                    break
    return rec.timestamp


class Analyzer:
    """Incremental form of ``analyze``: ``feed`` batches as they are read, then ``report``.

    Records are duck-typed: anything with ``partition``, ``timestamp``, ``key``,
    ``value`` and ``headers`` attributes (``Observed``, or the broker client's
    ``ConsumerRecord``) is accepted, so a source never has to copy records.
    """

    def __init__(self, manifest: Manifest, *, kind: str = "all",
                 latency_header: str | None = None) -> None:
        if kind not in ("all", "telemetry", "alarm"):
            raise ValueError(f"kind must be all, telemetry or alarm, not {kind!r}")
        source = (f"header {latency_header!r} (else record timestamp)" if latency_header
                  else "record timestamp")
        self.latency_header = latency_header
        self._report = Report(kind=kind, latency_source=source)
        self._report.totals_sent = {k: manifest.totals.get(k, 0) for k in (
            "malformed", "oversized", "dropped", "unconfirmed", "duplicates", "reboots")}
        self._expects = {name: _Expect(manifest, name, kind) for name in manifest.devices}
        self._results = {name: DeviceResult(expected=len(e.expected))
                         for name, e in self._expects.items()}
        self._report.devices = self._results
        self._seen: dict[str, set[int]] = {name: set() for name in self._expects}
        self._highest: dict[str, int] = {}

    def missing_count(self) -> int:
        return sum(len(e.expected) - len(e.expected & self._seen[n])
                   for n, e in self._expects.items())

    def feed(self, records: Iterable[Any]) -> None:
        report = self._report
        expects, results, seen_by, highest = (self._expects, self._results, self._seen,
                                              self._highest)
        header = self.latency_header
        for rec in records:
            report.records += 1
            message = decode(rec.value)
            name = message.get(DEVICE_FIELD) if message is not None else None
            if not isinstance(name, str):
                name = rec.key.decode(errors="replace")
            exp = expects.get(name)
            if exp is None:
                report.unknown_records += 1
                report.unknown_devices.add(name)
                continue
            res = results[name]
            if message is None:
                # Only malformed-on-purpose payloads are undecodable (maps otherwise).
                if exp.malformed:
                    res.malformed_received += 1
                else:
                    report.undecodable += 1
                continue
            seq = message.get(SEQ_FIELD)
            if type(seq) is not int:
                report.undecodable += 1
                continue
            boot = message.get(BOOT_FIELD, 0)
            if boot or exp.rebooted:
                number = (exp.record.reading_number(boot, seq) if type(boot) is int
                          else None)
                if number is None:
                    res.partitions.add(rec.partition)
                    res.unexpected += 1
                    continue
                seq = number
            res.partitions.add(rec.partition)
            if seq in exp.oversized:
                res.oversized_received += 1
                continue
            if exp.kind_seqs is not None and seq in exp.kind_seqs:
                res.other_kind += 1
                continue
            if not exp.first <= seq <= exp.last or seq in exp.dropped:
                res.unexpected += 1
                continue
            seen = seen_by[name]
            if seq in seen:
                res.duplicates += 1
                continue
            seen.add(seq)
            if seq < highest.get(name, -1):
                res.out_of_order += 1
            else:
                highest[name] = seq
            if seq in exp.expected:
                res.delivered += 1
            ts = message.get(TS_FIELD)
            if type(ts) is int:
                res.latencies.append(float(_latency_ref(rec, header) - (ts - exp.skew)))

    def report(self) -> Report:
        """The report as of the records fed so far."""
        for name, exp in self._expects.items():
            self._results[name].missing = sorted(exp.expected - self._seen[name])
        return self._report


def analyze(manifest: Manifest, records: Iterable[Any], *, kind: str = "all",
            latency_header: str | None = None) -> Report:
    """Judge every record against the manifest; see the module docstring."""
    analyzer = Analyzer(manifest, kind=kind, latency_header=latency_header)
    analyzer.feed(records)
    return analyzer.report()
