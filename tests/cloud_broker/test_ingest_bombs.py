"""Compression bombs and record floods against a real broker process: its peak memory
stays under the documented bound and ``/healthz`` keeps answering within 100 ms.

A real ``cloud-broker serve`` subprocess (uvicorn) with ``max_body_bytes`` = 1 MiB gets the
bomb corpus from three clients at once while a fourth polls ``/healthz``: empty gzip
members (the quadratic decompression froze the event loop for 34 s), a few hundred bytes
of zstd declaring millions of records (3.3 GB), a plain body of tiny records (2.3 GB),
columns of empty arrays and maps (~70 bytes of Python per byte of CBOR), bignums. The
bound (docs/security.md) is the process's peak RSS (VmHWM in /proc) over its peak after
warm-up: two decodes at a time, each within the body, decompressed and item limits.
"""

from __future__ import annotations

import gzip
import threading
import time
from pathlib import Path

import cbor2
import httpx
import pytest
import zstandard

from tests.helpers import broker_server, running
from uplink import Batch, UplinkRecord, encode_batch

pytestmark = pytest.mark.timeout(120)

MAX_BODY = 1 << 20
# Memory the corpus may add to the warmed-up broker. The worst case per decode slot is
# max_body + max_decompressed (2 x max_body) + ~72 bytes x 16 items x max_records (11 MiB)
# + the decoded strings (<= max_decompressed); two slots, plus bodies waiting for a slot.
BOUND_BYTES = 48 << 20
ROUNDS = 8


def head(major: int, n: int) -> bytes:
    return bytes([major << 5 | 26]) + n.to_bytes(4, "big")


def v2(cols: bytes, n: int, ncols: int = 3) -> bytes:
    top = cbor2.dumps({"v": 2, "e": "edge-x", "s": "telemetry", "g": "g1", "b": 0,
                       "l": max(n - 1, 0)})
    return bytes([top[0] + 1]) + top[1:] + b"\x61r" + bytes([0xa0 + ncols]) + cols


def corpus() -> list[tuple[str, bytes, str]]:
    n = 4_000_000
    flood = v2(b"\x61k" + head(4, n) + b"\x40" * n + b"\x61t" + head(4, n) + b"\x00" * n
               + b"\x61x" + head(4, n) + b"\x40" * n, n)
    fits = (MAX_BODY - 200) // 3
    plain = v2(b"\x61k" + head(4, fits) + b"\x40" * fits + b"\x61t" + head(4, fits)
               + b"\x00" * fits + b"\x61x" + head(4, fits) + b"\x40" * fits, fits)
    arrays = v2(b"\x61k" + head(4, MAX_BODY - 100) + b"\x80" * (MAX_BODY - 100), 1, 1)
    maps = (2 * MAX_BODY - 100)
    gz_maps = gzip.compress(v2(b"\x61k" + head(4, maps) + b"\xa0" * maps, 1, 1), mtime=0)
    members = gzip.compress(b"", mtime=0) * (MAX_BODY // 20)
    bignum = cbor2.dumps({"v": 2, "e": "edge-x", "s": "telemetry", "g": "g1",
                          "b": 2 ** (8 * (MAX_BODY - 100)), "l": 0, "r": {}})
    zstd_flood = zstandard.ZstdCompressor(level=19).compress(flood)
    assert len(zstd_flood) < 2000  # a few hundred bytes declaring 4 M records
    return [("gzip members", members, "gzip"), ("zstd flood", zstd_flood, "zstd"),
            ("plain flood", plain, "identity"), ("empty arrays", arrays, "identity"),
            ("gzip empty maps", gz_maps, "gzip"), ("bignum", bignum, "identity")]


def vm_hwm(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def big_batch(base: int) -> bytes:
    recs = tuple(UplinkRecord(o, b"dev-%d" % (o % 50), 1_700_000_000_000 + o, b"v" * 60,
                              (("seq", b"%d" % o),)) for o in range(base, base + 10_000))
    return encode_batch(Batch("edge-ok", "telemetry", "g1", base, base + 9_999, recs),
                        "zstd")[0]


def test_bomb_corpus_memory_and_health(tmp_path: Path) -> None:
    server = broker_server(tmp_path, extra=f"max_body_bytes = {MAX_BODY}")
    with running(server):
        url = f"http://127.0.0.1:{server.port}"
        assert server.proc is not None
        pid = server.proc.pid
        headers = {"content-type": "application/cbor"}
        with httpx.Client(timeout=60) as c:  # warm-up: a full-size good batch, twice
            for base in (0, 10_000):
                r = c.post(f"{url}/v1/ingest/telemetry", content=big_batch(base),
                           headers={**headers, "content-encoding": "zstd"})
                assert r.status_code == 200, r.text
        baseline = vm_hwm(pid)

        bombs = corpus()
        results: list[tuple[str, int]] = []
        latencies: list[float] = []
        done = threading.Event()
        errors: list[BaseException] = []

        def attack(offset: int) -> None:
            try:
                with httpx.Client(timeout=60) as c:
                    for i in range(ROUNDS * len(bombs)):
                        name, body, enc = bombs[(i + offset) % len(bombs)]
                        r = c.post(f"{url}/v1/ingest/telemetry", content=body,
                                   headers={**headers, "content-encoding": enc})
                        results.append((name, r.status_code))
            except BaseException as exc:  # reported by the main thread
                errors.append(exc)

        def poll() -> None:
            with httpx.Client(timeout=5) as c:
                while not done.is_set():
                    t = time.perf_counter()
                    assert c.get(f"{url}/healthz").status_code == 200
                    latencies.append(time.perf_counter() - t)
                    done.wait(0.002)  # a quiet machine deals with the corpus in ~0.2 s

        poller = threading.Thread(target=poll)
        poller.start()
        attackers = [threading.Thread(target=attack, args=(k,)) for k in range(3)]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join(90)
        done.set()
        poller.join(10)
        assert not errors, errors
        peak = vm_hwm(pid)
        with httpx.Client(timeout=60) as c:  # still serving good data afterwards
            r = c.post(f"{url}/v1/ingest/telemetry", content=big_batch(20_000),
                       headers={**headers, "content-encoding": "zstd"})
            assert r.status_code == 200, r.text

    assert len(results) == 3 * ROUNDS * len(bombs)
    assert all(400 <= status < 500 for _, status in results), sorted(set(results))
    assert peak - baseline < BOUND_BYTES, (
        f"peak RSS grew by {(peak - baseline) >> 20} MiB over {baseline >> 20} MiB")
    assert len(latencies) > 10
    assert max(latencies) < 0.1, f"/healthz took {max(latencies) * 1000:.0f} ms"
