"""``edge-agent status``: fetch the running agent's status, or rebuild it from its files.

Strategy: the live document comes from ``GET /status`` on ``status.listen``. When the
agent does not answer, the same shape is rebuilt from disk: every stream's log (opened
read-only), its generation and acked checkpoint give offsets, backlog and the age of the
oldest unsent record; the counters come from the last ``status.json`` the agent wrote
(marked stale). Rendering is a rich table or the JSON document (``--json``).
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
from typing import Any

from shared_log import Log, read_checkpoint

from .agent import parse_listen, status_file
from .config import EdgeConfig
from .status import drain_eta, health
from .streams import ACKED_FILE, GENERATION_FILE


def fetch_live(cfg: EdgeConfig, timeout: float = 2.0) -> dict[str, Any]:
    import httpx

    host, port = parse_listen(cfg.status.listen)
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    resp = httpx.get(f"http://{host}:{port}/status", timeout=timeout)
    resp.raise_for_status()
    return resp.json()


def from_files(cfg: EdgeConfig, reason: str) -> dict[str, Any]:
    now = time.time()
    last: dict[str, Any] = {}
    with contextlib.suppress(OSError, ValueError):
        last = json.loads(status_file(cfg.data_dir).read_text())
    last_streams = {s.get("name"): s for s in last.get("streams", []) if isinstance(s, dict)}
    streams = []
    for sc in cfg.streams:
        d = cfg.data_dir / "streams" / sc.name
        prev = last_streams.get(sc.name, {})
        entry: dict[str, Any] = {"name": sc.name, "priority": sc.priority,
                                 "cloud_topic": sc.topic, "drops": prev.get("drops", {}),
                                 "uplink": prev.get("uplink", {})}
        for key in ("received", "appended", "pubacks", "deduplicated", "dead_lettered"):
            entry[key] = prev.get(key, 0)
        try:
            lg = Log(d, read_only=True)
        except (FileNotFoundError, OSError):
            entry.update(backlog_records=0, backlog_bytes=0, acked_offset=None,
                         end_offset=0, oldest_unsent_age_s=None, drain_eta_s=0.0)
            streams.append(entry)
            continue
        try:
            gen = (d / GENERATION_FILE).read_text().strip() if (d / GENERATION_FILE).exists() \
                else ""
            saved = read_checkpoint(d / ACKED_FILE, {})
            acked = lg.start_offset - 1
            if isinstance(saved, dict) and saved.get("generation") == gen \
                    and isinstance(saved.get("offset"), int):
                acked = max(acked, min(saved["offset"], lg.end_offset - 1))
            first = max(acked + 1, lg.start_offset)
            backlog = max(0, lg.end_offset - first)
            oldest = None
            if backlog:
                recs = lg.read(first, max_records=1, max_bytes=1)
                oldest = max(0.0, now - recs[0].timestamp / 1000) if recs else None
            entry.update(
                generation=gen, start_offset=lg.start_offset, end_offset=lg.end_offset,
                acked_offset=acked, backlog_records=backlog,
                backlog_bytes=sum(sz for _b, nxt, sz in lg.segments_info() if nxt > first),
                oldest_unsent_age_s=oldest,
                drain_eta_s=drain_eta(backlog, 0.0) if backlog == 0 else None,
                log_size_bytes=lg.size_bytes)
        finally:
            lg.close()
        streams.append(entry)
    doc: dict[str, Any] = {
        "edge_id": cfg.edge_id, "source": "files", "unreachable": reason, "time": now,
        "last_status_at": last.get("time"), "mqtt": [],
        "uplink": {**last.get("uplink", {}), "state": "agent not running"},
        "streams": streams, "dead_letter": last.get("dead_letter", {}),
    }
    doc["problems"] = [f"agent not reachable on {cfg.status.listen}: {reason}",
                       *health({"streams": streams}, now, cfg.status.stuck_after_s)]
    doc["healthy"] = False
    return doc


def get_status(cfg: EdgeConfig) -> dict[str, Any]:
    try:
        return fetch_live(cfg)
    except Exception as exc:  # any failure to reach the agent: show the files instead
        return from_files(cfg, f"{type(exc).__name__}: {exc}")


def _age(v: float | None) -> str:
    if v is None:
        return "-"
    if v < 120:
        return f"{v:.1f}s"
    if v < 7200:
        return f"{v / 60:.1f}m"
    return f"{v / 3600:.1f}h"


def _bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def render(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)  # pipes: do not wrap
    src = "live" if doc.get("source") == "agent" else "from files (agent not reachable)"
    state = "[green]healthy[/]" if doc.get("healthy") else "[red]unhealthy[/]"
    console.print(f"edge [bold]{doc.get('edge_id')}[/] - {src} - {state}")
    t = Table(show_header=True, header_style="bold")
    for col in ("stream", "prio", "backlog", "backlog bytes", "acked offset", "end offset",
                "oldest unsent", "drain ETA", "ingest/s", "drops", "dead-lettered"):
        t.add_column(col, justify="left" if col in ("stream", "drops") else "right")
    for s in doc.get("streams", []):
        drops = ", ".join(f"{k}={v}" for k, v in sorted(s.get("drops", {}).items())) or "-"
        eta = s.get("drain_eta_s")
        t.add_row(s["name"], str(s.get("priority", "")), str(s.get("backlog_records", "-")),
                  _bytes(s.get("backlog_bytes")), str(s.get("acked_offset", "-")),
                  str(s.get("end_offset", "-")), _age(s.get("oldest_unsent_age_s")),
                  ("0s" if eta == 0 else _age(eta)) if eta is not None else
                  ("stalled" if s.get("backlog_records") else "-"),
                  f"{s.get('ingest_rate', 0):.0f}" if "ingest_rate" in s else "-",
                  drops, str(s.get("dead_lettered", 0)))
    console.print(t)
    _render_edge_processing(console, doc)
    up = doc.get("uplink", {})
    console.print(f"uplink: {up.get('state', '?')} ({up.get('url', '')}), retries "
                  f"{up.get('retries', 0)}, last error: {up.get('last_error') or '-'}")
    if up.get("tls_error"):
        console.print(f"[red]uplink TLS:[/] {up['tls_error']}")
    for m in doc.get("mqtt", []):
        conn = "connected" if m.get("connected") else "disconnected"
        console.print(f"mqtt {m['client_id']}: {conn}, connects {m.get('connects', 0)}"
                      + (f", last error: {m['last_error']}" if m.get("last_error") else ""))
    lis = doc.get("mqtt_listener")
    if lis:
        console.print(f"mqtt listener {lis['listen']}: {lis['connections']} connections, "
                      f"{lis['sessions']} sessions, {lis['pubacks']} PUBACKs, refused "
                      f"{sum(lis['refused'].values())}, ACL denied {lis['acl_denied']}"
                      + (f", last: {lis['last_error']}" if lis.get("last_error") else ""))
    for t in doc.get("tasks", []):
        if t.get("failures"):
            state = "running" if t.get("running") else "down"
            console.print(f"task {t['name']}: {state}, {t['failures']} failure(s), last: "
                          f"{t.get('last_error') or '-'}")
    dl = doc.get("dead_letter", {})
    if dl:
        console.print(f"dead-letter log: {dl.get('records', 0)} records, "
                      f"{_bytes(dl.get('bytes', 0))}")
    for p in doc.get("problems", []):
        console.print(f"[red]problem:[/] {p}")


def _render_edge_processing(console: Any, doc: dict[str, Any]) -> None:
    """Transforms: readings and bytes in and out, the bytes ratio the uplink is spared."""
    from rich.table import Table

    runners = doc.get("transforms") or []
    if not runners:
        return
    t = Table(show_header=True, header_style="bold")
    for col in ("transforms of", "readings in", "records out", "bytes in", "bytes out",
                "in/out bytes", "lag", "late", "unfit"):
        t.add_column(col, justify="left" if col == "transforms of" else "right")
    for r in runners:
        ops = r.get("transforms", [])
        ratio = r.get("ratio")
        t.add_row(r["stream"], str(r.get("readings_in", 0)), str(r.get("records_out", 0)),
                  _bytes(r.get("bytes_in", 0)), _bytes(r.get("bytes_out", 0)),
                  f"{ratio:.1f}x" if ratio else "-", str(r.get("lag", 0)),
                  str(sum(o.get("late", 0) for o in ops)),
                  str(sum(o.get("unfit", 0) for o in ops)))
    console.print(t)
    for d in doc.get("derived_streams", []):
        console.print(f"derived stream {d['name']} (prio {d.get('priority')}): end offset "
                      f"{d.get('end_offset')}, acked {d.get('acked_offset')}, backlog "
                      f"{d.get('backlog_records', 0)}")
