"""One edge must not be able to delete another edge's acknowledged data (G3, G8).

The reproduction from the issue, with a real broker subprocess killed with -9 and two
edges with their own tokens: edge A sends a record keyed like edge B's devices with a
forged ``origin`` header claiming a far-ahead position of edge B. Before the fix the
broker stored it, and after the crash its replay took that header for its own, so edge
B's next batch was acknowledged "written" with nothing stored. Now the header name is
reserved (400 naming the record) and replay reads only the broker's own header.
"""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers import broker_server
from tests.helpers_uplink import read_cloud
from uplink import AckStatus, Batch, UplinkRecord, decode_ack, encode_batch

TOKEN_A, TOKEN_B = "token-of-edge-gw-a", "token-of-edge-gw-b"
GEN_A, GEN_B = "gen-a", "gen-b"


def batch(edge: str, gen: str, offsets: range, key: bytes,
          headers: tuple[tuple[str, bytes], ...] = ()) -> Batch:
    return Batch(edge, "telemetry", gen, offsets[0], offsets[-1], tuple(
        UplinkRecord(o, key, 1_700_000_000_000 + o, b'{"seq":%d}' % o, headers)
        for o in offsets))


def post(port: int, token: str, b: Batch) -> httpx.Response:
    body, encoding = encode_batch(b, "none")
    return httpx.post(f"http://127.0.0.1:{port}/v1/ingest/telemetry", content=body,
                      headers={"authorization": f"Bearer {token}",
                               "content-type": "application/cbor",
                               "content-encoding": encoding}, timeout=10)


def test_forged_origin_cannot_make_the_broker_skip_another_edges_records(
        tmp_path: Path) -> None:
    server = broker_server(
        tmp_path, topics={"telemetry": 4},
        tokens=[{"token": TOKEN_A, "edge_id": "gw-a"}, {"token": TOKEN_B, "edge_id": "gw-b"}],
        # No periodic checkpoint: after the kill, replay reads every record again.
        extra="state_checkpoint_ms = 600000")
    server.start()
    try:
        port = server.port
        r = post(port, TOKEN_B, batch("gw-b", GEN_B, range(0, 10), b"dev-b"))
        assert r.status_code == 200, r.text
        r = post(port, TOKEN_A, batch("gw-a", GEN_A, range(0, 5), b"dev-a"))
        assert r.status_code == 200, r.text
        forged = batch("gw-a", GEN_A, range(5, 6), b"dev-b",
                       (("origin", f"gw-b/telemetry/{GEN_B}/1000000".encode()),))
        r = post(port, TOKEN_A, forged)
        assert r.status_code == 400, r.text
        assert r.json()["field"] == "records[0].headers"
        assert "'origin' is reserved" in r.json()["error"]
        server.kill()  # kill -9: the broker rebuilds its marks from the partitions
        server.start()
        r = post(port, TOKEN_B, batch("gw-b", GEN_B, range(10, 20), b"dev-b"))
        assert r.status_code in (200, 409), r.text
        if r.status_code == 409:  # a position the checkpoint lost: the edge rewinds
            r = post(port, TOKEN_B, batch("gw-b", GEN_B, range(0, 20), b"dev-b"))
        assert r.status_code == 200, r.text
        ack = decode_ack(r.content)
        assert ack.acked_offset == 19 and ack.status is not AckStatus.DUPLICATE
    finally:
        server.stop()
    stored = read_cloud(tmp_path / "data").by_source()
    assert [r.edge_offset for r in stored[("gw-b", "telemetry", GEN_B)]] == list(range(20))
    assert [r.edge_offset for r in stored[("gw-a", "telemetry", GEN_A)]] == list(range(5))
