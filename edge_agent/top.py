"""``edge-agent top``: a live terminal view of one agent, read from its status endpoint.

Strategy: poll ``GET /status`` (top_doc.py fetches, bounds and checks it) every
``--interval`` seconds and redraw one rich frame: per stream the rates (received,
appended, sent, acked per second: the agent's own moving averages), the backlog with a
sparkline of its last minute (sampled by the agent, so it shows from the first frame),
the oldest unsent age with a sparkline kept here, the acked offset, drops and dead
letters by reason; then the uplink (state, last error), the MQTT sessions and the health
problems. It only needs the status address, so it runs over SSH on the gateway. Values
from the answer are shown as plain text (never as rich markup) and cut short.
``--once`` prints one frame and exits: 0 healthy, 1 unhealthy, 3 not reachable.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from typing import Any

from rich import box
from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from .top_doc import StatusError, fetch

SPARK = "▁▂▃▄▅▆▇█"
HISTORY = 60
MAX_STREAMS_SHOWN = 50
SPARK_WIDTH = 10
EXIT_UNREACHABLE = 3


def sparkline(values: list[float] | deque[float], width: int = 20) -> str:
    """The last ``width`` values as block characters, scaled to their maximum."""
    vals = list(values)[-width:]
    top = max(vals, default=0)
    if top <= 0:
        return SPARK[0] * len(vals)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))]
                   for v in vals)


def cut(value: Any, n: int = 80) -> str:
    s = str(value)
    return s if len(s) <= n else s[: n - 1] + "…"


def rate(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 10 or v == 0 else f"{v:.1f}"


def age(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 120:
        return f"{v:.1f}s"
    return f"{v / 60:.1f}m" if v < 7200 else f"{v / 3600:.1f}h"


def size(n: int | None) -> str:
    if n is None:
        return "-"
    f = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(f) < 1024 or unit == "GiB":
            return f"{f:.0f}{unit}" if unit == "B" else f"{f:.1f}{unit}"
        f /= 1024
    return str(n)


def counts(d: dict[str, int] | None) -> str:
    return ", ".join(f"{cut(k, 24)}={v}" for k, v in sorted((d or {}).items())) or "-"


class History:
    """What ``top`` remembers between frames: the oldest-unsent age per stream."""

    def __init__(self) -> None:
        self.oldest: dict[str, deque[float]] = {}

    def add(self, doc: dict[str, Any]) -> None:
        for s in doc.get("streams") or []:
            h = self.oldest.setdefault(s["name"], deque(maxlen=HISTORY))
            h.append(s.get("oldest_unsent_age_s") or 0.0)
        if len(self.oldest) > 4 * MAX_STREAMS_SHOWN:  # a peer renaming streams every poll
            names = {s["name"] for s in doc.get("streams") or []}
            self.oldest = {k: v for k, v in self.oldest.items() if k in names}


def _table(*columns: tuple[str, bool, int]) -> Table:
    t = Table(show_header=True, header_style="bold", box=box.SQUARE, pad_edge=False)
    for name, right, width in columns:
        t.add_column(name, justify="right" if right else "left", no_wrap=True,
                     min_width=width, max_width=16 if name == "stream" else None)
    return t


def _stream_tables(doc: dict[str, Any], hist: History) -> list[Table]:
    """Two tables, so that an 80-column terminal holds each: the flow (rates, backlog)
    and the state (oldest unsent, acked offset, drops, dead letters)."""
    flow = _table(("stream", False, 6), ("recv/s", True, 6), ("app/s", True, 5),
                  ("sent/s", True, 6), ("ack/s", True, 5), ("backlog", True, 7),
                  ("bytes", True, 7), ("last 60s", False, SPARK_WIDTH))
    state = _table(("stream", False, 6), ("oldest unsent", True, 13),
                   ("age trend", False, SPARK_WIDTH), ("acked offset", True, 12),
                   ("drops", False, 5), ("dead letters", False, 12))
    dead = (doc.get("dead_letter") or {}).get("by_stream") or {}
    streams = doc.get("streams") or []
    for s in streams[:MAX_STREAMS_SHOWN]:
        name = s["name"]
        label = Text(cut(name, 20), style="red" if s.get("write_error") else "")
        backlog_hist = s.get("backlog_history") or [s.get("backlog_records") or 0]
        flow.add_row(label, rate(s.get("received_rate")), rate(s.get("ingest_rate")),
                     rate(s.get("sent_rate")), rate(s.get("drain_rate")),
                     str(s.get("backlog_records", "-")), size(s.get("backlog_bytes")),
                     Text(sparkline(backlog_hist, SPARK_WIDTH), style="cyan"))
        state.add_row(label, age(s.get("oldest_unsent_age_s")),
                      Text(sparkline(hist.oldest.get(name, ()), SPARK_WIDTH), style="yellow"),
                      "-" if s.get("acked_offset") is None else str(s["acked_offset"]),
                      Text(counts(s.get("drops"))),
                      Text(counts(dead.get(name)) if name in dead
                           else str(s.get("dead_lettered", 0))))
    if len(streams) > MAX_STREAMS_SHOWN:
        state.caption = f"... and {len(streams) - MAX_STREAMS_SHOWN} more streams"
    return [flow, state]


_STATE_STYLE = {"connected": "green", "idle": "yellow", "retrying": "red", "stopped": "red"}


def view(doc: dict[str, Any], hist: History, source: str = "") -> Group:
    """One frame for a checked status document."""
    head = Text()
    head.append("edge ", style="bold")
    head.append(cut(doc.get("edge_id", "?"), 40), style="bold")
    head.append("  ")
    healthy = doc.get("healthy")
    head.append("healthy" if healthy else "unhealthy", style="green" if healthy else "red")
    if doc.get("time") is not None and doc.get("started_at") is not None:
        head.append(f"  up {age(max(0.0, doc['time'] - doc['started_at']))}"
                    " (counters count from the agent's start)")
    if source:
        head.append(f"  {cut(source, 60)}", style="dim")
    parts: list[Any] = [head, *_stream_tables(doc, hist)]
    up = doc.get("uplink") or {}
    line = Text("uplink: ")
    state = up.get("state") or "?"
    line.append(cut(state, 30), style=_STATE_STYLE.get(state, ""))
    line.append(f"  {cut(up.get('url', ''), 60)}  in flight {up.get('in_flight', 0)}, "
                f"retries {up.get('retries', 0)}, last error: "
                f"{cut(up.get('last_error') or '-', 120)}")
    parts.append(line)
    if up.get("tls_error"):
        parts.append(Text(f"uplink TLS: {cut(up['tls_error'], 160)}", style="red"))
    for m in (doc.get("mqtt") or [])[:MAX_STREAMS_SHOWN]:
        conn = m.get("connected")
        t = Text(f"mqtt {cut(m.get('client_id', '?'), 40)}: ")
        t.append("connected" if conn else "disconnected", style="green" if conn else "red")
        err = m.get("refused") or m.get("last_error")
        if err and not conn:
            t.append(f", {cut(err, 120)}")
        parts.append(t)
    dl = doc.get("dead_letter") or {}
    if dl.get("records"):
        parts.append(Text(f"dead-letter log: {dl['records']} records, "
                          f"{size(dl.get('bytes', 0))}"))
    problems = doc.get("problems") or []
    for p in problems[:20]:
        parts.append(Text(f"problem: {cut(p, 200)}", style="red"))
    if len(problems) > 20:
        parts.append(Text(f"... and {len(problems) - 20} more problems", style="red"))
    return Group(*parts)


def error_view(message: str, url: str) -> Text:
    return Text(f"edge-agent top: {cut(message, 300)}\n(retrying {cut(url, 80)} ...)",
                style="red")


def once(url: str, console: Console, timeout: float = 2.0) -> int:
    """Print one frame; 0 healthy, 1 unhealthy, EXIT_UNREACHABLE when it cannot be read."""
    try:
        doc = fetch(url, timeout)
    except StatusError as exc:
        print(f"edge-agent top: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    hist = History()
    hist.add(doc)
    console.print(view(doc, hist, url))
    return 0 if doc.get("healthy") else 1


def live(url: str, console: Console, interval: float = 1.0, timeout: float = 2.0) -> int:
    """Redraw every ``interval`` seconds until Ctrl-C; errors are shown and retried."""
    from rich.live import Live

    hist = History()
    with Live(console=console, auto_refresh=False, screen=False,
              redirect_stderr=False) as screen:
        try:
            while True:
                started = time.monotonic()
                try:
                    doc = fetch(url, timeout)
                    hist.add(doc)
                    frame: Any = view(doc, hist, url)
                except StatusError as exc:
                    frame = error_view(str(exc), url)
                screen.update(frame, refresh=True)
                time.sleep(max(0.05, interval - (time.monotonic() - started)))
        except KeyboardInterrupt:
            return 0


__all__ = ["EXIT_UNREACHABLE", "History", "live", "once", "sparkline", "view"]
