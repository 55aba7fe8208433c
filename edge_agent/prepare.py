"""Turning a pipeline's messages into one batch: inspect, deduplicate, frame as records.

Strategy: ``Preparer._prepare`` is the per-reading half of ``ingest.StreamIngest`` (the
rest of the pipeline runs per batch), kept in its own module so that the pipeline's
batch loop, back-pressure and acknowledgements stay readable apart from it. Each message
is routed (the first stream whose filters match: a message another stream owns is left
to that stream's session; one no stream owns is dead-lettered as ``no_stream``),
inspected (``payload.PayloadRules``), judged against the per-device sequence marks
(``dedup``) and framed as a ``shared_log.Record`` with its headers, or dead-lettered.

Per reading, the usual case costs one pass with no extra objects: a pipeline fed by the
MQTT listener (``routed``) skips the route (the listener routed it already), and a
reading with a sequence number and a timestamp gets its headers as one tuple. Anything
unexpected raised while one message is handled dead-letters that message with reason
``internal`` (G7). Not thread-safe: the agent's event loop only.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from shared_log import Record

from .deadletter import DeadLetter
from .dedup import (
    ACCEPT,
    DUPLICATE,
    EPOCH_HEADER,
    RESET_CAUSES,
    SEQ_HEADER,
    HighWaterMarks,
    advance,
    judge,
)
from .inbox import IngestStats, InMessage, Pending
from .payload import PayloadRules, Rejected

log = logging.getLogger("edge_agent.ingest")

_LOG_EVERY_S = 10.0  # at most one log line per stream and kind in this many seconds
TS_HEADER = "device-ts"
TOPIC_HEADER = "mqtt-topic"
Header = tuple[str, bytes]


def headers_of(ct: Header | None, seq: int | None, boot: str, topic: str | None,
               ts: int | None) -> tuple[Header, ...]:
    """A record's headers, in their stored order: content type, sequence and boot epoch
    (with a sequence), MQTT topic (when the stream keeps it), device timestamp."""
    headers: tuple[Header, ...] = (ct,)  # type: ignore[assignment]  # None: unused
    if seq is not None:
        headers += ((SEQ_HEADER, b"%d" % seq),)
        if boot:
            headers += ((EPOCH_HEADER, boot.encode()),)
    if topic is not None:
        headers += ((TOPIC_HEADER, topic.encode()),)
    if ts is not None:
        headers += ((TS_HEADER, b"%d" % ts),)
    return headers


class Preparer:
    """The per-reading half of a pipeline (mixed into ``ingest.StreamIngest``)."""

    name: str
    route: Callable[[str], str | None]  # the agent's Router: a topic's owning stream
    store: object | None
    rules: PayloadRules | None
    marks: HighWaterMarks
    stats: IngestStats
    #: only the MQTT listener fills this pipeline's inbox, and only with its own topics
    routed: bool
    _ct: Header
    _logged_at: dict[str, float]
    _suppressed: Counter[str]


    def _prepare(self, msgs: list[InMessage]) -> Pending:
        p = Pending()
        st = self.stats
        st.received += len(msgs)
        records, meta, dead, acks = p.records, p.meta, p.dead, p.acks
        name, rules = self.name, self.rules
        route = None if self.routed and rules is not None else self.route
        marks = self.marks.marks
        window = self.marks.window
        seen: dict[str, tuple[str, int, str | None, int]] = {}
        now_ms = int(time.time() * 1000)
        ct = self._ct if self.store is not None else None
        with_topic = rules is not None and rules.topic_header
        dedup = qos0 = 0
        for msg in msgs:
            topic, payload, qos, mid, epoch = msg
            if qos:
                acks.append((mid, epoch))
            else:
                qos0 += 1
            try:  # free unless something raises (3.11 zero-cost exceptions)
                if route is not None:
                    owner = route(topic)
                    if owner != name or rules is None:
                        if owner is None:  # only the unmatched-topics pipeline sees these
                            dead.append(DeadLetter("", topic, "no_stream",
                                                   "topic matches no stream", "", payload,
                                                   qos))
                        continue  # another stream's session stores it
                r = rules.inspect(topic, payload)  # type: ignore[union-attr]
                if type(r) is Rejected:
                    dead.append(DeadLetter(name, topic, r.reason, r.detail, r.device,
                                           payload, qos))
                    continue
                device, seq, ts, boot = r  # type: ignore[misc]
                if seq is not None:
                    mark = seen.get(device)
                    if mark is None:
                        mark = marks.get(device)
                    if mark is not None and boot == mark[0] and seq > mark[1]:
                        new_mark = (boot, seq, mark[2], mark[3])  # in order: the usual case
                    else:
                        verdict = judge(mark, boot, seq, window)
                        if verdict == DUPLICATE:
                            dedup += 1
                            continue
                        if verdict != ACCEPT:
                            self._reset(device, mark, boot, seq, RESET_CAUSES[verdict])
                        new_mark = advance(mark, boot, seq)
                    if ts is not None and not boot and not with_topic:  # the usual reading
                        headers = (ct, (SEQ_HEADER, b"%d" % seq), (TS_HEADER, b"%d" % ts))
                    else:
                        headers = headers_of(ct, seq, boot, topic if with_topic else None, ts)
                else:
                    headers = headers_of(ct, None, boot, topic if with_topic else None, ts)
                records.append(Record(device.encode(), payload, now_ms, headers))
                if seq is not None:  # the mark moves once the record exists
                    seen[device] = new_mark
                meta.append((device, seq, qos, boot, topic))
            except Exception as exc:
                dead.append(self._internal(msg, exc))
        st.received_qos0 += qos0
        st.deduplicated += dedup
        st.dead_lettered += len(dead)
        return p

    def _internal(self, msg: InMessage, exc: BaseException) -> DeadLetter:
        """The dead-letter entry of a message whose handling raised (a bug, logged)."""
        topic, payload, qos = msg[0], msg[1], msg[2]
        self.stats.internal_errors += 1
        try:
            detail = f"{type(exc).__name__}: {exc}"[:200]
        except Exception:  # an exception whose str() raises too
            detail = type(exc).__name__
        self.stats.last_error = f"internal: {detail}"
        if self._may_log("internal"):
            log.error("stream %s: handling a message on %r raised; dead-lettered as "
                      "'internal'", self.name, str(topic)[:200], exc_info=exc)
        return DeadLetter(self.name, topic if type(topic) is str else repr(topic)[:200],
                          "internal", detail, "",
                          payload if type(payload) is bytes else b"", qos if qos in (0, 1) else 1)

    def _prepare_failed(self, msgs: list[InMessage], exc: BaseException) -> Pending:
        """A batch whose preparation raised outside any one message: dead-letter it all."""
        p = Pending()
        p.acks.extend((m[3], m[4]) for m in msgs if m[2])
        p.dead.extend(self._internal(m, exc) for m in msgs)
        self.stats.dead_lettered += len(p.dead)
        return p

    def _reset(self, device: str, mark: tuple[str, int, str | None, int] | None, boot: str,
               seq: int, cause: str) -> None:
        self.stats.resets[cause] += 1
        if self._may_log("reset"):
            assert mark is not None
            log.info("stream %s: device %s restarted its sequence (%s): epoch %r seq %d -> "
                     "epoch %r seq %d", self.name, device, cause, mark[0], mark[1], boot, seq)

    def _may_log(self, kind: str) -> bool:
        """Rate limit for lines a hostile device could trigger: one per kind per period."""
        now = time.monotonic()
        last = self._logged_at.get(kind)
        if last is not None and now - last < _LOG_EVERY_S:
            self._suppressed[kind] += 1
            return False
        self._logged_at[kind] = now
        n = self._suppressed.pop(kind, 0)
        if n:
            log.info("stream %s: %d more '%s' events in the last %.0f s", self.name, n, kind,
                     now - last if last is not None else 0.0)
        return True
