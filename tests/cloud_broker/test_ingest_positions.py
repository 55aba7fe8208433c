"""Positions (edge, stream, generation) are bounded: each is kept for good, so an edge
that opens a new stream name or generation with every request must not grow the
broker's memory and checkpoint without end. A batch that would open one past
``max_positions_per_edge`` or ``max_positions`` is refused (PositionLimit, HTTP 429)
before anything is written; known positions and other edges go on; the count survives a
restart (rebuilt from the checkpoint and the data). Real partitions in tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from cloud_broker.config import BrokerConfig, TokenConfig, TopicConfig, parse_config
from cloud_broker.http import create_app
from cloud_broker.ingest import PositionLimit
from tests.cloud_broker.test_ingestor import TOPIC, Cloud, ingest
from uplink import Ack, Batch, UplinkRecord, encode_batch


def batch(edge: str, gen: str, base: int = 0, n: int = 3, stream: str = "telemetry"
          ) -> Batch:
    return Batch(edge, stream, gen, base, base + n - 1,
                 tuple(UplinkRecord(o, b"dev-%d" % (o % 3), 1000 + o, b"v%d" % o)
                       for o in range(base, base + n)))


def stored(cloud: Cloud) -> int:
    return sum(p.log.end_offset for p in cloud.parts)


def test_one_edge_cannot_open_more_positions_than_its_bound(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path, 2, max_positions_per_edge=3)
    for g in ("g1", "g2", "g3"):
        assert isinstance(ingest(cloud, batch("edge-a", g)), Ack)
    written = stored(cloud)
    with pytest.raises(PositionLimit) as err:
        ingest(cloud, batch("edge-a", "g4"))
    assert "edge-a" in str(err.value) and "max_positions_per_edge" in str(err.value)
    assert "g4" in str(err.value)
    with pytest.raises(PositionLimit):  # a new stream name is a new position too
        ingest(cloud, batch("edge-a", "g1", stream="other"))
    assert stored(cloud) == written  # nothing of the refused batches was appended
    assert cloud.ingestor.stats.position_limited == 2
    # known positions go on, and another edge has its own bound
    assert isinstance(ingest(cloud, batch("edge-a", "g2", base=3)), Ack)
    assert isinstance(ingest(cloud, batch("edge-b", "g1")), Ack)
    assert stored(cloud) == written + 6
    cloud.close()


def test_the_count_survives_a_restart(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path, 2, max_positions_per_edge=2)
    for g in ("g1", "g2"):
        assert isinstance(ingest(cloud, batch("edge-a", g)), Ack)
    cloud.close()
    (tmp_path / "ingest-state.json").unlink()  # the count comes back from the data too
    cloud = Cloud(tmp_path, 2, max_positions_per_edge=2)
    with pytest.raises(PositionLimit):
        ingest(cloud, batch("edge-a", "g3"))
    cloud.close()


def test_all_edges_together_are_bounded(tmp_path: Path) -> None:
    cloud = Cloud(tmp_path, 2, max_positions=2)
    assert isinstance(ingest(cloud, batch("edge-a", "g1")), Ack)
    assert isinstance(ingest(cloud, batch("edge-b", "g1")), Ack)
    with pytest.raises(PositionLimit) as err:
        ingest(cloud, batch("edge-c", "g1"))
    assert "max_positions" in str(err.value)
    assert isinstance(ingest(cloud, batch("edge-a", "g1", base=3)), Ack)
    cloud.close()


def test_over_http_the_refusal_is_a_429_the_edge_retries(tmp_path: Path) -> None:
    config = BrokerConfig(
        data_dir=tmp_path / "data", topics={TOPIC: TopicConfig(TOPIC, 2)},
        tokens=(TokenConfig("edge-token", "edge-a", frozenset({"ingest"})),),
        max_positions_per_edge=2)
    headers = {"content-type": "application/cbor", "authorization": "Bearer edge-token"}
    with TestClient(create_app(config)) as client:
        for g in ("g1", "g2"):
            body, _ = encode_batch(batch("edge-a", g))
            assert client.post(f"/v1/ingest/{TOPIC}", content=body,
                               headers=headers).status_code == 200
        body, _ = encode_batch(batch("edge-a", "g3"))
        resp = client.post(f"/v1/ingest/{TOPIC}", content=body, headers=headers)
        assert resp.status_code == 429
        assert resp.headers["retry-after"] == "60"
        assert resp.json()["field"] == "generation"
        assert "max_positions_per_edge" in resp.json()["error"]
        metrics = client.get("/metrics").text
        assert 'broker_ingest_batches_total{decision="position_limit"} 1.0' in metrics


def test_the_metrics_show_positions_held_against_their_bounds(tmp_path: Path) -> None:
    """What the alert on positions near the limit reads (deploy/grafana/alerts.yml)."""
    config = BrokerConfig(
        data_dir=tmp_path / "data", topics={TOPIC: TopicConfig(TOPIC, 2)},
        auth_required=False, max_positions_per_edge=4, max_positions=10)
    headers = {"content-type": "application/cbor"}

    def gauges(client: TestClient) -> dict[str, float]:
        return {s.name: s.value
                for fam in text_string_to_metric_families(client.get("/metrics").text)
                for s in fam.samples if s.name.startswith("broker_ingest_")
                and "positions" in s.name}

    with TestClient(create_app(config)) as client:
        assert gauges(client) == {
            "broker_ingest_positions": 0, "broker_ingest_positions_limit": 10,
            "broker_ingest_edge_positions_max": 0, "broker_ingest_edge_positions_limit": 4}
        for edge, gen in (("edge-a", "g1"), ("edge-a", "g2"), ("edge-a", "g3"),
                          ("edge-b", "g1")):
            body, _ = encode_batch(batch(edge, gen))
            assert client.post(f"/v1/ingest/{TOPIC}", content=body,
                               headers=headers).status_code == 200
        got = gauges(client)
        assert (got["broker_ingest_positions"], got["broker_ingest_edge_positions_max"]) == (4, 3)
    with TestClient(create_app(config)) as client:  # a restart: rebuilt, not reset
        got = gauges(client)
        assert (got["broker_ingest_positions"], got["broker_ingest_edge_positions_max"]) == (4, 3)


def test_the_bounds_are_read_from_cloud_toml(tmp_path: Path) -> None:
    cfg = parse_config({"data_dir": str(tmp_path), "max_positions_per_edge": 5,
                        "max_positions": 50})
    assert (cfg.max_positions_per_edge, cfg.max_positions) == (5, 50)
    with pytest.raises(Exception, match="max_positions_per_edge"):
        parse_config({"data_dir": str(tmp_path), "max_positions_per_edge": 0})
