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

from ..errors import Problem
from .errors import endpoint
from .openapi import OPENAPI
from .params import principal_of
from .services import Authenticating, HealthService, MetricsService


def _check_reader(service: Authenticating, request: Request) -> None:
    """Refuse (401/403) a caller who may not see operational detail."""
    if not service.config.protect_metrics:
        return
    principal = principal_of(service, request, "authorization")
    if not principal.may("read"):
        raise Problem(403, "this token lacks the 'read' permission", "authorization")


@endpoint
async def healthz(request: Request, service: HealthService) -> Response:
    ok, body = service.health()
    code = 200 if ok else 503
    if service.config.protect_metrics:
        if "authorization" not in request.headers:
            return JSONResponse({"status": body["status"]}, status_code=code)
        _check_reader(service, request)
    return JSONResponse(body, status_code=code)


@endpoint
async def metrics(request: Request, service: MetricsService) -> Response:
    _check_reader(service, request)
    text = generate_latest(service.metrics.registry)
    guard = getattr(request.app.state, "connection_guard", None)
    if guard is not None:  # set by `cloud-broker serve`: connection limit counters
        text += generate_latest(guard.registry)
    return Response(text, media_type=CONTENT_TYPE_LATEST)


@endpoint
async def openapi(request: Request, service: Authenticating) -> Response:
    _check_reader(service, request)
    return JSONResponse(OPENAPI)


__all__ = ["healthz", "metrics", "openapi"]
