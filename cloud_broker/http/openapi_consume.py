"""OpenAPI paths and schemas of the consumer API (merged into openapi.OPENAPI).

Strategy: data, like openapi.py, kept beside the handlers it describes. The CBOR fetch
body is columnar and documented in docs/consumers.md; its JSON twin is the schema here.
tests/cloud_broker/test_consume_fuzz.py runs schemathesis against this document.
"""

from __future__ import annotations

from typing import Any

NAME = {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"}
OFFSET = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)}}}


def _err(description: str, schema: str = "Error") -> dict[str, Any]:
    return _json(description, schema)


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _query(name: str, schema: dict[str, Any], description: str, required: bool = False
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema,
            "description": description}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_AUTH = {"401": _err("No or unknown bearer token"),
         "403": _err("The token lacks the read permission, or the topic/group is outside "
                     "its scopes")}
_PARTITION_PARAMS = [_path("topic", NAME), _path("partition", {"type": "integer", "minimum": 0})]
_GROUP = [_path("group", NAME)]
_RANGE = {"first": OFFSET, "last": OFFSET}

CONSUME_SCHEMAS: dict[str, Any] = {
    "OutOfRange": _obj(["error", "start_offset", "end_offset"], error={"type": "string"},
                       field={"type": ["string", "null"]}, start_offset=OFFSET,
                       end_offset=OFFSET),
    "GroupError": _obj(["error", "code"], error={"type": "string"},
                       code={"type": "string", "enum": ["unknown_member", "stale_generation",
                                                        "not_assigned", "assignor_mismatch",
                                                        "group_active", "member_in_use",
                                                        "rebalance_in_progress"]},
                       generation={"type": ["integer", "null"]},
                       member_secret={"type": "string", "description":
                                      "on a join refused at the barrier: the secret this "
                                      "member holds, to send when it joins again"}),
    "Record": _obj(["offset", "timestamp", "key", "value", "headers", "encoding"],
                   offset=OFFSET, timestamp={"type": "integer"}, key={"type": "string"},
                   value={"type": "string"},
                   headers={"type": "array", "items": {"type": "array", "items": {
                       "type": "string"}, "minItems": 2, "maxItems": 2}},
                   encoding={"type": "string", "enum": ["base64", "utf8"]}),
    "Fetch": _obj(["topic", "partition", "start_offset", "end_offset", "next_offset",
                   "skipped", "records"],
                  topic={"type": "string"}, partition={"type": "integer"},
                  start_offset=OFFSET, end_offset=OFFSET, next_offset=OFFSET,
                  skipped={"type": "array", "items": _obj(["first", "last"], **_RANGE)},
                  records={"type": "array", "items": _ref("Record")}),
    "Topic": _obj(["name", "partitions"], name={"type": "string"},
                  partitions={"type": "integer"},
                  retention_bytes={"type": ["integer", "null"]},
                  retention_ms={"type": ["integer", "null"]}),
    "Member": _obj(["group", "member_id", "generation", "assignment"],
                   group={"type": "string"}, member_id={"type": "string"},
                   generation={"type": "integer"}, assignor={"type": "string"},
                   assignment={"type": "array", "items": _obj(
                       ["topic", "partition"], topic={"type": "string"},
                       partition={"type": "integer"})},
                   members={"type": "integer"}, session_timeout_ms={"type": "integer"},
                   heartbeat_interval_ms={"type": "integer"},
                   member_secret={"type": "string", "description": "send it with every "
                                  "later heartbeat, commit, leave and rejoin"}),
    "Offsets": _obj(["offsets"], group={"type": "string"}, offsets={"type": "array", "items": _obj(
        ["topic", "partition", "offset"], topic={"type": "string"},
        partition={"type": "integer"}, offset=OFFSET)}),
}

SECRET = {"type": "string", "minLength": 1, "maxLength": 256}
_JOIN = _obj(["member_id", "topics"], member_id=NAME, member_secret=SECRET,
             topics={"type": "array", "items": NAME, "minItems": 1, "maxItems": 100},
             session_timeout_ms={"type": "integer", "minimum": 100, "maximum": 300000},
             assignor={"type": "string", "enum": ["range", "roundrobin"]})
_COMMIT = _obj(["offsets"], member_id=NAME, member_secret=SECRET,
               generation={"type": "integer", "minimum": 0},
               offsets={"type": "array", "minItems": 1, "maxItems": 10000, "items": _obj(
                   ["topic", "partition", "offset"], topic=NAME,
                   partition={"type": "integer", "minimum": 0}, offset=OFFSET)})


def _post(summary: str, body: dict[str, Any], ok: dict[str, Any],
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"post": {"summary": summary, "parameters": _GROUP,
                     "requestBody": {"required": True,
                                     "content": {"application/json": {"schema": body}}},
                     "responses": {"200": ok, "400": _err("Malformed request; see `field`"),
                                   "409": _err("Group rule; `code` says which", "GroupError"),
                                   "413": _err("Body too large"),
                                   "503": _err("Group state could not be saved; retry"),
                                   **_AUTH, **(extra or {})}}}


_ANY_OK = {"description": "done", "content": {"application/json": {"schema": {
    "type": "object"}}}}

CONSUME_PATHS: dict[str, Any] = {
    "/v1/topics": {"get": {"summary": "Topics and their partition counts", "responses": {
        "200": {"description": "topics", "content": {"application/json": {"schema": _obj(
            ["topics"], topics={"type": "array", "items": _ref("Topic")})}}}, **_AUTH}}},
    "/v1/topics/{topic}": {"get": {
        "summary": "A topic's partitions with start and end (high watermark) offsets",
        "parameters": [_path("topic", NAME)],
        "responses": {"200": {"description": "topic", "content": {"application/json": {
            "schema": {"type": "object"}}}}, "404": _err("Unknown topic"), **_AUTH}}},
    "/v1/topics/{topic}/partitions/{partition}/records": {"get": {
        "summary": "Records from an offset (long-poll with wait_ms)",
        "parameters": [
            *_PARTITION_PARAMS,
            _query("offset", OFFSET, "First offset to return", required=True),
            _query("max_records", {"type": "integer", "minimum": 1, "maximum": 100000},
                   "At most this many records (default 1000)"),
            _query("max_bytes", {"type": "integer", "minimum": 1, "maximum": 64 << 20},
                   "About this many bytes of stored batches (whole batches, at least one)"),
            _query("wait_ms", {"type": "integer", "minimum": 0, "maximum": 30000},
                   "At the end, wait up to this long for new records (default 0)"),
            _query("encoding", {"type": "string", "enum": ["base64", "utf8"]},
                   "JSON only: bytes as base64 (default) or utf-8 text where possible")],
        "responses": {
            "200": {"description": "Records: columnar CBOR by default (docs/consumers.md), "
                                   "rows with Accept: application/json",
                    "headers": {
                        "X-Next-Offset": {"schema": OFFSET, "description": "next_offset"},
                        "X-End-Offset": {"schema": OFFSET, "description": "end_offset"}},
                    "content": {"application/cbor": {"schema": {"type": "string",
                                                                "format": "binary"}},
                                "application/json": {"schema": _ref("Fetch")}}},
            "400": _err("Bad parameter; `field` names it"),
            "404": _err("Unknown topic or partition"),
            "416": _err("Offset outside start_offset..end_offset", "OutOfRange"),
            "503": _err("Partition unreadable now; retry"), **_AUTH}}},
    "/v1/topics/{topic}/partitions/{partition}/stream": {"get": {
        "summary": "Server-Sent Events following the partition (event `records`, id = next "
                   "offset; resume with Last-Event-ID)",
        "parameters": [
            *_PARTITION_PARAMS,
            _query("offset", OFFSET, "Start here (default: the end, i.e. only new records)"),
            _query("max_records", {"type": "integer", "minimum": 1, "maximum": 100000},
                   "At most this many records per event"),
            _query("keepalive_ms", {"type": "integer", "minimum": 100, "maximum": 60000},
                   "Idle comment interval (default 15000)"),
            _query("encoding", {"type": "string", "enum": ["base64", "utf8"]}, "As fetch")],
        "responses": {"200": {"description": "text/event-stream", "content": {
            "text/event-stream": {"schema": {"type": "string"}}}},
            "400": _err("Bad parameter"), "404": _err("Unknown topic or partition"),
            "416": _err("Offset out of range", "OutOfRange"), **_AUTH}}},
    "/v1/groups": {"get": {"summary": "Consumer groups", "responses": {"200": _ANY_OK, **_AUTH}}},
    "/v1/groups/{group}": {"get": {
        "summary": "Members, assignment, committed offsets and lag", "parameters": _GROUP,
        "responses": {"200": _ANY_OK, "400": _err("Bad group name"),
                      "404": _err("Unknown group"), **_AUTH}}},
    "/v1/groups/{group}/join": _post(
        "Join (or rejoin) and get this member's partitions", _JOIN,
        _json("The member's assignment for the current generation", "Member"),
        {"404": _err("Unknown topic")}),
    "/v1/groups/{group}/heartbeat": _post(
        "Keep the session; 409 stale_generation/unknown_member means join again",
        _obj(["member_id", "generation", "member_secret"], member_id=NAME,
             generation={"type": "integer", "minimum": 0}, member_secret=SECRET), _ANY_OK),
    "/v1/groups/{group}/leave": _post(
        "Leave the group (rebalances the rest)",
        _obj(["member_id", "member_secret"], member_id=NAME, member_secret=SECRET), _ANY_OK),
    "/v1/groups/{group}/commit": _post(
        "Commit next-to-consume offsets (as a member of the current generation, or without "
        "member_id/generation for an empty group)", _COMMIT, _ANY_OK,
        {"404": _err("Unknown topic or partition")}),
    "/v1/groups/{group}/offsets": {"get": {
        "summary": "Committed offsets", "parameters": [
            *_GROUP, _query("topic", {"type": "string"}, "Only this topic")],
        "responses": {"200": _json("Committed offsets", "Offsets"),
                      "400": _err("Bad group name"), **_AUTH}}},
}
