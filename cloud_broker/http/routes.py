"""The route table of the broker's HTTP API: one line per endpoint, one module per resource.

Where a request goes: ingest.py (edges write), replicate.py (a mirror writes at its
offsets), consume.py (topics and fetch), stream.py (SSE), groups.py (consumer groups),
mirrors.py (mirror admin), ops.py (health, metrics, the API description), dashboard.py
(the data of the operators' page at /ui, served from the opsui package). docs/api.md,
docs/consumers.md and docs/mirrors.md document every route listed here.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from opsui import ui_routes

from . import consume, dashboard, groups, ingest, mirrors, ops, replicate, stream

_PARTITION = "/v1/topics/{topic}/partitions/{partition}"

CONSUME_ROUTES = [
    Route("/v1/topics", consume.list_topics, methods=["GET"]),
    Route("/v1/topics/{topic}", consume.describe_topic, methods=["GET"]),
    Route(f"{_PARTITION}/records", consume.fetch, methods=["GET"]),
    Route(f"{_PARTITION}/stream", stream.stream, methods=["GET"]),
    Route("/v1/groups", groups.list_groups, methods=["GET"]),
    Route("/v1/groups/{group}", groups.describe, methods=["GET"]),
    Route("/v1/groups/{group}/join", groups.join, methods=["POST"]),
    Route("/v1/groups/{group}/heartbeat", groups.heartbeat, methods=["POST"]),
    Route("/v1/groups/{group}/leave", groups.leave, methods=["POST"]),
    Route("/v1/groups/{group}/commit", groups.commit, methods=["POST"]),
    Route("/v1/groups/{group}/offsets", groups.committed, methods=["GET"]),
]

BROKER_ROUTES: list[BaseRoute] = [
    Route("/v1/ingest/{topic}", ingest.ingest, methods=["POST"]),
    Route("/healthz", ops.healthz, methods=["GET"]),
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/openapi.json", ops.openapi, methods=["GET"]),
    Route("/v1/replicate/{topic}/{partition}", replicate.replicate_position, methods=["GET"]),
    Route("/v1/replicate/{topic}/{partition}", replicate.replicate_append, methods=["POST"]),
    Route("/v1/mirrors", mirrors.list_mirrors, methods=["GET"]),
    Route("/v1/mirrors", mirrors.add_mirror, methods=["POST"]),
    Route("/v1/mirrors/{name}", mirrors.delete_mirror, methods=["DELETE"]),
    Route("/v1/dashboard", dashboard.dashboard, methods=["GET"]),
    *CONSUME_ROUTES,
    *ui_routes("broker"),
]

#: what ``cloud-broker mirror --listen`` serves (http.mirror_app)
MIRROR_OPS_ROUTES = [
    Route("/metrics", ops.metrics, methods=["GET"]),
    Route("/v1/mirrors", mirrors.list_mirrors, methods=["GET"]),
]

__all__ = ["BROKER_ROUTES", "CONSUME_ROUTES", "MIRROR_OPS_ROUTES"]
