"""Fuzzing the ingest endpoint: mutated bodies never get a 5xx, and good data survives.

Strategy: the corpus is the project's own encoder's output (version 2 from
``encode_batch``, version 1 rows by hand; no compression, gzip and zstd) mutated by a
seeded mutator, both blind (bit flips, truncation, splices of two bodies, inserted and
deleted bytes, repeated slices) and structure-aware (every field of the CBOR map, every
column and every element replaced by junk: huge and negative integers, floats, nested
containers, wrong types, invalid UTF-8, bignums; Content-Encoding swapped or wrong).
Requests go straight into the ASGI app on one event loop (no HTTP client in between), so
>= 20,000 bodies take seconds; the run is bounded in time as well. Good batches of
another edge are written before and after and must read back exactly, once each.
"""

from __future__ import annotations

import asyncio
import gzip
import os
import random
import time
from pathlib import Path
from typing import Any

import cbor2
import zstandard
from starlette.applications import Starlette

from cloud_broker.config import BrokerConfig, TokenConfig, TopicConfig
from cloud_broker.http import create_app
from tests.helpers_uplink import read_cloud
from uplink import Batch, UplinkRecord, encode_batch

TOKEN = "token-of-any-edge"
BODIES = int(os.environ.get("INGEST_FUZZ_BODIES", "20000"))
TIME_BUDGET_S = 55.0
ALLOWED = {200, 400, 409, 413, 415}

JUNK: list[Any] = [None, True, 1.5, float("inf"), float("nan"), -1, 0, 2**63, 2**64 - 1,
                   -2**64, 10**5000, -10**5000, "", "x" * 300, "\ud800", b"", b"\xff" * 40,
                   [], {}, [[[[[]]]]], {"k": [1, {"x": b""}]}, [b"k"] * 50, list(range(30)),
                   cbor2.CBORTag(2, b"\x01" * 300), cbor2.CBORTag(258, [1]),
                   cbor2.CBORSimpleValue(99), cbor2.undefined]


def records(rng: random.Random, base: int, n: int, headers: bool) -> tuple[UplinkRecord, ...]:
    return tuple(UplinkRecord(o, b"dev-%d" % rng.randrange(20), 1_700_000_000_000 + o,
                              rng.randbytes(rng.randrange(0, 40)),
                              (("seq", b"%d" % o), ("ct", b"json")) if headers else ())
                 for o in range(base, base + n))


def seed_bodies(rng: random.Random) -> list[tuple[bytes, str]]:
    out = []
    for i in range(12):
        n = rng.randrange(1, 30)
        base = rng.randrange(0, 50)
        batch = Batch("edge-fuzz", "telemetry", f"g{i}", base, base + n - 1,
                      records(rng, base, n, headers=i % 2 == 0))
        for comp in ("none", "gzip", "zstd"):
            out.append(encode_batch(batch, comp))  # type: ignore[arg-type]
        rows = [[r.offset - base, r.key, r.timestamp, r.value,
                 [list(h) for h in r.headers] or None] for r in batch.records]
        v1 = cbor2.dumps({"v": 1, "e": "edge-fuzz", "s": "telemetry", "g": f"g{i}v1",
                          "b": base, "l": base + n - 1, "r": rows})
        out.append((v1, "identity"))
    return out


def _junk(rng: random.Random) -> Any:
    return rng.choice(JUNK)


def _mutate_tree(rng: random.Random, node: Any, depth: int = 0) -> Any:
    # Replace one field, column or element somewhere in the decoded message.
    if type(node) is dict and node and (depth == 0 or rng.random() < 0.7):
        key = rng.choice(list(node))
        node = dict(node)
        action = rng.random()
        if action < 0.1:
            del node[key]
        elif action < 0.55 and type(node[key]) in (dict, list):
            node[key] = _mutate_tree(rng, node[key], depth + 1)
        else:
            node[key] = _junk(rng)
        if rng.random() < 0.05:
            node[rng.choice([1, -5, 2**64 - 1, 1.5, "zz", b"k", None, True])] = _junk(rng)
        return node
    if type(node) is list and node:
        node = list(node)
        i = rng.randrange(len(node))
        if rng.random() < 0.4 and type(node[i]) in (dict, list):
            node[i] = _mutate_tree(rng, node[i], depth + 1)
        elif rng.random() < 0.1:
            node = node * rng.randrange(2, 50)
        else:
            node[i] = _junk(rng)
        return node
    return _junk(rng)


def _blind(rng: random.Random, body: bytes, other: bytes) -> bytes:
    b = bytearray(body)
    for _ in range(rng.randrange(1, 4)):
        kind = rng.randrange(6)
        if kind == 0 and b:  # bit flips
            for _ in range(rng.randrange(1, 8)):
                b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:  # truncation
            del b[rng.randrange(len(b)):]
        elif kind == 2:  # splice with another body
            cut = rng.randrange(len(b) + 1)
            b[cut:] = other[rng.randrange(len(other) + 1):]
        elif kind == 3:  # inserted bytes (often a CBOR head)
            at = rng.randrange(len(b) + 1)
            b[at:at] = rng.choice([b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff", b"\xc2\x59\xff",
                                   b"\x1b" + bytes(8), b"\xff", b"\x80", b"\xbf", b"\x5a",
                                   rng.randbytes(rng.randrange(1, 9))])
        elif kind == 4 and b:  # deleted bytes
            at = rng.randrange(len(b))
            del b[at:at + rng.randrange(1, 16)]
        elif b:  # a repeated slice
            at = rng.randrange(len(b))
            b[at:at] = bytes(b[at:at + rng.randrange(1, 32)]) * rng.randrange(2, 20)
    return bytes(b)


def _compress(rng: random.Random, raw: bytes) -> tuple[bytes, str]:
    enc = rng.choice(["identity", "identity", "gzip", "zstd"])
    if enc == "gzip":
        return gzip.compress(raw, compresslevel=1, mtime=0), enc
    if enc == "zstd":
        return zstandard.ZstdCompressor(level=1).compress(raw), enc
    return raw, enc


def mutated(rng: random.Random, seeds: list[tuple[bytes, str]],
            decoded: list[Any]) -> tuple[bytes, str | None]:
    i = rng.randrange(len(seeds))
    body, enc = seeds[i]
    choice = rng.random()
    if choice < 0.45:  # structure-aware, then (maybe) compressed
        try:
            raw = cbor2.dumps(_mutate_tree(rng, decoded[i]))
        except (ValueError, TypeError, cbor2.CBOREncodeError):
            raw = cbor2.dumps(decoded[i])
        body, enc = _compress(rng, raw)
    elif choice < 0.65:  # blind mutation of the decompressed body, then compressed
        raw = cbor2.dumps(decoded[i])
        body, enc = _compress(rng, _blind(rng, raw, cbor2.dumps(rng.choice(decoded))))
    else:  # blind mutation of the bytes on the wire
        body = _blind(rng, body, rng.choice(seeds)[0])
    if rng.random() < 0.05:  # a wrong or odd Content-Encoding
        enc = rng.choice(["gzip", "zstd", "identity", "GZIP", " zstd ", "br", ""])
    return body, enc


async def call(app: Starlette, body: bytes, encoding: str | None) -> int:
    headers = [(b"content-type", b"application/cbor"),
               (b"authorization", f"Bearer {TOKEN}".encode())]
    if encoding is not None:
        headers.append((b"content-encoding", encoding.encode()))
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/ingest/telemetry",
             "raw_path": b"/v1/ingest/telemetry", "query_string": b"", "root_path": "",
             "headers": headers, "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80)}
    sent = False
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # no disconnect while the reply is being made
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    try:
        await app(scope, receive, send)
    except Exception:  # the app sent its 500 and re-raised: count it as the 500 it is
        return 500
    return status[0]


def good(base: int, n: int) -> Batch:
    return Batch("edge-good", "telemetry", "gen-1", base, base + n - 1,
                 tuple(UplinkRecord(o, b"dev-%d" % (o % 7), 1_700_000_000_000 + o,
                                    b"good-%d" % o, (("seq", b"%d" % o),))
                       for o in range(base, base + n)))


async def fuzz(data_dir: Path) -> tuple[dict[int, int], int]:
    config = BrokerConfig(data_dir=data_dir, topics={"telemetry": TopicConfig("telemetry", 4)},
                          tokens=(TokenConfig(TOKEN, "*", frozenset({"ingest"})),),
                          max_body_bytes=64 * 1024, max_records_per_request=1000)
    app = create_app(config)
    statuses: dict[int, int] = {}
    async with app.router.lifespan_context(app):
        app.state.broker.ingestor.gap_wait_s = 0  # a gap is refused at once
        for base in range(0, 100, 20):
            body, enc = encode_batch(good(base, 20), "zstd")
            assert await call(app, body, enc) == 200
        rng = random.Random(11)
        seeds = seed_bodies(rng)
        decoded = [cbor2.loads(gzip.decompress(b) if e == "gzip" else
                               zstandard.ZstdDecompressor().decompress(b) if e == "zstd" else b)
                   for b, e in seeds]
        deadline = time.monotonic() + TIME_BUDGET_S
        sent = 0
        while sent < BODIES and time.monotonic() < deadline:
            body, enc = mutated(rng, seeds, decoded)
            status = await call(app, body, enc)
            statuses[status] = statuses.get(status, 0) + 1
            sent += 1
        for base in range(100, 200, 20):
            body, enc = encode_batch(good(base, 20), "gzip")
            assert await call(app, body, enc) == 200
    return statuses, sent


def test_fuzzed_bodies_never_get_a_5xx_and_good_data_survives(tmp_path: Path) -> None:
    statuses, sent = asyncio.run(fuzz(tmp_path / "data"))
    assert sent >= BODIES, f"only {sent} bodies within {TIME_BUDGET_S} s"
    assert set(statuses) <= ALLOWED, statuses
    assert statuses.get(400, 0) > BODIES // 4 and statuses.get(200, 0) > 0, statuses
    view = read_cloud(tmp_path / "data")
    mine = [r for r in view.records if r.source == ("edge-good", "telemetry", "gen-1")]
    got = sorted((r.edge_offset, r.key, r.value) for r in mine)
    assert got == [(o, b"dev-%d" % (o % 7), b"good-%d" % o) for o in range(200)]
    for partition in {r.partition for r in mine}:  # per-device order kept (G4)
        offsets = [r.edge_offset for r in mine if r.partition == partition]
        assert offsets == sorted(offsets)
