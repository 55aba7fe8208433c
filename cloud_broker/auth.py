"""Bearer tokens bound to an edge id, a set of permissions and topic/group scopes.

Strategy: a token names who is calling (an edge, or ``*`` for a service), what it may
do (``ingest``, ``read``, ``admin``) and on what: ``topics`` and ``groups`` are lists of
fnmatch-style patterns (``*``, ``?``, ``[seq]``, matched case-sensitively against the
whole name). A token without scopes (an older config or tokens table) has ``["*"]``, all
topics and groups, as before. Tokens come from cloud.toml and, optionally, from a SQLite
table managed with sqlite-utils so operators can add and revoke them without a restart.
Only SHA-256 digests are kept in memory and in SQLite; comparison is by digest lookup,
so timing reveals nothing useful about a token.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

import sqlite_utils

from .config import BrokerConfig

ALL = ("*",)


@dataclass(frozen=True, slots=True)
class Principal:
    edge_id: str  # "*" = any edge
    permissions: frozenset[str]
    topics: tuple[str, ...] = ALL  # fnmatch patterns of the topics it may use
    groups: tuple[str, ...] = ALL  # fnmatch patterns of the consumer groups it may use

    def may_ingest_as(self, edge_id: str) -> bool:
        return "ingest" in self.permissions and self.edge_id in ("*", edge_id)

    def may(self, permission: str) -> bool:
        return permission in self.permissions or "admin" in self.permissions

    def may_topic(self, topic: str) -> bool:
        return _matches(self.topics, topic)

    def may_group(self, group: str) -> bool:
        return _matches(self.groups, group)


def _matches(patterns: tuple[str, ...], name: str) -> bool:
    return patterns == ALL or any(fnmatchcase(name, p) for p in patterns)


def parse_scope(text: str | None) -> tuple[str, ...]:
    """The stored (comma-separated) form of a scope; empty or missing means all."""
    patterns = tuple(p.strip() for p in (text or "").split(",") if p.strip())
    return patterns or ALL


def format_scope(patterns: Iterable[str] | None) -> str:
    return ",".join(patterns or ALL)


ANONYMOUS = Principal("*", frozenset({"ingest", "read", "admin"}))


class AuthError(Exception):
    """401: no token, or a token nobody issued."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Looks tokens up in the config, then in the SQLite table when configured."""

    def __init__(self, config: BrokerConfig) -> None:
        self.required = config.auth_required
        self._static = {digest(t.token): Principal(t.edge_id, t.permissions, t.topics,
                                                   t.groups)
                        for t in config.tokens}
        self._db_path = config.tokens_db
        if self._db_path is not None:
            ensure_table(self._db_path)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.required:
            return ANONYMOUS
        if not authorization:
            raise AuthError("missing Authorization: Bearer <token>")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("Authorization must be 'Bearer <token>'")
        d = digest(token.strip())
        p = self._static.get(d)
        if p is None and self._db_path is not None:
            p = lookup(self._db_path, d)
        if p is None:
            raise AuthError("unknown token")
        return p


SCOPE_COLUMNS = ("topics", "groups")


def ensure_table(db_path: Path) -> None:
    """Create the table, and add the scope columns to a table made before they existed
    (their empty value means all topics / groups, as before)."""
    db = sqlite_utils.Database(db_path)
    try:
        table = db["tokens"]
        table.create({"digest": str, "edge_id": str, "permissions": str, "topics": str,
                      "groups": str}, pk="digest", if_not_exists=True)
        have = set(table.columns_dict)
        for column in SCOPE_COLUMNS:
            if column not in have:
                # A read-only table keeps working without: lookup reads what is there.
                with contextlib.suppress(sqlite3.Error):
                    table.add_column(column, str)
    finally:
        db.close()


def add_token(db_path: Path, token: str, edge_id: str, permissions: list[str],
              topics: Iterable[str] | None = None, groups: Iterable[str] | None = None
              ) -> None:
    """Issue a token (used by operators and tests); no topics/groups: all of them."""
    ensure_table(db_path)
    db = sqlite_utils.Database(db_path)
    try:
        db["tokens"].upsert(
            {"digest": digest(token), "edge_id": edge_id, "permissions": ",".join(permissions),
             "topics": format_scope(topics), "groups": format_scope(groups)},
            pk="digest",
        )
    finally:
        db.close()


def revoke_token(db_path: Path, token: str) -> None:
    db = sqlite_utils.Database(db_path)
    db["tokens"].delete_where("digest = ?", [digest(token)])
    db.close()


def lookup(db_path: Path, token_digest: str) -> Principal | None:
    db = sqlite_utils.Database(db_path)
    try:
        # select *: a table from before the scope columns has none (all topics/groups)
        rows = list(db.query("select * from tokens where digest = ?", [token_digest]))
    finally:
        db.close()
    if not rows:
        return None
    row = rows[0]
    perms = frozenset(p for p in (row.get("permissions") or "").split(",") if p)
    return Principal(row["edge_id"], perms, parse_scope(row.get("topics")),
                     parse_scope(row.get("groups")))
