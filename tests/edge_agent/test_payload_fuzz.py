"""Arbitrary device payloads through the real ingest pipeline (G7, G8).

Hypothesis draws JSON and CBOR documents of any shape (any types and nesting, huge,
negative and non-finite numbers, bignums, lone surrogates, invalid UTF-8, truncations)
and sends them, mixed with good readings, through ``StreamIngest`` with its real log,
group commit and dead-letter log. Every message must end up appended, deduplicated or
dead-lettered with a known reason, every QoS 1 message must be PUBACKed, the run task
must still be running, and the good readings must all be stored in order.
"""

from __future__ import annotations

import asyncio
import json
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_agent.config import parse_config
from edge_agent.deadletter import DeadLetterLog
from edge_agent.dedup import HighWaterMarks
from edge_agent.ingest import StreamIngest
from edge_agent.payload import REASONS, PayloadRules
from edge_agent.streams import open_stream

FIELDS = ["seq", "ts", "boot", "device", "v"]
SPECIAL_NUMBERS = [0, -1, 2**63 - 1, 2**63, -(2**63), 2**64, 10**30,
                   math.inf, -math.inf, math.nan, 1e308, -0.0, 1.5, 0.5]
# past Python's int-to-str limit (built by map: hypothesis cannot repr them as constants)
huge_ints = st.sampled_from([5000, -5000]).map(lambda e: 10**abs(e) * (1 if e > 0 else -1))

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from(SPECIAL_NUMBERS), huge_ints,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
    st.sampled_from(["", "dev-1", "..", "a" * 200, "\ud800", "x\n", "1e999"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=5),
                                            inner, max_size=4)),
    max_leaves=12,
)
documents = st.one_of(
    st.dictionaries(st.sampled_from(FIELDS), values, max_size=5),  # maps with our fields
    values,  # anything at the top level
)


def encode(doc: Any, fmt: str) -> bytes:
    if fmt == "cbor":
        try:
            return cbor2.dumps(doc)
        except (ValueError, TypeError, OverflowError):
            return b"\xa0"
    old = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # let the test write 5000-digit literals
    try:
        return json.dumps(doc, allow_nan=True).encode("utf-8", "surrogatepass")
    finally:
        sys.set_int_max_str_digits(old)


@st.composite
def payloads(draw: st.DrawFn) -> tuple[str, bytes]:
    fmt = draw(st.sampled_from(["json", "cbor"]))
    raw = encode(draw(documents), fmt)
    mutation = draw(st.sampled_from(["none", "none", "truncate", "garbage", "binary"]))
    if mutation == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif mutation == "garbage":
        at = draw(st.integers(0, len(raw)))
        raw = raw[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                               b"\x00", b"\x9f", b"\xdb" + b"\xff" * 8])) + raw[at:]
    elif mutation == "binary":
        raw = draw(st.binary(max_size=64))
    return fmt, raw


STREAMS = {  # (payload format, device key, require_sequence)
    "json-topic": ("json", "topic:devices/{device}/telemetry", False),
    "json-field": ("json", "field:device", True),
    "cbor-topic": ("cbor", "topic:devices/{device}/telemetry", True),
}


async def _run(tmp: Path, stream: str, batch: list[tuple[str, bytes]], qos: list[int]) -> None:
    fmt, device_key, require = STREAMS[stream]
    cfg = parse_config({"edge_id": "e1", "data_dir": str(tmp),
                        "ingest": {"commit_interval_ms": 1.0},
                        "streams": [{"name": "s", "topics": ["devices/#"], "payload": fmt,
                                     "device_key": device_key, "require_sequence": require}]})
    sc = cfg.streams[0]
    store = open_stream(cfg, sc)
    rules = PayloadRules(payload=fmt, device_key=device_key, epoch_field="boot",
                         require_sequence=require, max_payload_bytes=4096)
    dl = DeadLetterLog(tmp, 1 << 20, 256, 1.0)
    ing = StreamIngest("s", store, rules, HighWaterMarks(window=10), dl, lambda t: "s")
    acked: list[int] = []
    ing.ack = lambda acks: acked.extend(m for m, _ in acks)
    task = asyncio.create_task(ing.run())

    def good(i: int) -> bytes:
        doc = {"device": "good", "seq": i, "ts": 1_700_000_000_000 + i}
        return json.dumps(doc).encode() if fmt == "json" else cbor2.dumps(doc)

    mid = 0
    expected_acks = []
    good_seq = 0
    for (_fmt, raw), q in zip(batch, qos, strict=True):
        for payload, topic, qq in ((good(good_seq), "devices/good/telemetry", 1),
                                   (raw, "devices/fuzz/telemetry", q)):
            mid += 1
            if qq:
                expected_acks.append(mid)
            ing.submit((topic, payload, qq, mid, 1))
        good_seq += 1
        await asyncio.sleep(0)  # spread the messages over several batches
    ing.submit(("devices/good/telemetry", good(good_seq), 1, mid + 1, 1))  # the stream flows
    expected_acks.append(mid + 1)
    deadline = asyncio.get_running_loop().time() + 20
    while sorted(acked) != expected_acks:
        assert not task.done(), f"the ingest task ended: {task.exception()!r}"
        assert asyncio.get_running_loop().time() < deadline, "not every QoS 1 message acked"
        await asyncio.sleep(0.005)
    assert not task.done()
    task.cancel()
    st_ = ing.stats
    assert st_.received == len(batch) * 2 + 1
    assert st_.appended + st_.deduplicated + st_.dead_lettered == st_.received
    assert st_.internal_errors == 0, st_.last_error
    assert set(dl.by_reason()) <= set(REASONS)
    goods = [r for r in store.log.read(0, max_records=10_000) if r.key == b"good"]
    assert [int(dict(r.headers)["seq"]) for r in goods] == list(range(good_seq + 1))
    dl.close()
    store.log.close()


@settings(max_examples=120, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(stream=st.sampled_from(sorted(STREAMS)),
       batch=st.lists(payloads(), min_size=1, max_size=12),
       qos_seed=st.integers(0, 2**12 - 1))
def test_any_payload_is_stored_or_dead_lettered_and_acked(
        stream: str, batch: list[tuple[str, bytes]], qos_seed: int) -> None:
    qos = [(qos_seed >> (i % 12)) & 1 for i in range(len(batch))]
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(_run(Path(tmp), stream, batch, qos))
