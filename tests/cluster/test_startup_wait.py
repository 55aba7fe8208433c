"""A broker node started while the JetStream cluster cannot answer waits for it
(``cloud_broker.storage.open``) instead of exiting: under a supervisor that restarts it,
exiting would be a crash loop for as long as the cluster is away (the soak's cluster
mode found it: a broker node restarted while a NATS node was down)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from cloud_broker.storage.jetstream import JetStreamUnavailable
from cloud_broker.storage.open import until_available
from shared_log import LogError
from tests.cluster.cluster_testing import cluster_broker
from tests.cluster.natsd import NatsCluster
from tests.helpers import wait_for


def test_a_store_that_says_not_now_is_asked_again_until_it_answers() -> None:
    calls, pauses = [], []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 4:
            raise JetStreamUnavailable("no quorum")
        return "open"

    assert until_available(flaky, "open", time.monotonic() + 60, pauses.append) == "open"
    assert len(calls) == 4 and pauses == [0.25, 0.5, 1.0]


def test_other_errors_and_a_passed_deadline_are_raised_at_once() -> None:
    def broken() -> None:
        raise LogError("corrupt segment")

    with pytest.raises(LogError, match="corrupt"):
        until_available(broken, "open", time.monotonic() + 60, lambda s: None)

    def away() -> None:
        raise JetStreamUnavailable("no connection")

    with pytest.raises(JetStreamUnavailable):
        until_available(away, "open", time.monotonic() - 1, lambda s: None)


def test_a_broker_started_before_its_nats_server_comes_up_when_it_does(
        tmp_path: Path, jetstream_node: NatsCluster) -> None:
    node = jetstream_node.nodes[0]
    jetstream_node.kill_node(node)
    broker = cluster_broker(tmp_path / "broker", [node.url], replicas=1)
    failure: list[BaseException] = []

    def start() -> None:  # blocks until the broker answers /healthz (60 s)
        try:
            broker.start()
        except BaseException as exc:
            failure.append(exc)

    starter = threading.Thread(target=start)
    starter.start()
    try:
        wait_for(lambda: "trying again" in broker.log_path.read_text(errors="replace")
                 if broker.log_path.exists() else False, 30, 0.1, "the broker waiting")
        assert broker.running  # waiting, not exited
        jetstream_node.restart_node(node)
        starter.join(90)
        assert not starter.is_alive() and not failure, failure
        resp = httpx.get(f"http://127.0.0.1:{broker.port}/v1/topics/telemetry", timeout=5)
        assert resp.status_code == 200 and len(resp.json()["partitions"]) == 4
    finally:
        starter.join(90)
        broker.kill()
