"""Consumer group endpoints: a thin JSON adapter around ``GroupCoordinator``.

Strategy: check the token (``read``, and its ``groups`` and ``topics`` scopes: 403 naming
the group or topic) and the body's fields here, let the coordinator and the pure
``groups`` module decide, and map their refusals to statuses: 400 a malformed request
(naming the field), 404 an unknown topic/partition/group, 409 a group rule (``code`` says
which: ``stale_generation`` and ``unknown_member`` mean "join again", ``member_in_use``
"wait and join again"), 503 the group database failed. The join answer carries the
member's ``member_secret``; heartbeat, leave and a member's commit must send it back.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from uplink import is_safe_name

from ..auth import Principal
from ..broker import Broker
from ..errors import Problem
from ..groups import (
    ASSIGNORS,
    MAX_SESSION_MS,
    MIN_SESSION_MS,
    GroupError,
    GroupStoreError,
    UnknownGroup,
)
from ..storage import UnknownTopic
from .errors import endpoint
from .params import authorize, check_group, check_topic, field, json_body

MAX_TOPICS = 100
MAX_COMMIT_ENTRIES = 10_000
MAX_OFFSET = 2**63 - 1
MAX_SECRET_CHARS = 256


def _name(request: Request, principal: Principal) -> str:
    name = request.path_params["group"]
    if not is_safe_name(name):
        raise Problem(400, "group names must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}", "group")
    check_group(principal, name)
    return name


def _secret(doc: dict[str, Any], default: Any = ...) -> str | None:
    return field(doc, "member_secret", str, default,
                 lambda s: 0 < len(s) <= MAX_SECRET_CHARS,
                 f"the member_secret the join answered (1..{MAX_SECRET_CHARS} characters)")


def _member_id(doc: dict[str, Any]) -> str:
    return field(doc, "member_id", str, check=is_safe_name,
                 what="a string matching [A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _generation(doc: dict[str, Any], default: Any = ...) -> int | None:
    return field(doc, "generation", int, default, lambda g: 0 <= g <= MAX_OFFSET,
                 "an integer >= 0")


async def _call(request: Request, broker: Broker, op: str, *args: Any) -> Response:
    coordinator = broker.groups
    try:
        result = await getattr(coordinator, op)(*args)
    except GroupError as exc:
        g = coordinator.groups.get(request.path_params["group"])
        extra = {"member_secret": exc.member_secret} if exc.member_secret else {}
        raise Problem(409, str(exc), code=exc.code,
                      generation=g.generation if g else None, **extra) from exc
    except UnknownTopic as exc:
        raise Problem(404, str(exc), "topic") from exc
    except ValueError as exc:
        raise Problem(400, str(exc), "offsets" if op == "commit" else None) from exc
    except GroupStoreError as exc:
        raise Problem(503, f"group state could not be saved, retry: {exc}") from exc
    return JSONResponse(result)


@endpoint
async def join(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    name = _name(request, principal)
    doc = await json_body(request)
    member_id = _member_id(doc)
    topics = field(doc, "topics", list, check=lambda ts: 0 < len(ts) <= MAX_TOPICS and all(
        isinstance(t, str) and is_safe_name(t) for t in ts),
        what=f"a list of 1..{MAX_TOPICS} topic names")
    for t in topics:
        check_topic(principal, t, "topics")
    session = field(doc, "session_timeout_ms", int, 10_000,
                    lambda s: MIN_SESSION_MS <= s <= MAX_SESSION_MS,
                    f"an integer in {MIN_SESSION_MS}..{MAX_SESSION_MS}")
    assignor = field(doc, "assignor", str, None, lambda a: a in ASSIGNORS,
                     f"one of {sorted(ASSIGNORS)}")
    secret = _secret(doc, None)  # a rejoin sends the secret it holds
    return await _call(request, broker, "join", name, member_id, topics, session, assignor, secret)


@endpoint
async def heartbeat(request: Request, broker: Broker) -> Response:
    name = _name(request, authorize(broker, request, "read"))
    doc = await json_body(request)
    member_id, generation = _member_id(doc), _generation(doc)
    return await _call(request, broker, "heartbeat", name, member_id, generation, _secret(doc))


@endpoint
async def leave(request: Request, broker: Broker) -> Response:
    name = _name(request, authorize(broker, request, "read"))
    doc = await json_body(request)
    return await _call(request, broker, "leave", name, _member_id(doc), _secret(doc))


def _offsets(doc: dict[str, Any]) -> list[tuple[str, int, int]]:
    entries = field(doc, "offsets", list, check=lambda o: 0 < len(o) <= MAX_COMMIT_ENTRIES,
                    what=f"a list of 1..{MAX_COMMIT_ENTRIES} {{topic, partition, offset}}")
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise Problem(400, f"offsets[{i}] must be an object", f"offsets[{i}]")
        topic = field(e, "topic", str, check=is_safe_name, what="a topic name")
        part = field(e, "partition", int, check=lambda p: 0 <= p < 1 << 31,
                     what="an integer >= 0")
        off = field(e, "offset", int, check=lambda o: 0 <= o <= MAX_OFFSET,
                    what="an integer >= 0 (the next offset to consume)")
        out.append((topic, part, off))
    if len({(t, p) for t, p, _ in out}) != len(out):
        raise Problem(400, "a partition appears twice in offsets", "offsets")
    return out


@endpoint
async def commit(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    name = _name(request, principal)
    doc = await json_body(request)
    offsets = _offsets(doc)
    for i, (t, _p, _o) in enumerate(offsets):
        check_topic(principal, t, f"offsets[{i}].topic")
    if "member_id" in doc or "generation" in doc:
        member_id, generation, secret = _member_id(doc), _generation(doc), _secret(doc)
    else:
        member_id = generation = secret = None
    return await _call(request, broker, "commit", name, member_id, generation, offsets, secret)


@endpoint
async def committed(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    name = _name(request, principal)
    topic = request.query_params.get("topic")
    coordinator = broker.groups
    offsets = [o for o in coordinator.committed(name, topic) if principal.may_topic(o["topic"])]
    return JSONResponse({"group": name, "offsets": offsets})


@endpoint
async def describe(request: Request, broker: Broker) -> Response:
    name = _name(request, authorize(broker, request, "read"))
    try:
        return JSONResponse(broker.groups.describe(name))
    except UnknownGroup as exc:
        raise Problem(404, str(exc), "group") from exc


@endpoint
async def list_groups(request: Request, broker: Broker) -> Response:
    principal = authorize(broker, request, "read")
    return JSONResponse({"groups": [g for g in broker.groups.list()
                                    if principal.may_group(g["group"])]})
