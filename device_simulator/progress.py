"""What the operator sees: a live table during a run, and the final summaries.

Strategy: the runner calls ``LiveProgress.update`` with aggregated counters; the
display keeps a short window of samples to show the current rate (not the
average since the start, which hides stalls).  It is a no-op when stdout is not
a terminal or with ``--quiet``, so scripts and CI logs get only the summary.
Rendering is separate from counting: ``summary_table`` and ``report_table``
build rich tables from the plain dicts that ``--json`` prints as they are.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

_WINDOW_S = 3.0


class LiveProgress:
    """A rich.live display of a run; use as a context manager."""

    def __init__(self, console: Console, total_devices: int, duration: float,
                 enabled: bool) -> None:
        self.console = console
        self.total_devices = total_devices
        self.duration = duration
        self.enabled = enabled and console.is_terminal
        self._samples: deque[tuple[float, int]] = deque()
        self._live: Live | None = None
        self._last: dict[str, Any] = {}

    def __enter__(self) -> LiveProgress:
        if self.enabled:
            self._live = Live(self._render(), console=self.console, refresh_per_second=4,
                              transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(None, None, None)

    def rate(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def update(self, total: dict[str, Any]) -> None:
        now = time.monotonic()
        self._samples.append((now, total.get("readings", 0)))
        while self._samples and now - self._samples[0][0] > _WINDOW_S:
            self._samples.popleft()
        self._last = total
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Group:
        t = self._last
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column(justify="right")
        phase = t.get("phase", "starting")
        elapsed = t.get("elapsed", 0.0)
        table.add_row("phase", f"{phase}  {min(elapsed, self.duration):.0f}/{self.duration:g} s")
        table.add_row("connected", f"{t.get('connected', 0):,}/{t.get('connections', 0):,}")
        table.add_row("rate", f"{self.rate():,.0f} msg/s")
        table.add_row("readings", f"{t.get('readings', 0):,}")
        table.add_row("acked (QoS 1)", f"{t.get('acked', 0):,}")
        table.add_row("in flight / queued", f"{t.get('inflight', 0):,} / {t.get('pending', 0):,}")
        table.add_row("reconnects", f"{t.get('reconnects', 0):,}")
        errors = t.get("errors", 0)
        table.add_row("errors", Text(f"{errors:,}", style="red" if errors else ""))
        return Group(Text("device-sim", style="bold cyan"), table)


def summary_table(summary: dict[str, Any]) -> Table:
    """The end-of-run summary."""
    table = Table(title="device-sim run", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("devices / connections", f"{summary['devices']:,} / {summary['connections']:,}"),
        ("connected at start", f"{summary['connected_at_start']:,}"),
        ("workers", str(summary["workers"])),
        ("connect time", f"{summary['connect_seconds']:.1f} s"),
        ("publish time", f"{summary['publish_seconds']:.1f} s"),
        ("readings", f"{summary['readings']:,}"),
        ("messages sent", f"{summary['sent']:,}"),
        ("rate achieved / target",
         f"{summary['readings_per_s']:,.0f} / {summary['target_rate']:,.0f} msg/s"),
        ("acked (QoS 1)", f"{summary['acked']:,}"),
        ("deferred (congested)", f"{summary['deferred']:,}"),
        ("behind schedule", f"{summary['behind']:,}"),
        ("worker CPU per reading", f"{summary['cpu_us_per_reading']:.1f} us"),
        ("dropped (offline buffer)", f"{summary['dropped']:,}"),
        ("reconnects", f"{summary['reconnects']:,}"),
        ("connection errors", f"{summary['connection_errors']:,}"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    for err in summary.get("worker_errors", []):
        table.add_row(Text("worker error", style="red"), Text(str(err)[-300:], style="red"))
    for err in summary.get("connect_errors", [])[:3]:
        table.add_row(Text("connect error", style="yellow"), str(err))
    return table


def report_table(report: dict[str, Any], limit: int = 20) -> Group:
    """The verifier's report: totals, latency, and the devices with problems."""
    ok = report["ok"]
    head = Text(f"verify: {'PASS' if ok else 'FAIL'}", style="bold green" if ok else "bold red")
    totals = Table(show_header=False)
    totals.add_column(style="bold")
    totals.add_column(justify="right")
    totals.add_row("records read", f"{report['records']:,}")
    totals.add_row("devices", f"{report['devices']:,} ({report['devices_with_problems']:,} "
                              "with problems)")
    for name, value in report["totals"].items():
        totals.add_row(name.replace("_", " "), f"{value:,}")
    for name, value in report["sent_on_purpose"].items():
        totals.add_row(f"{name} (per manifest)", f"{value:,}")
    lat = report.get("latency_ms")
    if lat:
        totals.add_row("latency p50/p90/p99/max",
                       f"{lat['p50']:.0f} / {lat['p90']:.0f} / {lat['p99']:.0f} / "
                       f"{lat['max']:.0f} ms")
    totals.add_row("latency measured from", report["latency_source"])
    parts: list[Any] = [head, totals]
    bad = [(n, d) for n, d in report.get("per_device", {}).items() if not d["ok"]]
    if bad:
        table = Table(title=f"devices with problems (first {min(limit, len(bad))} of {len(bad)})")
        for col in ("device", "missing", "duplicates", "out of order", "partitions",
                    "first missing"):
            table.add_column(col)
        for name, d in bad[:limit]:
            first = d["missing_ranges"][:3]
            table.add_row(name, str(d["missing"]), str(d["duplicates"]), str(d["out_of_order"]),
                          ",".join(map(str, d["partitions"])),
                          " ".join(f"{a}-{b}" if a != b else str(a) for a, b in first))
        parts.append(table)
    return Group(*parts)
