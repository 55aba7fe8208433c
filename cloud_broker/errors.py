"""HTTP error responses: one JSON shape for every 4xx/5xx the broker sends.

Strategy: every refusal tells the caller what was wrong in a stable JSON body
``{"error": <message>, "field": <name or null>, ...}`` so clients and people can act on it.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


def error(status: int, message: str, field: str | None = None, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "field": field}
    body.update(extra)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)
