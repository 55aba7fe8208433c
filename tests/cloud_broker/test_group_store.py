"""GroupCoordinator over a real SQLite file: the join barrier, persistence, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud_broker.config import TopicConfig
from cloud_broker.groups import (
    GroupCoordinator,
    GroupState,
    GroupStore,
    MemberInUse,
    RebalanceInProgress,
    StaleGeneration,
    UnknownGroup,
    UnknownMember,
)
from cloud_broker.storage import PartitionStore, UnknownTopic
from shared_log import Record


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = PartitionStore(tmp_path / "data")
    s.ensure_topic(TopicConfig("t", 4))
    for p in s.partitions("t"):
        p.log.append([Record(b"k", b"v", 1)] * 10)
    yield s
    s.close()


def test_commits_and_membership_survive_a_restart(store: PartitionStore, tmp_path: Path) -> None:
    db = tmp_path / "groups.db"
    clock = Clock()

    secret: list[str] = []

    async def first() -> None:
        c = GroupCoordinator(store, db, clock)
        view = await c.join("g", "a", ["t"], 1000, None)
        assert view["generation"] == 1 and len(view["assignment"]) == 4
        secret.append(view["member_secret"])
        await c.commit("g", "a", 1, [("t", 0, 7), ("t", 3, 10)], secret[0])
        await c.commit("solo", None, None, [("t", 1, 2)])
        c.close()

    asyncio.run(first())
    clock.now = 500.0  # long after the session: restored sessions restart now

    async def second() -> None:
        c = GroupCoordinator(store, db, clock)
        assert c.committed("g") == [{"topic": "t", "partition": 0, "offset": 7},
                                    {"topic": "t", "partition": 3, "offset": 10}]
        assert c.committed("solo", "t") == [{"topic": "t", "partition": 1, "offset": 2}]
        d = c.describe("g")
        assert d["generation"] == 1 and d["state"] == "stable"
        assert d["offsets"][0]["lag"] == 3 and d["offsets"][1]["lag"] == 0
        # still a member after the restart, with the same secret (only its digest is kept)
        await c.heartbeat("g", "a", 1, secret[0])
        with pytest.raises(UnknownMember):
            await c.heartbeat("g", "a", 1, "not-the-secret")
        with pytest.raises(MemberInUse):
            await c.join("g", "a", ["t"], 1000, None)  # another instance, same id
        with pytest.raises(StaleGeneration):
            await c.commit("g", "a", 0, [("t", 0, 8)], secret[0])
        with pytest.raises(ValueError):
            await c.commit("g", "a", 1, [("t", 0, 11)], secret[0])  # beyond the end
        with pytest.raises(UnknownTopic):
            await c.commit("g", "a", 1, [("t", 9, 1)], secret[0])
        with pytest.raises(UnknownGroup):
            c.describe("nope")
        assert [(g, tp, o) for g, tp, o, _ in c.lag()] == [
            ("g", ("t", 0), 7), ("g", ("t", 3), 10), ("solo", ("t", 1), 2)]
        c.close()

    asyncio.run(second())
    groups, offsets = GroupStore(db).load()
    assert {g["name"] for g in groups} == {"g"} and len(offsets) == 3


def test_join_waits_for_the_barrier(store: PartitionStore, tmp_path: Path) -> None:
    clock = Clock()

    async def run() -> None:
        c = GroupCoordinator(store, tmp_path / "groups.db", clock)
        a = (await c.join("g", "a", ["t"], 1000, "roundrobin"))["member_secret"]
        b_join = asyncio.create_task(c.join("g", "b", ["t"], 1000, None))
        await asyncio.sleep(0.05)
        assert not b_join.done() and c.groups["g"].state is GroupState.REBALANCING
        assert c.describe("g")["waiting_for"] == ["a"]
        with pytest.raises(RebalanceInProgress):
            await c.heartbeat("g", "a", 1, a)
        await c.commit("g", "a", 1, [("t", 2, 5)], a)  # old generation, still accepted
        a_view = await c.join("g", "a", ["t"], 1000, None, a)
        assert a_view["member_secret"] == a  # a rejoin keeps its secret
        b_view = await asyncio.wait_for(b_join, 5)
        assert a_view["generation"] == b_view["generation"] == 2
        assert [x["partition"] for x in a_view["assignment"]] == [0, 2]
        assert [x["partition"] for x in b_view["assignment"]] == [1, 3]
        # b dies: the sweep expires it and a alone gets everything after rejoining
        clock.now += 0.5
        await c.heartbeat("g", "a", 2, a)
        clock.now += 0.7
        await c.tick_all()
        assert c.groups["g"].state is GroupState.REBALANCING
        a_view = await c.join("g", "a", ["t"], 1000, None, a)
        assert a_view["generation"] == 3 and len(a_view["assignment"]) == 4
        with pytest.raises(UnknownMember):
            await c.leave("g", "a", b_view["member_secret"])  # b cannot make a leave
        await c.leave("g", "a", a)
        assert c.describe("g")["state"] == "empty"
        c.close()

    asyncio.run(run())


def test_a_first_join_refused_at_the_barrier_hands_over_its_secret(
        store: PartitionStore, tmp_path: Path) -> None:
    """A new member whose first join times out at the barrier already holds a secret:
    without it, its next join would be refused as ``member_in_use`` until its session
    expired."""
    clock = Clock()

    async def run() -> None:
        c = GroupCoordinator(store, tmp_path / "groups.db", clock)
        a = (await c.join("g", "a", ["t"], 1000, None))["member_secret"]
        with pytest.raises(RebalanceInProgress) as refused:  # a never rejoins in time
            await asyncio.wait_for(c.join("g", "b", ["t"], 1000, None), 10)
        b = refused.value.member_secret
        assert isinstance(b, str) and b and b != a
        with pytest.raises(MemberInUse):  # the secret is what proves b is b
            await c.join("g", "b", ["t"], 1000, None)
        await asyncio.wait_for(asyncio.gather(c.join("g", "a", ["t"], 1000, None, a),
                                              c.join("g", "b", ["t"], 1000, None, b)), 10)
        assert sorted(c.groups["g"].assignment) == ["a", "b"]
        c.close()

    asyncio.run(run())
