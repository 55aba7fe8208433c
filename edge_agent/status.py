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
* TLS: the last send of a stream failed its TLS handshake (untrusted certificate...);
* MQTT: the broker refused a session (login, TLS) - at once -, or a session has been
  disconnected for ``status.mqtt_down_after_s`` (at most ``stuck_after_s``);
* tasks: a supervised task is down, or failed less than ``status.task_failure_window_s``
  ago (supervisor.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shared_log import Log, OffsetOutOfRange

from .mqtt_guard import FAST_PATHS
from .supervisor import task_problems

StatusDoc = dict[str, Any]
#: samples (one a second) of backlog kept per stream for the status document
HISTORY = 60


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
    received: int = 0
    sent: int = 0
    received_rate: float = 0.0
    sent_rate: float = 0.0
    #: the backlog (records) at the last HISTORY samples, oldest first: what ``edge-agent
    #: top`` draws as a sparkline from its first frame on
    backlog_history: deque[int] = field(default_factory=lambda: deque(maxlen=HISTORY))
    _oldest: tuple[int, int] | None = None  # (offset, timestamp ms) cache

    def observe(self, now: float, acked: int, end: int, appended: int, backlog: int,
                alpha: float = 0.3, *, received: int | None = None,
                sent: int | None = None) -> None:
        """Fold in one sample (the agent samples every second)."""
        dt = now - self.sampled_at if self.sampled_at else 0.0
        received = self.received if received is None else received
        sent = self.sent if sent is None else sent
        if dt > 0:
            self.ingest_rate += alpha * (max(0, appended - self.appended) / dt - self.ingest_rate)
            self.drain_rate += alpha * (max(0, acked - self.acked_offset) / dt - self.drain_rate)
            self.received_rate += alpha * (max(0, received - self.received) / dt
                                           - self.received_rate)
            self.sent_rate += alpha * (max(0, sent - self.sent) / dt - self.sent_rate)
        self.received, self.sent = received, sent
        self.backlog_history.append(backlog)
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
    up = s.get("uplink") or {}
    if up.get("stopped"):
        out.append(f"stream {name}: uplink stopped: {up['stopped']}")
    elif up.get("tls_error"):
        out.append(f"stream {name}: uplink: {up['tls_error']}")
    return out


def mqtt_problems(sessions: list[StatusDoc], now: float, stuck_after_s: float,
                  down_after_s: float | None = None) -> list[str]:
    limit = stuck_after_s if down_after_s is None else min(stuck_after_s, down_after_s)
    out = []
    for m in sessions:
        if m.get("connected"):
            continue
        since = m.get("disconnected_since")
        if m.get("refused"):
            out.append(f"mqtt {m['client_id']}: {m['refused']}")
        elif since is not None and now - since >= limit:
            out.append(f"mqtt {m['client_id']}: disconnected for {now - since:.0f}s: "
                       f"{m.get('last_error') or 'no error recorded'}")
    return out


def health(doc: StatusDoc, now: float, stuck_after_s: float, *,
           mqtt_down_after_s: float | None = None, task_window_s: float = 60.0) -> list[str]:
    """Every problem of a status document; empty when healthy."""
    problems = []
    for s in doc.get("streams", []):
        problems.extend(stream_problems(s, now, stuck_after_s))
    problems.extend(mqtt_problems(doc.get("mqtt", []), now, stuck_after_s, mqtt_down_after_s))
    problems.extend(task_problems(doc.get("tasks", []), now, task_window_s))
    return problems


def masked_url(url: str) -> str:
    """``url`` without its user info (a password, or a token as user name): the status
    document is readable by anyone who can reach ``status.listen``."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{scheme}://***@{authority.rpartition('@')[2]}{slash}{path}"


def _endpoints(agent: Any) -> StatusDoc:
    """The broker URL in use, every configured one, and how often the uplink switched."""
    urls = agent.config.uplink.endpoints
    ends = getattr(agent.forwarder.uplink, "endpoints", None) if agent.forwarder else None
    return {"url": masked_url(ends.current if ends is not None else urls[0]),
            "urls": [masked_url(u) for u in urls],
            "switches": ends.switches if ends is not None else 0}


def uplink_state(connected: bool, senders: list[StatusDoc]) -> str:
    if any(s.get("stopped") for s in senders):
        return "stopped"
    if not connected:
        return "retrying"
    if any(s.get("batches_sent") for s in senders):
        return "connected"
    return "idle"


# -- the status document -------------------------------------------------------------------

def build_status(agent: Any, now: float) -> StatusDoc:
    """The status document of a running agent (duck-typed: see agent.Agent)."""
    streams = [stream_status(s, now) for s in agent.streams]
    dl = agent.deadletters
    by_stream: dict[str, dict[str, int]] = {}
    if dl is not None:
        for (stream, reason), n in dl.counts.items():
            by_stream.setdefault(stream, {})[reason] = n
    senders = [s["uplink"] for s in streams]
    fwd = agent.forwarder
    doc: dict[str, Any] = {
        "edge_id": agent.config.edge_id,
        "source": "agent",
        "time": now,
        "started_at": agent.started_at,
        "pid": os.getpid(),
        "status_address": list(agent.status_address) if agent.status_address else None,
        "mqtt": [{"client_id": m.client_id, "connected": m.connected,
                  "subscribed": m.subscribed, "session_present": m.session_present,
                  "connects": m.connects, "last_error": m.last_error,
                  "refused": m.refused, "connect_failures": m.connect_failures,
                  "disconnected_since": m.disconnected_since} for m in agent.sessions],
        "mqtt_fast_paths": FAST_PATHS.status(),
        "mqtt_listener": agent.listener.status() if getattr(agent, "listener", None) else None,
        "uplink": {
            **_endpoints(agent),
            "state": uplink_state(fwd.connected if fwd else False, senders),
            "in_flight": fwd.in_flight if fwd else 0,
            "retries": sum(x["retries"] for x in senders),
            "last_error": next((x["last_error"] for x in senders if x["last_error"]), ""),
            "tls_error": next((x["tls_error"] for x in senders if x["tls_error"]), ""),
        },
        "streams": streams,
        "dead_letter": {
            "records": (dl.log.end_offset - dl.log.start_offset) if dl else 0,
            "bytes": dl.log.size_bytes if dl else 0,
            "failed": dl.failed if dl else 0,
            "by_stream": by_stream,
        },
    }
    sup = getattr(agent, "supervisor", None)
    doc["tasks"] = sup.status() if sup is not None else []
    st = agent.config.status
    edge = getattr(agent, "edge", None)
    if edge is not None:
        doc.update(edge.status())
    doc["problems"] = health(doc, now, st.stuck_after_s, mqtt_down_after_s=st.mqtt_down_after_s,
                             task_window_s=st.task_failure_window_s)
    doc["problems"] += doc.pop("edge_processing_problems", [])
    doc["healthy"] = not doc["problems"]
    return doc


def stream_status(s: Any, now: float) -> StatusDoc:
    store, st, tr = s.store, s.ingest.stats, s.tracker
    lg = store.log
    backlog = store.backlog_records
    first = max(store.acked_offset + 1, lg.start_offset)
    oldest = tr.oldest_unsent_ms(lg, first) if backlog else None
    drops = dict(st.dropped)
    if s.sender.lost:  # deleted and never acked: what the cloud will never have
        drops["drop_oldest"] = s.sender.lost
    ss = s.sender.stats
    sc = store.config
    return {
        "name": sc.name, "priority": sc.priority, "cloud_topic": sc.topic,
        "generation": store.generation, "start_offset": lg.start_offset,
        "end_offset": lg.end_offset, "acked_offset": store.acked_offset,
        "backlog_records": backlog, "backlog_bytes": store.backlog_bytes,
        "oldest_unsent_age_s": None if oldest is None else max(0.0, now - oldest / 1000),
        "drain_eta_s": drain_eta(backlog, tr.drain_rate),
        "ingest_rate": tr.ingest_rate, "drain_rate": tr.drain_rate,
        "received_rate": tr.received_rate, "sent_rate": tr.sent_rate,
        "backlog_history": list(tr.backlog_history),
        "acked_moved_at": tr.progress_at, "acked_records": tr.acked_records,
        "received": st.received, "appended": st.appended, "pubacks": st.pubacks,
        "deduplicated": st.deduplicated, "dead_lettered": st.dead_lettered,
        "drops": drops, "held": st.held + s.ingest.queued if st.write_error else 0,
        "blocked_since": st.blocked_since, "write_error": st.write_error,
        "devices": len(s.marks), "dedup_evictions": s.marks.evictions,
        "sequence_resets": dict(st.resets), "internal_errors": st.internal_errors,
        "log_size_bytes": lg.size_bytes,
        # appends and fsyncs of the log: readings per fsync is what the group commit saves
        "log_appends": lg.stats.appended_batches, "log_fsyncs": lg.stats.fsyncs,
        "hurried_commits": lg.hurried_commits,
        "max_bytes": sc.max_bytes, "full_policy": sc.full_policy,
        # every record the full policy deleted, and those whose batch is still on the
        # wire (counted in drops.drop_oldest only if that batch is not acked)
        "full_policy_deleted": lg.stats.dropped_records,
        "drop_oldest_in_flight": s.sender.dropped_in_flight,
        "uplink": {"retries": ss.retries, "last_error": ss.last_error,
                   "tls_error": ss.tls_error,
                   "stopped": s.sender.stopped, "batches_sent": ss.batches_sent,
                   "records_sent": ss.records_sent, "last_ack_at": ss.last_ack_at or None,
                   # of the records read for batches, those still in memory (not read
                   # back from the log: edge_agent.tail)
                   "records_from_memory": s.sender.tail.records_from_memory,
                   "records_from_log": s.sender.tail.records_from_log},
    }


# -- the HTTP app --------------------------------------------------------------------------

def status_server(app: Any) -> Any:
    """uvicorn's server for ``app``, minus two things an agent does not want: its signal
    handlers (the agent handles signals itself) and ten wake-ups a second. uvicorn's
    ``main_loop`` ticks every 100 ms to refresh the Date header (once a second) and to
    see ``should_exit``; here it ticks once a second, and ``leave()`` ends it at once."""
    import uvicorn  # imported here: the CLI's status command does not need it

    class StatusServer(uvicorn.Server):
        _leave: asyncio.Event | None = None

        def capture_signals(self) -> contextlib.AbstractContextManager[None]:
            return contextlib.nullcontext()

        async def main_loop(self) -> None:
            self._leave = leave = asyncio.Event()
            counter = 0  # uvicorn's on_tick refreshes the Date header when counter % 10 == 0
            while not await self.on_tick(counter):
                counter = (counter + 10) % 864000
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await leave.wait()

        def leave(self) -> None:
            self.should_exit = True
            if self._leave is not None:
                self._leave.set()

    return StatusServer(uvicorn.Config(app, log_level="warning", access_log=False,
                                       lifespan="off", http="h11", ws="none"))


def create_app(snapshot: Callable[[], StatusDoc], metrics_body: Callable[[], tuple[bytes, str]],
               stuck_after_s: float, local: Any = None) -> Any:
    """A tiny Starlette app: GET /status, /healthz, /metrics, the local consumers'
    ``/v1/streams/{name}/records`` (``local``: a local_read.LocalReader), and the
    operators' page at ``/ui`` (opsui), which polls /status."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from opsui import ui_routes

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

    async def records(request: Request) -> Response:
        if local is None:
            return JSONResponse({"error": "no streams here", "field": "name"}, 404)
        code, body = await local.read(request.path_params["name"], request.query_params)
        return JSONResponse(body, status_code=code)

    return Starlette(routes=[Route("/status", status), Route("/healthz", healthz),
                             Route("/metrics", metrics),
                             Route("/v1/streams/{name}/records", records),
                             *ui_routes("agent")])
