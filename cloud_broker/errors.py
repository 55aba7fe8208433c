"""The broker's one refusal type, ``Problem``: what a caller got wrong, as data.

Strategy: every check of a request (auth, scopes, parameters, bodies, rules of a room)
raises ``Problem(status, message, field, **extra)`` and one place, ``http.errors``,
turns it into the broker's JSON error body ``{"error": <message>, "field": <name or
null>, ...extra}``. Kept free of Starlette so rooms below ``http/`` (``trust``) can raise
it too.
"""

from __future__ import annotations

from typing import Any


class Problem(Exception):
    """A refusal: HTTP status, message, the field at fault and extra JSON members.

    ``headers`` are sent with the response (``Retry-After`` of a 503)."""

    def __init__(self, status: int, message: str, field: str | None = None, *,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.field, self.extra = status, message, field, extra
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error body (also the data of a stream's ``error`` event)."""
        return {"error": self.message, "field": self.field, **self.extra}


def unavailable(message: str) -> Problem:
    """A 503 the caller should retry after a second (not durable now)."""
    return Problem(503, message, headers={"Retry-After": "1"})


__all__ = ["Problem", "unavailable"]
