"""The broker's bodies as an attacker or a sloppy client sends them: permission before the
body, bounded records, huge integers, case-insensitive media types, canonical integers,
and the replication endpoint's fields. In-process (Starlette's TestClient on a real
broker in tmp_path); the memory and event-loop bounds of a real process are in
test_ingest_bombs.py.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import zstandard
from starlette.testclient import TestClient

from cloud_broker.config import (
    BrokerConfig,
    ConfigError,
    TokenConfig,
    TopicConfig,
    parse_config,
)
from cloud_broker.http import create_app
from cloud_broker.http.ingest import decode_limits
from cloud_broker.http.params import canonical_int, parse_index
from cloud_broker.ingest import INLINE_BYTES, small_enough_inline
from uplink import Batch, UplinkRecord, encode_batch

EDGE = "token-of-edge-a"
READER = "token-of-a-reader"
ADMIN = "token-of-an-admin"
MAX_RECORDS = 100


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    config = BrokerConfig(
        data_dir=tmp_path / "data",
        topics={"telemetry": TopicConfig("telemetry", 2),
                "mirrored": TopicConfig("mirrored", 1)},
        tokens=(TokenConfig(EDGE, "edge-a", frozenset({"ingest"})),
                TokenConfig(READER, "*", frozenset({"read"})),
                TokenConfig(ADMIN, "*", frozenset({"admin", "read"}))),
        max_body_bytes=256 * 1024, max_records_per_request=MAX_RECORDS)
    with TestClient(create_app(config)) as c:
        yield c


def batch(base: int, n: int) -> Batch:
    return Batch("edge-a", "telemetry", "g1", base, base + n - 1,
                 tuple(UplinkRecord(o, b"dev-%d" % (o % 3), 1000 + o, b"v%d" % o)
                       for o in range(base, base + n)))


def post(client: TestClient, body: bytes, token: str = EDGE, **headers: str):  # type: ignore[no-untyped-def]
    headers.setdefault("content-type", "application/cbor")
    headers["authorization"] = f"Bearer {token}"
    return client.post("/v1/ingest/telemetry", content=body, headers=headers)


def test_a_token_without_ingest_is_refused_before_the_body_is_read(client: TestClient) -> None:
    # Any valid token could make the broker decompress and decode a bomb: the ingest
    # permission was checked only after decoding.
    pulled: list[int] = []
    body = gzip.compress(b"", mtime=0) * 20_000

    def stream() -> Iterator[bytes]:
        for i in range(0, len(body), 4096):
            pulled.append(i)
            yield body[i:i + 4096]

    for token in (READER, ADMIN):
        resp = client.post("/v1/ingest/telemetry", content=stream(),  # type: ignore[arg-type]
                           headers={"authorization": f"Bearer {token}",
                                    "content-type": "application/cbor",
                                    "content-encoding": "gzip"})
        assert resp.status_code == 403
        assert resp.json()["field"] == "authorization"
    assert pulled == []


def test_media_types_are_case_insensitive(client: TestClient) -> None:
    body, enc = encode_batch(batch(0, 3))
    for ctype in ("application/CBOR", "Application/Cbor; charset=binary"):
        resp = post(client, body, **{"content-type": ctype, "content-encoding": enc})
        assert resp.status_code == 200, resp.text
    assert post(client, body, **{"content-type": "application/json"}).status_code == 415


def test_records_per_request_are_bounded(client: TestClient) -> None:
    body, _ = encode_batch(batch(0, MAX_RECORDS + 1))
    resp = post(client, body)
    assert resp.status_code == 413
    assert resp.json()["field"] == "records" and str(MAX_RECORDS) in resp.json()["error"]
    # millions of empty records in a few hundred bytes: refused by count, not built
    raw = cbor2.dumps({"v": 2, "e": "edge-a", "s": "telemetry", "g": "g1", "b": 0,
                       "l": 999_999, "r": {"k": [b""] * 1_000_000, "t": [0] * 1_000_000,
                                          "x": [b""] * 1_000_000}})
    resp = post(client, gzip.compress(raw, mtime=0), **{"content-encoding": "gzip"})
    assert resp.status_code == 413
    body, _ = encode_batch(batch(0, MAX_RECORDS))
    assert post(client, body).status_code == 200


@pytest.mark.parametrize("overrides", [
    {"v": 10**5000}, {"b": 10**5000}, {"l": -10**5000}, {"e": 10**5000},
    {"r": {"k": [b"k"], "t": [10**5000], "x": [b"v"]}},
    {"r": [[0, b"k", 1, b"v", [["h", 10**5000]]]], "v": 1},
])
def test_huge_integers_are_400_naming_the_field(client: TestClient,
                                                overrides: dict[str, object]) -> None:
    message: dict[str, object] = {"v": 2, "e": "edge-a", "s": "telemetry", "g": "g1",
                                  "b": 0, "l": 0, "r": {"k": [b"k"], "t": [1], "x": [b"v"]}}
    message.update(overrides)
    resp = post(client, cbor2.dumps(message))
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] not in (None, "body")


def test_the_gzip_member_bomb_is_a_quick_400(client: TestClient) -> None:
    resp = post(client, gzip.compress(b"", mtime=0) * 10_000, **{"content-encoding": "gzip"})
    assert resp.status_code == 400 and "members" in resp.json()["error"]


# -- integers in paths and queries -------------------------------------------------------


@pytest.mark.parametrize("raw", ["٣", "+1", "01", " 1", "1 ", "-0", "", "1_0", "²", "0x1",
                                 "1" * 20])
def test_only_canonical_ascii_decimal(raw: str) -> None:
    assert canonical_int(raw) is None
    assert parse_index(raw) is None


def test_canonical_integers_parse() -> None:
    assert [canonical_int(s) for s in ("0", "7", "-3", "9223372036854775807")] == [
        0, 7, -3, 2**63 - 1]
    assert parse_index("-3") is None and parse_index("12") == 12


@pytest.mark.parametrize("raw", ["%D9%A3", "+1", "01", "%201"])
def test_partition_and_query_integers_refuse_lookalikes(client: TestClient, raw: str) -> None:
    admin = {"authorization": f"Bearer {ADMIN}"}
    r = client.get(f"/v1/replicate/mirrored/{raw}", headers=admin)
    assert r.status_code == 400 and r.json()["field"] == "partition"
    r = client.get(f"/v1/topics/telemetry/partitions/{raw}/records?offset=0", headers=admin)
    assert r.status_code == 400 and r.json()["field"] == "partition"
    r = client.get(f"/v1/topics/telemetry/partitions/0/records?offset={raw}", headers=admin)
    assert r.status_code == 400 and r.json()["field"] == "offset"


# -- replication bodies ------------------------------------------------------------------


def replicate(client: TestClient, rows: list[object], ctype: str = "application/cbor"):  # type: ignore[no-untyped-def]
    return client.post("/v1/replicate/mirrored/0", content=cbor2.dumps({"records": rows}),
                       headers={"authorization": f"Bearer {ADMIN}", "content-type": ctype})


@pytest.mark.parametrize(("row", "field"), [
    ([0, b"k", b"v", 5, [["h", 2**50]]], "records[0].headers"),  # was MemoryError, 500
    ([0, b"k", b"v", 2**64, []], "records[0].timestamp"),  # was 503 "retry"
    ([0, b"k", b"v", 5, [["n" * 70_000, b"x"]]], "records[0].headers"),  # was 503 "retry"
    ([0, b"k", b"v", -1, []], "records[0].timestamp"),  # was stored
    ([0, b"k", b"v", 10**5000, []], "records[0].timestamp"),
    ([10**5000, b"k", b"v", 5, []], "records[0].offset"),
    ([0, "k", b"v", 5, []], "records[0].key"),
    ([0, b"k", b"v", 5, [[7, b"x"]]], "records[0].headers"),
    ([0, b"k", b"v", 5, None], "records[0].headers"),
    ([0, b"k", b"v", 5], "records[0]"),
])
def test_replication_fields_are_400(client: TestClient, row: list[object], field: str) -> None:
    resp = replicate(client, [row])
    assert resp.status_code == 400, resp.text
    assert resp.json()["field"] == field
    assert client.get("/v1/replicate/mirrored/0",
                      headers={"authorization": f"Bearer {ADMIN}"}).json()["end_offset"] == 0


def test_replication_bounds_and_media_type(client: TestClient) -> None:
    rows = [[o, b"k", b"v", 5, [["h", b"x"]]] for o in range(MAX_RECORDS + 1)]
    resp = replicate(client, rows)
    assert resp.status_code == 413 and resp.json()["field"] == "records"
    assert replicate(client, rows[:3], "Application/CBOR").json() == {"end_offset": 3}
    assert client.get("/v1/replicate/mirrored/0", headers={
        "authorization": f"Bearer {ADMIN}"}).json() == {"start_offset": 0, "end_offset": 3}


# -- config ------------------------------------------------------------------------------


def test_body_limits_in_cloud_toml(tmp_path: Path) -> None:
    cfg = parse_config({"data_dir": "d"}, tmp_path)
    assert cfg.max_records_per_request == 10_000 and cfg.max_decompressed_bytes is None
    assert decode_limits(cfg) == (2 * cfg.max_body_bytes, 10_000)
    cfg = parse_config({"data_dir": "d", "max_decompressed_bytes": 1 << 20,
                        "max_records_per_request": 5}, tmp_path)
    assert decode_limits(cfg) == (1 << 20, 5)
    for key, bad in (("max_records_per_request", 0), ("max_records_per_request", "10"),
                     ("max_decompressed_bytes", 10), ("max_decompressed_bytes", True)):
        with pytest.raises(ConfigError) as caught:
            parse_config({"data_dir": "d", key: bad}, tmp_path)
        assert caught.value.key == key


def test_only_bodies_known_to_be_small_are_decoded_on_the_event_loop() -> None:
    small, _ = encode_batch(batch(0, 3))
    assert small_enough_inline(small, None) and small_enough_inline(small, " Identity ")
    assert not small_enough_inline(small + bytes(INLINE_BYTES), None)
    assert small_enough_inline(zstandard.ZstdCompressor().compress(small), "zstd")
    bomb = zstandard.ZstdCompressor().compress(bytes(INLINE_BYTES + 1))
    assert len(bomb) < 100 and not small_enough_inline(bomb, "zstd")
    undeclared = zstandard.ZstdCompressor(write_content_size=False).compress(small)
    assert not small_enough_inline(undeclared, "zstd")
    assert not small_enough_inline(b"not a zstd frame", "zstd")
    assert not small_enough_inline(gzip.compress(small), "gzip")
    assert not small_enough_inline(small, "br")


def test_a_deeply_nested_json_body_is_a_400(client: TestClient) -> None:
    resp = client.post("/v1/groups/dash/join", content=b"[" * 100_000,
                       headers={"authorization": f"Bearer {READER}",
                                "content-type": "application/json"})
    assert resp.status_code == 400 and resp.json()["field"] == "body"
