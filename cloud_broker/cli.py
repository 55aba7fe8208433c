"""``cloud-broker``: run the broker.

Strategy: argparse subcommands, each a small function; configuration errors print the
key that is wrong and exit 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import sys

import uvicorn

from . import consume_cli
from .app import create_app
from .config import BrokerConfig, ConfigError, load_config
from .mirrors import standalone as mirror_cli


def uvicorn_config(cfg: BrokerConfig, app: object, log_level: str = "info") -> uvicorn.Config:
    """The uvicorn settings for a broker: TLS when configured, no access log on the hot path."""
    kwargs: dict[str, object] = {}
    if cfg.tls_cert and cfg.tls_key:
        kwargs.update(ssl_certfile=str(cfg.tls_cert), ssl_keyfile=str(cfg.tls_key))
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level,
                          access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                          **kwargs)  # type: ignore[arg-type]


def tune_gc() -> None:
    """Fewer cyclic-GC passes for a process that allocates millions of short-lived,
    acyclic objects (decoded records): freeze what start-up allocated, so full
    collections stop rescanning it, and collect the young generation less often.
    Ingest spends about a fifth of its CPU in the collector otherwise (bench/uplink_drain.py)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)


def cmd_serve(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.listen:
        host, _, port = args.listen.rpartition(":")
        cfg = dataclasses.replace(cfg, host=host or cfg.host, port=int(port))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    server = uvicorn.Server(uvicorn_config(cfg, create_app(cfg)))
    tune_gc()
    server.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-broker", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", required=True, help="path to cloud.toml")
    serve.add_argument("--listen", help="override listen address host:port")
    serve.set_defaults(func=cmd_serve)
    consume_cli.add_parser(sub)
    mirror_cli.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cloud-broker: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
