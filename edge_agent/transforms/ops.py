"""The transforms: pure, deterministic steps over readings in log order.

Strategy: a transform sees items one at a time, in the input log's offset order, and
its output depends only on those items and its state: no wall clock, no randomness, no
hash order. Time is *event time* (the reading's timestamp field, else the time the
agent appended it, both stored in the log), so running the same input from the same
state gives the same output, byte for byte; that is what makes re-derivation after a
crash exactly once (docs/edge-processing.md). State is plain JSON (``state`` / ``load``)
so the runner can checkpoint it next to the input offset it belongs to.

An item carries the input offsets it came from (``lo``..``hi``): one offset for a
reading, the first and last offsets of a window. Readings a transform cannot apply to
(not a map, the field missing or not a number) are counted ``unfit`` and passed on
unchanged (``on_unfit = "pass"``, the default: the edge never loses what it cannot
interpret) or dropped (``"drop"``).

Per-device state holds at most ``max_devices`` devices; beyond that the device seen
least recently is forgotten (deterministically: dict order), which for a window means
it is emitted early.
"""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .expr import Expression


class Item:
    """A reading or a derived record on its way through a chain."""

    __slots__ = ("device", "fields", "hi", "lo", "raw", "ts")

    def __init__(self, device: str, fields: Any, ts: int, lo: int, hi: int,
                 raw: bytes | None = None) -> None:
        self.device, self.fields, self.ts, self.lo, self.hi = device, fields, ts, lo, hi
        self.raw = raw  # the original payload bytes, None for a record built here

    def value(self) -> bytes:
        if self.raw is not None:
            return self.raw
        return json.dumps(self.fields, separators=(",", ":"), sort_keys=True).encode()


Emit = Callable[[Item], None]


@dataclass
class OpStats:
    readings_in: int = 0
    readings_out: int = 0
    dropped: int = 0  # filtered out, thinned, or absorbed into a window
    windows: int = 0
    late: int = 0
    unfit: int = 0
    routed: int = 0


_INT_BOUND = 2**63


def _number(x: Any) -> bool:
    """A finite-sized number a transform may keep: a float that is not NaN or an int that
    fits 64 bits (a CBOR bignum would not survive the JSON of the checkpoint)."""
    t = type(x)
    if t is int:
        return -_INT_BOUND <= x < _INT_BOUND
    if t is float:
        return x == x  # not NaN
    if isinstance(x, int) and t is not bool:
        return -_INT_BOUND <= x < _INT_BOUND
    return isinstance(x, float) and x == x


@dataclass
class Op:
    """One transform. ``push`` an item; outputs go to ``emit`` (the next step)."""

    name: str
    on_unfit: str = "pass"
    max_devices: int = 100_000
    stats: OpStats = field(default_factory=OpStats)

    def push(self, item: Item, emit: Emit) -> None:
        raise NotImplementedError

    def _unfit(self, item: Item, emit: Emit) -> None:
        self.stats.unfit += 1
        if self.on_unfit == "pass":
            self.stats.readings_out += 1
            emit(item)

    def _out(self, item: Item, emit: Emit) -> None:
        self.stats.readings_out += 1
        emit(item)

    def state(self) -> Any:
        return None

    def load(self, state: Any) -> None:
        pass


@dataclass
class Filter(Op):
    expr: Expression | None = None

    def push(self, item: Item, emit: Emit) -> None:
        self.stats.readings_in += 1
        assert self.expr is not None
        if self.expr.matches(item.fields):
            self._out(item, emit)
        else:
            self.stats.dropped += 1


@dataclass
class Route(Op):
    expr: Expression | None = None
    to: str = ""
    copy: bool = False
    send: Callable[[str, Item], None] = lambda target, item: None

    def push(self, item: Item, emit: Emit) -> None:
        st = self.stats
        st.readings_in += 1
        if self.expr.matches(item.fields):  # type: ignore[union-attr]
            st.routed += 1
            self.send(self.to, item)
            if not self.copy:
                return
        st.readings_out += 1
        emit(item)


def _remember(d: dict[str, Any], key: str, value: Any, limit: int) -> None:
    """Set ``d[key]`` as the most recent entry, forgetting the oldest beyond ``limit``."""
    d.pop(key, None)
    d[key] = value
    if len(d) > limit:
        del d[next(iter(d))]


@dataclass
class Deadband(Op):
    """Forward when ``field`` moved by more than ``threshold`` (``on_change``: changed
    at all, any type) or ``heartbeat_ms`` passed since the last forwarded reading."""

    field_name: str = ""
    threshold: float = 0.0
    heartbeat_ms: int = 0
    any_change: bool = False
    last: dict[str, list[Any]] = field(default_factory=dict)

    def push(self, item: Item, emit: Emit) -> None:
        st = self.stats
        st.readings_in += 1
        f = item.fields
        v = f.get(self.field_name) if type(f) is dict else None
        if v is None or (not self.any_change and not _number(v)):
            self._unfit(item, emit)
            return
        prev = self.last.get(item.device)
        if prev is not None:
            pv, pts = prev
            if self.any_change:
                moved = not (pv == v and type(pv) is type(v))
            else:
                moved = abs(v - pv) > self.threshold
            if not moved and not (self.heartbeat_ms > 0 and item.ts - pts >= self.heartbeat_ms):
                st.dropped += 1
                return
        _remember(self.last, item.device, [v, item.ts], self.max_devices)
        st.readings_out += 1
        emit(item)

    def state(self) -> Any:
        return dict(self.last)  # a copy: the checkpoint encodes it in a thread

    def load(self, state: Any) -> None:
        self.last = dict(state)


@dataclass
class DownsampleFirst(Op):
    """The first reading of each device in each ``interval_ms`` bucket."""

    interval_ms: int = 1000
    bucket: dict[str, int] = field(default_factory=dict)

    def push(self, item: Item, emit: Emit) -> None:
        self.stats.readings_in += 1
        b = item.ts // self.interval_ms
        if self.bucket.get(item.device, b - 1) >= b:
            self.stats.dropped += 1
            return
        _remember(self.bucket, item.device, b, self.max_devices)
        self._out(item, emit)

    def state(self) -> Any:
        return dict(self.bucket)  # a copy: the checkpoint encodes it in a thread

    def load(self, state: Any) -> None:
        self.bucket = dict(state)


AGGREGATES = ("count", "min", "max", "mean", "sum", "first", "last")


@dataclass
class Window(Op):
    """Per-device tumbling windows of ``size_ms``, closed once the largest event time
    seen passes their end by ``lateness_ms``; a reading for a closed window is late
    (counted, dropped). Output fields: device, start, end, count, ``<field>_<agg>``.

    ``mode`` "last" (downsample) emits the window's last reading itself instead."""

    size_ms: int = 60_000
    lateness_ms: int = 0
    fields: tuple[str, ...] = ()
    aggregates: tuple[str, ...] = ("count", "mean")
    mode: str = "aggregate"
    #: device -> {start: [count, lo, hi, last_raw, last_fields, last_ts, {f: [min, max,
    #: sum, first, last]}]}
    open: dict[str, dict[int, list[Any]]] = field(default_factory=dict)
    watermark: int | None = None
    _heap: list[tuple[int, str, int]] = field(default_factory=list)

    def push(self, item: Item, emit: Emit) -> None:
        self.stats.readings_in += 1
        f = item.fields
        if type(f) is not dict:
            self._unfit(item, emit)
            return
        for n in self.fields:
            if not _number(f.get(n)):
                self._unfit(item, emit)
                return
        ts = item.ts
        wm = self.watermark
        if wm is None or ts > wm:
            wm = self.watermark = ts
        start = ts - ts % self.size_ms
        if start + self.size_ms + self.lateness_ms <= wm:
            self.stats.late += 1
        else:
            self._add(item, start, emit)
        heap = self._heap
        if heap and heap[0][0] + self.lateness_ms <= wm:
            self._close(wm, emit)

    def _add(self, item: Item, start: int, emit: Emit) -> None:
        dev = item.device
        wins = self.open.get(dev)
        if wins is None:  # devices leave ``open`` when their windows close: dict order is
            # the order of their oldest open window, the one to emit early when full
            if len(self.open) >= self.max_devices:
                old = next(iter(self.open))
                for s in sorted(self.open[old]):
                    self._emit(old, s, self.open[old][s], emit)
                del self.open[old]
            wins = self.open[dev] = {}
        acc = wins.get(start)
        f = item.fields
        if acc is None:
            acc = wins[start] = [0, item.lo, item.hi, None, None, item.ts,
                                 {n: [f[n], f[n], 0, f[n], f[n]] for n in self.fields}]
            heapq.heappush(self._heap, (start + self.size_ms, dev, start))
        acc[0] += 1
        if item.lo < acc[1]:
            acc[1] = item.lo
        if item.hi > acc[2]:
            acc[2] = item.hi
        acc[3], acc[4], acc[5] = item.raw, f, item.ts
        for n, a in acc[6].items():
            v = f[n]
            if v < a[0]:
                a[0] = v
            if v > a[1]:
                a[1] = v
            a[2] += v
            a[4] = v

    def _close(self, wm: int, emit: Emit) -> None:
        heap = self._heap
        while heap and heap[0][0] + self.lateness_ms <= wm:
            _end, dev, start = heapq.heappop(heap)
            wins = self.open.get(dev)
            acc = wins.pop(start, None) if wins else None
            if acc is None:
                continue  # emitted early (device evicted)
            if not wins:
                del self.open[dev]
            self._emit(dev, start, acc, emit)

    def _emit(self, dev: str, start: int, acc: list[Any], emit: Emit) -> None:
        self.stats.windows += 1
        self.stats.dropped += acc[0] - 1
        end = start + self.size_ms
        if self.mode == "last":
            self._out(Item(dev, acc[4], acc[5], acc[1], acc[2], acc[3]), emit)
            return
        out: dict[str, Any] = {"device": dev, "start": start, "end": end}
        n = acc[0]
        if "count" in self.aggregates:
            out["count"] = n
        for name, (mn, mx, total, first, last) in acc[6].items():
            for agg in self.aggregates:
                if agg == "count":
                    continue
                out[f"{name}_{agg}"] = {"min": mn, "max": mx, "sum": total, "first": first,
                                        "last": last, "mean": total / n}[agg]
        self._out(Item(dev, out, end, acc[1], acc[2]), emit)

    def state(self) -> Any:
        # Copies all the way down (the per-field accumulators change in place): the
        # checkpoint encodes it in a thread while readings go on arriving.
        return {"watermark": self.watermark,
                "open": [[d, [[s, [*acc[:3], None, acc[4] if self.mode == "last" else None,
                                   acc[5], {n: list(a) for n, a in acc[6].items()}]]
                              for s, acc in w.items()]]
                         for d, w in self.open.items()],
                # the last reading's bytes are emitted by mode "last" only
                "raw": [[d, [[s, acc[3].hex() if acc[3] is not None and self.mode == "last"
                              else None] for s, acc in w.items()]]
                        for d, w in self.open.items()]}

    def load(self, state: Any) -> None:
        self.watermark = state["watermark"]
        self.open = {d: {s: acc for s, acc in w} for d, w in state["open"]}
        for d, w in state["raw"]:
            for s, raw in w:
                self.open[d][s][3] = bytes.fromhex(raw) if raw is not None else None
        self._heap = [(s + self.size_ms, d, s) for d, w in self.open.items() for s in w]
        heapq.heapify(self._heap)


__all__ = ["AGGREGATES", "Deadband", "DownsampleFirst", "Filter", "Item", "Op", "OpStats",
           "Route", "Window"]
