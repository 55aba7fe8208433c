"""The broker's HTTP API: the only room that imports Starlette (and, with the CLI, uvicorn).

Rooms: ``app`` builds the ASGI app over a ``Broker``; ``routes`` is the route table;
``errors`` is the one error path (handlers raise ``Problem``, ``endpoint`` answers and
hands each handler its typed service); ``params`` checks tokens, path and query
parameters and bodies; ``services`` states what the shared handlers need of a service.
One module per resource: ``ingest`` (edges write), ``replicate`` (mirrors write at their
offsets), ``consume`` (topics, fetch: ``read_partition`` is where a fetch gets its
records), ``stream`` (SSE), ``groups``, ``mirrors`` (mirror admin), ``ops`` (health,
metrics, ``openapi``). ``connguard`` bounds connections; ``mirror_app`` serves the
standalone mirror process.
"""

from .app import create_app
from .connguard import ConnectionGuard
from .errors import endpoint, problem_response
from .mirror_app import MirrorOps, mirror_app, serve_mirror_ops
from .openapi import OPENAPI

__all__ = [
    "OPENAPI",
    "ConnectionGuard",
    "MirrorOps",
    "create_app",
    "endpoint",
    "mirror_app",
    "problem_response",
    "serve_mirror_ops",
]
