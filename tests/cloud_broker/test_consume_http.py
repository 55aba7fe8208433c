"""Request validation of the consumer endpoints, in process (Starlette TestClient).

Every way a request can be wrong gets a 4xx with a JSON body naming the problem:
auth (401/403), unknown topic/partition (404), bad parameters and bodies (400),
offsets outside the partition (416, with the valid range), group rules (409 + code).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_broker.config import parse_config
from cloud_broker.http import create_app
from uplink import Batch, UplinkRecord, encode_batch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

READ, INGEST, ADMIN = "reader-token-1", "ingest-token-1", "admin-token-01"
FETCH = "/v1/topics/t/partitions/{p}/records"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    cfg = parse_config({
        "data_dir": str(tmp_path_factory.mktemp("consume-http")),
        "topics": {"t": {"partitions": 2}},
        "tokens": [{"token": READ, "permissions": ["read"]},
                   {"token": INGEST, "permissions": ["ingest"]},
                   {"token": ADMIN, "permissions": ["admin"]}]})
    with TestClient(create_app(cfg)) as c:
        recs = tuple(UplinkRecord(i, b"same-device", 1000 + i, b"v%d" % i) for i in range(10))
        body, enc = encode_batch(Batch("gw-1", "s", "g1", 0, 9, recs))
        r = c.post("/v1/ingest/t", content=body, headers={
            "Content-Type": "application/cbor", "Content-Encoding": enc, **auth(INGEST)})
        assert r.status_code == 200, r.text
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def full_partition(client: TestClient) -> int:
    parts = client.get("/v1/topics/t", headers=auth(READ)).json()["partitions"]
    return next(p["partition"] for p in parts if p["end_offset"] == 10)


def refused(resp: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert isinstance(body["error"], str) and body["error"]
    if field is not None:
        assert body["field"] == field, body
    return body


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/v1/topics"), ("GET", "/v1/topics/t"), ("GET", FETCH.format(p=0) + "?offset=0"),
    ("GET", "/v1/topics/t/partitions/0/stream"), ("GET", "/v1/groups"),
    ("POST", "/v1/groups/g/join"), ("POST", "/v1/groups/g/commit")])
def test_auth_401_without_token_403_without_read(client: TestClient, method: str,
                                                 path: str) -> None:
    refused(client.request(method, path), 401)
    refused(client.request(method, path, headers=auth("nobody-knows-me")), 401)
    refused(client.request(method, path, headers=auth(INGEST), json={}), 403, "authorization")


def test_read_and_admin_tokens_may_fetch(client: TestClient) -> None:
    p = full_partition(client)
    for token in (READ, ADMIN):
        r = client.get(FETCH.format(p=p), params={"offset": 0}, headers=auth(token))
        assert r.status_code == 200 and len(r.json()["records"]) == 10


@pytest.mark.parametrize(("path", "params", "status", "field"), [
    ("/v1/topics/nope/partitions/0/records", {"offset": 0}, 404, "topic"),
    (FETCH.format(p=2), {"offset": 0}, 404, "partition"),
    (FETCH.format(p="x"), {"offset": 0}, 400, "partition"),
    (FETCH.format(p=-1), {"offset": 0}, 400, "partition"),
    (FETCH.format(p=0), {}, 400, "offset"),
    (FETCH.format(p=0), {"offset": -1}, 400, "offset"),
    (FETCH.format(p=0), {"offset": "ten"}, 400, "offset"),
    (FETCH.format(p=0), {"offset": "9" * 30}, 400, "offset"),
    (FETCH.format(p=0), {"offset": 0, "max_records": 0}, 400, "max_records"),
    (FETCH.format(p=0), {"offset": 0, "max_records": 10**9}, 400, "max_records"),
    (FETCH.format(p=0), {"offset": 0, "max_bytes": 0}, 400, "max_bytes"),
    (FETCH.format(p=0), {"offset": 0, "wait_ms": 30_001}, 400, "wait_ms"),
    (FETCH.format(p=0), {"offset": 0, "encoding": "hex"}, 400, "encoding"),
    ("/v1/topics/t/partitions/0/stream", {"offset": -5}, 400, "offset"),
    ("/v1/topics/t/partitions/0/stream", {"keepalive_ms": 1}, 400, "keepalive_ms"),
    ("/v1/topics/nope", {}, 404, "topic"),
    ("/v1/groups/nope", {}, 404, "group"),
    ("/v1/groups/bad..name/offsets", {}, 400, "group"),
])
def test_bad_fetch_requests(client: TestClient, path: str, params: dict[str, Any],
                            status: int, field: str) -> None:
    refused(client.get(path, params=params, headers=auth(READ)), status, field)


def test_offset_past_the_end_is_416_with_the_range(client: TestClient) -> None:
    p = full_partition(client)
    for path in (FETCH.format(p=p), f"/v1/topics/t/partitions/{p}/stream"):
        body = refused(client.get(path, params={"offset": 11}, headers=auth(READ)), 416,
                       "offset")
        assert (body["start_offset"], body["end_offset"]) == (0, 10)
    end = client.get(FETCH.format(p=p), params={"offset": 10}, headers=auth(READ)).json()
    assert end["records"] == [] and end["next_offset"] == 10 and end["end_offset"] == 10
    refused(client.get(f"/v1/topics/t/partitions/{p}/stream",
                       headers={**auth(READ), "Last-Event-ID": "x1"}), 400, "last-event-id")


def test_json_and_cbor_answers(client: TestClient) -> None:
    from cloud_broker.record_codec import decode_cbor
    p = full_partition(client)
    r = client.get(FETCH.format(p=p), params={"offset": 4, "max_records": 3},
                   headers={"Authorization": f"Bearer {READ}"})
    assert r.headers["content-type"] == "application/cbor"
    got = decode_cbor(r.content)
    assert [x.offset for x in got.records] == [4, 5, 6] and got.next_offset == 7
    assert got.records[0].value == b"v4" and got.records[0].headers[0][0] == "origin"
    j = client.get(FETCH.format(p=p), params={"offset": 9, "encoding": "utf8"},
                   headers=auth(READ)).json()
    assert j["records"][0]["value"] == "v9" and j["records"][0]["encoding"] == "utf8"
    listing = client.get("/v1/topics", headers=auth(READ)).json()
    assert listing == {"topics": [{"name": "t", "partitions": 2, "retention_bytes": None,
                                   "retention_ms": None}]}


def _join(client: TestClient, member: str, **extra: Any) -> Any:
    return client.post("/v1/groups/v/join", headers=auth(READ),
                       json={"member_id": member, "topics": ["t"], **extra})


@pytest.mark.parametrize(("path", "body", "field"), [
    ("join", b"{not json", "body"),
    ("join", b"[1, 2]", "body"),
    ("join", {"topics": ["t"]}, "member_id"),
    ("join", {"member_id": "../x", "topics": ["t"]}, "member_id"),
    ("join", {"member_id": "m", "topics": []}, "topics"),
    ("join", {"member_id": "m", "topics": "t"}, "topics"),
    ("join", {"member_id": "m", "topics": ["t"], "session_timeout_ms": 5}, "session_timeout_ms"),
    ("join", {"member_id": "m", "topics": ["t"], "assignor": "sticky"}, "assignor"),
    ("heartbeat", {"member_id": "m"}, "generation"),
    ("heartbeat", {"member_id": "m", "generation": True}, "generation"),
    ("heartbeat", {"member_id": "m", "generation": 1}, "member_secret"),
    ("heartbeat", {"member_id": "m", "generation": 1, "member_secret": ""}, "member_secret"),
    ("commit", {"member_id": "m", "generation": 1,
                "offsets": [{"topic": "t", "partition": 0, "offset": 1}]}, "member_secret"),
    ("leave", {"member_id": "m"}, "member_secret"),
    ("commit", {"offsets": []}, "offsets"),
    ("commit", {"offsets": [{"topic": "t", "partition": 0}]}, "offset"),
    ("commit", {"offsets": [{"topic": "t", "partition": 0, "offset": -1}]}, "offset"),
    ("commit", {"offsets": [{"topic": "t", "partition": 0, "offset": 1}] * 2}, "offsets"),
    ("commit", {"offsets": [7]}, "offsets[0]"),
    ("leave", {}, "member_id"),
])
def test_bad_group_bodies(client: TestClient, path: str, body: Any, field: str) -> None:
    kwargs = {"content": body} if isinstance(body, bytes) else {"json": body}
    refused(client.post(f"/v1/groups/v/{path}", headers=auth(READ), **kwargs), 400, field)


def test_group_rules_are_409_with_a_code(client: TestClient) -> None:
    refused(client.post("/v1/groups/v/join", headers=auth(READ),
                        json={"member_id": "m", "topics": ["nope"]}), 404, "topic")
    a = _join(client, "a").json()
    assert a["generation"] >= 1 and len(a["assignment"]) == 2
    gen, secret = a["generation"], a["member_secret"]
    body = refused(client.post("/v1/groups/v/heartbeat", headers=auth(READ),
                               json={"member_id": "a", "generation": gen - 1,
                                     "member_secret": secret}), 409)
    assert body["code"] == "stale_generation" and body["generation"] == gen
    body = refused(client.post("/v1/groups/v/heartbeat", headers=auth(READ),
                               json={"member_id": "ghost", "generation": gen,
                                     "member_secret": secret}), 409)
    assert body["code"] == "unknown_member"
    ok = client.post("/v1/groups/v/commit", headers=auth(READ), json={
        "member_id": "a", "generation": gen, "member_secret": secret,
        "offsets": [{"topic": "t", "partition": 0, "offset": 0}]})
    assert ok.status_code == 200, ok.text
    refused(client.post("/v1/groups/v/commit", headers=auth(READ), json={
        "member_id": "a", "generation": gen, "member_secret": secret,
        "offsets": [{"topic": "t", "partition": 1, "offset": 999}]}), 400, "offsets")
    refused(client.post("/v1/groups/v/commit", headers=auth(READ), json={
        "member_id": "a", "generation": gen, "member_secret": secret,
        "offsets": [{"topic": "t", "partition": 7, "offset": 1}]}), 404)
    body = refused(client.post("/v1/groups/v/commit", headers=auth(READ), json={
        "offsets": [{"topic": "t", "partition": 1, "offset": 0}]}), 409)
    assert body["code"] == "group_active"
    body = refused(client.post("/v1/groups/v/commit", headers=auth(READ), json={
        "member_id": "a", "generation": gen + 5, "member_secret": secret,
        "offsets": [{"topic": "t", "partition": 1, "offset": 0}]}), 409)
    assert body["code"] == "stale_generation"
    assert client.post("/v1/groups/v/leave", headers=auth(READ),
                       json={"member_id": "a", "member_secret": secret}).status_code == 200
    metrics = client.get("/metrics").text
    assert 'broker_consumer_lag{group="v",partition="0",topic="t"}' in metrics
    assert "broker_fetch_records_total" in metrics


def test_standalone_commit_and_offsets(client: TestClient, tmp_path: Path) -> None:
    r = client.post("/v1/groups/solo/commit", headers=auth(READ), json={
        "offsets": [{"topic": "t", "partition": 1, "offset": 0}]})
    assert r.status_code == 200, r.text
    got = client.get("/v1/groups/solo/offsets", headers=auth(READ)).json()
    assert got == {"group": "solo", "offsets": [{"topic": "t", "partition": 1, "offset": 0}]}
    assert client.get("/v1/groups/none-yet/offsets", headers=auth(READ)).json()[
        "offsets"] == []


def test_timed_out_long_poll_leaves_no_waiter_behind(client: TestClient) -> None:
    p = full_partition(client)
    part = client.app.state.broker.store.partition("t", p)  # type: ignore[attr-defined]
    for _ in range(3):
        r = client.get(FETCH.format(p=p), params={"offset": 10, "wait_ms": 20},
                       headers=auth(READ))
        assert r.status_code == 200 and r.json()["records"] == []
    assert part._waiters == []


def test_corrupt_batches_are_reported_as_skipped(tmp_path: Path) -> None:
    from cloud_broker.config import TopicConfig
    from cloud_broker.storage import PartitionStore
    from shared_log import Record

    store = PartitionStore(tmp_path)
    (part,) = store.ensure_topic(TopicConfig("c", 1, segment_bytes=4096))
    for i in range(60):  # 5 records per batch, several sealed segments
        part.log.append([Record(b"k", b"value-%03d-%d" % (i, j), i) for j in range(5)])
    store.close()
    first = sorted((tmp_path / "topics" / "c" / "0").glob("*.log"))[0]
    data = bytearray(first.read_bytes())
    data[200] ^= 0xFF  # inside the third batch or so: its CRC no longer matches
    first.write_bytes(bytes(data))
    cfg = parse_config({"data_dir": str(tmp_path), "auth": {"required": False},
                        "topics": {"c": {"partitions": 1, "segment_bytes": 4096}}})
    with TestClient(create_app(cfg)) as c:
        body = c.get("/v1/topics/c/partitions/0/records", params={"offset": 0},
                     headers={"Accept": "application/json"}).json()
        assert len(body["skipped"]) == 1
        lost = body["skipped"][0]
        assert lost["last"] - lost["first"] + 1 == 5
        offsets = [r["offset"] for r in body["records"]]
        assert lost["first"] not in offsets and offsets == sorted(offsets)
        assert offsets[0] == 0 and lost["last"] + 1 in offsets
        assert 'broker_fetch_skipped_offsets_total{topic="c"} 5.0' in c.get("/metrics").text


def test_a_join_refused_at_the_barrier_answers_the_members_secret(tmp_path: Path) -> None:
    """Over HTTP, a first join that times out at the barrier carries ``member_secret`` in
    its 409, and a join again with it is the same member (not ``member_in_use``)."""
    cfg = parse_config({"data_dir": str(tmp_path), "topics": {"t": {"partitions": 2}},
                        "tokens": [{"token": READ, "permissions": ["read"]}]})
    with TestClient(create_app(cfg)) as c:
        frozen = c.app.state.broker.groups.clock()  # type: ignore[attr-defined]
        c.app.state.broker.groups.clock = lambda: frozen  # type: ignore[attr-defined]
        join = "/v1/groups/g/join"
        first = c.post(join, json={"member_id": "a", "topics": ["t"],
                                   "session_timeout_ms": 1000}, headers=auth(READ))
        assert first.status_code == 200, first.text
        body = refused(c.post(join, json={"member_id": "b", "topics": ["t"],
                                          "session_timeout_ms": 1000}, headers=auth(READ)),
                       409)
        assert body["code"] == "rebalance_in_progress" and body["member_secret"]
        again = refused(c.post(join, json={"member_id": "b", "topics": ["t"],
                                           "session_timeout_ms": 1000}, headers=auth(READ)),
                        409)
        assert again["code"] == "member_in_use" and "member_secret" not in again
        rejoin = c.post(join, json={"member_id": "b", "topics": ["t"], "session_timeout_ms":
                                    1000, "member_secret": body["member_secret"]},
                        headers=auth(READ))
        assert rejoin.status_code == 409 and rejoin.json()["code"] == "rebalance_in_progress"
