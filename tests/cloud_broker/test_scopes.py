"""Token scopes, member secrets, mirror-target topics and the topic cap (G8).

In process through Starlette's TestClient: a real broker on tmp_path. Each test is one
of the issue's reproductions: edge tokens writing any topic (also a mirror's target),
readers seeing and touching every topic and group (making another member leave,
committing for an idle group), and unlimited topic auto-creation.
"""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud_broker.auth import add_token
from cloud_broker.config import ConfigError, parse_config
from cloud_broker.http import create_app
from cloud_broker.mirrors.replica_codec import encode_records
from shared_log import StoredRecord
from uplink import Batch, UplinkRecord, encode_batch

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

EDGE, WIDE_EDGE, DASH, OPS, MIRROR = ("edge-tok-1", "edge-wide-1", "dash-reader-1",
                                      "ops-reader-1", "mirror-admin-1")


def config(tmp_path: Path, **extra: Any) -> Any:
    return parse_config({
        "data_dir": str(tmp_path / "data"),
        "topics": {"telemetry": {"partitions": 2}, "billing": {"partitions": 1},
                   "dr-telemetry": {"partitions": 2}},
        "tokens": [
            {"token": EDGE, "edge_id": "gw-1", "permissions": ["ingest"],
             "topics": ["telemetry"]},
            {"token": WIDE_EDGE, "edge_id": "*", "permissions": ["ingest"]},
            {"token": DASH, "permissions": ["read"], "topics": ["telemetry"],
             "groups": ["dash*"]},
            {"token": OPS, "permissions": ["read"]},
            {"token": MIRROR, "permissions": ["admin"], "topics": ["dr-*"]},
        ],
        "auth": {"tokens_db": str(tmp_path / "tokens.db")},
        **extra})


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(config(tmp_path))) as c:
        yield c


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json"}


def ingest(client: TestClient, token: str, topic: str, edge: str = "gw-1",
           base: int = 0, n: int = 3) -> Any:
    recs = tuple(UplinkRecord(o, b"dev-%d" % o, 1000 + o, b"v") for o in range(base, base + n))
    body, enc = encode_batch(Batch(edge, "telemetry", "g1", base, base + n - 1, recs))
    return client.post(f"/v1/ingest/{topic}", content=body, headers={
        **auth(token), "Content-Type": "application/cbor", "Content-Encoding": enc})


def refused(resp: Any, status: int, field: str, name: str) -> None:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["field"] == field and repr(name) in body["error"], body


# -- topics --------------------------------------------------------------------------


def test_an_edge_token_writes_only_its_topics(client: TestClient) -> None:
    assert ingest(client, EDGE, "telemetry").status_code == 200
    refused(ingest(client, EDGE, "billing"), 403, "topic", "billing")
    refused(ingest(client, EDGE, "dr-telemetry"), 403, "topic", "dr-telemetry")


def test_readers_see_and_read_only_their_topics(client: TestClient) -> None:
    names = [t["name"] for t in client.get("/v1/topics", headers=auth(DASH)).json()["topics"]]
    assert names == ["telemetry"]
    everything = client.get("/v1/topics", headers=auth(OPS)).json()["topics"]
    assert len(everything) == 3  # no scopes: all topics, as before
    for path in ("/v1/topics/billing", "/v1/topics/billing/partitions/0/records?offset=0",
                 "/v1/topics/billing/partitions/0/stream",
                 "/v1/topics/no-such-topic"):  # refused before it is looked up
        refused(client.get(path, headers=auth(DASH)), 403, "topic", path.split("/")[3])
    assert client.get("/v1/topics/telemetry", headers=auth(DASH)).status_code == 200


# -- groups --------------------------------------------------------------------------


def join(client: TestClient, token: str, member: str, group: str = "dash",
         topics: tuple[str, ...] = ("telemetry",), **extra: Any) -> Any:
    return client.post(f"/v1/groups/{group}/join", headers=auth(token),
                       json={"member_id": member, "topics": list(topics), **extra})


def test_another_reader_cannot_make_a_member_leave_or_take_its_id(client: TestClient) -> None:
    view = join(client, DASH, "dash-1").json()
    secret = view["member_secret"]
    # The reproduction: POST /v1/groups/dash/leave {"member_id": "dash-1"}
    r = client.post("/v1/groups/dash/leave", headers=auth(OPS), json={"member_id": "dash-1"})
    refused(r, 400, "member_secret", "member_secret")
    r = client.post("/v1/groups/dash/leave", headers=auth(OPS),
                    json={"member_id": "dash-1", "member_secret": "guessed"})
    assert r.status_code == 409 and r.json()["code"] == "unknown_member", r.text
    r = join(client, OPS, "dash-1")  # joining under its id does not replace it either
    assert r.status_code == 409 and r.json()["code"] == "member_in_use", r.text
    r = client.post("/v1/groups/dash/heartbeat", headers=auth(DASH), json={
        "member_id": "dash-1", "generation": view["generation"], "member_secret": secret})
    assert r.status_code == 200, r.text
    again = join(client, DASH, "dash-1", member_secret=secret)  # its own rejoin works
    assert again.status_code == 200 and again.json()["member_secret"] == secret
    r = client.post("/v1/groups/dash/leave", headers=auth(DASH),
                    json={"member_id": "dash-1", "member_secret": secret})
    assert r.status_code == 200, r.text


def test_group_scope_guards_every_group_endpoint(client: TestClient) -> None:
    assert join(client, OPS, "ops-1", group="billing-jobs").status_code == 200
    commit = {"offsets": [{"topic": "telemetry", "partition": 0, "offset": 0}]}
    for method, path, body in [
            ("POST", "/v1/groups/billing-jobs/join", {"member_id": "x", "topics": ["telemetry"]}),
            ("POST", "/v1/groups/billing-jobs/commit", commit),  # an idle group's offsets
            ("POST", "/v1/groups/billing-jobs/leave", {"member_id": "ops-1"}),
            ("POST", "/v1/groups/billing-jobs/heartbeat", {"member_id": "ops-1"}),
            ("GET", "/v1/groups/billing-jobs", None),
            ("GET", "/v1/groups/billing-jobs/offsets", None)]:
        r = client.request(method, path, headers=auth(DASH), json=body)
        refused(r, 403, "group", "billing-jobs")
    assert client.post("/v1/groups/dash-idle/commit", headers=auth(DASH),
                       json=commit).status_code == 200
    listed = [g["group"] for g in client.get("/v1/groups", headers=auth(DASH)).json()["groups"]]
    assert listed == ["dash-idle"]
    assert {"billing-jobs", "dash-idle"} <= {
        g["group"] for g in client.get("/v1/groups", headers=auth(OPS)).json()["groups"]}
    # topics of the group's requests are scoped too
    refused(join(client, DASH, "d", topics=("telemetry", "billing")), 403, "topics", "billing")
    r = client.post("/v1/groups/dash-idle/commit", headers=auth(DASH), json={
        "offsets": [{"topic": "billing", "partition": 0, "offset": 0}]})
    refused(r, 403, "offsets[0].topic", "billing")


# -- mirror targets ------------------------------------------------------------------


def replicate(client: TestClient, token: str, topic: str, offsets: range) -> Any:
    recs = [StoredRecord(o, b"k", b"v", 1, (("origin", b"gw-9/s/g/%d" % o),)) for o in offsets]
    return client.post(f"/v1/replicate/{topic}/0", content=encode_records(recs),
                       headers={**auth(token), "Content-Type": "application/cbor"})


def test_a_mirror_target_refuses_edges_and_stays_one_after_a_restart(tmp_path: Path) -> None:
    with TestClient(create_app(config(tmp_path))) as client:
        assert ingest(client, WIDE_EDGE, "dr-telemetry").status_code == 200
        # a topic edges already write cannot become a mirror target
        refused(replicate(client, MIRROR, "dr-telemetry", range(0, 2)), 403, "topic",
                "dr-telemetry")
    (tmp_path / "data" / "topics" / "dr-telemetry").rename(tmp_path / "old")
    with TestClient(create_app(config(tmp_path))) as client:
        assert replicate(client, MIRROR, "dr-telemetry", range(0, 2)).status_code == 200
        refused(ingest(client, WIDE_EDGE, "dr-telemetry"), 403, "topic", "dr-telemetry")
        # the mirror's scope: an admin token scoped to dr-* cannot replicate elsewhere
        refused(replicate(client, MIRROR, "billing", range(0, 1)), 403, "topic", "billing")
        assert ingest(client, WIDE_EDGE, "billing").status_code == 200
    with TestClient(create_app(config(tmp_path))) as client:  # the claim is on disk
        refused(ingest(client, WIDE_EDGE, "dr-telemetry"), 403, "topic", "dr-telemetry")
        assert replicate(client, MIRROR, "dr-telemetry", range(2, 4)).status_code == 200
    # A topic an older broker mirrored into (no marker): its records carry the source's
    # origin headers, which must not make it look like a topic edges write.
    (tmp_path / "data" / "topics" / "dr-telemetry" / "mirror-target").unlink()
    with TestClient(create_app(config(tmp_path))) as client:
        assert replicate(client, MIRROR, "dr-telemetry", range(4, 5)).status_code == 200
        refused(ingest(client, WIDE_EDGE, "dr-telemetry"), 403, "topic", "dr-telemetry")


# -- topic cap -----------------------------------------------------------------------


def test_auto_creation_stops_at_max_topics(tmp_path: Path) -> None:
    cfg = config(tmp_path, auto_create_partitions=2, max_topics=5)
    with TestClient(create_app(cfg)) as client:
        for i in range(2):
            assert ingest(client, WIDE_EDGE, f"auto-{i}").status_code == 200
        r = ingest(client, WIDE_EDGE, "auto-2")
        refused(r, 404, "topic", "auto-2")
        assert "limit of 5 topics (max_topics)" in r.json()["error"]
        assert ingest(client, WIDE_EDGE, "auto-1", base=3).status_code == 200  # existing
        for i in range(2, 40):  # the flood of new topic names
            assert ingest(client, WIDE_EDGE, f"auto-{i}").status_code == 404
        topic_dirs = sorted(p.name for p in (tmp_path / "data" / "topics").iterdir())
        assert topic_dirs == ["auto-0", "auto-1", "billing", "dr-telemetry", "telemetry"]
        # the replication path creates topics through the same door
        admin_all = "admin-all-1"
        add_token(tmp_path / "tokens.db", admin_all, "*", ["admin"])
        refused(replicate(client, admin_all, "auto-3", range(0, 1)), 404, "topic", "auto-3")
    with TestClient(create_app(cfg)) as client:  # topics created before are reopened
        names = [t["name"] for t in client.get("/v1/topics", headers=auth(OPS)).json()[
            "topics"]]
        assert names == ["auto-0", "auto-1", "billing", "dr-telemetry", "telemetry"]


def test_config_refuses_more_topics_than_max_topics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_topics"):
        config(tmp_path, max_topics=2)


@pytest.mark.parametrize("bad", [[], "telemetry", [""], ["a,b"], [3]])
def test_config_scopes_are_validated(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(ConfigError, match=r"tokens\[0\]\.topics"):
        parse_config({"data_dir": str(tmp_path), "tokens": [
            {"token": "long-enough", "topics": bad}]})


# -- the tokens table ----------------------------------------------------------------


def test_tokens_table_scopes_and_tables_from_before_scopes(client: TestClient,
                                                          tmp_path: Path) -> None:
    db = tmp_path / "tokens.db"
    add_token(db, "table-reader-1", "*", ["read"], topics=["bill*"], groups=["b-*"])
    names = [t["name"] for t in client.get("/v1/topics", headers=auth("table-reader-1")
                                           ).json()["topics"]]
    assert names == ["billing"]
    # a table written by an older broker, without the scope columns: all topics
    old = tmp_path / "old-tokens.db"
    conn = sqlite3.connect(old)
    conn.execute("create table tokens (digest text primary key, edge_id text, "
                 "permissions text)")
    from cloud_broker.auth import digest
    conn.execute("insert into tokens values (?, '*', 'read')", [digest("old-reader-1")])
    conn.commit()
    conn.close()
    cfg = config(tmp_path / "second", auth={"tokens_db": str(old)})
    with TestClient(create_app(cfg)) as c:
        listed = c.get("/v1/topics", headers=auth("old-reader-1")).json()["topics"]
        assert len(listed) == 3
    cols = {r[1] for r in sqlite3.connect(old).execute("pragma table_info(tokens)")}
    assert {"topics", "groups"} <= cols  # added on start, empty = all


def test_out_of_scope_ingest_is_refused_before_the_body_is_read(client: TestClient) -> None:
    """A 403 for the topic, not a 413 or 400: the (oversized, garbage) body is never read."""
    r = client.post("/v1/ingest/billing", content=b"\xff" * (9 << 20), headers={
        **auth(EDGE), "Content-Type": "application/cbor"})
    refused(r, 403, "topic", "billing")


def test_a_claim_made_while_a_body_was_read_still_protects_the_topic(tmp_path: Path) -> None:
    import asyncio

    from cloud_broker.config import TopicConfig
    from cloud_broker.ingest import Ingestor, RejectedBatch
    from cloud_broker.storage import PartitionStore
    from cloud_broker.trust import MirrorTargets

    store = PartitionStore(tmp_path)
    store.ensure_topic(TopicConfig("dr", 1))
    targets = MirrorTargets(store.root)
    targets.claim("dr")
    ingestor = Ingestor(store, tmp_path)
    ingestor.write_protected = targets
    batch = Batch("gw-1", "s", "g1", 0, 0, (UplinkRecord(0, b"k", 1, b"v"),))
    with pytest.raises(RejectedBatch) as info:
        asyncio.run(ingestor.ingest("dr", batch))
    assert info.value.field == "topic"
    assert "dr" in MirrorTargets(store.root)  # remembered on disk
    store.close()


def test_mirror_api_shows_and_manages_only_mirrors_of_scoped_topics(
        client: TestClient, tmp_path: Path) -> None:
    add_token(tmp_path / "tokens.db", "admin-all-2", "*", ["admin"])
    for topic in ("telemetry", "billing"):
        r = client.post("/v1/mirrors", headers=auth("admin-all-2"), json={
            "name": f"arch-{topic}", "topic": topic, "target": "sql",
            "path": str(tmp_path / f"{topic}.db")})
        assert r.status_code == 201, r.text
    listed = client.get("/v1/mirrors", headers=auth(DASH)).json()["mirrors"]
    assert [m["name"] for m in listed] == ["arch-telemetry"]
    refused(client.post("/v1/mirrors", headers=auth(MIRROR), json={
        "name": "x", "topic": "billing", "target": "sql", "path": str(tmp_path / "x.db")}),
        403, "topic", "billing")
    refused(client.delete("/v1/mirrors/arch-billing", headers=auth(MIRROR)), 403, "topic",
            "billing")
    assert client.delete("/v1/mirrors/arch-billing",
                         headers=auth("admin-all-2")).status_code == 204
