"""What the handlers need of the service they are given, as narrow protocols.

Strategy: the broker's handlers take the ``Broker`` itself (cloud_broker.broker); the
handlers that the standalone mirror process serves too (``/metrics``, ``GET
/v1/mirrors``) take the narrower protocols below, which both the ``Broker`` and
``MirrorOps`` (http.mirror_app) satisfy, so neither is faked.
"""

from __future__ import annotations

from typing import Protocol

from prometheus_client import CollectorRegistry

from ..auth import TokenStore
from ..config import BrokerConfig
from ..mirrors import MirrorManager


class Authenticating(Protocol):
    """A service whose handlers check bearer tokens (and ``[auth] protect_metrics``)."""

    tokens: TokenStore
    config: BrokerConfig


class HasRegistry(Protocol):
    registry: CollectorRegistry


class MetricsService(Authenticating, Protocol):
    """``GET /metrics``: the registry to expose."""

    metrics: HasRegistry


class HealthService(MetricsService, Protocol):
    """``GET /healthz``: (healthy, detail)."""

    def health(self) -> tuple[bool, dict[str, object]]: ...


class MirrorService(Authenticating, Protocol):
    """The mirror admin endpoints: the process's ``MirrorManager``."""

    mirrors: MirrorManager


__all__ = ["Authenticating", "HasRegistry", "HealthService", "MetricsService",
           "MirrorService"]
