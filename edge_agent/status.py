"""Status and health: per-stream progress tracking, the health rules, the HTTP app.

Strategy: one status document (a plain dict, JSON as-is) is assembled from the agent's
parts on demand; ``GET /status`` returns it, ``/healthz`` applies the health rules to it,
``/metrics`` renders it for Prometheus (metrics.py), and the agent writes it to
``<data_dir>/status.json`` now and then so ``edge-agent status`` has something to show
when the agent is down. The rules are pure functions of that document and the time, so
they are tested without an agent.

Health rules (each failing rule adds a human-readable problem; 503 when any fails):

* stuck: a stream has a backlog and its acked offset has not moved for
  ``status.stuck_after_s`` (the clock starts when the backlog appears);
* not writable: a stream's appends fail (log full with reject_new, disk full, fsync
  error) - readings are held unacknowledged in Mosquitto meanwhile;
* stopped: the cloud refused a stream's batch for good (FatalUplinkError);
* MQTT: a session has been disconnected for longer than ``stuck_after_s``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared_log import Log, OffsetOutOfRange

StatusDoc = dict[str, Any]


@dataclass
class StreamTracker:
    """Progress of one stream over time: rates (EWMA), when the acked offset last moved."""

    acked_offset: int
    end_offset: int
    appended: int
    progress_at: float
    ingest_rate: float = 0.0
    drain_rate: float = 0.0
    acked_records: int = 0
    sampled_at: float = 0.0
    _oldest: tuple[int, int] | None = None  # (offset, timestamp ms) cache

    def observe(self, now: float, acked: int, end: int, appended: int, backlog: int,
                alpha: float = 0.3) -> None:
        """Fold in one sample (the agent samples every second)."""
        dt = now - self.sampled_at if self.sampled_at else 0.0
        if dt > 0:
            self.ingest_rate += alpha * (max(0, appended - self.appended) / dt - self.ingest_rate)
            self.drain_rate += alpha * (max(0, acked - self.acked_offset) / dt - self.drain_rate)
        if acked > self.acked_offset:
            self.acked_records += acked - self.acked_offset
            self.progress_at = now
        elif self.end_offset - 1 <= self.acked_offset and backlog > 0:
            self.progress_at = now  # the backlog just appeared: the clock starts now
        self.acked_offset, self.end_offset, self.appended = acked, end, appended
        self.sampled_at = now

    def oldest_unsent_ms(self, log: Log, first_unacked: int) -> int | None:
        """Timestamp (ms) of the first unacknowledged record, cached per offset."""
        if first_unacked >= log.end_offset:
            return None
        if self._oldest is not None and self._oldest[0] == first_unacked:
            return self._oldest[1]
        try:
            recs = log.read(first_unacked, max_records=1, max_bytes=1)
        except OffsetOutOfRange:
            return None
        if not recs:
            return None
        self._oldest = (first_unacked, recs[0].timestamp)
        return recs[0].timestamp


def drain_eta(backlog: int, drain_rate: float) -> float | None:
    """Seconds until the backlog is acked at the current rate; None when not draining."""
    if backlog <= 0:
        return 0.0
    if drain_rate <= 1e-9:
        return None
    return backlog / drain_rate


# -- health rules (pure) -------------------------------------------------------------------

def stream_problems(s: StatusDoc, now: float, stuck_after_s: float) -> list[str]:
    out = []
    name = s["name"]
    backlog = s.get("backlog_records", 0)
    moved = s.get("acked_moved_at")
    if backlog > 0 and moved is not None and now - moved >= stuck_after_s:
        out.append(f"stream {name}: stuck: {backlog} records waiting and the acked offset "
                   f"has not moved for {now - moved:.0f}s (stuck_after_s={stuck_after_s:g})")
    if s.get("write_error"):
        out.append(f"stream {name}: log cannot be written: {s['write_error']}")
    stopped = (s.get("uplink") or {}).get("stopped")
    if stopped:
        out.append(f"stream {name}: uplink stopped: {stopped}")
    return out


def mqtt_problems(sessions: list[StatusDoc], now: float, stuck_after_s: float) -> list[str]:
    out = []
    for m in sessions:
        since = m.get("disconnected_since")
        if not m.get("connected") and since is not None and now - since >= stuck_after_s:
            out.append(f"mqtt {m['client_id']}: disconnected for {now - since:.0f}s: "
                       f"{m.get('last_error') or 'no error recorded'}")
    return out


def health(doc: StatusDoc, now: float, stuck_after_s: float) -> list[str]:
    """Every problem of a status document; empty when healthy."""
    problems = []
    for s in doc.get("streams", []):
        problems.extend(stream_problems(s, now, stuck_after_s))
    problems.extend(mqtt_problems(doc.get("mqtt", []), now, stuck_after_s))
    return problems


def uplink_state(connected: bool, senders: list[StatusDoc]) -> str:
    if any(s.get("stopped") for s in senders):
        return "stopped"
    if not connected:
        return "retrying"
    if any(s.get("batches_sent") for s in senders):
        return "connected"
    return "idle"


# -- the HTTP app --------------------------------------------------------------------------

def create_app(snapshot: Callable[[], StatusDoc], metrics_body: Callable[[], tuple[bytes, str]],
               stuck_after_s: float) -> Any:
    """A tiny Starlette app: GET /status, /healthz, /metrics."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def status(request: Request) -> Response:
        return JSONResponse(snapshot())

    async def healthz(request: Request) -> Response:
        doc = snapshot()
        problems = doc["problems"]
        body = {"status": "ok" if not problems else "unhealthy", "problems": problems}
        return JSONResponse(body, status_code=200 if not problems else 503)

    async def metrics(request: Request) -> Response:
        data, content_type = metrics_body()
        return Response(data, media_type=content_type)

    return Starlette(routes=[Route("/status", status), Route("/healthz", healthz),
                             Route("/metrics", metrics)])
