"""The operators' web views: static pages served at ``/ui`` by the broker and the agent.

Strategy: each page is plain HTML + JavaScript (no build step, nothing fetched from
elsewhere) that polls its service's JSON (the broker's ``/v1/dashboard``, the agent's
``/status``) and draws its charts on a canvas itself (``static/common/chart.js``, ~100
lines: smaller than any charting library). The pages hold no data, so they are served to
anyone; the data endpoints check tokens as usual. Every response under ``/ui`` carries a
Content-Security-Policy that allows scripts, styles and requests to this origin only, no
inline script and no framing, and the pages write data with ``textContent`` only: a topic
or edge name cannot become markup or script. docs/dashboard.md says how to use them.

``ui_routes(page)`` gives the routes of one page (``"broker"`` or ``"agent"``): the
page at ``/ui/`` and the shared scripts and styles at ``/ui/common/``.
"""

from __future__ import annotations

from pathlib import Path

from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).parent / "static"
PAGES = ("broker", "agent")

#: what a page may load and do: its own origin's scripts, styles and JSON, nothing else
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
       "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = [(b"content-security-policy", CSP.encode()),
           (b"x-content-type-options", b"nosniff"),
           (b"referrer-policy", b"no-referrer"),
           (b"cache-control", b"no-cache")]


class _Hardened:
    """Adds ``HEADERS`` to every response of the wrapped ASGI app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def ui_routes(page: str) -> list[BaseRoute]:
    """The routes serving ``page`` (one of ``PAGES``) at ``/ui/``."""
    if page not in PAGES:
        raise ValueError(f"no page {page!r}; one of {PAGES}")
    # ``/ui`` itself is redirected to ``/ui/`` by the router (redirect_slashes)
    return [
        Mount("/ui/common", app=_Hardened(StaticFiles(directory=STATIC / "common"))),
        Mount("/ui", app=_Hardened(StaticFiles(directory=STATIC / page, html=True))),
    ]


__all__ = ["CSP", "PAGES", "STATIC", "ui_routes"]
