"""``cloud-broker``: run the broker.

Strategy: argparse subcommands, each a small function (``--help`` shows ``USAGE``, not
this docstring); configuration errors print the
key that is wrong and exit 2 instead of a traceback. ``serve`` takes everything the
configuration names before the app starts (startup.py): the data directory lock, the TLS
files, the listen socket.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import sys

import uvicorn
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from supervision import limit_malloc, start_heap_trimmer, start_memory_log

from .client import cli as consume_cli
from .config import BrokerConfig, ConfigError, load_config
from .datadir import DataDirLock
from .http import ConnectionGuard, create_app, serve_mirror_ops
from .mirrors import standalone as mirror_cli
from .netaddr import parse_listen
from .positions_cli import add_parser as add_positions_parser
from .redact import install_log_masking, mask_secrets
from .startup import bind, check_tls, raise_fd_limit, warn_about_tokens
from .tokens_cli import add_parser as add_tokens_parser

USAGE = """The cloud broker: ingest from edges, partitions, consumers, mirrors.

  cloud-broker serve --config cloud.toml                 run the broker
  cloud-broker tokens add --config cloud.toml --role edge --edge-id gw-001
  cloud-broker consume --url http://127.0.0.1:8080 --topic telemetry
  cloud-broker positions list --config cloud.toml        ingest positions (broker stopped)
  cloud-broker config-reference                          every cloud.toml key

Exit codes: 0 ok; 1 the check failed or nothing matched; 2 configuration or usage
error (a bad option, URL or key); 3 the broker cannot be reached or answered
unexpectedly; 4 the broker refused the token (401/403). See docs/consumers.md."""


def uvicorn_config(cfg: BrokerConfig, app: object, log_level: str = "info",
                   guard: ConnectionGuard | None = None) -> uvicorn.Config:
    """The uvicorn settings for a broker: TLS when configured, no access log on the hot path,
    the connection limits of ``[limits]``.

    uvicorn's ``limit_concurrency`` is left off on purpose: it answers 503 to new requests
    once idle sockets fill its table, which is the lock-out the guard prevents (it closes
    the idle ones instead, see http/connguard.py)."""
    kwargs: dict[str, object] = {}
    if cfg.tls_cert and cfg.tls_key:
        kwargs.update(ssl_certfile=str(cfg.tls_cert), ssl_keyfile=str(cfg.tls_key))
    if guard is not None:
        kwargs.update(http=guard.protocol(AutoHTTPProtocol))
    return uvicorn.Config(app, host=cfg.host, port=cfg.port, log_level=log_level,
                          access_log=False, lifespan="on", timeout_graceful_shutdown=5,
                          timeout_keep_alive=cfg.limits.keep_alive_s,  # type: ignore[arg-type]
                          h11_max_incomplete_event_size=cfg.limits.max_header_bytes,
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
    limit_malloc()  # before any worker thread allocates
    start_heap_trimmer()
    start_memory_log("broker")
    cfg = load_config(args.config)
    listen_key = "listen"
    if args.listen is not None:
        listen_key = "--listen"
        host, port = parse_listen(args.listen, listen_key)
        cfg = dataclasses.replace(cfg, host=host, port=port)
    check_tls(cfg)
    lock = DataDirLock(cfg.data_dir)  # before anything opens the directory
    sock = bind(cfg.host, cfg.port, listen_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    raise_fd_limit(cfg.limits.max_connections)
    warn_about_tokens(cfg)
    guard = ConnectionGuard(cfg.limits)
    app = create_app(cfg, data_lock=lock)
    app.state.connection_guard = guard
    server = uvicorn.Server(uvicorn_config(cfg, app, guard=guard))
    install_log_masking("uvicorn", "uvicorn.error", "uvicorn.access")
    tune_gc()
    server.run(sockets=[sock])
    return 0 if server.started else 1


def cmd_config_reference(args: argparse.Namespace) -> int:
    from .config_reference import generate

    sys.stdout.write(generate())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cloud-broker", description=USAGE,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the broker")
    serve.add_argument("--config", required=True, help="path to cloud.toml")
    serve.add_argument("--listen", help="override listen address host:port")
    serve.set_defaults(func=cmd_serve)
    consume_cli.add_parser(sub)
    add_tokens_parser(sub)
    add_positions_parser(sub)
    ref = sub.add_parser("config-reference", help="print the cloud.toml reference (markdown)")
    ref.set_defaults(func=cmd_config_reference)
    mirror_cli.add_parser(sub, serve_mirror_ops)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"cloud-broker: configuration error: {mask_secrets(str(exc))}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
