"""The soak's resource figures: RSS and fd growth after warm-up, alarm lag, peaks.

Strategy: pure functions over the sampler's JSON lines. Growth is the slope of a least
squares line times the span it covers, fitted over a role's longest-lived incarnation
after the warm-up (the run's, and the incarnation's own first ``INCARNATION_WARMUP_S``:
a restarted process starts with a catch-up). For RSS the line goes through each
minute's low water, not through every sample: a catch-up after a fault (a backlog
pouring in, batches in flight) raises the RSS for a while and the heap trimmer gives it
back, while a leak raises the floor, minute after minute. The fit through every sample
is reported beside it (``raw_growth``). The same fit across all incarnations is reported
too (for a process killed every few seconds it shows start-up ramps, so it is not
judged). The bounds below are what the run is judged by, and only when the judged
incarnation has at least ``JUDGE_MIN_SPAN_S`` of samples after the warm-up: otherwise
the figures are printed without a judgement (the allocator has not settled).
"""

from __future__ import annotations

import bisect
import json
import statistics
from pathlib import Path
from typing import Any

MB = 1024 * 1024
#: role -> most RSS growth (bytes) allowed after warm-up
RSS_BOUNDS = {"agent": 2 * MB, "broker": 5 * MB}
#: role -> most open-fd growth allowed after warm-up ("flat", with room for a socket
#: or two in flight at the last sample)
FD_BOUNDS = {"agent": 4, "broker": 8}
JUDGE_MIN_SPAN_S = 120.0
#: a restarted process's own warm-up: its samples count after this many seconds of life
INCARNATION_WARMUP_S = 60.0
#: RSS is judged through the low water of each window this long
FLOOR_WINDOW_S = 60.0


def load(path: Path) -> list[dict[str, Any]]:
    out = []
    for text in path.read_text().splitlines():
        try:
            out.append(json.loads(text))
        except ValueError:
            continue
    return out


def _fit(pts: list[tuple[float, float]]) -> tuple[float, float]:
    """(slope x span, span) of the least squares line through ``pts``."""
    xs, ys = zip(*pts, strict=True)
    if len(pts) < 2 or xs[-1] == xs[0]:
        return 0.0, 0.0
    return statistics.linear_regression(xs, ys).slope * (xs[-1] - xs[0]), xs[-1] - xs[0]


def floors(pts: list[tuple[float, float]],
           window_s: float = FLOOR_WINDOW_S) -> list[tuple[float, float]]:
    """The low water of each ``window_s`` of ``pts`` (time-ordered), at the window's
    lowest sample."""
    out: list[tuple[float, float]] = []
    start = pts[0][0] if pts else 0.0
    low: tuple[float, float] | None = None
    for t, y in pts:
        if t - start >= window_s:
            if low is not None:
                out.append(low)
            start, low = t, None
        if low is None or y < low[1]:
            low = (t, y)
    if low is not None:
        out.append(low)
    return out


def growth(samples: list[dict[str, Any]], role: str, key: str,
           warmup_s: float) -> dict[str, Any] | None:
    """Growth of ``key`` after warm-up in the role's longest-lived incarnation (the one
    judged; through each minute's low water for RSS) and, for information, across all
    of them (a role killed every few seconds shows its start-up ramp there, not a leak)."""
    by_pid: dict[int, list[tuple[float, float]]] = {}
    counts_from: dict[int, float] = {}
    first_t = samples[0]["t"] if samples else 0.0
    for s in samples:
        proc = s["procs"].get(role)
        if proc is None or key not in proc:
            continue
        # a process there from the first sample is covered by the run's warm-up
        counts_from.setdefault(proc["pid"], warmup_s if s["t"] == first_t else max(
            warmup_s, s["t"] + INCARNATION_WARMUP_S))
        if s["t"] >= counts_from[proc["pid"]]:
            by_pid.setdefault(proc["pid"], []).append((s["t"], proc[key]))
    if not by_pid:
        return None
    longest = max(by_pid.values(), key=lambda pts: pts[-1][0] - pts[0][0])
    every = sorted(p for pts in by_pid.values() for p in pts)
    raw, span = _fit(longest)
    lows = floors(longest) if key == "rss" else []
    if len(lows) >= 3:  # the floor's slope, over the incarnation's whole span
        low, low_span = _fit(lows)
        g = low / low_span * span if low_span else 0.0
    else:  # too short for a floor: every sample
        g = raw
    all_g, all_span = _fit(every)
    pids = {s["procs"][role]["pid"] for s in samples if role in s["procs"]}
    return {"growth": g, "raw_growth": raw, "span_s": span, "all_growth": all_g,
            "all_span_s": all_span, "first": longest[0][1], "last": every[-1][1],
            "max": max(y for _, y in every), "incarnations": len(pids)}


def cpu_mean(samples: list[dict[str, Any]], role: str) -> float | None:
    vals = [s["procs"][role]["cpu"] for s in samples
            if role in s["procs"] and s["procs"][role]["cpu"] is not None]
    return statistics.fmean(vals) if vals else None


def _overlap(lo: float, hi: float, spans: list[tuple[float, float]]) -> float:
    """Seconds of [lo, hi] inside the union of ``spans``."""
    total, edge = 0.0, lo
    for a, b in sorted(spans):
        a, b = max(a, edge), min(b, hi)
        if b > a:
            total += b - a
            edge = b
    return total


def alarm_lag(samples: list[dict[str, Any]],
              cuts: list[tuple[float, float]] | None = None) -> dict[str, Any]:
    """How far the oldest alarm waiting at the edge is behind the oldest telemetry reading
    waiting, per sample: ``alarm_age - telemetry_age`` (0 when no alarm waits).

    In cluster mode the samples also hold the longest append wait of the alarm topic's
    partitions on the brokers (``append_wait``). While an alarm partition's stream elects
    a new leader (nats-server's followers wait 4-9 s for a lost one) no alarm of its
    devices can be written, whatever the edge does. ``cuts`` are the spells (sample
    time, start and end) when every broker was out of the agent's reach (the uplink
    cuts of the schedule): no stream delivers then, and once telemetry has caught up its
    age no longer offsets the alarm's, so the alarm's lag would count the cut itself.
    ``net_max_s`` is the lag less the longest election seen within the lag's own window
    and the part of the window inside a cut (not counted twice): what the pipeline
    added beyond the store and the network, which is what the bound judges there."""
    lags, waits = [], []
    for s in samples:
        if s.get("append_wait") is not None:
            waits.append((s["t"], s["append_wait"].get("alarms", 0.0)))
        agent = s.get("agent") or {}
        alarms, tele = agent.get("alarms"), agent.get("telemetry")
        if not alarms or not tele:
            continue
        a, t = alarms.get("oldest_s"), tele.get("oldest_s")
        lags.append((s["t"], 0.0 if a is None else a - (t or 0.0)))
    worst = max(lags, key=lambda x: x[1], default=(None, 0.0))
    out: dict[str, Any] = {"samples": len(lags), "max_s": worst[1], "at_s": worst[0]}
    if waits or cuts:
        times = [wt for wt, _ in waits]  # in sample order: sorted
        spans, nets = list(cuts or ()), []
        for t, lag in lags:
            w_at, w = max(waits[bisect.bisect_left(times, t - lag):
                                bisect.bisect_right(times, t)],
                          key=lambda x: x[1], default=(t, 0.0))
            cut = _overlap(t - lag, t, spans) - _overlap(max(t - lag, w_at - w), w_at, spans)
            nets.append((t, max(0.0, lag - w - cut)))
        net = max(nets, key=lambda x: x[1], default=(None, 0.0))
        out.update(net_max_s=net[1], net_at_s=net[0],
                   alarm_append_wait_max_s=max((w for _, w in waits), default=0.0))
    return out


def peaks(samples: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for s in samples:
        for stream, d in (s.get("agent") or {}).items():
            p = out.setdefault(stream, {"backlog": 0, "marks": 0, "evictions": 0})
            p["backlog"] = max(p["backlog"], d["backlog"])
            p["marks"] = max(p["marks"], d["marks"])
            p["evictions"] = max(p["evictions"], d["evictions"])
    return out


def judge(samples: list[dict[str, Any]], warmup_s: float,
          roles: list[str]) -> tuple[dict[str, Any], list[str]]:
    """Figures per role and the list of bounds broken (empty: fine)."""
    figures: dict[str, Any] = {}
    problems: list[str] = []
    for role in roles:
        rss, fds = growth(samples, role, "rss", warmup_s), growth(samples, role, "fds", warmup_s)
        net = growth(samples, role, "fds_net", warmup_s) if any(
            "fds_net" in s["procs"].get(role, {}) for s in samples) else None
        threads = growth(samples, role, "threads", warmup_s)
        figures[role] = {"rss": rss, "fds": fds, "threads": threads, "fds_net": net,
                         "cpu_mean": cpu_mean(samples, role)}
        for fig, bounds, unit, scale in ((rss, RSS_BOUNDS, "MB", MB),
                                         (net or fds, FD_BOUNDS,
                                          "fds (net of segment files)" if net else "fds", 1)):
            bound = bounds.get(role, bounds.get(role.split("-")[0]))  # broker-1: a broker
            if fig is None or bound is None or fig["span_s"] < JUDGE_MIN_SPAN_S:
                continue
            if fig["growth"] > bound:
                problems.append(f"{role} grew {fig['growth'] / scale:.2f} {unit} over "
                                f"{fig['span_s']:.0f} s after warm-up (bound "
                                f"{bound / scale:g} {unit})")
    return figures, problems
