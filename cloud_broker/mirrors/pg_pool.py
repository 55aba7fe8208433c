"""The PostgreSQL mirror target's connections: a bounded pool, and psycopg's errors
mapped to the target's.

Kept apart from ``postgres_target`` (what is written, in which transaction) because it is
one job: at most ``connections`` connections that a topic's partitions share, each
operation within the timeout on a warm one, a broken one dropped, and every failure
turned into ``TargetRejected`` (the operator's to fix: credentials, missing objects, bad
SQL) or ``TargetUnavailable`` (retry: connection lost, server starting, timeouts).
``PostgresTarget`` inherits it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import pq
from psycopg.conninfo import conninfo_to_dict

from .target import TargetRejected, TargetUnavailable

log = logging.getLogger(__name__)
IDLE, INERROR = pq.TransactionStatus.IDLE, pq.TransactionStatus.INERROR
#: SQLSTATE classes that are the operator's to fix, not transient
_REJECTED_CLASSES = ("28", "3D", "3F", "42")
_REJECTED_TEXT = ("password authentication failed", "no pg_hba.conf entry",
                  "no password supplied", "does not exist", "does not support SSL",
                  "certificate", "invalid sslmode")


def where(conninfo: str) -> str:
    """host:port/dbname of a connection string, for logs (never its credentials)."""
    try:
        d = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return "(invalid connection string)"
    return f"{d.get('host', '') or 'localhost'}:{d.get('port', '') or 5432}/{d.get('dbname', '')}"


def refused_content(exc: BaseException) -> bool:
    """The server refused what a row holds (bad JSON, a value out of range: class 22, or
    JSON nested beyond its stack: class 54), not the connection or the statement."""
    state = getattr(exc, "sqlstate", None) or ""
    return isinstance(exc, psycopg.DataError) or state[:2] == "54"


def mapped(exc: Exception, what: str) -> Exception:
    """Ours for a psycopg error: rejected for auth, missing objects and bad SQL, else
    unavailable (connection lost, server starting or shutting down, timeouts)."""
    state = getattr(exc, "sqlstate", None) or ""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, psycopg.ProgrammingError) or state[:2] in _REJECTED_CLASSES or (
            not state and any(t in text for t in _REJECTED_TEXT) and "starting up" not in text):
        return TargetRejected(f"{what}: {text}")
    return TargetUnavailable(f"{what}: {text}")


class PgPool:
    """At most ``connections`` connections to one database, shared by the partitions."""

    def __init__(self, conninfo: str, description: str, *, password: str | None,
                 password_env: str | None, connect_kwargs: Mapping[str, Any] | None,
                 timeout_s: float, connections: int) -> None:
        if connections < 1:
            raise ValueError("connections must be at least 1")
        self.conninfo = conninfo
        self.description = description
        self._password = password
        self.password_env = password_env
        self.timeout_s = timeout_s
        self._kwargs = dict(connect_kwargs or {})
        self.connections = connections
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._open: set[psycopg.AsyncConnection[Any]] = set()
        self._slots = asyncio.Semaphore(connections)

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        secret = {}
        if self.password_env:
            if self.password_env not in os.environ:
                raise TargetRejected(f"{self.description}: the environment variable "
                                     f"{self.password_env} (password_env) is not set")
            secret["password"] = os.environ[self.password_env]
        elif self._password is not None:
            secret["password"] = self._password
        conn = await psycopg.AsyncConnection.connect(
            self.conninfo, connect_timeout=max(1, int(self.timeout_s)),
            client_encoding="UTF8", application_name="edgestream-mirror", autocommit=True,
            **self._kwargs, **secret)
        try:
            # Not through libpq's ``options``: that would replace the DSN's own (search_path).
            await conn.execute("SELECT set_config('statement_timeout', %s, false)",
                               [f"{int(self.timeout_s * 1000)}ms"])
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _drop(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._open.discard(conn)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(conn.close(), 2)

    async def _guarded(self, what: str, op: Any) -> Any:
        """Run ``op(conn)`` on a connection of the pool within the timeout (waiting for a
        free one does not count); a failure drops the connection unless it is idle again
        (``op`` rolled back: an error of the statement, not of the link), and maps to our
        errors. Refused content and the primary key's refusal are left to ``write``,
        which writes the batch again."""
        async with self._slots:
            conn = None
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    while self._idle and conn is None:
                        conn = self._idle.pop()  # the most recently used: warm, alive
                        if conn.closed:
                            self._open.discard(conn)
                            conn = None
                    if conn is None:
                        conn = await self._connect()
                        self._open.add(conn)
                    return await op(conn)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                if refused_content(exc) or isinstance(exc, psycopg.errors.UniqueViolation):
                    raise
                raise mapped(exc, f"{self.description}: {what}") from exc
            finally:
                if conn is not None:
                    if not conn.closed and conn.info.transaction_status == IDLE:
                        self._idle.append(conn)
                    else:  # broken, or cancelled mid-transaction
                        await self._drop(conn)

    async def _warm(self) -> None:
        """One more idle connection in the pool; a failure is left to the first write
        that needs it (it connects again, and reports)."""
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    conn = await self._connect()
            except (psycopg.Error, OSError, TimeoutError, TargetRejected) as exc:
                log.debug("%s: connecting ahead failed: %s", self.description, exc)
                return
            self._open.add(conn)
            self._idle.append(conn)

    async def close(self) -> None:
        self._idle.clear()
        for conn in list(self._open):
            await self._drop(conn)
