"""``cloud-broker mirror``: run mirrors in their own process, reading a broker over HTTP.

Strategy: the same MirrorManager and runners as inside the broker, with an HttpSource
(the consumer API, which only serves durable records) instead of the partition files.
Checkpoints go to ``<data_dir>/mirrors.db`` of the given config, so the process can be
SIGKILLed and restarted at any moment. With ``--listen`` it serves ``/metrics`` and
``GET /v1/mirrors`` like the broker does.

Which mirrors run: those named with ``--name``, else every ``run = "standalone"`` one.
The HTTP side (``--listen``) is ``cloud_broker.http.mirror_app``, handed in by the CLI
(``serve``), so this room imports no web framework.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable

from ..config import BrokerConfig, ConfigError, load_config
from ..netaddr import check_url, parse_listen
from ..redact import install_log_masking
from .manager import MirrorManager
from .settings import MirrorConfig
from .source import HttpSource

log = logging.getLogger(__name__)
TOKEN_ENV = "CLOUD_BROKER_TOKEN"
#: serves the process's HTTP endpoints on ``listen`` until cancelled
Serve = Callable[[BrokerConfig, MirrorManager, str], Awaitable[None]]


def add_parser(sub: argparse._SubParsersAction, serve: Serve | None = None  # type: ignore[type-arg]
               ) -> None:
    p = sub.add_parser("mirror", help="run mirrors on their own, reading a broker over HTTP")
    p.add_argument("--config", required=True, help="cloud.toml with [mirrors.<name>] tables")
    p.add_argument("--name", action="append", default=[],
                   help="mirror to run (repeatable); default: every run = \"standalone\" one")
    p.add_argument("--source", help="URL of the source broker (default: the config's listen)")
    p.add_argument("--token", help=f"token with the read permission (or ${TOKEN_ENV})")
    p.add_argument("--listen", help="serve /metrics and /v1/mirrors on host:port")
    p.set_defaults(func=cmd_mirror, serve=serve)


def select(cfg: BrokerConfig, names: list[str]) -> list[MirrorConfig]:
    for n in names:
        if n not in cfg.mirrors:
            raise ConfigError(f"mirrors.{n}", "no such mirror in the config")
    chosen = [cfg.mirrors[n] for n in names] if names else [
        m for m in cfg.mirrors.values() if m.run == "standalone"]
    if not chosen:
        raise ConfigError("mirrors", 'no mirror to run: name one with --name or set run = '
                                     '"standalone"')
    return chosen


def source_url(cfg: BrokerConfig) -> str:
    host = "127.0.0.1" if cfg.host in ("", "0.0.0.0", "::") else cfg.host
    host = f"[{host}]" if ":" in host else host
    return f"{'https' if cfg.tls_cert else 'http'}://{host}:{cfg.port}"


def cmd_mirror(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    mirrors = select(cfg, args.name)
    if args.source is not None:
        check_url(args.source, "--source", ("http", "https"))
    if args.listen is not None:
        parse_listen(args.listen, "--listen")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    install_log_masking()
    token = args.token or os.environ.get(TOKEN_ENV)
    asyncio.run(run(cfg, mirrors, args.source or source_url(cfg), token, args.listen,
                    getattr(args, "serve", None)))
    return 0


async def run(cfg: BrokerConfig, mirrors: list[MirrorConfig], url: str, token: str | None,
              listen: str | None, serve: Serve | None = None) -> None:
    if listen and serve is None:
        raise ConfigError("--listen", "this entry point serves no HTTP endpoints")
    source = HttpSource(url, token)
    manager = MirrorManager(cfg.data_dir, source, mirrors, load_defined=False)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await manager.start()
    log.info("mirroring %s from %s", ", ".join(m.name for m in mirrors), url)
    server_task = None
    if listen and serve is not None:
        server_task = asyncio.create_task(serve(cfg, manager, listen))
    try:
        await stop.wait()
    finally:
        if server_task is not None:
            server_task.cancel()
        await manager.stop()
        await source.close()
