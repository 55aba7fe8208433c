"""The JetStream fixtures themselves: a real 3-node cluster elects leaders, survives a
SIGKILL of a stream's leader and brings the node back with its data."""

from __future__ import annotations

import asyncio

import nats

from tests.cluster.natsd import MIN_VERSION, NatsCluster, require_version


def test_binary_is_the_packaged_one_and_new_enough() -> None:
    assert require_version()[:2] >= MIN_VERSION


def test_single_node_serves_jetstream(jetstream_node: NatsCluster) -> None:
    async def main() -> int:
        nc = await nats.connect(jetstream_node.urls[0])
        try:
            js = nc.jetstream()
            await js.add_stream(name="one", subjects=["one.>"])
            ack = await js.publish("one.x", b"a")
            return ack.seq
        finally:
            await nc.close()
    assert asyncio.run(main()) == 1
    assert jetstream_node.nodes[0].port != 4222


def test_cluster_survives_killing_the_stream_leader(jetstream_cluster3: NatsCluster) -> None:
    cluster = jetstream_cluster3

    async def publish(n: int) -> None:
        nc = await nats.connect(servers=cluster.urls)
        try:
            js = nc.jetstream(timeout=10)
            if n == 0:
                await js.add_stream(name="rep", subjects=["rep.>"], num_replicas=3)
            for i in range(n, n + 5):
                await js.publish("rep.x", str(i).encode())
        finally:
            await nc.close()

    async def read_all() -> list[bytes]:
        nc = await nats.connect(servers=cluster.urls)
        try:
            js = nc.jetstream(timeout=10)
            info = await js.stream_info("rep")
            return [(await js.get_msg("rep", seq)).data for seq in
                    range(1, info.state.last_seq + 1)]
        finally:
            await nc.close()

    asyncio.run(publish(0))
    leader = cluster.stream_leader("rep")
    cluster.kill_node(leader)
    new_leader = cluster.stream_leader("rep")
    assert new_leader is not leader
    asyncio.run(publish(5))
    cluster.restart_node(leader)
    assert leader.running
    assert asyncio.run(read_all()) == [str(i).encode() for i in range(10)]
