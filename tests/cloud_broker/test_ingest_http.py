"""``POST /v1/ingest/{topic}``: every way a request can be wrong, and the acks of G3.

In-process through Starlette's TestClient (the app's lifespan opens a real broker on
tmp_path); the real-socket tests are in test_tls.py and the fault-injection suite.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import zstandard
from starlette.testclient import TestClient

from cloud_broker.auth import add_token, revoke_token
from cloud_broker.config import BrokerConfig, TokenConfig, TopicConfig
from cloud_broker.http import create_app
from tests.helpers_uplink import read_cloud, reading, verify_cloud
from uplink import Batch, UplinkRecord, decode_ack, decode_refusal, encode_batch

EDGE_A = "token-of-edge-a"
ANY_EDGE = "token-of-any-edge"
READER = "token-of-a-reader"
LIMIT = 64 * 1024


def broker_config(tmp_path: Path, **kwargs: object) -> BrokerConfig:
    defaults: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "topics": {"telemetry": TopicConfig("telemetry", 4)},
        "tokens": (TokenConfig(EDGE_A, "edge-a", frozenset({"ingest"})),
                   TokenConfig(ANY_EDGE, "*", frozenset({"ingest"})),
                   TokenConfig(READER, "*", frozenset({"read"}))),
        "tokens_db": tmp_path / "tokens.db",
        "max_body_bytes": LIMIT,
    }
    defaults.update(kwargs)
    return BrokerConfig(**defaults)  # type: ignore[arg-type]


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(broker_config(tmp_path))) as c:
        yield c


def batch(base: int, last: int, edge: str = "edge-a", gen: str = "g1",
          offsets: range | None = None) -> Batch:
    recs = tuple(UplinkRecord(o, r.key, r.timestamp, r.value)
                 for o in (offsets if offsets is not None else range(base, last + 1))
                 for r in (reading(o % 10, o),))
    return Batch(edge, "telemetry", gen, base, last, recs)


def post(client: TestClient, body: Batch | bytes, token: str | None = EDGE_A,
         topic: str = "telemetry", compression: str = "zstd", **headers: str):  # type: ignore[no-untyped-def]
    if isinstance(body, Batch):
        body, encoding = encode_batch(body, compression)  # type: ignore[arg-type]
        headers.setdefault("content-encoding", encoding)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    headers.setdefault("content-type", "application/cbor")
    return client.post(f"/v1/ingest/{topic}", content=body, headers=headers)


def error_of(resp) -> tuple[str, str | None]:  # type: ignore[no-untyped-def]
    body = resp.json()
    return body["error"], body["field"]


def raw_batch(**overrides: object) -> bytes:
    message: dict[str, object] = {"v": 1, "e": "edge-a", "s": "telemetry", "g": "g1", "b": 0,
                                  "l": 1, "r": [[0, b"dev-1", 1, b"{}", None]]}
    message.update(overrides)
    return cbor2.dumps({k: v for k, v in message.items() if v is not None})


# -- auth --------------------------------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "", "Bearer ", "Basic dXNlcjpwdw==",
                                           "Bearer not-a-token-we-issued"])
def test_401_without_a_known_token(client: TestClient, authorization: str | None) -> None:
    headers = {} if authorization is None else {"authorization": authorization}
    resp = post(client, batch(0, 9), token=None, **headers)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"] == "Bearer"
    assert "error" in resp.json()


def test_403_for_a_token_of_another_edge_or_without_ingest(client: TestClient) -> None:
    resp = post(client, batch(0, 9, edge="edge-b"), token=EDGE_A)
    assert resp.status_code == 403 and error_of(resp)[1] == "edge_id"
    resp = post(client, batch(0, 9), token=READER)
    assert resp.status_code == 403
    assert post(client, batch(0, 9, edge="edge-b"), token=ANY_EDGE).status_code == 200
    assert post(client, batch(0, 9), token=EDGE_A).status_code == 200


def test_tokens_from_the_sqlite_table_and_revocation(tmp_path: Path,
                                                     client: TestClient) -> None:
    db = tmp_path / "tokens.db"
    assert post(client, batch(0, 9), token="token-from-sqlite").status_code == 401
    add_token(db, "token-from-sqlite", "edge-a", ["ingest"])
    assert post(client, batch(0, 9), token="token-from-sqlite").status_code == 200
    assert post(client, batch(0, 9, edge="edge-b"), token="token-from-sqlite").status_code == 403
    revoke_token(db, "token-from-sqlite")
    assert post(client, batch(10, 19), token="token-from-sqlite").status_code == 401
    assert post(client, batch(10, 19), token=EDGE_A).status_code == 200


# -- size, encoding, malformed bodies ---------------------------------------------------


def test_413_declared_streamed_and_decompressed(client: TestClient) -> None:
    big = batch(0, 0)
    body, enc = encode_batch(Batch("edge-a", "telemetry", "g1", 0, 0, (
        UplinkRecord(0, b"dev-1", 1, b"x" * (LIMIT + 1)),)), "none")
    resp = post(client, body, **{"content-encoding": enc})
    assert resp.status_code == 413 and error_of(resp)[1] == "body"

    def chunks() -> Iterator[bytes]:  # no content-length: checked while streaming
        for i in range(0, len(body), 4096):
            yield body[i:i + 4096]

    resp = post(client, chunks(), **{"content-encoding": enc})  # type: ignore[arg-type]
    assert resp.status_code == 413 and error_of(resp)[1] == "body"
    # a small zstd body that inflates past the decompression limit (2 x the body limit)
    bomb = zstandard.ZstdCompressor().compress(raw_batch(r=[[0, b"k", 1, bytes(LIMIT * 9), None]]))
    assert len(bomb) < LIMIT
    resp = post(client, bomb, **{"content-encoding": "zstd"})
    assert resp.status_code == 413 and error_of(resp)[1] == "body"
    assert post(client, big).status_code == 200


@pytest.mark.parametrize("encoding", ["br", "gzip, identity", "x-zstd"])
def test_415_unknown_content_encoding(client: TestClient, encoding: str) -> None:
    resp = post(client, raw_batch(), **{"content-encoding": encoding})
    assert resp.status_code == 415 and error_of(resp)[1] == "content_encoding"


def test_415_wrong_content_type(client: TestClient) -> None:
    resp = post(client, raw_batch(), **{"content-type": "application/json"})
    assert resp.status_code == 415


@pytest.mark.parametrize(("body", "field"), [
    (b"\xff\x00garbage", "body"),
    (b"", "body"),
    (cbor2.dumps([1, 2, 3]), "body"),
    (raw_batch() + b"\x00", "body"),
    (zlib.compress(b"not gzip framing"), "body"),
    (raw_batch(v=None), "version"),
    (raw_batch(v=3), "version"),
    (raw_batch(v=2), "records"),  # version 2 records are columns, not rows
    (raw_batch(v=2, r={"k": [b"a"], "t": [1]}), "records.value"),
    (raw_batch(e=None), "edge_id"),
    (raw_batch(s=""), "stream"),
    (raw_batch(g="../g"), "generation"),
    (raw_batch(b=None), "base_offset"),
    (raw_batch(b="0"), "base_offset"),
    (raw_batch(b=-1), "base_offset"),
    (raw_batch(l=None), "last_offset"),
    (raw_batch(b=5, l=4), "last_offset"),
    (raw_batch(r=None), "records"),
    (raw_batch(r={"0": 1}), "records"),
    (raw_batch(r=[[0, b"k", 1, b"v"]]), "records[0]"),
    (raw_batch(r=[[0, b"k", 1, b"v", None], [0, b"k", 1, b"v", None]]), "records[1].offset"),
    (raw_batch(r=[[5, b"k", 1, b"v", None]]), "records[0].offset"),
    (raw_batch(r=[[0, "k", 1, b"v", None]]), "records[0].key"),
    (raw_batch(r=[[0, b"k", -1, b"v", None]]), "records[0].timestamp"),
    (raw_batch(r=[[0, b"k", 1, "v", None]]), "records[0].value"),
    (raw_batch(r=[[0, b"k", 1, b"v", [["h", "not bytes"]]]]), "records[0].headers"),
])
def test_400_names_the_field(client: TestClient, body: bytes, field: str) -> None:
    encoding = "gzip" if body.startswith(b"\x78") else "identity"
    resp = post(client, body, **{"content-encoding": encoding})
    assert resp.status_code == 400, resp.text
    assert error_of(resp)[1] == field


def test_400_for_a_record_the_partitions_cannot_store(client: TestClient) -> None:
    # shared_log frames a header name with a u16 length: 70,000 bytes cannot be stored.
    recs = (UplinkRecord(0, b"dev-1", 1, b"{}", (("h" * 70_000, b"v"),)),)
    resp = post(client, Batch("edge-a", "telemetry", "g1", 0, 0, recs))
    assert resp.status_code == 400 and error_of(resp)[1] == "records.headers.name"
    v1 = raw_batch(l=0, r=[[0, b"dev-1", 1, b"{}", [["h" * 70_000, b"v"]]]])
    resp = post(client, zstandard.ZstdCompressor().compress(v1), **{"content-encoding": "zstd"})
    assert resp.status_code == 400 and error_of(resp)[1] == "records[0].headers"


# -- topics -----------------------------------------------------------------------------


def test_404_unknown_topic(client: TestClient) -> None:
    resp = post(client, batch(0, 9), topic="nope")
    assert resp.status_code == 404 and error_of(resp)[1] == "topic"


@pytest.mark.parametrize("topic", ["..", ".hidden", "a..b", "-x", "x%20y", "t" * 129, "caf%C3%A9"])
def test_unsafe_topic_names_are_refused_and_never_touch_the_disk(
        tmp_path: Path, topic: str) -> None:
    cfg = broker_config(tmp_path, auto_create_partitions=2)
    with TestClient(create_app(cfg)) as c:
        resp = post(c, batch(0, 9), topic=topic)
        assert resp.status_code in (400, 404), resp.text
        if resp.status_code == 400:
            assert error_of(resp)[1] == "topic"
        assert post(c, batch(0, 9), topic="auto-made").status_code == 200
    made = sorted(p.name for p in (tmp_path / "data" / "topics").iterdir())
    assert made == ["auto-made", "telemetry"]


# -- the position rules over HTTP -------------------------------------------------------


def test_written_duplicate_partial_and_gap(tmp_path: Path) -> None:
    with TestClient(create_app(broker_config(tmp_path))) as client:
        check_position_rules(client)
    # the broker stopped: read its partitions from disk
    verify_cloud(read_cloud(tmp_path / "data"), {
        ("edge-a", "telemetry", "g1"): [*range(150), *range(150, 200, 7)]})


def check_position_rules(client: TestClient) -> None:
    first = post(client, batch(0, 99))
    assert first.status_code == 200 and first.headers["content-type"] == "application/cbor"
    ack = decode_ack(first.content)
    assert (ack.acked_offset, ack.status.value) == (99, "written")

    dup = decode_ack(post(client, batch(0, 99), compression="gzip").content)
    assert (dup.acked_offset, dup.status.value) == (99, "duplicate")

    partial = decode_ack(post(client, batch(50, 149), compression="none").content)
    assert (partial.acked_offset, partial.status.value) == (149, "partial")

    gap = post(client, batch(200, 249))
    assert gap.status_code == 409
    refusal = decode_refusal(gap.content)
    assert refusal.code.value == "gap" and refusal.expected_offset == 150
    gap_json = post(client, batch(200, 249), accept="application/json")
    assert gap_json.status_code == 409
    assert gap_json.json()["expected_offset"] == 150

    # offsets without records (lost on the edge) still count as delivered
    holes = post(client, batch(150, 199, offsets=range(150, 200, 7)), accept="application/json")
    assert holes.status_code == 200 and holes.json()["acked_offset"] == 199

    metrics = client.get("/metrics").text
    assert 'broker_ingest_requests_total{status="409"} 2.0' in metrics
    assert 'broker_ingest_batches_total{decision="partial"} 1.0' in metrics
    assert 'broker_ingest_records_total{topic="telemetry"} 158.0' in metrics  # 150 + 8


def test_openapi_documents_the_ingest_statuses(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    responses = doc["paths"]["/v1/ingest/{topic}"]["post"]["responses"]
    assert {"200", "400", "401", "403", "404", "409", "413", "415", "503"} <= set(responses)
    assert json.dumps(doc)  # serialisable
