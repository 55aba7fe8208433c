"""Bearer tokens bound to an edge id and a set of permissions.

Strategy: a token names who is calling (an edge, or ``*`` for a service) and what it may
do (``ingest``, ``read``, ``admin``). Tokens come from cloud.toml and, optionally, from a
SQLite table managed with sqlite-utils so operators can add and revoke them without a
restart. Only SHA-256 digests are kept in memory and in SQLite; comparison is by digest
lookup, so timing reveals nothing useful about a token.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import sqlite_utils

from .config import BrokerConfig


@dataclass(frozen=True, slots=True)
class Principal:
    edge_id: str  # "*" = any edge
    permissions: frozenset[str]

    def may_ingest_as(self, edge_id: str) -> bool:
        return "ingest" in self.permissions and self.edge_id in ("*", edge_id)

    def may(self, permission: str) -> bool:
        return permission in self.permissions or "admin" in self.permissions


ANONYMOUS = Principal("*", frozenset({"ingest", "read", "admin"}))


class AuthError(Exception):
    """401: no token, or a token nobody issued."""


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenStore:
    """Looks tokens up in the config, then in the SQLite table when configured."""

    def __init__(self, config: BrokerConfig) -> None:
        self.required = config.auth_required
        self._static = {digest(t.token): Principal(t.edge_id, t.permissions)
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


def ensure_table(db_path: Path) -> None:
    db = sqlite_utils.Database(db_path)
    db["tokens"].create(
        {"digest": str, "edge_id": str, "permissions": str}, pk="digest", if_not_exists=True
    )
    db.close()


def add_token(db_path: Path, token: str, edge_id: str, permissions: list[str]) -> None:
    """Issue a token (used by operators and tests)."""
    ensure_table(db_path)
    db = sqlite_utils.Database(db_path)
    db["tokens"].upsert(
        {"digest": digest(token), "edge_id": edge_id, "permissions": ",".join(permissions)},
        pk="digest",
    )
    db.close()


def revoke_token(db_path: Path, token: str) -> None:
    db = sqlite_utils.Database(db_path)
    db["tokens"].delete_where("digest = ?", [digest(token)])
    db.close()


def lookup(db_path: Path, token_digest: str) -> Principal | None:
    db = sqlite_utils.Database(db_path)
    try:
        rows = list(db.query("select edge_id, permissions from tokens where digest = ?",
                             [token_digest]))
    finally:
        db.close()
    if not rows:
        return None
    perms = frozenset(p for p in rows[0]["permissions"].split(",") if p)
    return Principal(rows[0]["edge_id"], perms)
