"""The OpenAPI document of the broker's HTTP API (served at /openapi.json).

Strategy: written as data next to the code rather than generated, because the bodies are
CBOR and the interesting facts (which status means what) are not in type hints.
"""

from __future__ import annotations

from typing import Any

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string"}, "field": {"type": ["string", "null"]}},
}


def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "cloud_broker", "version": "1",
             "description": "Ingest, partitions and consumers of the telemetry broker."},
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": _ERROR,
            "Ack": {
                "type": "object",
                "required": ["edge_id", "stream", "generation", "acked_offset", "status"],
                "properties": {
                    "edge_id": {"type": "string"}, "stream": {"type": "string"},
                    "generation": {"type": "string"},
                    "acked_offset": {"type": "integer", "minimum": -1},
                    "status": {"type": "string", "enum": ["written", "duplicate", "partial"]},
                },
            },
            "Refusal": {
                "type": "object",
                "required": ["code", "expected_offset"],
                "properties": {"code": {"type": "string", "enum": ["gap"]},
                               "expected_offset": {"type": "integer", "minimum": 0},
                               "message": {"type": "string"}},
            },
        },
    },
    "security": [{"bearer": []}],
    "paths": {
        "/v1/ingest/{topic}": {
            "post": {
                "summary": "Append an uplink batch (docs/protocol.md) to a topic",
                "parameters": [{"name": "topic", "in": "path", "required": True,
                                "schema": {"type": "string",
                                           "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}},
                               {"name": "Content-Encoding", "in": "header",
                                "schema": {"type": "string",
                                           "enum": ["identity", "gzip", "zstd"]}}],
                "requestBody": {"required": True, "content": {
                    "application/cbor": {"schema": {"type": "string", "format": "binary"}}}},
                "responses": {
                    "200": {"description": "Durable: the ack (CBOR, or JSON with Accept)",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Ack"}}}},
                    "400": _err("Malformed batch; `field` names the problem"),
                    "401": _err("No or unknown bearer token"),
                    "403": _err("The token may not ingest as this edge"),
                    "404": _err("Unknown topic"),
                    "409": {"description": "Gap: resend from expected_offset",
                            "content": {"application/json": {
                                "schema": {"$ref": "#/components/schemas/Refusal"}}}},
                    "413": _err("Body too large"),
                    "415": _err("Unsupported Content-Type or Content-Encoding"),
                    "503": _err("Not durable now (disk full, fsync failure); retry later"),
                },
            }
        },
        "/healthz": {"get": {"summary": "Health", "security": [],
                             "responses": {"200": {"description": "healthy"},
                                           "503": {"description": "a partition is unwritable"}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "security": [],
                             "responses": {"200": {"description": "text exposition format"}}}},
        "/v1/dashboard": {"get": {
            "summary": "What the dashboard at /ui shows: partitions, edges, groups, mirrors "
                       "of the token's scopes (read; docs/dashboard.md)",
            "responses": {"200": {"description": "one snapshot", "content": {
                "application/json": {"schema": {"type": "object", "required": [
                    "time", "healthy", "topics", "edges", "groups", "mirrors", "truncated"]}}}},
                "401": _err("No or unknown bearer token"),
                "403": _err("The token lacks the read permission")}}},
    },
}


def _merge_consumer_api() -> None:
    from .openapi_consume import CONSUME_PATHS, CONSUME_SCHEMAS

    OPENAPI["paths"].update(CONSUME_PATHS)
    OPENAPI["components"]["schemas"].update(CONSUME_SCHEMAS)



def _merge_mirror_api() -> None:
    from .openapi_mirrors import MIRROR_PATHS

    OPENAPI["paths"].update(MIRROR_PATHS)


_merge_consumer_api()
_merge_mirror_api()
