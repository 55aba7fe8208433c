"""The group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
OffsetCommit, OffsetFetch, all on the broker's one ``GroupCoordinator``.

Strategy: membership is ``GroupCoordinator.kafka`` (Kafka's protocol, client-side
assignment); committed offsets are the coordinator's own rows, so a group's offsets are
the same whichever protocol committed them. A commit is checked against the member's
generation first (zombies are fenced), then stored durably before the answer. Group
scopes are the token's: a group it may not use is ``GROUP_AUTHORIZATION_FAILED``.
"""

from __future__ import annotations

from typing import Any

from ..auth import Principal
from ..groups import GroupError, KafkaGroupError
from ..storage import UnknownTopic
from .handlers import NODE_ID, TOPIC_AUTHORIZATION_FAILED, UNKNOWN_TOPIC_OR_PARTITION, millis
from .service import BrokerView

GROUP_AUTHORIZATION_FAILED, COORDINATOR_NOT_AVAILABLE = 30, 15
UNKNOWN_MEMBER_ID, OFFSET_METADATA_TOO_LARGE, INVALID_COMMIT_OFFSET_SIZE = 25, 12, 28


def find_coordinator(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    cfg = broker.config.kafka
    assert cfg is not None
    if getattr(req, "key_type", 0) == 0 and not who.may_group(req.key):
        return {"error_code": GROUP_AUTHORIZATION_FAILED, "node_id": -1, "port": -1}
    return {"node_id": NODE_ID, "host": cfg.advertised_host, "port": cfg.advertised_port}


async def join_group(broker: BrokerView, who: Principal, req: Any, client_id: str
                     ) -> dict[str, Any]:
    if not who.may_group(req.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED, "generation_id": -1}
    if broker.groups.groups.get(req.group_id) is not None and \
            broker.groups.groups[req.group_id].members:
        return {"error_code": 23, "generation_id": -1,  # INCONSISTENT_GROUP_PROTOCOL
                "member_id": req.member_id}
    rebalance = getattr(req, "rebalance_timeout", req.session_timeout)
    try:
        return await broker.groups.kafka.join(
            req.group_id, req.member_id, client_id or "consumer", millis(req.session_timeout),
            millis(rebalance), req.protocol_type,
            [(p.name, bytes(p.metadata)) for p in req.protocols])
    except KafkaGroupError as exc:
        return {"error_code": exc.code, "generation_id": -1, "member_id": req.member_id}


async def sync_group(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    if not who.may_group(req.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED}
    try:
        data = await broker.groups.kafka.sync(
            req.group_id, req.member_id, req.generation_id,
            {a.member_id: bytes(a.assignment) for a in req.assignments})
    except KafkaGroupError as exc:
        return {"error_code": exc.code, "assignment": b""}
    return {"assignment": data}


def heartbeat(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    if not who.may_group(req.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED}
    try:
        broker.groups.kafka.heartbeat(req.group_id, req.member_id, req.generation_id)
    except KafkaGroupError as exc:
        return {"error_code": exc.code}
    return {}


def leave_group(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    if not who.may_group(req.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED}
    ids = [m.member_id for m in req.members] if hasattr(req, "members") else [req.member_id]
    results, top = [], 0
    for mid in ids:
        try:
            broker.groups.kafka.leave(req.group_id, mid)
            results.append({"member_id": mid})
        except KafkaGroupError as exc:
            results.append({"member_id": mid, "error_code": exc.code})
            top = exc.code
    return {"error_code": top if not hasattr(req, "members") else 0, "members": results}


async def offset_commit(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    generation = getattr(req, "generation_id_or_member_epoch",
                         getattr(req, "generation_id", -1))
    err = 0
    if not who.may_group(req.group_id):
        err = GROUP_AUTHORIZATION_FAILED
    else:
        try:
            broker.groups.kafka.check_generation(req.group_id, req.member_id, generation)
        except KafkaGroupError as exc:
            err = exc.code
    answers, good = [], []
    for t in req.topics:
        parts = []
        for p in t.partitions:
            code = err or _commit_error(broker, who, t.name, p.partition_index,
                                        p.committed_offset)
            if not code:
                good.append((t.name, p.partition_index, p.committed_offset))
            parts.append({"partition_index": p.partition_index, "error_code": code})
        answers.append({"name": t.name, "partitions": parts})
    if good:
        try:
            await broker.groups.commit_checked(req.group_id, good)
        except (GroupError, OSError):
            for t in answers:
                for p in t["partitions"]:
                    p["error_code"] = p["error_code"] or COORDINATOR_NOT_AVAILABLE
    return {"topics": answers}


def _commit_error(broker: BrokerView, who: Principal, topic: str, index: int, offset: int
                  ) -> int:
    if not who.may_topic(topic):
        return TOPIC_AUTHORIZATION_FAILED
    try:
        part = broker.store.partition(topic, index)
    except UnknownTopic:
        return UNKNOWN_TOPIC_OR_PARTITION
    return INVALID_COMMIT_OFFSET_SIZE if not 0 <= offset <= part.end_offset else 0


def offset_fetch(broker: BrokerView, who: Principal, req: Any) -> dict[str, Any]:
    if not who.may_group(req.group_id):
        return {"error_code": GROUP_AUTHORIZATION_FAILED, "topics": []}
    committed = {(c["topic"], c["partition"]): c["offset"]
                 for c in broker.groups.committed(req.group_id)}
    if req.topics is None:
        wanted: dict[str, list[int]] = {}
        for (t, p) in committed:
            wanted.setdefault(t, []).append(p)
    else:
        wanted = {t.name: list(t.partition_indexes) for t in req.topics}
    topics = []
    for name, indexes in wanted.items():
        ok = who.may_topic(name)
        topics.append({"name": name, "partitions": [
            {"partition_index": i, "committed_offset": committed.get((name, i), -1)
             if ok else -1, "committed_leader_epoch": -1, "metadata": "",
             "error_code": 0 if ok else TOPIC_AUTHORIZATION_FAILED} for i in indexes]})
    return {"topics": topics}


__all__ = ["find_coordinator", "heartbeat", "join_group", "leave_group", "offset_commit",
           "offset_fetch", "sync_group"]
