"""The partition store conformance suite over the JetStream store: on one JetStream node
(replicas 1) and on a 3-node cluster (replicas 3), real nats-server processes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.cloud_broker.store_conformance import StoreConformance
from tests.cloud_broker.store_impls import JETSTREAM_URLS_ENV, by_name
from tests.cluster.natsd import NatsCluster, jetstream_cluster


@pytest.fixture(scope="module", params=[("jetstream_r1", 1), ("jetstream_r3", 3)],
                ids=["node", "cluster"])
def servers(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, NatsCluster]]:
    name, size = request.param
    with jetstream_cluster(tmp_path_factory.mktemp(name), size=size) as cluster:
        yield name, cluster


@pytest.fixture
def impl(servers: tuple[str, NatsCluster], monkeypatch: pytest.MonkeyPatch) -> Any:
    name, cluster = servers
    monkeypatch.setenv(JETSTREAM_URLS_ENV, ",".join(cluster.urls))
    return by_name(name)


class TestJetStreamStore(StoreConformance):
    pass
