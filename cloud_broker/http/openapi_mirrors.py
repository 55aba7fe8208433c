"""OpenAPI paths of the mirror endpoints (merged into openapi.OPENAPI); docs/mirrors.md."""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}


def _err(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": schema or {"type": "object"}}}}


_POSITION = {"type": "object", "required": ["start_offset", "end_offset"],
             "properties": {"start_offset": {"type": "integer"},
                            "end_offset": {"type": "integer"}}}
_PARAMS = [{"name": "topic", "in": "path", "required": True, "schema": NAME},
           {"name": "partition", "in": "path", "required": True,
            "schema": {"type": "integer", "minimum": 0}}]

MIRROR_PATHS: dict[str, Any] = {
    "/v1/replicate/{topic}/{partition}": {
        "get": {"summary": "Where a replicated partition starts and ends (admin)",
                "parameters": _PARAMS,
                "responses": {"200": _json("start and end offset", _POSITION),
                              "401": _err("No or unknown token"),
                              "403": _err("Needs the admin permission"),
                              "404": _err("Unknown topic or partition")}},
        "post": {"summary": "Append records at their own offsets (broker-to-broker mirror)",
                 "description": "Body CBOR {records: [[offset, key, value, timestamp, "
                                "[[name, value]...]]...]}, consecutive offsets starting at "
                                "the partition's end offset (an empty partition may start "
                                "anywhere). Answers after the records are durable.",
                 "parameters": _PARAMS,
                 "requestBody": {"required": True, "content": {
                     "application/cbor": {"schema": {"type": "string", "format": "binary"}}}},
                 "responses": {
                     "200": _json("durable; the new end offset"),
                     "400": _err("Malformed body or offsets not consecutive"),
                     "401": _err("No or unknown token"),
                     "403": _err("Needs the admin permission"),
                     "404": _err("Unknown topic or partition"),
                     "409": _json("The partition continues elsewhere: resume from "
                                  "end_offset", _POSITION),
                     "413": _err("Body too large"),
                     "503": _err("Not durable now; retry")}},
    },
    "/v1/mirrors": {
        "get": {"summary": "Mirrors with their lag per partition (read)",
                "responses": {"200": _json("{mirrors: [...]}"),
                              "401": _err("No or unknown token")}},
        "post": {"summary": "Add and start a mirror (admin); body as a [mirrors.<name>] "
                            "table plus name",
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": {
                                     "type": "object", "required": ["name", "topic", "target"]}}}},
                 "responses": {"201": _json("the new mirror's status"),
                               "400": _err("Invalid definition; field names the key"),
                               "403": _err("Needs the admin permission"),
                               "409": _err("A mirror of that name exists")}},
    },
    "/v1/mirrors/{name}": {
        "delete": {"summary": "Stop and forget a mirror added by the API (admin)",
                   "parameters": [{"name": "name", "in": "path", "required": True,
                                   "schema": NAME}],
                   "responses": {"204": {"description": "removed with its checkpoints"},
                                 "404": _err("No such mirror"),
                                 "409": _err("Defined in cloud.toml; remove it there")}},
    },
}
