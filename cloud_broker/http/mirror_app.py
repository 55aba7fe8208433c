"""What ``cloud-broker mirror --listen`` serves: ``/metrics`` and ``GET /v1/mirrors``.

Strategy: the standalone mirror process has no broker, so it serves the same handlers
(ops.metrics, mirrors.list_mirrors) over a ``MirrorOps`` service: its tokens, its config
(``[auth] protect_metrics``), its MirrorManager and a registry holding the mirrors'
collector. ``MirrorOps`` satisfies the handlers' protocols (services.py); nothing is
faked.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import uvicorn
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from ..auth import TokenStore
from ..config import BrokerConfig
from ..mirrors import MirrorCollector, MirrorManager
from ..netaddr import parse_listen
from .routes import MIRROR_OPS_ROUTES


@dataclass
class OpsMetrics:
    registry: CollectorRegistry


@dataclass
class MirrorOps:
    """The service of the standalone mirror process's HTTP endpoints."""

    tokens: TokenStore
    config: BrokerConfig
    mirrors: MirrorManager
    metrics: OpsMetrics

    @classmethod
    def build(cls, cfg: BrokerConfig, manager: MirrorManager) -> MirrorOps:
        registry = CollectorRegistry()
        registry.register(MirrorCollector(manager))
        return cls(TokenStore(cfg), cfg, manager, OpsMetrics(registry))


def mirror_app(service: MirrorOps) -> Starlette:
    app = Starlette(routes=list(MIRROR_OPS_ROUTES))
    app.state.service = service
    return app


async def serve_mirror_ops(cfg: BrokerConfig, manager: MirrorManager, listen: str) -> None:
    """Serve the mirror endpoints on ``listen`` (host:port) until cancelled."""
    app = mirror_app(MirrorOps.build(cfg, manager))
    host, port = parse_listen(listen, "--listen")
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                           log_level="warning", access_log=False,
                                           lifespan="off"))
    # The process's own SIGTERM handler stops everything; uvicorn must not take it over.
    server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign]
    await server.serve()


__all__ = ["MirrorOps", "mirror_app", "serve_mirror_ops"]
