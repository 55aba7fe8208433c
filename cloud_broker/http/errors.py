"""The one error path of the HTTP API: handlers raise ``Problem``, ``endpoint`` answers.

Strategy: a handler is ``async def handler(request, service) -> Response`` and raises
``Problem`` (cloud_broker.errors) for anything a caller got wrong; ``endpoint`` wraps it
into a Starlette endpoint that hands it its service object (the ``Broker``, or whatever
``app.state.service`` holds, e.g. the standalone mirror process: the one place that
reads the service from the app) and turns a ``Problem`` into the JSON error body, so every refusal
has the same shape ``{"error": <message>, "field": <name or null>, ...}``. ``measured``
also counts the final status and the request time (ingest and fetch metrics), Problems
included.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import Problem

S = TypeVar("S")
Handler = Callable[[Request, S], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]
#: (service) -> (counter labelled by status, histogram of seconds)
Measure = Callable[[Any], tuple[Any, Any]]


def problem_response(p: Problem) -> JSONResponse:
    """The JSON error response of ``p`` (401 also says how to authenticate)."""
    headers = dict(p.headers or {})
    if p.status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(p.body(), status_code=p.status, headers=headers or None)


def service_of(request: Request) -> Any:
    """The service object the app serves (set by the app's lifespan or its builder)."""
    return request.app.state.service


def endpoint(fn: Handler[S] | None = None, *, measured: Measure | None = None
             ) -> Any:
    """Make ``fn(request, service)`` a Starlette endpoint with the one error path."""
    def wrap(fn: Handler[S]) -> Endpoint:
        @functools.wraps(fn)
        async def run(request: Request) -> Response:
            service = service_of(request)
            started = time.perf_counter()
            try:
                resp = await fn(request, service)
            except Problem as p:
                resp = problem_response(p)
            if measured is not None:
                requests, latency = measured(service)
                requests.labels(str(resp.status_code)).inc()
                latency.observe(time.perf_counter() - started)
            return resp
        return run
    return wrap if fn is None else wrap(fn)


__all__ = ["endpoint", "problem_response", "service_of"]
