"""The agent: wires streams, MQTT sessions, ingest pipelines, the forwarder and status.

Strategy: this module owns lifecycles and nothing else. Per stream there is one bundle:
its storage (streams.StreamStore), dedup marks, ingest pipeline, forwarder sender and
progress tracker, and its ingest adapter (``_adapter``): either the MQTT listener that
devices publish to (``listener/``, one for all streams, routing by topic), or one
persistent MQTT session to Mosquitto subscribed to that stream's topics. A session per
stream keeps streams independent: a stream held back by a full log stops acknowledging
only its own session, so Mosquitto keeps delivering the others.

The pipeline is wired in one place, ``Agent._wire_stream``: per stream, adapter ->
``inbox.Inbox`` -> ``ingest.StreamIngest`` -> the stream's log (bad input to the
dead-letter log). One durability waiter per append releases the PUBACKs to the adapter
and wakes the forwarder, whose ``StreamSender`` reads the same log.

Start order: lock the data directory, open the dead-letter log and every stream (log
recovery, generation, dedup marks from checkpoint + log tail), start the status server,
the forwarder, the pipelines and finally the MQTT sessions. Stop is the reverse:
disconnect MQTT first (unacknowledged messages stay queued in Mosquitto), then stop the
pipelines, make everything durable and checkpoint the dedup marks, stop the forwarder
(it persists the acked offsets), close the logs.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import status as status_mod
from .config import EdgeConfig
from .config_ingest import trickle_spacing
from .deadletter import DeadLetterLog
from .dedup import HighWaterMarks, checkpoint_recovered, load_marks, save_marks
from .edgeproc import EdgeProcessing
from .forwarder import Forwarder
from .inbox import Inbox
from .ingest import AckFn, StreamIngest
from .listener import Listener
from .metrics import AgentMetrics
from .mqtt_ingest import MqttSession
from .payload import PayloadRules
from .ratelimit import TokenBucket
from .routing import Router, parse_listen
from .stream_sender import StreamSender
from .streams import StreamStore, open_stream
from .supervisor import Supervisor
from .uplink_http import HttpUplink, Uplink

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
LOCK_FILE = "agent.lock"


class StartupError(Exception):
    """The agent cannot start; the message names the config key when one is to blame."""


@dataclass
class _Stream:
    store: StreamStore
    marks: HighWaterMarks
    ingest: StreamIngest
    sender: StreamSender
    tracker: status_mod.StreamTracker
    session: MqttSession | None  # None when devices publish to the listener


class Agent:
    def __init__(self, config: EdgeConfig, *, uplink: Uplink | None = None) -> None:
        self.config = config
        self.uplink = uplink
        self.streams: list[_Stream] = []
        self.sessions: list[MqttSession] = []
        self.unmatched: StreamIngest | None = None
        self.listener: Listener | None = None  # devices publish to the agent itself
        self.deadletters: DeadLetterLog | None = None
        self.forwarder: Forwarder | None = None
        self.edge = EdgeProcessing(config)  # derived streams, transforms, local readers
        self.metrics = AgentMetrics(self.snapshot)
        self.started_at = time.time()
        self.status_address: tuple[str, int] | None = None
        self.supervisor = Supervisor(backoff_max_s=config.status.restart_max_s)
        self._lock_fd: int | None = None
        self._server: Any = None
        self._status_sock: socket.socket | None = None

    # -- start ---------------------------------------------------------------------------

    def _lock(self) -> None:
        data = self.config.data_dir
        try:
            data.mkdir(parents=True, exist_ok=True)
            fd = os.open(data / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StartupError(f"data_dir: cannot use {data}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise StartupError(f"data_dir: {data} is in use by another edge-agent") from exc
        self._lock_fd = fd

    def _open_streams(self) -> list[tuple[StreamStore, HighWaterMarks]]:
        """Open the dead-letter log and every stream's storage (recovery, no I/O tasks)."""
        cfg = self.config
        ing = cfg.ingest
        self.deadletters = DeadLetterLog(cfg.data_dir, ing.dead_letter_max_bytes,
                                         ing.dead_letter_payload_bytes, ing.commit_interval_ms)
        opened = []
        for sc in cfg.streams:
            store = open_stream(cfg, sc)
            marks, replayed = load_marks(store.directory, store.log, store.generation,
                                         window=ing.dedup_window,
                                         max_devices=ing.dedup_max_devices)
            checkpoint_recovered(store, marks)
            opened.append((store, marks))
            log.info("stream %s: generation %s, offsets %d..%d, acked %d, %d devices "
                     "(%d records replayed for dedup)", sc.name, store.generation,
                     store.log.start_offset, store.log.end_offset, store.acked_offset,
                     len(marks), replayed)
        return opened

    def _wire_stream(self, store: StreamStore, marks: HighWaterMarks, sender: StreamSender,
                     forwarder: Forwarder, route: Router) -> _Stream:
        """Connect one stream's pipeline, every part at construction (see the module doc)."""
        cfg = self.config
        ing, sc = cfg.ingest, store.config
        assert self.deadletters is not None
        rules = PayloadRules(payload=sc.payload, device_key=sc.device_key,
                             sequence_field=ing.sequence_field,
                             timestamp_field=ing.timestamp_field,
                             epoch_field=ing.epoch_field,
                             require_sequence=sc.require_sequence,
                             max_payload_bytes=ing.max_payload_bytes)
        inbox = Inbox()
        session, ack = self._adapter(inbox, sc.name, [(t, sc.qos) for t in sc.topics])
        trickle = trickle_spacing(ing, sc.priority, cfg.mqtt.receive_maximum,
                                  self.listener is None and cfg.mqtt.protocol == "5")
        pipeline = StreamIngest(
            sc.name, store, rules, marks, self.deadletters, route,
            inbox=inbox, ack=ack,
            on_durable=self.edge.on_raw_durable(store, forwarder.notify),
            observe_fsync=self.metrics.observer(sc.name),
            max_batch=ing.batch_max_messages, window_s=ing.batch_window_ms / 1000,
            gather_s=ing.gather_ms / 1000, quiet_s=ing.commit_interval_ms / 1000,
            trickle_s=trickle[0], trickle_rate=trickle[1],
            retry_s=ing.backpressure_retry_ms / 1000, routed=self.listener is not None)
        now = time.time()
        tracker = status_mod.StreamTracker(store.acked_offset, store.log.end_offset, 0,
                                           now, sampled_at=now)
        return _Stream(store, marks, pipeline, sender, tracker, session)

    def _adapter(self, inbox: Inbox, name: str, subscriptions: list[tuple[str, int]]
                 ) -> tuple[MqttSession | None, AckFn]:
        """What fills ``inbox`` and takes its PUBACKs: the listener when there is one
        (``name`` "" is its unmatched-topics inbox), else a Mosquitto session."""
        if self.listener is not None:
            if name:
                self.listener.inboxes[name] = inbox
            return None, self.listener.ack
        mq = self.config.mqtt
        session = MqttSession(mq, f"{mq.client_id}-{name or 'unmatched'}", subscriptions,
                              inbox.submit)
        return session, session.ack

    def _wire_unmatched(self, route: Router) -> tuple[StreamIngest, MqttSession | None]:
        """The pipeline of topics no stream matches: dead letters only."""
        cfg = self.config
        assert self.deadletters is not None
        inbox = self.listener.unmatched if self.listener is not None else Inbox()
        session, ack = self._adapter(inbox, "", [(t, 1) for t in cfg.ingest.unmatched_topics])
        pipeline = StreamIngest("", None, None, None, self.deadletters, route, inbox=inbox,
                                ack=ack, max_batch=cfg.ingest.batch_max_messages)
        return pipeline, session

    def _make_uplink(self) -> Uplink:
        u = self.config.uplink
        bucket = TokenBucket(u.bandwidth_bytes_per_s) if u.bandwidth_bytes_per_s else None
        return HttpUplink(u.endpoints, u.token, timeout_s=u.timeout_s,
                          ca_file=u.ca_file, max_connections=max(2, u.max_in_flight),
                          bandwidth=bucket)

    def _status_socket(self) -> socket.socket:
        host, port = parse_listen(self.config.status.listen)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise StartupError(f"status.listen: cannot listen on {host}:{port}: {exc}") from exc
        sock.listen(64)
        sock.setblocking(False)
        self.status_address = sock.getsockname()[:2]
        return sock

    async def start(self) -> None:
        self._lock()
        self._status_sock = self._status_socket()
        cfg = self.config
        opened = self._open_streams()
        sup = self.supervisor
        try:
            sup.spawn("status-server", self._serve_status)
            if self.uplink is None:
                self.uplink = self._make_uplink()
            self.edge.open()
            senders, forwarded = self.edge.make_senders([store for store, _ in opened])
            self.forwarder = Forwarder(forwarded, self.uplink, cfg.uplink)
            sup.spawn("forwarder", self.forwarder.run)
            route = Router([(s.name, s.topics) for s in cfg.streams])
            if cfg.mqtt_listener is not None:
                self.listener = Listener(cfg.mqtt_listener, cfg.data_dir / "listener", route,
                                         {}, Inbox())
                self.listener.open()
            for (store, marks), sender in zip(opened, senders, strict=True):
                s = self._wire_stream(store, marks, sender, self.forwarder, route)
                self.streams.append(s)
                if s.session is not None:
                    self.sessions.append(s.session)
                # A failed pipeline may have taken readings it never acknowledged:
                # reconnect its session so Mosquitto redelivers them (dedup drops what
                # was stored), or drop the listener's connections that wait for PUBACKs.
                sup.spawn(f"ingest-{store.config.name}", s.ingest.run,
                          on_failure=self._reconnector(s.session))
            self.edge.spawn([s.store for s in self.streams], sup, self.forwarder.notify)
        except BaseException:
            for store, _ in opened[len(self.streams):]:  # stop() closes the wired ones
                store.log.close()
            raise
        if cfg.ingest.unmatched_topics or self.listener is not None:
            self.unmatched, sess = self._wire_unmatched(route)
            if sess is not None:
                self.sessions.append(sess)
            sup.spawn("ingest-unmatched", self.unmatched.run,
                      on_failure=self._reconnector(sess))
        sup.spawn("sampler", self._sample_loop)
        sup.spawn("dedup-checkpoints", self._dedup_loop)
        for sess in self.sessions:
            sup.spawn(f"mqtt-{sess.client_id}", sess.run)
        if self.listener is not None:
            sup.spawn("mqtt-listener-sessions", self.listener.sessions.run)
            sup.spawn("mqtt-listener", self.listener.run)

    def _serve_status(self) -> Any:
        """A fresh uvicorn server on the status socket (a new socket after a failure)."""
        sock = self._status_sock
        if sock is None or self._server is not None:  # a restart: the old one may be gone
            if sock is not None:
                sock.close()
            sock = self._status_sock = self._status_socket()
        st = self.config.status
        app = status_mod.create_app(self.snapshot, self.metrics.render, st.stuck_after_s,
                                    self.edge.reader)
        self._server = status_mod.status_server(app)
        return self._server.serve(sockets=[sock])

    def _reconnector(self, session: MqttSession | None) -> Any:
        why = "its ingest pipeline failed"
        if session is None:
            return lambda: self.listener and self.listener.drop_unacknowledged(why)
        return lambda: session.reconnect(why)

    # -- background loops ----------------------------------------------------------------

    async def _sample_loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(1.0)
            now = time.time()
            for s in self.streams:
                st = s.store
                s.tracker.observe(now, st.acked_offset, st.log.end_offset,
                                  s.ingest.stats.appended, st.backlog_records,
                                  received=s.ingest.stats.received,
                                  sent=s.sender.stats.records_sent)
            tick += 1
            if tick % 5 == 0:
                await self._write_status_file()

    async def _write_status_file(self) -> None:
        data = orjson.dumps(self.snapshot(), default=str,  # json.dumps: 6 ms a write
                            option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS)
        path = self.config.data_dir / STATUS_FILE

        def write() -> None:  # a hint for `edge-agent status`: atomic, not fsynced
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)

        with contextlib.suppress(OSError):
            await asyncio.to_thread(write)

    async def _dedup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.ingest.dedup_checkpoint_s)
            for s in self.streams:
                try:
                    await self._checkpoint_marks(s)
                except OSError as exc:
                    # ENOSPC: the checkpoint needs the room that only deleting acked
                    # segments can give. Free them anyway (a crash before the next
                    # checkpoint could then let a very late redelivery through) rather
                    # than hold ingest back forever.
                    log.warning("stream %s: dedup checkpoint failed (%s); freeing acked "
                                "segments without it", s.store.config.name, exc)
                    s.marks.dirty = True
                    s.store.delete_floor = None
                    s.store.free_acked()
                except Exception:
                    log.exception("stream %s: dedup checkpoint failed", s.store.config.name)

    async def _checkpoint_marks(self, s: _Stream) -> None:
        """Persist the marks of every durable record, then let segments below go."""
        if not s.marks.dirty:
            return
        store = s.store
        end = store.log.end_offset
        snapshot = dict(s.marks.marks)  # consistent with `end`: both change only together
        s.marks.dirty = False
        if end > 0:
            await store.log.wait_durable_async(end - 1)
        await asyncio.to_thread(save_marks, store.directory, store.generation, end, snapshot)
        store.delete_floor = end
        store.free_acked()

    # -- status --------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        return status_mod.build_status(self, time.time())

    # -- stop ----------------------------------------------------------------------------

    async def stop(self) -> None:
        self.supervisor.stopping = True  # tasks ending from here on are no failure
        for sess in self.sessions:
            with contextlib.suppress(Exception):
                await sess.close()
        if self.listener is not None:
            await self.listener.close()
        sup = self.supervisor
        sup.cancel({n for n in sup.tasks if n not in ("forwarder", "status-server")})
        for s in self.streams:
            with contextlib.suppress(Exception):
                await asyncio.to_thread(s.store.log.flush)
                save_marks(s.store.directory, s.store.generation, s.store.log.end_offset,
                           s.marks.marks)
        self.edge.stop()  # the transforms' last checkpoint (the runners were cancelled)
        sup.cancel({"forwarder"})
        if self._server is not None and sup.states["status-server"].running:
            self._server.leave()  # answers /status until the very end
        else:
            sup.cancel({"status-server"})
        await sup.wait()
        if self._status_sock is not None:
            self._status_sock.close()
        if self._lock_fd is not None:  # never overwrite the files of an agent we yielded to
            await self._write_status_file()
        if self.uplink is not None:
            with contextlib.suppress(Exception):
                await self.uplink.aclose()
        for s in self.streams:
            s.store.log.close()
        self.edge.close()
        if self.deadletters is not None:
            self.deadletters.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None


async def run_agent(config: EdgeConfig, stop: asyncio.Event, *,
                    uplink: Uplink | None = None) -> Agent:
    """Start an agent, run until ``stop`` is set, stop it. Returns the stopped agent."""
    agent = Agent(config, uplink=uplink)
    try:
        await agent.start()
        await stop.wait()
    finally:
        await agent.stop()
    return agent




def status_file(data_dir: Path) -> Path:
    return data_dir / STATUS_FILE
