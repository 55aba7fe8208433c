"""The consumer side of the HTTP API: topics, fetch, stream and consumer groups.

Kept apart from app.py so the ingest/mirror wiring and the consumer wiring can change
independently; docs/consumers.md documents every route listed here.
"""

from __future__ import annotations

from starlette.routing import Route

from . import http_consume, http_groups, http_stream

_PARTITION = "/v1/topics/{topic}/partitions/{partition}"

CONSUME_ROUTES = [
    Route("/v1/topics", http_consume.list_topics, methods=["GET"]),
    Route("/v1/topics/{topic}", http_consume.describe_topic, methods=["GET"]),
    Route(f"{_PARTITION}/records", http_consume.fetch, methods=["GET"]),
    Route(f"{_PARTITION}/stream", http_stream.stream, methods=["GET"]),
    Route("/v1/groups", http_groups.list_groups, methods=["GET"]),
    Route("/v1/groups/{group}", http_groups.describe, methods=["GET"]),
    Route("/v1/groups/{group}/join", http_groups.join, methods=["POST"]),
    Route("/v1/groups/{group}/heartbeat", http_groups.heartbeat, methods=["POST"]),
    Route("/v1/groups/{group}/leave", http_groups.leave, methods=["POST"]),
    Route("/v1/groups/{group}/commit", http_groups.commit, methods=["POST"]),
    Route("/v1/groups/{group}/offsets", http_groups.committed, methods=["GET"]),
]
