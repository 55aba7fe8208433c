"""Runs one stream's transforms on its log, writing derived streams, exactly once.

Strategy (the argument is in docs/edge-processing.md): the runner reads the raw log
from ``input_next`` up to its *durable* offset, pushes each reading through the chain
(ops.py: deterministic, event time only) and appends what comes out to the derived
logs; each derived record carries ``src = "<lo>-<hi>"``, the raw offsets it came from.
Every ``checkpoint_s`` it waits until the derived logs are durable, then writes one
checkpoint file atomically: the raw generation and ``input_next``, each derived log's
generation and end offset, and the transforms' state. That triple is consistent: the
derived logs hold exactly the output of raw ``[.., input_next)``.

After kill -9 the derived logs may hold more than the checkpoint says (records derived
after it). The runner restarts from the checkpoint's input offset and state - open
windows are rebuilt by re-reading the raw log, which is kept from that offset on
(``StreamStore.keep_from``) - and re-derives: the first outputs per derived log are
those already stored, so they are compared with the stored ones (``rederived`` /
``rederive_mismatch``) instead of appended. Derived offsets therefore never change
meaning, and the uplink's offset dedup (G3) sends each derived record to the cloud once.

Not thread-safe: runs on the agent's event loop (``step`` is synchronous and bounded by
``batch`` readings, so the loop is never held long).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import orjson

from shared_log import OffsetOutOfRange, Record, atomic_write, fetch_columns

from .ops import Item, Op
from .spec import TransformSpec, build_chain

#: an edge_agent.streams.StreamStore, given by the agent (not imported: config imports
#: this package, and streams imports config)
StreamStore = Any

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "transforms.json"
JSON_CT = b"application/json"
_CT = {"json": JSON_CT, "cbor": b"application/cbor"}


#: A device's event time more than this ahead of the time the gateway received the reading
#: is not trusted: the receive time stands in for it (counted as ``clock_ahead``). Event
#: time drives every window's close: one device whose clock says 2100 would otherwise
#: close all windows at once and make every other device's readings late from then on.
#: The receive time is stored in the raw log, so a replay decides the same way.
MAX_CLOCK_AHEAD_MS = 300_000


@dataclass
class RunnerStats:
    readings_in: int = 0
    bytes_in: int = 0
    records_out: int = 0
    bytes_out: int = 0
    rederived: int = 0
    rederive_mismatch: int = 0
    lost: int = 0  # raw readings deleted by the full policy before they were transformed
    internal_errors: int = 0
    clock_ahead: int = 0  # readings stamped too far ahead of their receive time
    checkpoints: int = 0
    per_output: dict[str, int] = field(default_factory=dict)


def _decoder(payload: str) -> Callable[[bytes], Any]:
    loads = orjson.loads if payload == "json" else cbor2.loads

    def decode(b: bytes) -> Any:
        try:
            return loads(b)
        except Exception:  # an undecodable payload is "unfit", not fatal
            return None
    return decode


class TransformRunner:
    """One raw stream's chain; ``outputs`` maps derived stream names to their stores."""

    def __init__(self, raw: StreamStore, specs: tuple[TransformSpec, ...], main: str,
                 outputs: dict[str, StreamStore], *, timestamp_field: str = "ts",
                 forward_raw: bool = True, batch: int = 2000) -> None:
        self.raw, self.specs, self.main, self.outputs = raw, specs, main, outputs
        self.ts_field = timestamp_field
        self.forward_raw = forward_raw
        self.batch = batch
        self.decode = _decoder(raw.config.payload)
        self.raw_ct = _CT.get(raw.config.payload, JSON_CT)
        self.stats = RunnerStats(per_output=dict.fromkeys(outputs, 0))
        self.path = raw.directory / CHECKPOINT_FILE
        self._write_lock = threading.Lock()
        self.ops: list[Op] = []
        self.input_next = 0
        self._pending: dict[str, list[Record]] = {n: [] for n in outputs}
        #: per derived log, the records stored beyond the checkpoint, oldest first (None:
        #: one already deleted - acked and freed - skipped without comparing)
        self._expected: dict[str, deque[Any]] = {n: deque() for n in outputs}
        self._head: Callable[[Item], None] = self._emit_main
        self._ran = False
        self._saved_input = 0  # the input offset of the last checkpoint written or loaded
        self._names: dict[bytes, str] = {}  # device keys seen (bounded): no decode per reading
        self.recover()

    # -- recovery and checkpoints ---------------------------------------------------------

    def _fresh(self) -> None:
        self.ops = build_chain(self.specs, self._emit)
        nxt = self._emit_main
        for op in reversed(self.ops):
            nxt = (lambda o, n: lambda item: o.push(item, n))(op, nxt)
        self._head = nxt

    def recover(self) -> None:
        """Resume from the checkpoint, or start at the raw log's start with empty state."""
        self._fresh()
        ck = _read(self.path)
        ok = (isinstance(ck, dict) and ck.get("generation") == self.raw.generation
              and ck.get("specs") == self._spec_id()
              and isinstance(ck.get("outputs"), dict)
              and all(self._output_ok(n, ck["outputs"].get(n)) for n in self.outputs))
        if not ok:
            self.input_next = self.raw.log.start_offset
            self.checkpoint_now()  # derived logs' ends as they are: a fresh start point
            return
        try:
            for op, st in zip(self.ops, ck["state"], strict=True):
                op.load(st)
        except Exception:  # a damaged state: start over, loudly
            log.exception("stream %s: transform state unreadable; starting over",
                          self.raw.config.name)
            self._fresh()
            self.input_next = self.raw.log.start_offset
            self.checkpoint_now()
            return
        self.input_next = self._saved_input = ck["input"]
        for n, out in self.outputs.items():
            end = ck["outputs"][n][1]
            out.keep_from = end
            if out.log.end_offset > end:
                gone = max(0, min(out.log.start_offset, out.log.end_offset) - end)
                self._expected[n] = deque([None] * gone)
                self._expected[n].extend((r.key, r.value, r.timestamp, r.headers)
                                         for r in _read_all(out, end))
        self._set_floor()

    def _spec_id(self) -> str:
        return repr(self.specs)

    def _output_ok(self, name: str, saved: Any) -> bool:
        out = self.outputs[name]
        return (isinstance(saved, list) and len(saved) == 2 and saved[0] == out.generation
                and isinstance(saved[1], int) and saved[1] <= out.log.end_offset)

    def _snapshot(self) -> dict[str, Any]:
        """The checkpoint as of now, as a document (encoded by ``_write``, off the event
        loop in ``checkpoint``: at 100,000 devices the JSON alone is ~0.1 s); valid
        once every derived log is durable to its end. Every op's ``state`` is a copy, so
        the loop may go on changing the ops meanwhile. The caller keeps the document, so
        it never parses back what it just wrote.

        Each derived log then keeps its segments from the end the checkpoint names
        (``keep_from``), so a restart finds every record it has to re-derive."""
        self.flush_pending()
        doc = {"generation": self.raw.generation, "input": self.input_next,
               "specs": self._spec_id(),
               "outputs": {n: [o.generation, o.log.end_offset - len(self._expected[n])]
                           for n, o in self.outputs.items()},
               "state": [op.state() for op in self.ops]}
        return doc

    def checkpoint_now(self) -> None:
        """Synchronous checkpoint (start, tests, benchmarks): flush, then write."""
        doc = self._snapshot()
        for o in self.outputs.values():
            o.log.flush()
        self._write(doc)
        self._checkpointed(doc)

    async def checkpoint(self) -> None:
        doc = self._snapshot()
        for o in self.outputs.values():
            if o.log.end_offset > 0:
                await o.log.wait_durable_async(o.log.end_offset - 1)
        await asyncio.to_thread(self._write, doc)
        self._checkpointed(doc)

    def _write(self, doc: dict[str, Any]) -> None:
        """Encode and write ``doc``; one writer of the checkpoint file at a time.
        Cancelling ``checkpoint`` does not stop its thread, so the agent's last
        ``checkpoint_now`` at shutdown could otherwise share the temp file with it, or be
        overwritten by the older checkpoint."""
        data = json.dumps(doc, separators=(",", ":"), default=_special).encode()
        with self._write_lock:
            atomic_write(self.path, data)

    def _checkpointed(self, doc: dict[str, Any]) -> None:
        self.stats.checkpoints += 1
        input_next = self._saved_input = doc["input"]
        for n, (_gen, end) in doc["outputs"].items():
            self.outputs[n].keep_from = end
        self._set_floor()
        if not self.forward_raw:  # nobody else acks the raw log: what is derived is done
            self.raw.note_acked(input_next - 1)

    def _set_floor(self) -> None:
        self.raw.keep_from = self._saved_input

    # -- the work ---------------------------------------------------------------------------

    def _emit_main(self, item: Item) -> None:
        self._emit(self.main, item)

    def _emit(self, target: str, item: Item) -> None:
        value = item.value()
        ct = self.raw_ct if item.raw is not None else JSON_CT
        rec = (item.device.encode(), value, item.ts,
               (("content-type", ct), ("src", b"%d-%d" % (item.lo, item.hi))))
        expected = self._expected[target]
        if expected:
            self.stats.rederived += 1
            stored = expected.popleft()
            if stored is not None and stored != rec:
                self.stats.rederive_mismatch += 1
                log.error("stream %s: re-derived record differs from the stored one",
                          target)
            return
        self._pending[target].append(Record(*rec))
        self.stats.records_out += 1
        self.stats.bytes_out += len(value)
        self.stats.per_output[target] += 1

    def step(self) -> int:
        """Transform up to ``batch`` durable raw readings; returns how many were read."""
        lg = self.raw.log
        if self.input_next < lg.start_offset:
            self.stats.lost += lg.start_offset - self.input_next
            self.input_next = lg.start_offset
        try:
            res = fetch_columns(lg, self.input_next, max_records=self.batch,
                                max_bytes=4 << 20, end=lg.durable_offset, headers=False)
        except OffsetOutOfRange:
            return 0
        cols = res.columns
        decode, head, tsf = self.decode, self._head, self.ts_field
        st = self.stats
        keys, values, stamps = cols.keys, cols.values, cols.timestamps
        names = self._names
        nbytes = 0
        for i, off in enumerate(cols.offsets()):
            value = values[i]
            fields = decode(value)
            ts = fields.get(tsf) if type(fields) is dict else None
            if type(ts) is not int:
                ts = stamps[i]
            elif ts > stamps[i] + MAX_CLOCK_AHEAD_MS:  # see MAX_CLOCK_AHEAD_MS
                st.clock_ahead += 1
                ts = stamps[i]
            nbytes += len(value)
            key = keys[i]
            device = names.get(key)
            if device is None:
                if len(names) >= 100_000:
                    names.clear()
                device = names[key] = key.decode("utf-8", "replace")
            try:
                head(Item(device, fields, ts, off, off, value))
            except Exception:  # no reading may stop the stream (G7)
                st.internal_errors += 1
                if st.internal_errors <= 10:
                    log.exception("stream %s: a transform raised on offset %d",
                                  self.raw.config.name, off)
        st.readings_in += len(cols)
        st.bytes_in += nbytes
        self.input_next = res.next_offset
        self.flush_pending()
        return len(cols)

    def flush_pending(self) -> None:
        for name, recs in self._pending.items():
            if recs:
                self.outputs[name].log.append(recs)
                self._pending[name] = []

    async def run(self, wake: asyncio.Event, on_output: Callable[[], None],
                  checkpoint_s: float = 1.0) -> None:
        """Transform as the raw log grows; checkpoint every ``checkpoint_s``."""
        loop = asyncio.get_running_loop()
        if self._ran:  # a restart after a failure: what was in memory is not trusted
            self._pending = {n: [] for n in self.outputs}
            self.recover()
        self._ran = True
        next_ck = loop.time() + checkpoint_s
        while True:
            wake.clear()
            n = self.step()
            if n:
                self._notify_when_durable(on_output)
            if loop.time() >= next_ck:
                await self.checkpoint()
                next_ck = loop.time() + checkpoint_s
            if n == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), max(0.01, next_ck - loop.time()))
            else:
                await asyncio.sleep(0)

    def _notify_when_durable(self, on_output: Callable[[], None]) -> None:
        for o in self.outputs.values():
            if o.log.end_offset > o.log.durable_offset:
                fut = asyncio.ensure_future(o.log.wait_durable_async(o.log.end_offset - 1))
                fut.add_done_callback(lambda f: f.cancelled() or f.exception() or on_output())

    def status(self) -> dict[str, Any]:
        s = self.stats
        return {"stream": self.raw.config.name, "input_offset": self.input_next,
                "lag": max(0, self.raw.log.end_offset - self.input_next),
                "readings_in": s.readings_in, "bytes_in": s.bytes_in,
                "records_out": s.records_out, "bytes_out": s.bytes_out,
                "ratio": round(s.bytes_in / s.bytes_out, 2) if s.bytes_out else None,
                "rederived": s.rederived, "rederive_mismatch": s.rederive_mismatch,
                "lost": s.lost, "internal_errors": s.internal_errors,
                "clock_ahead": s.clock_ahead,
                "outputs": dict(s.per_output),
                "transforms": [{"name": op.name, **vars(op.stats)} for op in self.ops]}


def _special(o: Any) -> Any:
    """JSON for what a CBOR payload may hold besides JSON's types (state values): bytes
    round-trip exactly; anything else (a tag, a date) is kept as its repr, so after a
    restart an on_change over such a field compares the text."""
    if isinstance(o, bytes | bytearray):
        return {"$bytes": bytes(o).hex()}
    return {"$repr": repr(o)}


def _unspecial(d: dict[str, Any]) -> Any:
    if len(d) == 1:
        if "$bytes" in d and isinstance(d["$bytes"], str):
            return bytes.fromhex(d["$bytes"])
        if "$repr" in d:
            return d["$repr"]
    return d


def _read(path: Path) -> Any:
    """The checkpoint, or None when missing or unreadable (then the runner starts over)."""
    try:
        return json.loads(path.read_bytes(), object_hook=_unspecial)
    except (OSError, ValueError):
        return None


def _read_all(store: StreamStore, start: int) -> list[Any]:
    out: list[Any] = []
    pos = max(start, store.log.start_offset)
    while pos < store.log.end_offset:
        recs = store.log.read(pos, max_records=1000, max_bytes=4 << 20)
        if not recs:
            break
        out.extend(recs)
        pos = recs[-1].offset + 1
    return out


__all__ = ["CHECKPOINT_FILE", "RunnerStats", "TransformRunner"]
