"""The replication routes behind the mirror-target and scope checks of ``trust``.

Strategy: ``http_replicate`` knows offsets and bodies; this wrapper adds, before it runs,
what the trust model asks of a replication request: the token's topic scope (403 naming
the topic), and the claim that makes the topic a mirror target (``trust.MirrorTargets``;
403 when the topic already holds records ingested from edges). Everything else (401, the
``admin`` permission, 404, the body) is the endpoint's own.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from uplink import is_safe_name

from . import http_replicate
from .auth import AuthError
from .errors import error
from .storage import UnknownTopic


def _replication_denied(request: Request) -> Response | None:
    """Scope and mirror-target checks of a replication request; the admin check and
    everything else is the endpoint's own (http_replicate)."""
    broker = request.app.state.broker
    topic = request.path_params["topic"]
    try:
        principal = broker.tokens.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        return error(401, str(exc))
    if not principal.may("admin"):
        return None  # the endpoint answers 403
    if not is_safe_name(topic):
        return error(400, f"topic {topic[:60]!r} is not a safe name", "topic")
    if not principal.may_topic(topic):
        return error(403, f"this token may not use topic {topic!r} (not in its topics "
                          "scope)", "topic")
    if topic in broker.mirror_targets:
        return None
    try:
        broker.ensure_topic_for_ingest(topic)
    except UnknownTopic:
        return None  # the endpoint answers 404
    if broker.ingestor.has_ingested(topic):
        return error(403, f"topic {topic!r} holds records ingested from edges: a mirror "
                          "needs a topic of its own", "topic")
    broker.mirror_targets.claim(topic)
    return None


async def replicate_position(request: Request) -> Response:
    if (denied := _replication_denied(request)) is not None:
        return denied
    return await http_replicate.replicate_position(request)


async def replicate_append(request: Request) -> Response:
    if (denied := _replication_denied(request)) is not None:
        return denied
    return await http_replicate.replicate_append(request)
