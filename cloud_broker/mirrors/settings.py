"""``[mirrors.<name>]`` in cloud.toml (and the JSON body of POST /v1/mirrors).

Strategy: one frozen dataclass for every target kind, validated up front with the shared
toolkit (``tomlconf``) like the rest of the config, so a typo fails at start with its key
(``mirrors.dr.replicas: must be an integer >= 1, got 0``). Keys that belong to another
target kind are refused, not ignored. A nats mirror on a broker installed without nats-py
(the ``nats`` extra) is refused here, naming what to install. This module imports only
the toolkit and ``uplink``: ``cloud_broker.config`` can import it without a circle.

Example::

    [mirrors.dr]                    # byte-for-byte copy into another broker
    topic = "telemetry"
    target = "broker"
    url = "https://dr-broker:8080"
    token = "admin-token-of-the-target"
    target_topic = "telemetry"      # default: the source topic

    [mirrors.stream]                # NATS JetStream
    topic = "telemetry"
    target = "nats"
    servers = ["nats://127.0.0.1:4222"]
    stream = "EDGESTREAM_telemetry" # default: EDGESTREAM_<topic>, dots as underscores
    subject_prefix = "edgestream"   # subjects <prefix>.<topic>.<partition>
    replicas = 1                    # 3 on a cluster
    duplicate_window_s = 120

    [mirrors.archive]               # SQLite table, browsable with datasette
    topic = "telemetry"
    target = "sql"
    path = "archive.db"             # relative to the config file
    table = "records"
    json_columns = true             # JSON object values also as value_<key> columns

    [mirrors.pg]                    # PostgreSQL (TimescaleDB when installed there)
    topic = "telemetry"
    target = "postgres"
    dsn = "postgresql://mirror@db.example:5432/telemetry"   # default "": libpq's PG* env
    password_env = "EDGESTREAM_PG_PASSWORD"  # or password = "..." (or PGPASSWORD/.pgpass)
    table = "readings"
    fields = { temp = "double", site = "text" }  # JSON fields as typed columns
    hypertable = true               # a hypertable when TimescaleDB is installed
    connections = 4                 # at most this many connections (partitions share them)
    sslmode = "verify-full"         # sslrootcert, sslcert, sslkey: paths, passed to libpq

    # common keys, all optional
    run = "broker"                  # or "standalone": run by `cloud-broker mirror` instead
    batch_records = 1000            # postgres: 5000
    batch_bytes = 1048576           # postgres: 4194304
    wait_ms = 1000                  # long-poll wait for new records
    max_backoff_s = 30              # retry backoff ceiling while the target is down
    verify_interval_s = 30          # an idle partition re-asks the target its position
    timeout_s = 10                  # per request to the target
"""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tomlconf import ConfigError, Section, mask_secrets, parse_url, shown
from uplink import is_safe_name

TARGETS = ("broker", "nats", "postgres", "sql")
COMMON = {"topic", "target", "run", "batch_records", "batch_bytes", "wait_ms",
          "max_backoff_s", "verify_interval_s", "timeout_s"}
PER_TARGET = {
    "broker": {"url", "token", "target_topic"},
    "nats": {"servers", "stream", "subject_prefix", "replicas", "duplicate_window_s"},
    "sql": {"path", "table", "json_columns"},
    "postgres": {"dsn", "password", "password_env", "table", "fields", "hypertable",
                 "connections", "sslmode", "sslrootcert", "sslcert", "sslkey"},
}
#: typed columns a postgres mirror may extract from JSON values (pg_rows.FIELD_TYPES)
PG_FIELD_TYPES = ("text", "bigint", "double", "boolean", "jsonb")
PG_BASE_COLUMNS = frozenset({"topic", "partition", "offset", "key", "key_bytes", "time",
                             "ts_ms", "value", "value_bytes", "headers"})
MAX_PG_FIELDS = 64
#: default batch_records of a postgres mirror (others: 1000)
PG_BATCH_RECORDS = 5000
PG_BATCH_BYTES = 4 << 20
#: default bound on a postgres mirror's connections (postgres_target.CONNECTIONS)
PG_CONNECTIONS = 4
SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
_STREAM_NAME = re.compile(r"^[A-Za-z0-9_-]{1,255}$")
_SUBJECT = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_TABLE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
_SAFE_NAME = "must match [A-Za-z0-9][A-Za-z0-9._-]*"
#: keys whose values are secrets: never echoed in errors
SECRET_KEYS = frozenset({"token", "password"})
NATS_SCHEMES = ("nats", "tls", "ws", "wss")


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    name: str
    topic: str
    target: str
    run: str = "broker"
    batch_records: int = 1000
    batch_bytes: int = 1 << 20
    wait_ms: int = 1000
    max_backoff_s: float = 30.0
    verify_interval_s: float = 30.0
    timeout_s: float = 10.0
    # broker
    url: str | None = None
    token: str | None = dataclasses.field(default=None, repr=False)
    target_topic: str | None = None
    # nats
    servers: tuple[str, ...] = ("nats://127.0.0.1:4222",)
    stream: str | None = None
    subject_prefix: str = "edgestream"
    replicas: int = 1
    duplicate_window_s: float = 120.0
    # sql
    path: Path | None = None
    table: str = "records"
    json_columns: bool = True
    # postgres
    dsn: str = dataclasses.field(default="", repr=False)  # may hold a password
    password: str | None = dataclasses.field(default=None, repr=False)
    password_env: str | None = None
    fields: tuple[tuple[str, str], ...] = ()
    hypertable: bool = True
    connections: int = PG_CONNECTIONS
    sslmode: str | None = None
    sslrootcert: Path | None = None
    sslcert: Path | None = None
    sslkey: Path | None = None

    @property
    def stream_name(self) -> str:
        return self.stream or "EDGESTREAM_" + self.topic.replace(".", "_")

    def public(self) -> dict[str, Any]:
        """The definition without secrets, for GET /v1/mirrors: tokens as ``***``, URLs
        with their credentials masked (``nats://user:***@host:4222``)."""
        out = {"name": self.name, "topic": self.topic, "target": self.target, "run": self.run}
        for k in sorted(PER_TARGET[self.target]):
            v = getattr(self, k if k != "stream" else "stream_name")
            if k in SECRET_KEYS:
                v = "***" if v else None
            elif k in ("url", "dsn") and v:
                v = mask_secrets(v)
            elif k == "fields":
                v = dict(v)
            elif k == "servers":
                v = [mask_secrets(u) for u in v]
            out[k] = str(v) if isinstance(v, Path) else (list(v) if isinstance(v, tuple) else v)
        return out


def _pg_fields(m: Section) -> tuple[tuple[str, str], ...]:
    raw = m.get("fields", {})
    if not isinstance(raw, dict) or len(raw) > MAX_PG_FIELDS:
        raise m.error("fields", f"must be a table of at most {MAX_PG_FIELDS} "
                                "name = type pairs")
    for name, kind in raw.items():
        if not _TABLE.match(name) or name.lower() in PG_BASE_COLUMNS:
            raise m.error(f"fields.{name}", "must be an SQL name ([A-Za-z_][A-Za-z0-9_]{0,63}) "
                                            "that is not one of the table's own columns")
        if kind not in PG_FIELD_TYPES:
            raise m.error(f"fields.{name}", f"must be one of {', '.join(PG_FIELD_TYPES)}, "
                                            f"got {shown(kind)}")
    return tuple(raw.items())


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def parse_mirror(name: str, raw: Any, base_dir: Path, path: str | None = None) -> MirrorConfig:
    """Validate one mirror table; ``path`` names it in errors (default ``mirrors.<name>``)."""
    place = (path if path is not None else f"mirrors.{name}.").rstrip(".")
    if not is_safe_name(name):
        raise ConfigError(place, "mirror names must match [A-Za-z0-9][A-Za-z0-9._-]*")
    m = Section(raw, place)
    target = m.get("target")
    if target not in TARGETS:
        raise m.error("target", f"must be one of {', '.join(TARGETS)}, got {shown(target)}")
    m.only(COMMON | PER_TARGET[target], f"for a {target} mirror")
    if target == "nats" and not _installed("nats"):
        raise m.error("target", "a nats mirror needs nats-py, which is not installed "
                                "(pip install 'edgestream[nats]')")
    topic = m.string("topic", None, check=is_safe_name, nonempty=True, form=_SAFE_NAME)
    if topic is None:
        raise m.error("topic", "is required")
    kw: dict[str, Any] = {
        "run": m.string("run", "broker", choices=("broker", "standalone")),
        # PostgreSQL: a transaction per batch (four round trips, a WAL flush) costs as much
        # as hundreds of rows, so batches are larger there (docs/benchmarks.md).
        "batch_records": m.integer("batch_records", PG_BATCH_RECORDS if target == "postgres"
                                   else 1000, minimum=1),
        "batch_bytes": m.integer("batch_bytes", PG_BATCH_BYTES if target == "postgres" else 1 << 20,
                                 minimum=1024),
        "wait_ms": m.integer("wait_ms", 1000, minimum=0),
        "max_backoff_s": m.number("max_backoff_s", 30.0, minimum=0.01),
        "verify_interval_s": m.number("verify_interval_s", 30.0, minimum=0.1),
        "timeout_s": m.number("timeout_s", 10.0, minimum=0.1),
    }
    if target == "broker":
        url = parse_url(m.required("url", "http(s)://host:port of the target"), m.key("url"),
                        ("http", "https"))
        kw.update(url=url.rstrip("/"), token=m.string("token", None, nonempty=True, secret=True),
                  target_topic=m.string("target_topic", None, check=is_safe_name,
                                        form=_SAFE_NAME))
    elif target == "nats":
        servers = m.get("servers", ["nats://127.0.0.1:4222"])
        if isinstance(servers, str):
            servers = [servers]
        if not isinstance(servers, list) or not servers:
            raise m.error("servers", "must be a URL or a list of URLs")
        for i, server in enumerate(servers):
            parse_url(server, f"{m.key('servers')}[{i}]", NATS_SCHEMES)
        kw.update(servers=tuple(servers),
                  stream=m.string("stream", None, check=_STREAM_NAME.match,
                                  form="must match [A-Za-z0-9_-]{1,255}"),
                  subject_prefix=m.string("subject_prefix", "edgestream", check=_SUBJECT.match,
                                          form="must be dot-separated tokens of "
                                               "[A-Za-z0-9_-]"),
                  replicas=m.integer("replicas", 1, minimum=1),
                  duplicate_window_s=m.number("duplicate_window_s", 120.0, minimum=1))
    elif target == "postgres":
        if not _installed("psycopg"):
            raise m.error("target", "a postgres mirror needs psycopg, which is not installed "
                                    "(pip install 'edgestream[postgres]')")
        dsn = m.string("dsn", "")
        from psycopg import ProgrammingError
        from psycopg.conninfo import conninfo_to_dict
        try:
            conninfo_to_dict(dsn)
        except ProgrammingError:
            raise m.error("dsn", "must be a postgresql:// URL or a libpq key=value "
                                 "connection string (value not shown)") from None
        kw.update(dsn=dsn, password=m.string("password", None, secret=True),
                  password_env=m.string("password_env", None, check=_ENV_NAME.match,
                                        form="must be an environment variable name"),
                  table=m.string("table", "records", check=_TABLE.match,
                                 form="must be an SQL name ([A-Za-z_][A-Za-z0-9_]{0,63})"),
                  fields=_pg_fields(m), hypertable=m.boolean("hypertable", True),
                  connections=m.integer("connections", PG_CONNECTIONS, minimum=1, maximum=64),
                  sslmode=m.string("sslmode", None, choices=SSLMODES),
                  **{k: m.path(k, base_dir) for k in ("sslrootcert", "sslcert", "sslkey")})
    else:
        db = m.path("path", base_dir)
        if db is None:
            raise m.error("path", "is required: the SQLite file to write")
        kw.update(path=db,
                  table=m.string("table", "records", check=_TABLE.match,
                                 form="must be an SQL name ([A-Za-z_][A-Za-z0-9_]{0,63})"),
                  json_columns=m.boolean("json_columns", True))
    return MirrorConfig(name=name, topic=topic, target=target, **kw)


def parse_mirrors(raw: Any, base_dir: Path) -> dict[str, MirrorConfig]:
    """The ``[mirrors]`` table of cloud.toml."""
    tables = Section({"mirrors": raw}).named_tables("mirrors", "mirrors")
    return {name: parse_mirror(name, t, base_dir) for name, t in tables}


__all__ = ["COMMON", "NATS_SCHEMES", "PER_TARGET", "PG_FIELD_TYPES", "SECRET_KEYS", "TARGETS",
           "MirrorConfig", "parse_mirror", "parse_mirrors"]
