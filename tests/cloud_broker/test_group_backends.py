"""One conformance suite over every GroupBackend: SQLite (one process) and JetStream KV.

The backend contract (cloud_broker/groups/backend.py): ``get`` of an unknown group is
None; ``put`` is a compare-and-set on the revision (0: the group must not exist) and
raises GroupConflict when it moved; a reopened backend has every acknowledged record.
Then the coordinator over each backend, and, for the shared one, two coordinators (two
broker nodes) over one bucket: membership, generations and commits seen from either
node; zombies fenced; concurrent commits never move an offset backwards. The KV runs on
a real nats-server >= 2.12 (tests/cluster/natsd.py).
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud_broker.config import TopicConfig
from cloud_broker.groups import (
    GroupCoordinator,
    GroupStoreError,
    StaleGeneration,
    UnknownMember,
)
from cloud_broker.groups.backend import GroupConflict, LocalGroupBackend, from_live, live_form
from cloud_broker.groups.kv_backend import KvGroupBackend, decode, key_of
from cloud_broker.groups.state import Group
from cloud_broker.storage import PartitionStore
from shared_log import Record
from tests.cluster.natsd import NatsCluster

Opener = Callable[[], Any]


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[PartitionStore]:
    s = PartitionStore(tmp_path / "data")
    s.ensure_topic(TopicConfig("t", 4))
    for p in s.partitions("t"):
        p.log.append([Record(b"k", b"v", 1)] * 100)
    yield s
    s.close()


@asynccontextmanager
async def kv_backends(cluster: NatsCluster, n: int = 1) -> AsyncIterator[list[KvGroupBackend]]:
    """``n`` broker nodes' backends, each over its own connection (``connect``)."""
    conn = SimpleNamespace(servers=tuple(cluster.urls), user=None, password=None, token=None,
                           creds_file=None, connect_timeout_s=5.0, request_timeout_s=5.0)
    backends = [await KvGroupBackend.connect(conn, 1, "groups_test") for _ in range(n)]
    try:
        yield backends
    finally:
        for b in backends:
            await b.aclose()


@asynccontextmanager
async def local_backends(path: Path) -> AsyncIterator[list[LocalGroupBackend]]:
    b = LocalGroupBackend(path, 0.0)
    try:
        yield [b]
    finally:
        b.close()


@pytest.fixture(params=["local", "jetstream-kv"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Any]:
    if request.param == "local":
        return lambda n=1: local_backends(tmp_path / "groups.db")
    cluster = request.getfixturevalue("jetstream_node")
    return lambda n=1: kv_backends(cluster, n)


def _record(name: str, generation: int, offsets: dict[tuple[str, int], int]) -> dict[str, Any]:
    g = Group(name, generation=generation)
    g.offsets = dict(offsets)
    return live_form(g)


def test_get_put_compare_and_set(opener: Callable[..., Any]) -> None:
    async def main() -> None:
        async with opener() as (b,):
            assert await b.get("g") is None
            r1 = await b.put(_record("g", 1, {}), 0, membership=True)
            with pytest.raises(GroupConflict):
                await b.put(_record("g", 9, {}), 0, membership=True)  # exists already
            got = await b.get("g")
            assert got is not None and got.revision == r1 and got.record["generation"] == 1
            r2 = await b.put(_record("g", 2, {("t", 0): 5}), r1, membership=True,
                             commits=[("t", 0, 5)], member_id="m")
            assert r2 > r1
            with pytest.raises(GroupConflict):
                await b.put(_record("g", 3, {}), r1, membership=True)  # stale revision
            got = await b.get("g")
            assert got is not None and got.revision == r2
            assert from_live(got.record).offsets == {("t", 0): 5}
            assert set(b.snapshot()) == {"g"}

    asyncio.run(main())


def test_acknowledged_records_survive_a_reopen(opener: Callable[..., Any]) -> None:
    async def main() -> None:
        async with opener() as (b,):
            rev = await b.put(_record("g", 3, {("t", 1): 7}), 0, membership=True,
                              commits=[("t", 1, 7)])
            await b.put(_record("g", 3, {("t", 1): 9}), rev, membership=False,
                        commits=[("t", 1, 9)])
            await b.put(_record("h/ü x", 1, {}), 0, membership=True)  # any name
        async with opener() as (b,):
            snap = b.snapshot()
            assert set(snap) == {"g", "h/ü x"}
            g = from_live(snap["g"].record)
            assert g.generation == 3 and g.offsets == {("t", 1): 9}

    asyncio.run(main())


def test_coordinator_membership_and_commits(opener: Callable[..., Any],
                                            parts: PartitionStore) -> None:
    async def main() -> None:
        async with opener() as (b,):
            c = GroupCoordinator(parts, b)
            view = await c.join("g", "a", ["t"], 5000, None)
            s = view["member_secret"]
            await c.commit("g", "a", 1, [("t", 0, 50)], s)
            await c.commit("g", "a", 1, [("t", 0, 20)], s)  # a late, older commit
            assert c.committed("g") == [{"topic": "t", "partition": 0, "offset": 50}]
            with pytest.raises(StaleGeneration):
                await c.commit("g", "a", 0, [("t", 0, 60)], s)
            with pytest.raises(UnknownMember):
                await c.heartbeat("nope", "a", 1, s)
            await c.leave("g", "a", s)
            await c.commit("g", None, None, [("t", 0, 10)])  # an operator's reset
            assert c.committed("g") == [{"topic": "t", "partition": 0, "offset": 10}]
            c.close()

    asyncio.run(main())


# -- two broker nodes over one bucket ------------------------------------------------------


def test_members_on_two_nodes_form_one_group(jetstream_node: NatsCluster,
                                             parts: PartitionStore) -> None:
    async def main() -> None:
        async with kv_backends(jetstream_node, 2) as (b1, b2):
            n1, n2 = GroupCoordinator(parts, b1), GroupCoordinator(parts, b2)
            a = await n1.join("g", "a", ["t"], 3000, None)
            assert a["generation"] == 1 and len(a["assignment"]) == 4
            # b joins on the other node; a hears of the rebalance there too
            b_join = asyncio.create_task(n2.join("g", "b", ["t"], 3000, None))
            await _until(lambda: n1.groups["g"].state.value == "rebalancing", 5)
            with pytest.raises(Exception, match="rebalanc"):
                await n2.heartbeat("g", "a", 1, a["member_secret"])
            await n2.commit("g", "a", 1, [("t", 3, 30)], a["member_secret"])
            a2 = await n1.join("g", "a", ["t"], 3000, None, a["member_secret"])
            b = await asyncio.wait_for(b_join, 10)
            assert a2["generation"] == b["generation"] == 2
            owned = [tuple(x.values()) for x in a2["assignment"] + b["assignment"]]
            assert sorted(owned) == [("t", p) for p in range(4)]
            # the zombie: a's generation-1 commit on either node is refused now
            for node in (n1, n2):
                with pytest.raises(StaleGeneration):
                    await node.commit("g", "a", 1, [("t", 3, 99)], a["member_secret"])
            await _until(lambda: n1.describe("g") == n2.describe("g"), 5)
            assert n1.committed("g") == [{"topic": "t", "partition": 3, "offset": 30}]
            # b's session lives through heartbeats on node 1 only; node 2 sweeps
            for _ in range(5):
                await n1.heartbeat("g", "b", 2, b["member_secret"])
                await n2.tick_all()
                await asyncio.sleep(0.1)
            assert "b" in n2.groups["g"].members
            n1.close()
            n2.close()

    asyncio.run(main())


def test_concurrent_commits_on_two_nodes_never_move_backwards(
        jetstream_node: NatsCluster, parts: PartitionStore) -> None:
    rng = random.Random(13)

    async def main() -> None:
        async with kv_backends(jetstream_node, 2) as (b1, b2):
            n1, n2 = GroupCoordinator(parts, b1), GroupCoordinator(parts, b2)
            v = await n1.join("g", "a", ["t"], 10_000, None)
            s = v["member_secret"]
            seen: list[int] = []
            watcher = await b1.kv.watch(key_of("g"))

            async def observe() -> None:
                async for e in watcher:
                    if e is not None and e.value:
                        offs = from_live(json.loads(e.value)).offsets
                        seen.append(offs.get(("t", 0), 0))

            obs = asyncio.create_task(observe())
            offsets = list(range(1, 101))
            rng.shuffle(offsets)  # retries arriving late, on either node
            await asyncio.gather(*(rng.choice((n1, n2)).commit("g", "a", 1, [("t", 0, o)], s)
                                   for o in offsets))
            await _until(lambda: seen and seen[-1] == 100, 5)
            obs.cancel()
            await watcher.stop()
            assert seen == sorted(seen), "a committed offset moved backwards"
            await _until(lambda: n2.committed("g")[0]["offset"] == 100, 5)
            n1.close()
            n2.close()

    asyncio.run(main())


def test_a_foreign_value_in_the_bucket_is_a_clear_error(jetstream_node: NatsCluster,
                                                        parts: PartitionStore) -> None:
    async def main() -> None:
        async with kv_backends(jetstream_node) as (b,):
            c = GroupCoordinator(parts, b)
            await b.kv.put(key_of("g"), b"\xff not json")
            await b.kv.put("not-a-group-key", b"{}")
            with pytest.raises(GroupStoreError):
                await c.heartbeat("g", "a", 1, "s")
            v = await c.join("other", "a", ["t"], 1000, None)  # the rest keeps working
            assert v["generation"] == 1
            c.close()

    asyncio.run(main())


async def _until(cond: Callable[[], Any], timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout}s")
        await asyncio.sleep(0.02)
    return True


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats()
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=30)
_fields = st.fixed_dictionaries({"name": st.just("g")}, optional={
    "generation": _json, "assignor": _json, "members": _json, "assignment": _json,
    "counts": _json, "state": _json, "offsets": _json, "live": _json})


@given(_fields)
def test_any_value_under_a_group_key_decodes_or_is_refused(record: dict[str, Any]) -> None:
    """Whatever sits in the bucket, decode either returns a record from_live rebuilds or
    None (the node answers 503 for that group); it never raises."""
    got = decode(key_of("g"), json.dumps(record).encode())
    if got is not None:
        from_live(got)
    assert decode(key_of("g"), b"\xff") is None
    assert decode(key_of("other"), json.dumps(record).encode()) is None
