"""Every HTTP handler is given a typed service and answers refusals through one path.

A handler is ``async def h(request, service)`` wrapped by ``http.errors.endpoint``: the
wrapper is the one place that reads the service from the app and turns a ``Problem``
into the JSON error body, for ingest and replication as for every other resource.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import pytest
from starlette.routing import Route
from starlette.testclient import TestClient

from cloud_broker.config import parse_config
from cloud_broker.errors import Problem, unavailable
from cloud_broker.http import MirrorOps, mirror_app, problem_response
from cloud_broker.http.routes import BROKER_ROUTES, MIRROR_OPS_ROUTES
from cloud_broker.mirrors import HttpSource, MirrorManager

SERVICE_TYPES = {"Broker", "MirrorService", "MetricsService", "HealthService",
                 "Authenticating"}


def _routes() -> list[Route]:
    return [r for r in [*BROKER_ROUTES, *MIRROR_OPS_ROUTES] if isinstance(r, Route)]


@pytest.mark.parametrize("route", _routes(), ids=lambda r: f"{sorted(r.methods or [])}"
                         f"{r.path}")
def test_every_route_is_an_endpoint_with_a_typed_service(route: Route) -> None:
    handler = getattr(route.endpoint, "__wrapped__", None)
    assert handler is not None, f"{route.path} is not wrapped by http.errors.endpoint"
    params = list(inspect.signature(handler).parameters.values())
    assert [p.name for p in params][:1] == ["request"] and len(params) == 2
    assert params[1].annotation in SERVICE_TYPES, (route.path, params[1].annotation)


def test_a_problem_is_the_json_error_body_with_its_headers() -> None:
    resp = problem_response(Problem(409, "partition continues at 5", "offset",
                                    end_offset=5, start_offset=0))
    assert resp.status_code == 409
    assert json.loads(resp.body) == {"error": "partition continues at 5", "field": "offset",
                                     "end_offset": 5, "start_offset": 0}
    retry = problem_response(unavailable("not durable now, retry: disk full"))
    assert (retry.status_code, retry.headers["retry-after"]) == (503, "1")
    assert json.loads(retry.body) == {"error": "not durable now, retry: disk full",
                                      "field": None}
    assert problem_response(Problem(401, "no token")).headers["www-authenticate"] == "Bearer"


def test_the_standalone_mirror_endpoints_serve_a_mirror_ops_service(tmp_path: Path) -> None:
    # cloud-broker mirror --listen: the broker's own handlers over MirrorOps, protected
    # like the broker's (no token 401, read token 200), with no broker behind them.
    cfg = parse_config({"data_dir": str(tmp_path), "auth": {"protect_metrics": True},
                        "tokens": [{"token": "reader-1", "permissions": ["read"]}]})
    manager = MirrorManager(cfg.data_dir, HttpSource("http://127.0.0.1:9"), [],
                            load_defined=False)
    with TestClient(mirror_app(MirrorOps.build(cfg, manager))) as client:
        assert client.get("/metrics").status_code == 401
        auth = {"Authorization": "Bearer reader-1"}
        metrics = client.get("/metrics", headers=auth)
        assert metrics.status_code == 200 and "text/plain" in metrics.headers["content-type"]
        assert client.get("/v1/mirrors", headers=auth).json() == {"mirrors": []}
        assert client.get("/healthz").status_code == 404  # not served by a mirror process
    manager.checkpoints.close()
