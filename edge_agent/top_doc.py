"""The status document as ``edge-agent top`` reads it: fetched, bounded, and checked.

Strategy: ``top`` shows whatever answers on the status address, which may be an older
agent, another program, a proxy's error page or a hostile peer. So the answer is read
with a size cap (``MAX_BODY_BYTES``), parsed as JSON, and its shape checked against
``SHAPE`` before anything renders it: every key ``top`` uses has one expected type, a key
may be absent (older agents, the files-only document), and any other value is refused with
one line naming its place (``streams[0].backlog_records: expected a number, got 'x'``).
Failures are ``StatusError``; the view never sees an unchecked document.
"""

from __future__ import annotations

import json
import math
from typing import Any

#: largest status answer read (a few KiB per stream; 60 history samples each)
MAX_BODY_BYTES = 8 * 1024 * 1024


class StatusError(Exception):
    """The status endpoint could not be read, or its answer is not a status document."""


NUM, INT, STR, BOOL = "number", "integer", "string", "boolean"
_COUNTS = ("map", INT)  # {"reason": n}

_UPLINK = {"state": STR, "url": STR, "in_flight": INT, "retries": INT, "last_error": STR,
           "tls_error": STR, "stopped": STR, "batches_sent": INT, "records_sent": INT}
_STREAM = {
    "name": STR, "priority": INT, "cloud_topic": STR, "generation": STR,
    "start_offset": INT, "end_offset": INT, "acked_offset": INT,
    "backlog_records": INT, "backlog_bytes": INT, "oldest_unsent_age_s": NUM,
    "drain_eta_s": NUM, "ingest_rate": NUM, "drain_rate": NUM, "received_rate": NUM,
    "sent_rate": NUM, "received": INT, "appended": INT, "pubacks": INT,
    "deduplicated": INT, "dead_lettered": INT, "drops": _COUNTS, "write_error": STR,
    "backlog_history": ("list", INT), "uplink": _UPLINK,
}
_MQTT = {"client_id": STR, "connected": BOOL, "last_error": STR, "refused": STR,
         "connects": INT}
SHAPE: dict[str, Any] = {
    "edge_id": STR, "source": STR, "time": NUM, "started_at": NUM, "healthy": BOOL,
    "problems": ("list", STR), "streams": ("list", _STREAM), "mqtt": ("list", _MQTT),
    "uplink": _UPLINK,
    "dead_letter": {"records": INT, "bytes": INT, "failed": INT,
                    "by_stream": ("map", _COUNTS)},
    "unreachable": STR,
}


def _fail(path: str, want: str, got: Any) -> StatusError:
    text = json.dumps(got)[:60] if not isinstance(got, str) else repr(got[:60])
    return StatusError(f"not an edge-agent status document: {path or '(document)'}: "
                       f"expected {want}, got {text}")


def check(value: Any, shape: Any = SHAPE, path: str = "", nullable: bool = False) -> None:
    """Raise StatusError at the first value of ``value`` that does not fit ``shape``.

    ``null`` is accepted for a key (where it may be absent), not for a list item."""
    if value is None and nullable:
        return
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            raise _fail(path, "an object", value)
        for key, sub in shape.items():
            if key in value:
                check(value[key], sub, f"{path}.{key}" if path else key, True)
        if shape is _STREAM and not isinstance(value.get("name"), str):
            raise _fail(f"{path}.name", "a string", value.get("name"))
    elif isinstance(shape, tuple):
        kind, sub = shape
        if kind == "list":
            if not isinstance(value, list):
                raise _fail(path, "a list", value)
            for i, item in enumerate(value):
                check(item, sub, f"{path}[{i}]")
        else:
            if not isinstance(value, dict):
                raise _fail(path, "an object", value)
            for key, item in value.items():
                check(item, sub, f"{path}.{key}", not isinstance(sub, dict))
    elif shape == STR:
        if not isinstance(value, str):
            raise _fail(path, "a string", value)
    elif shape == BOOL:
        if not isinstance(value, bool):
            raise _fail(path, "true or false", value)
    elif shape == INT:
        if not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 1 << 63:
            raise _fail(path, "an integer", value)
    elif (not isinstance(value, int | float) or isinstance(value, bool)
          or not math.isfinite(value) or abs(value) >= 1e18):
        raise _fail(path, "a number", value)


def parse(body: bytes) -> dict[str, Any]:
    """The checked status document in ``body`` (JSON)."""
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise StatusError("not an edge-agent status document: the answer is not JSON "
                          f"({str(exc)[:80]})") from exc
    check(doc)
    if "streams" not in doc:
        raise StatusError("not an edge-agent status document: it has no streams")
    return doc


def fetch(url: str, timeout: float = 2.0) -> dict[str, Any]:
    """GET ``url``/status, read at most MAX_BODY_BYTES, parse and check it."""
    import httpx

    target = url.rstrip("/") + "/status"
    try:
        with httpx.Client(timeout=timeout) as client, client.stream("GET", target) as resp:
            if resp.status_code != 200:
                raise StatusError(f"{target} answered HTTP {resp.status_code}: not an "
                                  "edge-agent status endpoint")
            body = bytearray()
            for chunk in resp.iter_bytes():
                body += chunk
                if len(body) > MAX_BODY_BYTES:
                    raise StatusError(f"{target}: the answer is larger than "
                                      f"{MAX_BODY_BYTES} bytes: not a status document")
    except httpx.ConnectError as exc:
        raise StatusError(f"cannot reach the agent at {target}: {exc or 'refused'} "
                          "(is it running? is status.listen this address?)") from exc
    except httpx.TimeoutException as exc:
        raise StatusError(f"no answer from {target} within {timeout:g}s") from exc
    except (httpx.HTTPError, ValueError) as exc:
        raise StatusError(f"cannot read {target}: {type(exc).__name__}: {exc}") from exc
    return parse(bytes(body))


__all__ = ["MAX_BODY_BYTES", "SHAPE", "StatusError", "check", "fetch", "parse"]
