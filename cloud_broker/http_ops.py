"""Operations endpoints: /healthz, /metrics and /openapi.json, optionally token-protected.

Strategy: the three reveal topic, group and mirror names, so with ``[auth]
protect_metrics = true`` they need a token with the ``read`` permission. ``/healthz``
stays usable by liveness probes without one: its status code (200 ok / 503 failing) and
``{"status": ...}`` are always answered, the detail (topics, failed partitions) only to a
reader. A wrong token is still a 401, so a misconfigured scraper is noticed.

    GET /healthz        200/503 {"status"} (+ detail with a read token or when unprotected)
    GET /metrics        200 Prometheus text; 401/403 when protected and no read token
    GET /openapi.json   200 the API description; 401/403 likewise
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .auth import AuthError
from .errors import error
from .openapi import OPENAPI


def _reader(request: Request) -> Response | None:
    """None when the caller may see operational detail, else the refusal to send."""
    broker = request.app.state.broker
    if not broker.config.protect_metrics:
        return None
    try:
        principal = broker.tokens.authenticate(request.headers.get("authorization"))
    except AuthError as exc:
        return error(401, str(exc), "authorization")
    if not principal.may("read"):
        return error(403, "this token lacks the 'read' permission", "authorization")
    return None


async def healthz(request: Request) -> Response:
    ok, body = request.app.state.broker.health()
    code = 200 if ok else 503
    if request.app.state.broker.config.protect_metrics:
        if "authorization" not in request.headers:
            return JSONResponse({"status": body["status"]}, status_code=code)
        refusal = _reader(request)
        if refusal is not None:
            return refusal
    return JSONResponse(body, status_code=code)


async def metrics(request: Request) -> Response:
    refusal = _reader(request)
    if refusal is not None:
        return refusal
    text = generate_latest(request.app.state.broker.metrics.registry)
    guard = getattr(request.app.state, "connection_guard", None)
    if guard is not None:  # set by `cloud-broker serve`: connection limit counters
        text += generate_latest(guard.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    refusal = _reader(request)
    if refusal is not None:
        return refusal
    return JSONResponse(OPENAPI)


__all__ = ["healthz", "metrics", "openapi"]
