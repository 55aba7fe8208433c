"""The broker's ASGI app: the routes of every resource over one ``Broker``.

Strategy: ``create_app`` builds a Starlette app whose lifespan opens the ``Broker``
(cloud_broker.broker) and puts it where ``endpoint`` hands it to the handlers
(``app.state.service``; ``app.state.broker`` too, for tools and tests that look inside).
The route table is ``routes.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.routing import Route

from supervision import FullCollections

from ..broker import Broker
from ..config import BrokerConfig
from ..datadir import DataDirLock
from .routes import BROKER_ROUTES


def create_app(config: BrokerConfig, extra_routes: list[Route] | None = None,
               data_lock: DataDirLock | None = None) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        broker = Broker(config, data_lock)
        app.state.service = app.state.broker = broker
        await broker.start()
        collections = FullCollections(asyncio.get_running_loop())
        try:
            yield
        finally:
            collections.cancel()
            await broker.stop()

    return Starlette(routes=[*BROKER_ROUTES, *(extra_routes or [])], lifespan=lifespan)


__all__ = ["create_app"]
