"""Edge failover between broker URLs: the choice of node, its config, and G3 across a switch.

The node choice is ``uplink_http.Endpoints`` (tested directly); the end-to-end tests run a
real forwarder against a real ``cloud-broker serve`` reached through two loopback proxies
(device_simulator.netfault), i.e. two addresses of one store: the first goes dark in the
middle of the drain, after cutting responses the broker had already processed, so the
batches retried on the second address are duplicates there. That is the situation of two
cluster nodes over one shared store; with nodes that do not share a store a switch could
not keep G3, which is why docs/cluster.md allows several URLs only in cluster mode. The
same drain against two broker processes over one JetStream store, with kill -9, is in
tests/cluster/.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from device_simulator.netfault import FaultProxy
from edge_agent.config import ConfigError, UplinkConfig, load_config, parse_config
from edge_agent.forwarder import Forwarder, StreamSender
from edge_agent.outgoing import Outgoing
from edge_agent.status import _endpoints as uplink_endpoints
from edge_agent.uplink_http import Endpoints, HttpUplink, RetryableUplinkError
from tests.helpers import broker_server, free_port
from tests.helpers_uplink import (
    edge_config,
    fill,
    open_edge,
    read_cloud,
    run_until,
    verify_cloud,
)
from uplink import Batch

A, B, C = "http://a:1", "http://b:2", "http://c:3"


def test_endpoints_stay_on_a_node_that_answers_and_move_once_per_failure() -> None:
    e = Endpoints([A + "/", B, C])
    assert e.current == A and e.urls == (A, B, C)
    e.failed(A)
    assert e.current == B and e.switches == 1
    e.failed(A)  # a late failure of a batch still in flight to A: no second move
    assert e.current == B and e.switches == 1
    e.failed(B)
    e.failed(C)
    assert e.current == A and e.switches == 3  # round and round, never stuck


def test_one_endpoint_never_switches() -> None:
    e = Endpoints([A])
    e.failed(A)
    assert e.current == A and e.switches == 0
    with pytest.raises(ValueError):
        Endpoints([])


def _uplink_doc(url: object) -> dict[str, object]:
    return {"edge_id": "gw", "data_dir": "/tmp/x", "uplink": {"url": url},
            "streams": [{"name": "t", "topics": ["d/+/t"]}]}


def test_url_may_be_a_list_of_nodes() -> None:
    cfg = parse_config(_uplink_doc([A, B + "/"]), Path("/"))
    assert cfg.uplink.endpoints == (A, B) and cfg.uplink.url == A
    one = parse_config(_uplink_doc(A), Path("/"))
    assert one.uplink.endpoints == (A,) and one.uplink.url == A


@pytest.mark.parametrize("bad, says", [
    ([], "list of 1..16"),
    ([A, A], "same URL twice"),
    ([A, "ftp://b:1"], "must be a URL"),
    ([A, 7], "must be a URL"),
    ([f"http://h{i}:1" for i in range(17)], "list of 1..16"),
])
def test_bad_url_lists_name_the_key(bad: object, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_uplink_doc(bad), Path("/"))
    assert "uplink.url" in str(err.value) and says in str(err.value)


def test_urls_is_not_a_key_of_its_own() -> None:
    doc = _uplink_doc(A)
    doc["uplink"] = {"url": A, "urls": [B]}  # type: ignore[index]
    with pytest.raises(ConfigError, match="urls"):
        parse_config(doc, Path("/"))


def test_url_list_from_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "edge.toml"
    toml.write_text(f'edge_id = "gw"\ndata_dir = "{tmp_path}"\n[uplink]\nurl = "{A}"\n'
                    '[[streams]]\nname = "t"\ntopics = ["d/+/t"]\n')
    cfg = load_config(toml, {"EDGE_AGENT__UPLINK__URL": f'["{B}", "{C}"]'})
    assert cfg.uplink.endpoints == (B, C)


_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=30)
                       | st.sampled_from([A, B, "https://x:443", "http://:1", "http://x:0"]),
                       lambda inner: st.lists(inner, max_size=20), max_leaves=40)


@given(_values)
def test_any_url_value_is_accepted_or_refused_with_the_key(value: object) -> None:
    try:
        cfg = parse_config(_uplink_doc(value), Path("/"))
    except ConfigError as exc:
        assert "uplink.url" in str(exc)
        return
    assert 1 <= len(cfg.uplink.endpoints) <= 16
    assert len(set(cfg.uplink.endpoints)) == len(cfg.uplink.endpoints)


def test_a_refused_connection_moves_the_uplink_to_the_next_node() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    batch = Batch.trusted("edge-1", "telemetry", "g" * 16, 0, 0, ())

    async def main() -> HttpUplink:
        up = HttpUplink([dead, f"http://127.0.0.1:{free_port()}"], timeout_s=1.0)
        try:
            with pytest.raises(RetryableUplinkError):
                await up.send("telemetry", Outgoing.encode(batch, "zstd"))
        finally:
            await up.aclose()
        return up

    up = asyncio.run(main())
    assert up.url != dead and up.endpoints.switches == 1


DEVICES = 50


def test_exactly_once_when_the_first_address_dies_mid_drain(tmp_path: Path) -> None:
    broker = broker_server(tmp_path / "broker").start()
    first = FaultProxy(0, "127.0.0.1", broker.port).start()
    second = FaultProxy(0, "127.0.0.1", broker.port).start()
    urls = (f"http://127.0.0.1:{first.port}", f"http://127.0.0.1:{second.port}")
    cfg = edge_config(tmp_path / "edge", url=urls[0], urls=urls, max_batch_records=300,
                      max_in_flight=4, timeout_s=1.0)
    store = open_edge(cfg)
    fill(store, 12_000, DEVICES)
    sender = StreamSender(store, cfg.edge_id, cfg.uplink)

    async def main() -> HttpUplink:
        up = HttpUplink(cfg.uplink.endpoints, timeout_s=cfg.uplink.timeout_s)
        fwd = Forwarder([sender], up, cfg.uplink)

        def half_way() -> bool:
            if store.acked_offset < 3000:
                return False
            # processed by the broker, never answered: the retry goes to the other address
            first.cut_next_responses(4)
            return True

        try:
            await run_until(fwd, half_way, timeout=60)
            await run_until(fwd, lambda: first.stats.cut_responses >= 1, timeout=30)
            first.down()
            await run_until(fwd, fwd.drained, timeout=60)
        finally:
            await up.aclose()
        return up

    try:
        up = asyncio.run(main())
    finally:
        first.stop()
        second.stop()
        broker.stop()
    assert up.endpoints.switches >= 1 and up.url == urls[1]
    assert second.stats.bytes_up > 0
    verify_cloud(read_cloud(tmp_path / "broker" / "data"),
                 {("edge-1", "telemetry", store.generation): range(store.log.end_offset)})
    store.log.close()


def test_status_shows_the_node_in_use_every_node_and_the_switches() -> None:
    urls = ("http://edge:secret@a:1", B)
    up = HttpUplink(urls)
    up.endpoints.failed(up.url)
    agent = SimpleNamespace(config=SimpleNamespace(uplink=UplinkConfig(url=urls[0], urls=urls)),
                            forwarder=SimpleNamespace(uplink=up))
    doc = uplink_endpoints(agent)
    assert doc == {"url": B, "urls": ["http://***@a:1", B], "switches": 1}
    asyncio.run(up.aclose())
    agent.forwarder = None  # not started yet: the first URL, no switches
    assert uplink_endpoints(agent)["url"] == "http://***@a:1"
