"""What ``cloud-broker serve`` checks before it serves: TLS files, the listen socket, fds.

Strategy: every resource named in the configuration is tried once, before the app starts
(uvicorn runs the lifespan, which opens the data directory and starts mirrors, *before*
it binds), and a failure is a ``ConfigError`` naming the key: one line and exit 2
instead of a traceback from deep inside uvicorn or asyncio.
"""

from __future__ import annotations

import contextlib
import logging
import resource
import socket
import ssl
from pathlib import Path

from .config import BrokerConfig, ConfigError

log = logging.getLogger(__name__)

#: file descriptors a broker needs besides its connections (partitions, SQLite, mirrors)
FD_HEADROOM = 512


def check_tls(cfg: BrokerConfig) -> None:
    """The certificate and key load, and belong together."""
    if cfg.tls_cert is None or cfg.tls_key is None:
        return
    for key, path in (("tls.cert", cfg.tls_cert), ("tls.key", cfg.tls_key)):
        _readable(key, path)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_verify_locations(cafile=str(cfg.tls_cert))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError("tls.cert", f"{cfg.tls_cert} holds no PEM certificate "
                                      f"({_reason(exc)})") from exc
    try:
        ctx.load_cert_chain(str(cfg.tls_cert), str(cfg.tls_key))
    except (ssl.SSLError, ValueError) as exc:
        raise ConfigError("tls.key", f"{cfg.tls_key} is not a PEM private key for "
                                     f"{cfg.tls_cert} ({_reason(exc)})") from exc


def _readable(key: str, path: Path) -> None:
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise ConfigError(key, f"cannot read {path}: {exc.strerror or exc}") from exc


def _reason(exc: Exception) -> str:
    return getattr(exc, "reason", None) or str(exc)


def bind(host: str, port: int, key: str) -> socket.socket:
    """A bound (not yet listening) TCP socket for ``host:port``; ConfigError naming ``key``."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise ConfigError(key, f"cannot resolve host {host!r} "
                               f"({getattr(exc, 'strerror', None) or exc}); use an IP "
                               "address or a resolvable name") from exc
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise ConfigError(key, f"cannot listen on {host}:{port}: "
                               f"{exc.strerror or exc}") from exc
    return sock


def warn_about_tokens(cfg: BrokerConfig) -> None:
    """A broker that will refuse every request (auth on, no token anywhere) or that
    accepts anyone (auth off) says so at start, with the command that fixes it."""
    if not cfg.auth_required:
        log.warning("auth.required = false: anyone who reaches %s:%d may ingest, read and "
                    "administer (local demos only)", cfg.host, cfg.port)
        return
    if cfg.tokens or (cfg.tokens_db is not None and count_tokens(cfg.tokens_db)):
        return
    where = (f"the tokens table {cfg.tokens_db} is empty" if cfg.tokens_db is not None
             else "cloud.toml has no [[tokens]] and no [auth] tokens_db")
    log.warning("no tokens: %s, so every request is refused with 401; issue one with "
                "'cloud-broker tokens add --config <cloud.toml> --role edge --edge-id <id>' "
                "(needs [auth] tokens_db) or add a [[tokens]] table", where)


def count_tokens(db_path: Path) -> int:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            return int(db.execute("select count(*) from tokens").fetchone()[0])
    except sqlite3.Error:
        return 0


def raise_fd_limit(max_connections: int) -> None:
    """Raise the soft open-files limit to the hard one, so the connection cap (not EMFILE,
    which makes asyncio stop accepting for a while) is what bounds connections."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-files limit to %d: %s", target, exc)
    if soft != resource.RLIM_INFINITY and soft < max_connections + FD_HEADROOM:
        log.warning("open-files limit %d is below limits.max_connections + %d: raise "
                    "LimitNOFILE / ulimit -n or lower limits.max_connections",
                    soft, FD_HEADROOM)


__all__ = ["bind", "check_tls", "count_tokens", "raise_fd_limit", "warn_about_tokens"]
