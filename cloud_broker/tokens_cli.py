"""``cloud-broker tokens add|list|revoke``: manage the tokens table (``auth.tokens_db``).

Strategy: operators think in roles, the broker in permissions; a role is one permission
set plus a rule for the edge id:

    edge     ingest, as one edge id (required: the edge it is for)
    reader   read (consumers, dashboards, Prometheus, Kafka clients); any edge id
    admin    admin (mirrors, replication, everything); any edge id

``topics`` and ``groups`` narrow a token to fnmatch patterns (default: all). The broker
looks each request's token up in the table (auth.py), so a token added or revoked here
counts from the next request, without a restart. Only the SHA-256 digest is stored: the
token is printed once by ``add`` and cannot be shown again; ``list`` shows an id (the
digest's first 12 hex digits) that ``revoke --id`` takes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sqlite3
import sys
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path

import sqlite_utils

from uplink import is_safe_name

from .auth import ALL, add_token, digest, ensure_table, parse_scope
from .config import MAX_SCOPE_PATTERNS, ConfigError, load_config

ROLES = {"edge": ("ingest",), "reader": ("read",), "admin": ("admin",)}
ID_DIGITS = 12


def _db(args: argparse.Namespace) -> Path:
    if args.db:
        return Path(args.db)
    if not args.config:
        raise ConfigError("--config", "give --config cloud.toml (its auth.tokens_db) or --db")
    cfg = load_config(args.config)
    if cfg.tokens_db is None:
        raise ConfigError("auth.tokens_db", f"{args.config} names no tokens database: add "
                                            "[auth] tokens_db = \"/var/lib/.../tokens.db\"")
    return cfg.tokens_db


def _patterns(text: str | None, option: str) -> tuple[str, ...]:
    if text is None:
        return ALL
    patterns = tuple(p.strip() for p in text.split(",") if p.strip())
    if not patterns or len(patterns) > MAX_SCOPE_PATTERNS or any(len(p) > 256
                                                                 for p in patterns):
        raise ConfigError(option, f"must be 1..{MAX_SCOPE_PATTERNS} comma-separated fnmatch "
                                  "patterns, e.g. telemetry,alarms")
    return patterns


def _token(args: argparse.Namespace) -> tuple[str, bool]:
    """The token to store and whether it was generated here (then it is printed)."""
    if args.token_env:
        value = os.environ.get(args.token_env, "")
        if len(value) < 8:
            raise ConfigError("--token-env", f"${args.token_env} must hold a token of at "
                                             "least 8 characters")
        return value, False
    return secrets.token_urlsafe(24), True


def cmd_add(args: argparse.Namespace) -> int:
    if args.role == "edge":
        if not args.edge_id or not (args.edge_id == "*" or is_safe_name(args.edge_id)):
            raise ConfigError("--edge-id", "an edge token needs --edge-id <the edge's "
                                           "edge_id> (or '*' for any edge)")
        edge_id = args.edge_id
    else:
        if args.edge_id not in (None, "*"):
            raise ConfigError("--edge-id", f"a {args.role} token is not bound to an edge")
        edge_id = "*"
    topics, groups = _patterns(args.topics, "--topics"), _patterns(args.groups, "--groups")
    db = _db(args)
    token, generated = _token(args)
    add_token(db, token, edge_id, list(ROLES[args.role]), topics, groups)
    _note(db, digest(token), args.name or "")
    tid = digest(token)[:ID_DIGITS]
    if generated:
        print(token)
        print(f"added {args.role} token {tid} (edge {edge_id}); it is shown only now",
              file=sys.stderr)
    else:
        print(f"added {args.role} token {tid} (edge {edge_id}) from ${args.token_env}",
              file=sys.stderr)
    return 0


def _note(db_path: Path, token_digest: str, name: str) -> None:
    db = sqlite_utils.Database(db_path)
    try:
        table = db["tokens"]
        for column in ("name", "created_at"):
            if column not in table.columns_dict:
                table.add_column(column, str)
        table.update(token_digest, {"name": name,
                                    "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                time.gmtime())})
    finally:
        db.close()


def _role(permissions: str) -> str:
    perms = set(filter(None, permissions.split(",")))
    for role, want in ROLES.items():
        if perms == set(want):
            return role
    return ",".join(sorted(perms)) or "-"


def cmd_list(args: argparse.Namespace) -> int:
    db_path = _db(args)
    if not db_path.exists():
        print(f"no tokens: {db_path} does not exist yet", file=sys.stderr)
        return 0
    ensure_table(db_path)
    db = sqlite_utils.Database(db_path)
    try:
        rows = list(db.query("select * from tokens order by edge_id, digest"))
    finally:
        db.close()
    print(f"{'id':<{ID_DIGITS}}  {'role':<7} {'edge':<20} {'topics':<24} {'groups':<16} "
          "created              name")
    for r in rows:
        print(f"{r['digest'][:ID_DIGITS]:<{ID_DIGITS}}  {_role(r.get('permissions') or ''):<7} "
              f"{r['edge_id']:<20} {','.join(parse_scope(r.get('topics'))):<24} "
              f"{','.join(parse_scope(r.get('groups'))):<16} "
              f"{r.get('created_at') or '-':<20} {r.get('name') or ''}")
    if not rows:
        print("(no tokens: every request is refused with 401)", file=sys.stderr)
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    db_path = _db(args)
    if args.id:
        if len(args.id) < 6 or any(c not in "0123456789abcdef" for c in args.id):
            raise ConfigError("--id", "must be at least 6 hex digits of an id from "
                                      "'tokens list'")
        where, params = "digest like ?", [args.id + "%"]
    elif args.token_env:
        where, params = "digest = ?", [digest(os.environ.get(args.token_env, ""))]
    else:
        raise ConfigError("--id", "give --id <id from 'tokens list'> or --token-env VAR")
    if not db_path.exists():
        print(f"no such token (no table at {db_path})", file=sys.stderr)
        return 1
    db = sqlite_utils.Database(db_path)
    try:
        hits = [r["digest"] for r in db.query(f"select digest from tokens where {where}",
                                              params)]
        if len(hits) > 1:
            raise ConfigError("--id", f"{args.id} matches {len(hits)} tokens: give more "
                                      "digits")
        if hits:
            db["tokens"].delete(hits[0])
    finally:
        db.close()
    if not hits:
        print("no such token", file=sys.stderr)
        return 1
    print(f"revoked token {hits[0][:ID_DIGITS]}", file=sys.stderr)
    return 0


def _db_errors(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A database that cannot be opened or written is a configuration error (exit 2)."""
    @wraps(fn)
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (sqlite3.Error, OSError) as exc:
            raise ConfigError("auth.tokens_db", f"cannot use the tokens database: "
                                                f"{type(exc).__name__}: {exc}") from exc
    return run


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("tokens", help="add, list or revoke tokens (auth.tokens_db)",
                       description="Manage the tokens table named by auth.tokens_db. Roles: "
                       "edge (ingest as one edge id), reader (read), admin (everything). "
                       "Changes count from the next request; no restart.")
    tsub = p.add_subparsers(dest="tokens_command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--config", help="cloud.toml (its auth.tokens_db is used)")
        q.add_argument("--db", help="the tokens database file instead of --config")

    add = tsub.add_parser("add", help="issue a token (printed once on stdout)")
    common(add)
    add.add_argument("--role", required=True, choices=sorted(ROLES))
    add.add_argument("--edge-id", help="edge role: the edge_id it may ingest as")
    add.add_argument("--topics", help="comma-separated topic patterns (default: all)")
    add.add_argument("--groups", help="comma-separated consumer group patterns (default: all)")
    add.add_argument("--name", help="a note shown by list (who or what it is for)")
    add.add_argument("--token-env", metavar="VAR",
                     help="store the token held in $VAR instead of generating one "
                          "(for deployments that keep tokens in secrets)")
    add.set_defaults(func=_db_errors(cmd_add))
    ls = tsub.add_parser("list", help="the tokens (ids, roles, scopes; never the tokens)")
    common(ls)
    ls.set_defaults(func=_db_errors(cmd_list))
    rv = tsub.add_parser("revoke", help="revoke a token by id (or the token in $VAR)")
    common(rv)
    rv.add_argument("--id", help="the id shown by list (at least 6 hex digits)")
    rv.add_argument("--token-env", metavar="VAR", help="revoke the token held in $VAR")
    rv.set_defaults(func=_db_errors(cmd_revoke))


__all__ = ["ROLES", "add_parser"]
