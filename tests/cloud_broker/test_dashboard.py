"""The data of the broker's dashboard: ``GET /v1/dashboard`` (what it shows, to whom,
within which bounds). In process through Starlette's TestClient on a real broker in
tmp_path; tests/opsui serves and drives the page itself."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_broker.config import parse_config
from cloud_broker.edges import MAX_ERROR_CHARS, EdgeActivity
from cloud_broker.http import create_app
from cloud_broker.http.dashboard import MAX_EDGES
from uplink import Batch, UplinkRecord, encode_batch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

EDGE, READER, SCOPED = "edge-tok-1", "reader-tok-1", "scoped-reader-1"


def config(tmp_path: Path) -> Any:
    return parse_config({
        "data_dir": str(tmp_path / "data"),
        "topics": {"telemetry": {"partitions": 2}, "billing": {"partitions": 1}},
        "tokens": [
            {"token": EDGE, "edge_id": "*", "permissions": ["ingest"]},
            {"token": READER, "permissions": ["read"]},
            {"token": SCOPED, "permissions": ["read"], "topics": ["telemetry"],
             "groups": ["dash*"]},
        ]})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with TestClient(create_app(config(tmp_path_factory.mktemp("dash")))) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def ingest(client: TestClient, topic: str, edge: str, base: int, n: int) -> Any:
    recs = tuple(UplinkRecord(o, b"dev-%d" % o, 1000 + o, b"v") for o in range(base, base + n))
    body, enc = encode_batch(Batch(edge, "telemetry", "g1", base, base + n - 1, recs))
    return client.post(f"/v1/ingest/{topic}", content=body, headers={
        **auth(EDGE), "Content-Type": "application/cbor", "Content-Encoding": enc})


def test_the_dashboard_shows_partitions_edges_groups_and_their_errors(
        client: TestClient) -> None:
    assert ingest(client, "telemetry", "gw-1", 0, 10).status_code == 200
    assert ingest(client, "billing", "gw-2", 0, 4).status_code == 200
    assert ingest(client, "telemetry", "gw-1", 20, 2).status_code == 409  # a gap
    member = client.post("/v1/groups/dash-1/join", headers=auth(READER),
                         json={"member_id": "m-1", "topics": ["telemetry"]}).json()
    client.post("/v1/groups/dash-1/commit", headers=auth(READER), json={
        "member_id": member["member_id"], "generation": member["generation"],
        "member_secret": member["member_secret"],
        "offsets": [{"topic": "telemetry", "partition": 0, "offset": 0}]})

    doc = client.get("/v1/dashboard", headers=auth(READER)).json()
    ends = {(t["topic"], p["partition"]): p["end_offset"]
            for t in doc["topics"] for p in t["partitions"]}
    assert sum(v for (t, _), v in ends.items() if t == "telemetry") == 10
    assert ends[("billing", 0)] == 4
    edges = {e["edge_id"]: e for e in doc["edges"]}
    gw1 = edges["gw-1"]
    assert (gw1["topic"], gw1["generation"], gw1["acked_offset"]) == ("telemetry", "g1", 9)
    assert (gw1["batches"], gw1["records"], gw1["errors"]) == (1, 10, 1)
    assert gw1["last_error"].startswith("409 gap") and gw1["last_seen"] <= doc["time"]
    assert doc["edges"][0]["edge_id"] == "gw-1"  # most recently seen first
    group = next(g for g in doc["groups"] if g["group"] == "dash-1")
    assert [m["member_id"] for m in group["members"]] == [member["member_id"]]
    offsets = {o["partition"]: o for o in group["offsets"]}
    assert offsets[0]["lag"] == ends[("telemetry", 0)]
    assert group["lag"] == sum(o["lag"] for o in group["offsets"])
    assert doc["mirrors"] == [] and doc["truncated"] == [] and doc["healthy"] is True
    assert doc["ingest"]["records_written"] == 14


def test_a_token_sees_only_its_scopes(client: TestClient) -> None:
    ingest(client, "billing", "gw-3", 0, 1)
    doc = client.get("/v1/dashboard", headers=auth(SCOPED)).json()
    assert {t["topic"] for t in doc["topics"]} == {"telemetry"}
    assert {e["topic"] for e in doc["edges"]} == {"telemetry"}
    assert all(g["group"].startswith("dash") for g in doc["groups"])
    assert doc["ingest"] is None  # totals over all topics: not for a scoped token


@pytest.mark.parametrize(("headers", "status"), [
    ({}, 401), ({"Authorization": "Bearer nope"}, 401),
    ({"Authorization": f"Bearer {EDGE}"}, 403)])
def test_the_dashboard_needs_a_read_token(client: TestClient, headers: dict[str, str],
                                          status: int) -> None:
    assert client.get("/v1/dashboard", headers=headers).status_code == status


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(token=st.binary(max_size=60).map(lambda b: bytes(c for c in b if c > 31 and c != 127)))
def test_hostile_tokens_never_fail_the_server(client: TestClient, token: bytes) -> None:
    resp = client.get("/v1/dashboard", headers={"Authorization": b"Bearer " + token})
    assert resp.status_code in (401, 403) or (token.strip() == READER.encode()
                                              and resp.status_code == 200)


def test_the_edge_table_is_bounded_and_keeps_the_most_recent() -> None:
    now = [0.0]
    table = EdgeActivity(max_edges=100, clock=lambda: now[0])
    for i in range(250):
        now[0] = float(i)
        table.acked(f"e{i}", "s", "t", "g", i, 1)
    table.failed("e249", "s", "t", "g", "x" * 10_000)
    assert len(table) == 100
    recent = table.recent(MAX_EDGES, lambda t: True)
    assert [e["edge_id"] for e in recent[:2]] == ["e249", "e248"]
    assert recent[-1]["edge_id"] == "e150"  # the oldest 150 were dropped
    assert len(recent[0]["last_error"]) == MAX_ERROR_CHARS
    table.acked("e249", "s", "t", "g2", 0, 1)  # a new generation starts its offsets over
    assert table.recent(1, lambda t: True)[0]["acked_offset"] == 0
    assert table.recent(5, lambda t: t != "t") == []
