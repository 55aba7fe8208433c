"""Request checking shared by the endpoints: auth, path and query integers, bodies.

Strategy: each check raises ``Problem`` for anything a caller got wrong and the
``endpoint`` wrapper turns it into the broker's one JSON error shape (errors.py), so
every check is one line in the handler and every refusal names its field. 401 means no
or unknown token, 403 a token without the permission the endpoint needs (``read`` for
consuming) or a topic / group outside the token's scopes (``check_topic``, ``check_group``; checked
before the name is looked up, so a token learns nothing of names outside its scope).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request

from ..auth import AuthError, Principal
from ..errors import Problem
from ..storage import Partition, PartitionStore, UnknownTopic
from .services import Authenticating

MAX_JSON_BODY = 1 << 20
CBOR = "application/cbor"


def canonical_int(raw: str, digits: int = 19) -> int | None:
    """``raw`` as an integer if it is ASCII canonical decimal (``0``, ``17``, ``-3``, not
    ``+1``, ``01``, `` 1`` or ``٣``, which ``int`` accepts) of at most ``digits`` digits."""
    body = raw[1:] if raw.startswith("-") else raw
    if (not body or len(body) > digits or not body.isascii() or not body.isdigit()
            or (body[0] == "0" and (len(body) > 1 or raw != body))):
        return None
    return int(raw)


def parse_index(raw: str) -> int | None:
    """A partition number from a path: canonical non-negative decimal, at most 9 digits."""
    value = canonical_int(raw, 9)
    return value if value is not None and value >= 0 else None


def principal_of(service: Authenticating, request: Request, field: str | None = None
                 ) -> Principal:
    """The token's principal; 401 (naming ``field``) for no or an unknown token."""
    try:
        return service.tokens.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        raise Problem(401, str(exc), field) from exc


def authorize(service: Authenticating, request: Request, permission: str) -> Principal:
    """The principal of a token that has ``permission``; 401 or 403 otherwise."""
    principal = principal_of(service, request)
    if not principal.may(permission):
        raise Problem(403, f"this token lacks the {permission!r} permission", "authorization")
    return principal


def check_topic(principal: Principal, topic: str, field_name: str = "topic") -> None:
    if not principal.may_topic(topic):
        raise Problem(403, f"this token may not use topic {topic[:130]!r} (not in its topics "
                      "scope)", field_name)


def check_group(principal: Principal, group: str) -> None:
    if not principal.may_group(group):
        raise Problem(403, f"this token may not use group {group[:130]!r} (not in its groups "
                      "scope)", "group")


def int_param(request: Request, name: str, default: int | None, lo: int, hi: int) -> int:
    """An integer query parameter in [lo, hi]; ``default`` None means required."""
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise Problem(400, f"query parameter {name!r} is required", name)
        return default
    value = canonical_int(raw)
    if value is None:
        raise Problem(400, f"{name} must be an integer, got {raw[:40]!r}", name)
    if not lo <= value <= hi:
        raise Problem(400, f"{name} must be between {lo} and {hi}, got {value}", name)
    return value


def choice_param(request: Request, name: str, choices: tuple[str, ...]) -> str:
    raw = request.query_params.get(name, choices[0])
    if raw not in choices:
        raise Problem(400, f"{name} must be one of {list(choices)}, got {raw[:40]!r}", name)
    return raw


def index_of(request: Request) -> int:
    """The partition number of the path; 400 when it is not one."""
    raw = request.path_params["partition"]
    index = parse_index(raw)
    if index is None:
        raise Problem(400, f"partition must be a non-negative integer, got {raw[:40]!r}",
                      "partition")
    return index


def partition_of(store: PartitionStore, request: Request) -> Partition:
    """The partition named by the path, 404 when unknown, 400 when not a number."""
    topic = request.path_params["topic"]
    index = index_of(request)
    try:
        return store.partition(topic, index)
    except UnknownTopic as exc:
        raise Problem(404, str(exc), "partition" if topic in store.topics() else "topic") from exc


async def read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (checked while streaming)."""
    declared = request.headers.get("content-length")
    if (declared is not None and declared.isascii() and declared.isdigit()
            and (len(declared) > 18 or int(declared) > limit)):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def media_type(request: Request, default: str = CBOR) -> str:
    """The request's media type, lowercased: media types are case-insensitive (RFC 9110)."""
    return request.headers.get("content-type", default).split(";")[0].strip().lower()


def wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 (or 413) naming what is wrong."""
    body = await read_body(request, MAX_JSON_BODY)
    if body is None:
        raise Problem(413, f"body larger than {MAX_JSON_BODY} bytes", "body")
    try:
        doc = json.loads(body)
    except RecursionError as exc:  # json.loads recurses per nesting level
        raise Problem(400, "body is nested too deeply", "body") from exc
    except (ValueError, UnicodeDecodeError) as exc:
        raise Problem(400, f"body is not valid JSON: {exc}", "body") from exc
    if not isinstance(doc, dict):
        raise Problem(400, "body must be a JSON object", "body")
    return doc


def field(doc: dict[str, Any], name: str, kind: type | tuple[type, ...],
          default: Any = ..., check: Callable[[Any], bool] | None = None,
          what: str = "") -> Any:
    """``doc[name]`` of type ``kind`` (bool is never an int), passing ``check``."""
    if name not in doc:
        if default is ...:
            raise Problem(400, f"field {name!r} is required", name)
        return default
    value = doc[name]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in (
        kind if isinstance(kind, tuple) else (kind,)))
    if not ok or (check is not None and not check(value)):
        raise Problem(400, f"{name} must be {what or getattr(kind, '__name__', kind)}, "
                      f"got {json.dumps(value)[:60]}", name)
    return value
